"""Run records: ``metrics.jsonl`` (one line per step), ``samples.jsonl``, TensorBoard events, and the live
progress display (step, reward/accuracy, entropy, KL, clip fractions, tokens/s, ETA)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from ..files import read_jsonl
from .checkpoint import atomic_write_text


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonlLog:
    """Append-only JSON-lines file; each record is flushed and fsynced. ``truncate_after(step)`` rewrites the file
    atomically without the records of later steps (used on resume)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: Mapping[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """The records; a torn last line (a crash mid-append) is dropped, a bad line elsewhere names the file and
        line (``entrolab.files``)."""
        if not self.path.is_file():
            return []
        return read_jsonl(self.path, objects=True, torn_tail=True, what="run log")

    def truncate_after(self, step: int) -> list[dict[str, Any]]:
        kept = [r for r in self.read() if r.get("step", -1) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept


class TensorBoardLog:
    def __init__(self, log_dir: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is in the train extra; without it, skip quietly but say so once
                print("entrolab: tensorboard is not installed; skipping TensorBoard events (pip install tensorboard)")
                return
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step":
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Progress:
    """A rich live table of the latest step's key metrics with an ETA; a plain line per step when not a TTY."""

    COLUMNS = (
        ("reward", "reward/mean", "{:.3f}"),
        ("acc", "reward/accuracy", "{:.2f}"),
        ("eval acc", "eval/accuracy", "{:.2f}"),
        ("entropy", "entropy/mean", "{:.3f}"),
        ("ΔH pred/act", None, ""),
        ("KL", "kl/ref", "{:.4f}"),
        ("ceiling", "law/ceiling", "{:.3f}"),
        ("clip lo/hi/cov", None, ""),
        ("tok/s", "perf/tokens_per_s", "{:.0f}"),
        ("s/step", "time/step_s", "{:.1f}"),
    )

    def __init__(self, total_steps: int, start_step: int, mode: str, title: str):
        """``mode``: ``rich`` (live display), ``plain`` (one line per step, for logs and CI) or ``off``."""
        self.total = total_steps
        self.start = start_step
        self.mode = mode
        self.title = title
        self.t0 = time.time()
        self.last_seen: dict[str, float] = {}  # eval/ and law/ metrics, logged every k steps, shown until renewed
        self._progress = None
        self._task = None
        if mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                refresh_per_second=2,
            )
            self._task = self._progress.add_task(title, total=total_steps, completed=start_step, stats="")
            self._progress.start()

    def _fmt(self, m: Mapping[str, Any]) -> str:
        parts = []
        streak = m.get("update/no_signal_streak")
        if isinstance(streak, (int, float)) and streak >= 1:  # every group's rewards identical: nothing to learn
            parts.append(f"NO SIGNAL ({int(streak)} step{'s' if streak > 1 else ''})")
        for label, key, fmt in self.COLUMNS:
            if label == "ΔH pred/act":
                if "dynamics/actual_delta_H" in m:
                    parts.append(f"ΔH {m['dynamics/predicted_delta_H']:+.4f}/{m['dynamics/actual_delta_H']:+.4f}")
                continue
            if label == "clip lo/hi/cov":
                vals = [m.get(k) for k in ("clip/frac_low", "clip/frac_high", "clip/frac_cov")]
                if any(v is not None for v in vals):
                    parts.append("clip " + "/".join("-" if v is None else f"{v:.3f}" for v in vals))
                continue
            v = m.get(key, self.last_seen.get(key) if key.startswith(("eval/", "law/")) else None)
            if isinstance(v, (int, float)) and math.isfinite(v):
                parts.append(f"{label} {fmt.format(v)}")
        return "  ".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any]) -> None:
        for k, v in metrics.items():
            if k.startswith(("eval/", "law/")):
                self.last_seen[k] = v
        line = self._fmt(metrics)
        if self._progress is not None:
            self._progress.update(self._task, completed=step + 1, stats=line)
        elif self.mode == "plain":
            done = step + 1 - self.start
            rate = (time.time() - self.t0) / max(done, 1)
            eta = rate * (self.total - step - 1)
            print(f"[{self.title}] step {step + 1}/{self.total}  {line}  ETA {eta:.0f}s", flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def write_config(path: Path, text: str) -> None:
    atomic_write_text(Path(path), text)


__all__ = ["JsonlLog", "TensorBoardLog", "Progress", "write_config", "Optional"]

"""Runs written by other trainers — verl and TRL — read into entrolab's metric names, so ``entrolab analyze`` fits the
entropy–performance law R = −a·exp(H) + b (2505.22617), forecasts and reports on them like on its own runs.

Sources, all optional, merged by step (a later source overrides an earlier one for the same key):

- TensorBoard event files (``events.out.tfevents.*``) anywhere under the directory: verl's ``trainer.logger=
  [tensorboard]`` (``TENSORBOARD_DIR``), TRL's ``report_to=tensorboard`` (tags prefixed ``train/``);
- verl's file logger JSONL (``trainer.logger=[file]``: one ``{"step": N, "data": {...}}`` per line);
- TRL's ``trainer_state.json`` (its ``log_history``), the newest one under the directory.

Key mapping (entrolab's own keys, which the entrolab verl recipe and TRL trainer log, win over the mapped ones):

=====================  =====================================================================================
entrolab               verl / TRL
=====================  =====================================================================================
``entropy/mean``       verl ``actor/entropy`` (the rollout batch's token entropy), TRL ``entropy``
``reward/mean``        verl ``critic/score/mean``, TRL ``reward``
``reward/accuracy``    the same: the training reward is the accuracy when the reward is a 0/1 verifier
``eval/accuracy``      verl ``val-core/<data>/acc/mean@k`` (else ``val-core/<data>/reward/mean@k``)
``response/length_mean``  verl ``response_length/mean``, TRL ``completions/mean_length``
=====================  =====================================================================================
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Optional

MAPPING: dict[str, tuple[str, ...]] = {
    "entropy/mean": ("actor/entropy", "entropy"),
    "reward/mean": ("critic/score/mean", "reward"),
    "reward/accuracy": ("critic/score/mean", "reward"),
    "response/length_mean": ("response_length/mean", "completions/mean_length"),
}
_VAL = (re.compile(r"^val-core/.+/acc/mean@\d+$"), re.compile(r"^val-core/.+/reward/mean@\d+$"))


def _num(v: Any) -> Optional[float]:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _tensorboard(path: Path) -> tuple[dict[int, dict[str, float]], list[Path]]:
    files = sorted(path.rglob("events.out.tfevents.*"))
    out: dict[int, dict[str, float]] = {}
    if not files:
        return out, []
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, TENSORS, EventAccumulator
    except ImportError as e:  # pragma: no cover - tensorboard is in the train extra
        raise ImportError("reading TensorBoard runs needs tensorboard (pip install -e '.[train]')") from e
    for d in sorted({f.parent for f in files}):
        acc = EventAccumulator(str(d), size_guidance={SCALARS: 0, TENSORS: 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            for ev in acc.Scalars(tag):
                out.setdefault(int(ev.step), {})[tag] = float(ev.value)
        for tag in tags.get("tensors", []):  # torch's SummaryWriter may write scalars as tensors
            for ev in acc.Tensors(tag):
                try:
                    import numpy as np
                    from tensorboard.util import tensor_util

                    val = float(np.asarray(tensor_util.make_ndarray(ev.tensor_proto)).reshape(-1)[0])
                except Exception:  # noqa: BLE001 — a non-scalar tensor is not a metric
                    continue
                out.setdefault(int(ev.step), {})[tag] = val
    return out, files


def _verl_jsonl(path: Path) -> tuple[dict[int, dict[str, float]], list[Path]]:
    out: dict[int, dict[str, float]] = {}
    used = []
    for f in sorted(path.rglob("*.jsonl")):
        if f.name in ("metrics.jsonl", "samples.jsonl"):
            continue
        rows = []
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial last line
            if isinstance(obj, dict) and isinstance(obj.get("data"), dict) and _num(obj.get("step")) is not None:
                rows.append(obj)
        if rows:
            used.append(f)
            for obj in rows:
                rec = out.setdefault(int(obj["step"]), {})
                rec.update({k: v for k, v in ((k, _num(v)) for k, v in obj["data"].items()) if v is not None})
    return out, used


def _trl_state(path: Path) -> tuple[dict[int, dict[str, float]], list[Path]]:
    states = sorted(path.rglob("trainer_state.json"), key=lambda p: (p.stat().st_mtime, str(p)))
    out: dict[int, dict[str, float]] = {}
    if not states:
        return out, []
    try:
        history = json.loads(states[-1].read_text(encoding="utf-8")).get("log_history", [])
    except (json.JSONDecodeError, AttributeError):
        return out, []
    for h in history:
        step = _num(h.get("step")) if isinstance(h, dict) else None
        if step is None:
            continue
        rec = out.setdefault(int(step), {})
        rec.update({k: v for k, v in ((k, _num(v)) for k, v in h.items() if k != "step") if v is not None})
    return out, [states[-1]]


def _canonical(rec: dict[str, float]) -> dict[str, float]:
    """Strip TRL's TensorBoard ``train/`` prefix and verl's ``actor/`` prefix on entrolab's own namespaces, then
    fill entrolab's keys from the mapping where the run did not log them itself."""
    out: dict[str, float] = {}
    for k, v in rec.items():
        key = k[len("train/"):] if k.startswith("train/") else k
        out.setdefault(key, v)
        if key.startswith("actor/"):
            inner = key[len("actor/"):]
            if inner.split("/", 1)[0] in ("entropy", "dynamics", "clip", "kl", "loss", "controller") and "/" in inner:
                out.setdefault(inner, v)
    for ours, theirs in MAPPING.items():
        if ours not in out:
            for t in theirs:
                if t in out:
                    out[ours] = out[t]
                    break
    if "eval/accuracy" not in out:
        for pattern in _VAL:
            hits = sorted(k for k in out if pattern.match(k))
            if hits:
                out["eval/accuracy"] = out[hits[0]]
                break
    return out


def load_foreign_records(path: Path) -> Optional[tuple[list[dict[str, Any]], dict[str, Any]]]:
    """``(records, info)`` of a verl or TRL run directory (module docstring), or None when it holds none of their
    logs. Records carry ``step`` and entrolab's keys; ``info`` says which files were read and which engine wrote
    them."""
    merged: dict[int, dict[str, float]] = {}
    sources: list[str] = []
    engine = ""
    for reader in (_trl_state, _verl_jsonl, _tensorboard):
        recs, files = reader(path)
        for step, rec in recs.items():
            merged.setdefault(step, {}).update(rec)
        sources += [str(f) for f in files]
    if not merged:
        return None
    keys = {k for r in merged.values() for k in r}
    if any(k.startswith(("actor/", "critic/", "val-core/")) for k in keys):
        engine = "verl"
    elif any(k.replace("train/", "").startswith(("completions/", "rewards/", "frac_reward_zero_std")) for k in keys):
        engine = "trl"
    records = [{"step": float(s), **_canonical(merged[s])} for s in sorted(merged)]
    return records, {"engine": engine, "sources": sources}

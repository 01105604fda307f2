"""The run directory's rules: runs never mix, and a damaged checkpoint never loses a run (docs/training.md).

- A new run takes a directory that does not exist or is empty. A non-empty one is refused, unless the run continues
  it (``--resume``) or is told to replace it (``--overwrite``: the old directory is moved aside to
  ``<dir>.replaced-<time>``, never deleted). The default directory, ``runs/<method>-<time>``, gets a suffix when
  taken.
- ``--resume`` needs a checkpoint; without one it refuses and changes nothing. It removes what a crash left (the
  ``.tmp-*`` directory of an interrupted checkpoint write, temporary files of atomic writes), says so, and resumes
  from the newest intact checkpoint (``checkpoint.verify_checkpoint``), naming any newer damaged one it skips.
- ``--resume`` compares the config it is given (the run's ``config.yaml``, plus any ``key=value`` overrides) with
  the config saved in that checkpoint: a difference outside :data:`SAFE_ON_RESUME` stops it with the list of the
  differing keys; the algorithm is compared as resolved (every component default filled in).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..errors import ConfigError
from ..files import check_dir_path, read_yaml
from .checkpoint import list_checkpoints, read_manifest, remove_stale_temporaries, verify_checkpoint
from .config import TrainConfig, config_from_dict, merge, parse_overrides

SAFE_ON_RESUME = ("optim.steps", "optim.max_nonfinite_steps", "eval.", "diagnostics.", "logging.", "checkpoint.",
                  "data.reward_workers")
"""Config keys (or key prefixes, ending in ``.``) that may differ on resume: how long the run goes on, what it
measures and records, and how it parallelises rewards — never the model, the data, the algorithm, the optimizer or
a shape."""

NEW, OVERWRITE, RESUME = "new", "overwrite", "resume"


def warn(message: str) -> None:
    print(f"entrolab: warning: {message}", file=sys.stderr, flush=True)


def default_run_dir(method: Any) -> Path:
    """``runs/<method>-<time>``, with ``-2``, ``-3``, ... when that directory is taken."""
    name = method if isinstance(method, str) else "+".join(method)
    base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def claim(path: Optional[Union[str, Path]], method: Any, mode: str = NEW) -> Path:
    """The run directory a run may write into (module doc); nothing is created yet."""
    if mode not in (NEW, OVERWRITE, RESUME):
        raise ValueError(f"mode must be {NEW!r}, {OVERWRITE!r} or {RESUME!r}, got {mode!r}")
    if path is None:
        return default_run_dir(method)
    p = Path(path)
    check_dir_path("logging.run_dir", str(p))
    if mode == RESUME or not (p.is_dir() and any(p.iterdir())):
        return p
    if mode == OVERWRITE:
        aside = p.with_name(f"{p.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        i = 1
        while aside.exists():
            i += 1
            aside = aside.with_name(f"{p.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-{i}")
        p.rename(aside)
        print(f"entrolab: --overwrite: moved the old run directory {p} aside to {aside}", flush=True)
        return p
    held = sorted(x.name for x in p.iterdir())
    shown = ", ".join(held[:4]) + (", ..." if len(held) > 4 else "")
    raise ConfigError(f"logging.run_dir = {str(p)!r} already holds files ({shown}); a new run never writes into "
                      f"another run's directory: continue that run with `entrolab train --resume {p}`, pass "
                      "--overwrite to move it aside, or choose another logging.run_dir")


# ------------------------------------------------------------------------------------------------------ resume
def resume_config(run_dir: Path, overrides: Sequence[str] = ()) -> TrainConfig:
    """The config of a run to resume: its ``config.yaml`` with ``key=value`` overrides applied, validated."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such run directory")
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"--resume {run_dir}: no config.yaml there; is it an entrolab run directory?")
    data = read_yaml(cfg_path, what="run config")
    if not isinstance(data, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of sections, got a {type(data).__name__}")
    return config_from_dict(merge(data, parse_overrides(overrides)))


def resume_point(run_dir: Path, config: TrainConfig) -> Path:
    """The checkpoint to resume ``run_dir`` from with ``config`` (module doc); refuses, changing nothing, when there
    is none, none is intact, or the config differs from the checkpoint's in a key that is not safe to change."""
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    found = list_checkpoints(ckpt_root)
    if not found:
        raise ConfigError(f"--resume {run_dir}: no checkpoint to resume from (the run stopped before its first "
                          f"checkpoint, see checkpoint.every); nothing was changed. Start it again with `entrolab "
                          f"train --config {run_dir / 'config.yaml'} --overwrite`")
    damaged: list[tuple[str, str]] = []
    chosen = None
    for ck in reversed(found):
        why = verify_checkpoint(ck)
        if why is None:
            chosen = ck
            break
        damaged.append((ck.name, why))
    if chosen is None:
        raise ConfigError(f"--resume {run_dir}: no intact checkpoint ("
                          + "; ".join(f"{n} is damaged: {w}" for n, w in damaged) + "); nothing was changed")
    changes = config_changes(chosen, config)
    if changes:
        raise ConfigError(f"--resume {run_dir}: the config differs from the one {chosen.name} was trained with, in "
                          f"keys that change the run: {'; '.join(changes)}. Resume with the run's own settings (only "
                          f"{', '.join(k + ('*' if k.endswith('.') else '') for k in SAFE_ON_RESUME)} may change), "
                          "or start a new run")
    removed = remove_stale_temporaries(ckpt_root) + _remove_atomic_temporaries(run_dir)
    if removed:
        warn(f"removed what a crash left behind in {run_dir}: {', '.join(removed)}")
    for name, why in damaged:
        warn(f"checkpoint {name} is damaged ({why}); resuming from {chosen.name}")
    return chosen


def _remove_atomic_temporaries(run_dir: Path) -> list[str]:
    """Temporary files of atomic writes (``.<name>.<random>.tmp``) a crash left in the run directory."""
    stale = [p for p in run_dir.iterdir() if p.is_file() and p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale:
        p.unlink(missing_ok=True)
    return [p.name for p in stale]


# ------------------------------------------------------------------------------------------------------ fingerprint
def is_safe(key: str) -> bool:
    return any(key == s or (s.endswith(".") and key.startswith(s)) for s in SAFE_ON_RESUME)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{"a.b.c": value}`` (lists and scalars are values)."""
    if not isinstance(data, dict):
        return {prefix.rstrip("."): data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def run_identity(config: TrainConfig) -> dict[str, Any]:
    """What must not change on resume, flat: every config key outside :data:`SAFE_ON_RESUME` except the
    algorithm's spelling, plus the algorithm resolved to its components (``objective.*``)."""
    flat = {k: v for k, v in flatten(config.to_dict()).items() if not is_safe(k) and not k.startswith("algorithm.")}
    flat.update(flatten(config.algorithm.spec().to_dict(), "objective."))
    return json.loads(json.dumps(flat, default=str))  # as a manifest stores it (tuples as lists)


def fingerprint(identity: dict[str, Any]) -> str:
    """A short hash of :func:`run_identity`."""
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def manifest_record(config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint's manifest keeps of the config: the config itself, its identity and fingerprint."""
    identity = run_identity(config)
    return {"config": config.to_dict(), "identity": identity, "fingerprint": fingerprint(identity)}


def config_changes(checkpoint: Path, config: TrainConfig) -> list[str]:
    """``key: saved → now`` for every key of the run's identity that differs from the checkpoint's (a checkpoint
    from before manifests has nothing to compare: none)."""
    manifest = read_manifest(checkpoint)
    saved = (manifest or {}).get("run") or {}
    if not isinstance(saved, dict) or "identity" not in saved:
        return []
    now = run_identity(config)
    if saved.get("fingerprint") == fingerprint(now):
        return []
    before = saved["identity"]
    keys = sorted(k for k in set(before) | set(now) if k in before and before.get(k) != now.get(k))
    return [f"{k}: {_show(before.get(k))} → {_show(now.get(k, '(unset)'))}" for k in keys]


def _show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)

"""Reading a trainer run directory: entrolab's own (below), or a verl or TRL run's logs (``foreign.py``: TensorBoard
events, verl's JSONL, TRL's ``trainer_state.json``), mapped to entrolab's metric names.

An entrolab run directory: ``metrics.jsonl`` (one flat JSON object per RL step), ``samples.jsonl`` (one
object per saved sample) and ``config.yaml``.

Records are merged by ``step`` (a later record for the same step adds or overrides keys, so an evaluation logged
as its own line still lands on its step). Non-finite numbers (``NaN``, ``Infinity``) and non-numeric values are
treated as "not measured at that step". A truncated last line, as a crashed run leaves it, is ignored; a malformed
line elsewhere, or a file that is not UTF-8, is an error naming the file and line (``entrolab.files``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from ..errors import ConfigError
from ..files import read_jsonl, read_yaml

PathLike = Union[str, Path]


class RunDirError(ConfigError):
    """A run directory is missing, or has no usable ``metrics.jsonl``; the message says which and where."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a run's JSON-lines file; a torn last line (a crash mid-write) is dropped, any other bad line
    names the file and line."""
    return read_jsonl(path, objects=True, torn_tail=True, what="run file")


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Run:
    """One run directory, loaded. ``records`` are the metrics merged by step, sorted by step."""

    path: Path
    records: list[dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def steps(self) -> np.ndarray:
        return np.array([r["step"] for r in self.records], dtype=np.float64)

    def keys(self) -> set[str]:
        return {k for r in self.records for k, v in r.items() if _is_number(v)}

    def has(self, key: str) -> bool:
        return any(_is_number(r.get(key)) for r in self.records)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the steps where ``key`` was measured (finite)."""
        pts = [(r["step"], r[key]) for r in self.records if _is_number(r.get(key))]
        if not pts:
            return np.zeros(0), np.zeros(0)
        s, v = zip(*pts)
        return np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64)

    def paired(self, x_key: str, y_key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, x, y)`` of the steps where both keys were measured."""
        pts = [(r["step"], r[x_key], r[y_key]) for r in self.records
               if _is_number(r.get(x_key)) and _is_number(r.get(y_key))]
        if not pts:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        s, x, y = zip(*pts)
        return (np.asarray(s, dtype=np.float64), np.asarray(x, dtype=np.float64),
                np.asarray(y, dtype=np.float64))

    def last(self, key: str) -> Optional[float]:
        s, v = self.series(key)
        return float(v[-1]) if v.size else None

    def method(self) -> str:
        """A short label for the run's method, read from config.yaml (``algorithm.method``, or a top-level
        ``method``) when it says one."""
        algo = self.config.get("algorithm")
        m = algo.get("method") if isinstance(algo, dict) else None
        m = m if m else self.config.get("method")
        if isinstance(m, (list, tuple)):
            return "+".join(str(x) for x in m)
        return str(m) if m else ""


def _read_config(path: Path) -> dict[str, Any]:
    cpath = path / "config.yaml"
    if not cpath.is_file():
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(cpath.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _load_foreign(path: Path) -> Optional[Run]:
    """A verl or TRL run (``foreign.py``), mapped to entrolab's metric names; None when the directory holds none."""
    from .foreign import load_foreign_records

    found = load_foreign_records(path)
    if found is None:
        return None
    records, info = found
    config = _read_config(path)
    config.setdefault("engine", info["engine"])
    config.setdefault("sources", info["sources"])
    return Run(path=path, records=records, samples=[], config=config)


def load_run(run_dir: PathLike) -> Run:
    """Load a run directory; :class:`RunDirError` if it does not exist or has no metrics."""
    path = Path(run_dir)
    if not path.exists():
        raise RunDirError(f"run directory {str(path)!r} does not exist")
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a directory; pass the run directory that holds metrics.jsonl")
    mpath = path / "metrics.jsonl"
    if not mpath.is_file():
        foreign = _load_foreign(path)
        if foreign is not None:
            return foreign
        raise RunDirError(f"{str(path)!r} has no metrics.jsonl, TensorBoard events, verl JSONL log or TRL "
                          "trainer_state.json; is it a run directory written by `entrolab train`, verl or TRL?")
    by_step: dict[float, dict[str, Any]] = {}
    for i, rec in enumerate(_read_jsonl(mpath)):
        step = rec.get("step", None)
        if not _is_number(step):
            raise RunDirError(f"{mpath}: record {i + 1} has no numeric 'step'")
        by_step.setdefault(step, {}).update(rec)
    if not by_step:
        raise RunDirError(f"{mpath} has no metrics records (the run logged no step yet)")
    records = [by_step[s] for s in sorted(by_step)]
    spath = path / "samples.jsonl"
    samples = _read_jsonl(spath) if spath.is_file() else []
    config: dict[str, Any] = {}
    cpath = path / "config.yaml"
    if cpath.is_file():
        loaded = read_yaml(cpath, what="run config")
        config = loaded if isinstance(loaded, dict) else {}
    return Run(path=path, records=records, samples=samples, config=config)

"""Knob components and their registries.

A *component* is a small dataclass whose fields are its hyperparameters, with the paper's defaults written once,
right there. Each knob of the unified objective (sampling, advantage, clip, kl, objective) has one ``Registry``;
a component registers under a unique name and is built by name with validated parameters.

Hooks a component may implement (all optional, no-ops by default):

- ``prepare(batch) -> batch``: once per rollout batch, before any update (e.g. batch-scope token selection);
- ``on_step_end(metrics)``: once per RL step, after the update (controllers update their state here);
- ``state_dict()`` / ``load_state_dict(state)``: state kept across steps, saved in checkpoints;
- ``requires``: names of optional ``RolloutBatch`` fields the component reads (e.g. ``ref_logprobs``);
- ``needs_off_policy``: True if the component can only act when the ratio π_θ/π_old differs from 1;
- ``parameters()``: trainable tensors the component owns (e.g. a learned log-partition), which engines add to the
  optimizer;
- ``pop_actions()``: engine actions the component requests after a step — ``"reset_reference"`` (copy the current
  policy into the reference) and ``"reset_optimizer"`` (clear the optimizer state) — which engines honour.

- ``engine_extras``: names of ``RolloutBatch.extras`` the engine must compute for the component (beyond a per-token
  loss: e.g. a clamped entropy from the full logits); an engine that cannot provide one refuses the method up front.

Engine-provided ``RolloutBatch.extras``: ``prompt_id`` (B,) int64, a stable id of each sample's prompt across steps
(for per-prompt history).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, ClassVar, Generic, Mapping, Optional, TypeVar

from ..batch import RolloutBatch


class ConfigError(ValueError):
    """A method, component or parameter name or value is invalid; the message says which and how to fix it."""


class Component:
    """Base class of every knob component (subclasses are dataclasses)."""

    name: ClassVar[str] = ""
    knob: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    needs_off_policy: ClassVar[bool] = False
    engine_extras: ClassVar[frozenset[str]] = frozenset()

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        return batch

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def parameters(self) -> list:
        return []

    def pop_actions(self) -> set[str]:
        return set()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise ConfigError(f"{self.knob} component {self.name!r} keeps no state but got {sorted(state)}")

    def params(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}  # type: ignore[arg-type]

    def spec(self) -> dict[str, Any]:
        """``{"name": ..., **params}``: enough to rebuild the component from its registry."""
        return {"name": self.name, **self.params()}


C = TypeVar("C", bound=Component)


def _check_type(cls_name: str, field: dataclasses.Field, value: Any, hints: dict[str, Any]) -> Any:
    """Coerce ints to floats for float fields; reject values of a clearly wrong type with a clear error."""
    hint = hints.get(field.name)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    allowed = args if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for a in allowed:
        if a in (int, float, str, bool) and isinstance(value, a) and not (a is int and isinstance(value, bool)):
            return value
    if any(a in (int, float, str, bool) for a in allowed):
        names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
        raise ConfigError(f"{cls_name}.{field.name}: expected {names}, got {value!r}")
    return value


class Registry(Generic[C]):
    """Name → component class for one knob. Registration rejects duplicates; lookups list the valid names."""

    def __init__(self, knob: str):
        self.knob = knob
        self._classes: dict[str, type[C]] = {}

    def register(self, name: str) -> Callable[[type[C]], type[C]]:
        def deco(cls: type[C]) -> type[C]:
            if name in self._classes:
                raise ConfigError(f"{self.knob} component {name!r} is already registered by {self._classes[name]}")
            if not dataclasses.is_dataclass(cls):
                raise TypeError(f"{cls.__name__} must be a dataclass to register as a {self.knob} component")
            cls.name = name
            cls.knob = self.knob
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._classes)

    def __contains__(self, name: str) -> bool:
        return name in self._classes

    def get(self, name: str) -> type[C]:
        if name not in self._classes:
            raise ConfigError(
                f"unknown {self.knob} component {name!r}; valid names: {', '.join(self.names())}"
            )
        return self._classes[name]

    def build(self, name: str, params: Optional[Mapping[str, Any]] = None) -> C:
        """Instantiate ``name`` with ``params``; unknown parameters are errors listing the allowed ones."""
        cls = self.get(name)
        params = dict(params or {})
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(
                f"{self.knob} component {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are: {allowed}"
            )
        hints = typing.get_type_hints(cls)
        checked = {k: _check_type(name, fields[k], v, hints) for k, v in params.items()}
        try:
            return cls(**checked)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.knob} component {name!r}: {e}") from e

    def defaults(self, name: str) -> dict[str, Any]:
        cls = self.get(name)
        out = {}
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out


def check_range(owner: str, name: str, value: float, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ConfigError naming ``owner.name`` unless lo ≤ value ≤ hi (open ends when asked)."""
    bad = False
    if lo is not None:
        bad |= value <= lo if lo_open else value < lo
    if hi is not None:
        bad |= value >= hi if hi_open else value > hi
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        rng = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"
        raise ConfigError(f"{owner}.{name} = {value!r} is out of range; allowed: {rng}")

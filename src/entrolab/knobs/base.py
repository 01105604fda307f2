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

- ``rollout_extras(ctx)`` / ``forward_extras(ctx)``: the ``RolloutBatch.extras`` the component reads beyond the batch's
  per-token tensors, computed by the component itself from engine primitives (``knobs/extras.py``): once per rollout
  batch without gradient, or in every update forward with gradient. ``extras`` names the keys it computes,
  ``engine_primitives`` what it needs from the engine; an engine that lacks one refuses the method up front;
- ``reward_source``: the reward source (``env/reward_sources.py``) the component needs, e.g. EVOL-RL's novelty
  rewards; engines run it instead of the verifier's rewards.

Engine-provided ``RolloutBatch.extras``: ``prompt_id`` (B,) int64, a stable id of each sample's prompt across steps
(for per-prompt history); ``input_ids``/``attention_mask`` (B, P + T), the full sequences.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Optional, TypeVar

from ..batch import RolloutBatch
from ..errors import ConfigError
from ..registry import Registry

if TYPE_CHECKING:
    from .extras import ForwardContext, RolloutContext

__all__ = ["Component", "component_registry"]


class Component:
    """Base class of every knob component (subclasses are dataclasses)."""

    name: ClassVar[str] = ""
    knob: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    needs_off_policy: ClassVar[bool] = False
    extras: ClassVar[frozenset[str]] = frozenset()
    engine_primitives: ClassVar[frozenset[str]] = frozenset()
    reward_source: ClassVar[Optional[str]] = None

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        return batch

    def rollout_extras(self, ctx: "RolloutContext") -> dict[str, Any]:
        """The ``extras`` this component computes once per rollout batch (no gradient); ``{}`` by default."""
        return {}

    def forward_extras(self, ctx: "ForwardContext") -> dict[str, Any]:
        """The ``extras`` this component computes in every update forward (with gradient); ``{}`` by default."""
        return {}

    @classmethod
    def computes_forward_extras(cls) -> bool:
        return cls.forward_extras is not Component.forward_extras

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


def component_registry(knob: str, kind: str = "") -> Registry:
    """The registry of one knob: entries must be dataclasses (their fields are the hyperparameters); registration
    stamps the component's ``name`` and ``knob``."""

    def stamp(name: str, cls: Any) -> None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"{getattr(cls, '__name__', cls)} must be a dataclass to register as a {knob} component")
        cls.name = name
        cls.knob = knob

    return Registry(kind or f"{knob} component", on_register=stamp)

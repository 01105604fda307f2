"""Sampling knob: which prompts are sampled, how trajectories are generated, and which groups an update learns from.

A strategy has three hooks, all optional:

- ``keep(batch) -> (B,) bool``: the samples to learn from; the trainer (and the toy harness) drop the rest before
  the advantage knob runs (``refill`` asks for more rollout batches, as DAPO does);
- ``rollout(engine, prompts, examples, n) -> Generation | None``: take over generation — branching/tree rollouts,
  extra rollouts at a controlled temperature, expert-guided rollouts; ``None`` = plain sampling of ``n`` per prompt;
- ``select_examples(engine, count) -> list | None``: choose the step's prompts (curricula); ``None`` = the stream.

``engine`` is a ``generation.engine.RolloutEngine``; that module's docstring is the contract (rows, groups, trainable
masks, tree extras). A strategy that overrides ``rollout`` or ``select_examples`` needs the engine primitive
``generation`` (set automatically). Strategies that branch live in ``knobs/sampling/trees.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch

from ...batch import RolloutBatch
from ...registry import Registry, check_range
from ..advantage.base import group_statistics
from ..base import Component, component_registry

if TYPE_CHECKING:
    from ...generation.engine import RolloutEngine

SAMPLINGS: Registry["SamplingStrategy"] = component_registry("sampling")


class SamplingStrategy(Component):
    """Base: ``keep(batch) -> (B,) bool``. ``refill`` = True asks the engine to generate more rollout batches
    (up to its limit) until enough samples are kept, as DAPO does; a plain filter (RAGEN) trains on what it keeps."""

    refill: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.rollout is not SamplingStrategy.rollout or cls.select_examples is not SamplingStrategy.select_examples:
            cls.engine_primitives = frozenset(cls.engine_primitives) | {"generation"}  # takes over generation

    @classmethod
    def takes_over_generation(cls) -> bool:
        """Whether the strategy chooses prompts or generates itself (it then needs the engine's ``generation``)."""
        return "generation" in cls.engine_primitives

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        return torch.ones(batch.batch_size, dtype=torch.bool, device=batch.rewards.device)

    def rollout(self, engine: "RolloutEngine", prompts: list[str], examples: list, n: int) -> Optional[Any]:
        """Generate the step's rows (a ``generation.rows.Generation``), or None for plain sampling (module doc)."""
        return None

    def select_examples(self, engine: "RolloutEngine", count: int) -> Optional[list]:
        """The step's ``count`` examples, or None to take the next ones of the trainer's stream."""
        return None


@SAMPLINGS.register("standard")
@dataclass
class StandardSampling(SamplingStrategy):
    """Learn from every sampled group."""


@SAMPLINGS.register("dynamic_sampling")
@dataclass
class DynamicSampling(SamplingStrategy):
    """Dynamic sampling (DAPO, 2503.14476): drop every group whose rewards are all equal (std 0 — all right or all
    wrong), since its GRPO advantages are all zero and it only dilutes the token-mean. DAPO over-generates until the
    batch is full; the trainer's ``max_gen_batches`` bounds that."""

    refill: ClassVar[bool] = True

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        return (std > 0) & (count > 1)


@SAMPLINGS.register("reward_std_filter")
@dataclass
class RewardStdFilter(SamplingStrategy):
    """RAGEN / StarPO-S uncertainty filtering (Wang et al., 2504.20073; mll-lab-nu/RAGEN ``_filter_rollout``):
    keep the groups (prompts) whose reward standard deviation U = Std_{τ∼π(·|s₀)}[R(τ)] is in the top
    ``keep_ratio`` of the batch — the top ⌊p·#groups⌋ by the unbiased std (at least one group here; RAGEN
    requires the product to cover a mini-batch), ties kept in batch order. Default p = 0.25
    (``rollout_filter_ratio: 0.25``, ``rollout_filter_type: std``)."""

    keep_ratio: float = 0.25
    """p: fraction of the batch's groups kept, the top ⌊p·#groups⌋ by reward std (RAGEN rollout_filter_ratio 0.25)."""

    def __post_init__(self) -> None:
        check_range("reward_std_filter", "keep_ratio", self.keep_ratio, lo=0.0, hi=1.0, lo_open=True)

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        _, std, _ = group_statistics(batch.rewards, batch.group_ids)
        groups, first = [], []
        for i, g in enumerate(batch.group_ids.tolist()):
            if g not in groups:
                groups.append(g)
                first.append(i)
        g_std = std[torch.tensor(first, dtype=torch.long)]
        n_keep = max(1, int(self.keep_ratio * len(groups)))
        order = torch.sort(g_std, descending=True, stable=True).indices[:n_keep]
        kept = torch.tensor([groups[int(j)] for j in order], dtype=batch.group_ids.dtype)
        return torch.isin(batch.group_ids, kept)

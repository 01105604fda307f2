"""Sampling knob: which groups of trajectories an update learns from.

A strategy returns a keep-mask over the samples of a rollout batch; the trainer (and the toy harness) drop the rest
before the advantage knob runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..batch import RolloutBatch
from .advantage import group_statistics
from .base import Component, Registry

SAMPLINGS: Registry["SamplingStrategy"] = Registry("sampling")


class SamplingStrategy(Component):
    """Base: ``keep(batch) -> (B,) bool``."""

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        return torch.ones(batch.batch_size, dtype=torch.bool, device=batch.rewards.device)


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

    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        return (std > 0) & (count > 1)

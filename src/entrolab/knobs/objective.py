"""Objective knob: terms that transform the per-token loss matrix before aggregation.

A term maps (ℓ (B, T), batch) → (ℓ' (B, T), metrics). Terms compose in order and share the policy loss's mask
and aggregation mode, so a bonus is weighted exactly like the tokens it rides on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..batch import BatchError, RolloutBatch
from ..ops.masked import masked_mean
from .base import Component, Registry, check_range

TERMS: Registry["ObjectiveTerm"] = Registry("objective")


class ObjectiveTerm(Component):
    """Base: ``apply(loss (B, T), batch) -> (loss (B, T), metrics)``."""

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


@TERMS.register("entropy_bonus")
@dataclass
class EntropyBonus(ObjectiveTerm):
    """Entropy bonus: ℓ_t ← ℓ_t − α·H_t, H_t the full-vocabulary entropy of the current policy at token t.

    Default α = 1e-3 (verl's former ``entropy_coeff`` default; RAGEN and EPO use it). Cui et al. (2505.22617 §4.1):
    1e-4..1e-3 had little effect, 1e-2 made entropy explode, 5e-3 stabilised it. The gradient must flow through
    H (a bonus computed under no_grad silently does nothing): this term refuses a detached entropy while the
    policy log-probs carry gradient.
    """

    requires = frozenset({"entropy"})
    coef: float = 1e-3

    def __post_init__(self) -> None:
        check_range("entropy_bonus", "coef", self.coef)

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("entropy", who="objective term 'entropy_bonus'")
        ent = batch.entropy
        if batch.logprobs is not None and batch.logprobs.requires_grad and not ent.requires_grad:
            raise BatchError(
                "objective term 'entropy_bonus': batch.entropy carries no gradient, so the bonus would do nothing; "
                "compute the entropy with gradient enabled (e.g. fused_logprobs_entropy outside torch.no_grad)"
            )
        return loss - self.coef * ent, {"entropy/bonus": float(self.coef * masked_mean(ent.detach(), batch.mask))}

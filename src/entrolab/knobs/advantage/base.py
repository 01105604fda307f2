"""Advantage knob: outcome-reward advantage estimators, broadcast to every valid token of a response.

Each estimator maps ``batch.rewards`` (B,) and ``batch.group_ids`` (B,) to ``advantages`` (B, T).
A group of size 1 offers no comparison and gets advantage 0 (for every group-relative estimator here); an estimator
whose baseline is not the group — a value model (GAE), a greedy response (ReMax), the batch (REINFORCE++) — sets
``groupwise = False`` and works with one response per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...batch import RolloutBatch
from ...ops.masked import masked_whiten
from ...registry import Registry, check_range
from ..base import Component, component_registry

ADVANTAGES: Registry["AdvantageEstimator"] = component_registry("advantage")


def group_statistics(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group mean, unbiased group std (0 for groups of one) and group size, each (B,)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    v = values.float()
    count = torch.zeros(n_groups, dtype=torch.float32, device=v.device).index_add_(0, inverse, torch.ones_like(v))
    total = torch.zeros(n_groups, dtype=torch.float32, device=v.device).index_add_(0, inverse, v)
    mean = total / count
    sq = torch.zeros(n_groups, dtype=torch.float32, device=v.device).index_add_(0, inverse, (v - mean[inverse]) ** 2)
    std = torch.sqrt(sq / (count - 1).clamp(min=1.0))
    return mean[inverse], std[inverse], count[inverse]


def broadcast_to_tokens(seq_values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) → (B, T), zero on padding."""
    return seq_values.float()[:, None] * mask.float()


class AdvantageEstimator(Component):
    """Base: ``compute(batch) -> advantages (B, T)``."""

    groupwise: ClassVar[bool] = True
    """Whether the baseline is the prompt's group, so a group of one gets advantage 0 (``rollout.n = 1`` is refused);
    an estimator with a learned or batch-wide baseline (GAE, ReMax, REINFORCE++) sets False."""

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        raise NotImplementedError


@ADVANTAGES.register("grpo")
@dataclass
class GRPOAdvantage(AdvantageEstimator):
    """GRPO (Shao et al., DeepSeekMath, 2402.03300): A_i = (R_i − mean_G R) / (std_G R + ε).

    std is the unbiased group standard deviation (as verl and TRL compute it); a group whose rewards are all equal
    gets A = 0.
    """

    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("grpo", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, std, count = group_statistics(batch.rewards, batch.group_ids)
        adv = (batch.rewards.float() - mean) / (std + self.eps)
        adv = torch.where(count > 1, adv, torch.zeros_like(adv))
        return broadcast_to_tokens(adv, batch.mask)


@ADVANTAGES.register("dr_grpo")
@dataclass
class DrGRPOAdvantage(AdvantageEstimator):
    """Dr. GRPO (Liu et al., "Understanding R1-Zero-Like Training", 2503.20783): A_i = R_i − mean_G R (no std division,
    which up-weights too-easy and too-hard prompts). Pair it with the ``seq-mean-token-sum-norm`` aggregation."""

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, _, count = group_statistics(batch.rewards, batch.group_ids)
        adv = torch.where(count > 1, batch.rewards.float() - mean, torch.zeros_like(mean))
        return broadcast_to_tokens(adv, batch.mask)


@ADVANTAGES.register("rloo")
@dataclass
class RLOOAdvantage(AdvantageEstimator):
    """RLOO (Ahmadian et al., 2402.14740): A_i = R_i − (1/(G−1)) Σ_{j≠i} R_j = G/(G−1)·(R_i − mean_G R)."""

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, _, count = group_statistics(batch.rewards, batch.group_ids)
        scale = count / (count - 1).clamp(min=1.0)
        adv = torch.where(count > 1, scale * (batch.rewards.float() - mean), torch.zeros_like(mean))
        return broadcast_to_tokens(adv, batch.mask)


@ADVANTAGES.register("reinforce_pp_baseline")
@dataclass
class ReinforcePPBaselineAdvantage(AdvantageEstimator):
    """REINFORCE++-baseline (Hu, 2501.03262; verl ``reinforce_plus_plus_baseline``): subtract the group mean,
    A_i = R_i − mean_G R, then whiten over all valid tokens of the batch: (A − mean_batch A)/std_batch A.
    Tokens of a group of one are left out of the whitening statistics and keep A = 0 (verl instead keeps the raw
    reward for such a group)."""

    eps: float = 1e-8
    """ε added to the batch std when whitening the mean-subtracted advantages."""

    def __post_init__(self) -> None:
        check_range("reinforce_pp_baseline", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, _, count = group_statistics(batch.rewards, batch.group_ids)
        adv = torch.where(count > 1, batch.rewards.float() - mean, torch.zeros_like(mean))
        # Whiten over the tokens of groups that offer a comparison; a group of one keeps advantage 0.
        comparable = batch.mask * (count > 1).to(batch.mask.dtype)[:, None]
        return masked_whiten(broadcast_to_tokens(adv, comparable), comparable, eps=self.eps)

"""Advantages reshaped by response properties: APO's suboptimal-trajectory complexity regularisation (arXiv 2506.21655).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...batch import RolloutBatch
from ...registry import check_range
from .base import ADVANTAGES, AdvantageEstimator, GRPOAdvantage, group_statistics


@ADVANTAGES.register("apo_stcr")
@dataclass
class APOAdvantage(AdvantageEstimator):
    """APO suboptimal-trajectory complexity regularisation, STCR (2506.21655; View-R1 code): GRPO advantages, then
    for an *incorrect* response (R ≤ ``correct_threshold``) longer than the mean length L̄⁺ of its group's correct
    responses, Δ = L_i − L̄⁺ > 0, A_i ← A_i·(1 + (1 − 1.00001^{−Δ})) (a longer wrong answer is pushed down harder,
    up to 2×); disabled in a group with no correct response. Lives in the KL module with the rest of APO."""

    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""
    correct_threshold: float = 0.5
    """A response is correct when its reward R > this; only incorrect ones are scaled."""
    base: float = 1.00001
    """Base b of the scale 1 + (1 − b^{−Δ}), Δ the excess length in tokens (≥ 1; View-R1 code 1.00001)."""

    def __post_init__(self) -> None:
        check_range("apo_stcr", "eps", self.eps, lo=0.0)
        check_range("apo_stcr", "base", self.base, lo=1.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        adv = GRPOAdvantage(eps=self.eps).compute(batch)
        correct = (batch.rewards > self.correct_threshold).float()
        length = batch.mask.sum(-1)
        n_ok, _, _ = group_statistics(correct, batch.group_ids)
        len_ok, _, _ = group_statistics(length * correct, batch.group_ids)
        mean_len_ok = len_ok / n_ok.clamp(min=1e-12)  # (Σ_correct L / G) / (#correct / G)
        delta = length - mean_len_ok
        scale = (2.0 - self.base ** (-delta.double().clamp(min=0.0))).float()  # float64: base is 1 + 1e-5
        apply = (correct == 0) & (n_ok > 0) & (delta > 0)
        return adv * torch.where(apply, scale, torch.ones_like(scale))[:, None]

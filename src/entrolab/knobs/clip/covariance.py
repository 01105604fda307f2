"""Clip-Cov (arXiv 2505.22617): detach the gradient of a few high-covariance tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.dynamics import centered_covariance
from ...registry import check_range
from .base import (
    CLIPS,
    SCOPES,
    ClipRule,
    TrustRegion,
)


def random_subset(candidates: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """A bool mask like ``candidates`` with ``min(count, #candidates)`` of its True entries kept, uniformly at random."""
    flat = candidates.flatten()
    idx = torch.nonzero(flat, as_tuple=False).flatten()
    out = torch.zeros_like(flat)
    if idx.numel() and count > 0:
        perm = torch.randperm(idx.numel(), generator=generator)[: min(count, idx.numel())]
        out[idx[perm.to(idx.device)]] = True
    return out.view_as(candidates)


def _check_scope(owner: str, scope: str) -> None:
    if scope not in SCOPES:
        raise ConfigError(f"{owner}.scope = {scope!r} is unknown; choose one of {', '.join(SCOPES)}")


def _generator_state(g: torch.Generator) -> dict[str, Any]:
    return {"generator": g.get_state()}


@CLIPS.register("clip_cov")
@dataclass
class ClipCov(ClipRule):
    """Clip-Cov (Cui et al., 2505.22617 Eqs. 11–12; verl ``compute_policy_loss_clip_cov``).

    1. Cov(y_i) = (log π(y_i) − mean log π)·(A(y_i) − mean A) over the valid tokens (Eq. 10);
    2. candidates: ω_low < Cov < ω_high, excluding tokens the PPO clip already cuts;
    3. ⌊r·N⌋ (at least 1) candidates drawn uniformly at random get their gradient detached (loss × 0);
    4. ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)) elsewhere.

    Defaults r = 2e-4, ω_low = 1, ω_high = 5 (paper and code). The released 7B/32B scripts open the PPO clip to
    ε_low = ε_high = 1 with dual clip c = 10; here ε = 0.2 (the paper's Eq. 12) unless overridden.
    ``scope``: ``micro`` computes Cov and draws per micro-batch with the current log-probs (the reference code);
    ``batch`` does it once per rollout batch with π_old (the paper's text), before any update — at that point
    r ≡ 1, so no candidate is PPO-clipped. Detaching acts on-policy too (it removes the token's gradient whatever
    the ratio).
    """

    keep_metric = "cov"
    ratio: float = 2e-4
    """Fraction r of valid tokens detached: ⌊r·N⌋, at least 1 (a fraction, not percent; paper and code 2e-4)."""
    cov_lb: float = 1.0
    """Lower covariance bound ω_low: candidates have Cov(y_i) > ω_low (paper and code 1)."""
    cov_ub: float = 5.0
    """Upper covariance bound ω_high: candidates have Cov(y_i) < ω_high (paper and code 5)."""
    eps_low: float = 0.2
    """PPO lower clip width ε_low, bound 1 − ε_low (Eq. 12's 0.2; the released 7B/32B scripts use 1)."""
    eps_high: float = 0.2
    """PPO upper clip width ε_high, bound 1 + ε_high (Eq. 12's 0.2; the released 7B/32B scripts use 1)."""
    scope: str = "micro"
    """'micro': Cov and draw per micro-batch, current log-probs (code); 'batch': per rollout batch, π_old (paper)."""
    seed: int = 0
    """Seed of the generator drawing the detached tokens uniformly at random (its state is checkpointed)."""
    _gen: torch.Generator = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("clip_cov", "ratio", self.ratio, lo=0.0, hi=1.0, lo_open=True)
        if not self.cov_lb < self.cov_ub:
            raise ConfigError(f"clip_cov.cov_lb ({self.cov_lb}) must be < clip_cov.cov_ub ({self.cov_ub})")
        _check_scope("clip_cov", self.scope)
        self._gen = torch.Generator().manual_seed(self.seed)

    def select(self, cov: torch.Tensor, eligible: torch.Tensor, num_valid: int) -> torch.Tensor:
        candidates = eligible & (cov > self.cov_lb) & (cov < self.cov_ub)
        return random_subset(candidates, max(1, int(self.ratio * num_valid)), self._gen)

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        if self.scope != "batch":
            return batch
        batch.require("advantages", who="clip_cov (scope=batch)")
        cov = centered_covariance(batch.old_logprobs, batch.advantages, batch.mask)
        chosen = self.select(cov, batch.mask > 0, batch.num_tokens)
        return batch.replace(extras={**batch.extras, "clip_cov_detach": chosen})

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(self.eps_low, self.eps_high)

    def keep(self, batch: RolloutBatch, ratio: torch.Tensor, clipped: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every token but the chosen high-covariance ones (chosen among those the PPO clip leaves alone)."""
        valid = batch.mask > 0
        if self.scope == "micro":
            cov = centered_covariance(batch.logprobs, batch.advantages, batch.mask)
            eligible = valid & ~clipped["low"] & ~clipped["high"]
            chosen = self.select(cov, eligible, int(valid.sum()))
        else:
            if "clip_cov_detach" not in batch.extras:
                raise ConfigError("clip_cov with scope='batch' needs PolicyObjective.prepare() on the rollout batch")
            chosen = batch.extras["clip_cov_detach"].bool() & valid
        return ~chosen

    def state_dict(self) -> dict[str, Any]:
        return _generator_state(self._gen)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._gen.set_state(state["generator"])

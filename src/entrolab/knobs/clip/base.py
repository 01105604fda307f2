"""Clip knob: the per-token policy-gradient surrogate and its trust-region rule.

Every rule maps (log π_θ, log π_old, A) on the valid tokens to a per-token loss ℓ (B, T) whose gradient is the
policy gradient of that token. With the ratio r = π_θ/π_old (= exp(log π_θ − log π_old), log-ratio clamped to ±20
for overflow safety, as verl does):

- unclipped importance sampling: ℓ = −A·r
- PPO (Schulman et al. 1707.06347): ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high))
- dual clip (Ye et al. 1912.09729): for A < 0, ℓ = min(ℓ_PPO, −c·A)

Metrics: ``clip/frac_low`` (A<0 and r<1−ε_low: gradient cut), ``clip/frac_high`` (A>0 and r>1+ε_high),
``clip/frac_dual`` (dual clip active), ``clip/frac_cov`` (Clip-Cov detached), ``ratio/mean``, ``ratio/max``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...batch import RolloutBatch
from ...ops.masked import masked_mean
from ...registry import Registry, check_range
from ..base import Component, component_registry

CLIPS: Registry["ClipRule"] = component_registry("clip")


SCOPES = ("micro", "batch")


def importance_ratio(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """r = exp(clamp(log π_θ − log π_old, −20, 20))."""
    return torch.exp(torch.clamp(logp - old_logp.detach(), -20.0, 20.0))


def ppo_token_loss(
    ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float, dual_clip: Optional[float] = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)), then min(ℓ, −c·A) where A < 0 if ``dual_clip`` = c is set.

    Returns the loss and bool masks ``low``/``high`` (PPO clip active, gradient zero) and ``dual``.
    """
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    active = clipped > unclipped
    masks = {"low": active & (adv < 0), "high": active & (adv > 0)}
    if dual_clip is not None:
        cap = -adv * dual_clip
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(dual, cap, loss)
        masks["dual"] = dual
    return loss, masks


class ClipRule(Component):
    """Base: ``pg_loss(batch) -> (loss (B, T), metrics)``; ``batch`` carries logprobs, old_logprobs, advantages."""

    requires = frozenset({"logprobs", "advantages"})

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


def _frac(m: torch.Tensor, mask: torch.Tensor) -> float:
    return float(masked_mean(m.float(), mask))


def _ratio_metrics(ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    r = ratio.detach()
    valid = mask > 0
    return {
        "ratio/mean": float(masked_mean(r, mask)),
        "ratio/max": float(r[valid].max()) if bool(valid.any()) else float("nan"),
    }


@dataclass
class _PPOFamily(ClipRule):
    """Shared body of the PPO-style rules; subclasses only set their defaults."""

    eps_low: float = 0.2
    """Lower clip width ε_low: the ratio r is clipped below at 1 − ε_low (a fraction in [0, 1])."""
    eps_high: float = 0.2
    """Upper clip width ε_high: the ratio r is clipped above at 1 + ε_high (≥ 0)."""
    dual_clip: Optional[float] = None
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""

    def __post_init__(self) -> None:
        check_range(self.name, "eps_low", self.eps_low, lo=0.0, hi=1.0)
        check_range(self.name, "eps_high", self.eps_high, lo=0.0)
        if self.dual_clip is not None:
            check_range(self.name, "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who=f"clip rule {self.name!r}")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        loss, masks = ppo_token_loss(ratio, batch.advantages, self.eps_low, self.eps_high, self.dual_clip)
        metrics = {f"clip/frac_{k}": _frac(v, batch.mask) for k, v in masks.items()}
        metrics.update(_ratio_metrics(ratio, batch.mask))
        return loss, metrics


@CLIPS.register("ppo")
@dataclass
class PPOClip(_PPOFamily):
    """PPO clip (1707.06347), symmetric: ℓ = max(−A·r, −A·clip(r, 1−ε, 1+ε)), ε = 0.2."""

    eps_low: float = 0.2
    eps_high: float = 0.2


@CLIPS.register("clip_higher")
@dataclass
class ClipHigher(_PPOFamily):
    """Clip-higher (DAPO, 2503.14476): decoupled bounds clip(r, 1−ε_low, 1+ε_high), ε_low = 0.2, ε_high = 0.28.

    A wider upper bound lets low-probability tokens with A > 0 grow, which keeps entropy from collapsing.
    """

    eps_low: float = 0.2
    eps_high: float = 0.28
    """Upper clip width ε_high, bound 1 + ε_high (DAPO's 0.28, wider than ε_low so rare A > 0 tokens can grow)."""


@CLIPS.register("dual_clip")
@dataclass
class DualClip(_PPOFamily):
    """Dual-clip PPO (Ye et al., 1912.09729): for A < 0 the loss is also capped, ℓ = min(ℓ_PPO, −c·A), c = 3
    (verl's ``clip_ratio_c`` default), so a huge ratio on a negative-advantage token cannot explode the update."""

    dual_clip: Optional[float] = 3.0
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ_PPO, −c·A) (verl's clip_ratio_c default 3); None = off."""


@CLIPS.register("none")
@dataclass
class NoClip(ClipRule):
    """Unclipped importance-sampled policy gradient: ℓ = −A·r (KL-Cov's surrogate, 2505.22617 Eq. 14)."""

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'none'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        return -batch.advantages * ratio, _ratio_metrics(ratio, batch.mask)

"""Clip knob: the per-token policy-gradient surrogate and its trust-region rule.

Every rule maps (log π_θ, log π_old, A) on the valid tokens to a per-token loss ℓ (B, T) whose gradient is the
policy gradient of that token. With the ratio r = π_θ/π_old (= exp(log π_θ − log π_old), log-ratio clamped to ±20
for overflow safety, as verl does):

- unclipped importance sampling: ℓ = −A·r
- PPO (Schulman et al. 1707.06347): ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high))
- dual clip (Ye et al. 1912.09729): for A < 0, ℓ = min(ℓ_PPO, −c·A)

Every rule is an instance of one template (:class:`ClipRule`): a rule states its trust region (bounds, and
optionally a replacement ratio, a token weight, tokens to drop or to freeze) and the template does the rest.

Metrics: ``clip/frac_low`` (A<0 and r<1−ε_low: gradient cut), ``clip/frac_high`` (A>0 and r>1+ε_high),
``clip/frac_dual`` (dual clip active), ``clip/frac_cov`` (Clip-Cov detached), ``ratio/mean``, ``ratio/max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Optional, Union

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
class TrustRegion:
    """What a clip rule decides for one loss call (:meth:`ClipRule.trust_region`): the PPO bounds ε_low, ε_high (floats
    or (B, T) tensors; ``math.inf`` leaves a side open; both None: no clipping at all, ℓ = −A·r), and optionally a
    ratio that replaces the token importance ratio (ESPO's grouped ratio), a per-token loss weight, and the rule's own
    metrics. ``logprobs``/``old_logprobs`` are filled by the template (when the rule keeps the token ratio) for
    surrogates written on log π rather than on the ratio (CISPO, DPPO, DRO, GPG, VESPO: ℓ = −sg(w)·A·log π); a
    rule composed by another knob with its own ratio (SimKO) gets None and uses log r instead, whose gradient is the
    same and whose value differs by the constant −sg(w)·A·log π_old."""

    eps_low: Union[float, torch.Tensor, None]
    eps_high: Union[float, torch.Tensor, None]
    ratio: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None
    metrics: dict[str, float] = field(default_factory=dict)
    logprobs: Optional[torch.Tensor] = None
    old_logprobs: Optional[torch.Tensor] = None

    @property
    def clips(self) -> bool:
        return self.eps_low is not None or self.eps_high is not None


class ClipRule(Component):
    """The clip-rule template. ``pg_loss(batch) -> (loss (B, T), metrics)`` checks the batch, computes the importance
    ratio once, asks the rule for its trust region, applies the surrogate and the dual clip, then the rule's keep and
    detach masks and its token weight, and reports the common metrics (``clip/frac_low``, ``clip/frac_high``,
    ``clip/frac_dual``, ``ratio/mean``, ``ratio/max``) with the rule's own.

    A rule implements :meth:`trust_region` and, where it needs them, :meth:`keep` (tokens outside get loss 0:
    Clip-Cov), :meth:`detach` (tokens whose loss keeps its value but passes no gradient: ERC) or :meth:`surrogate`
    (another per-token loss under the same bounds: ASPO, CE-GPPO). The standard fields ``eps_low`` ∈ [0, 1],
    ``eps_high`` ≥ 0 (None = open) and ``dual_clip`` > 1 (None = off) are validated here, once, for every rule that
    has them; a rule with more checks calls ``super().__post_init__()`` first.
    """

    requires = frozenset({"logprobs", "advantages"})
    keep_metric: ClassVar[str] = "dropped"
    """Suffix of the metric ``clip/frac_<keep_metric>``: the share of valid tokens :meth:`keep` drops."""
    detach_metric: ClassVar[str] = "detached"
    """Suffix of the metric ``clip/frac_<detach_metric>``: the share of valid tokens :meth:`detach` freezes."""

    def __post_init__(self) -> None:
        if getattr(self, "eps_low", None) is not None:
            check_range(self.name, "eps_low", self.eps_low, lo=0.0, hi=1.0)
        if getattr(self, "eps_high", None) is not None:
            check_range(self.name, "eps_high", self.eps_high, lo=0.0)
        if getattr(self, "dual_clip", None) is not None:
            check_range(self.name, "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    # ----------------------------------------------------------------------------------------- what a rule decides
    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        raise NotImplementedError

    def keep(self, batch: RolloutBatch, ratio: torch.Tensor, clipped: dict[str, torch.Tensor]
             ) -> Optional[torch.Tensor]:
        """Bool (B, T) of the tokens that keep their loss (the others contribute 0), or None for all."""
        return None

    def detach(self, batch: RolloutBatch, ratio: torch.Tensor, clipped: dict[str, torch.Tensor]
               ) -> Optional[torch.Tensor]:
        """Bool (B, T) of the tokens whose loss passes no gradient (its value kept), or None for none."""
        return None

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per-token loss and clip masks for ``ratio`` and ``adv`` under ``trust``: PPO's clipped surrogate with the
        rule's dual clip, or −A·r when the region has no bounds. Other knobs compose it (SimKO)."""
        if not trust.clips:
            return -adv * ratio, {}
        eps_low = 1.0 if trust.eps_low is None else trust.eps_low
        eps_high = math.inf if trust.eps_high is None else trust.eps_high
        return ppo_token_loss(ratio, adv, eps_low, eps_high, getattr(self, "dual_clip", None))

    # ----------------------------------------------------------------------------------------- the template
    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require(*sorted(self.requires), who=f"clip rule {self.name!r}")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        trust = self.trust_region(batch, ratio)
        if trust.ratio is not None:
            ratio = trust.ratio
        else:
            trust.logprobs, trust.old_logprobs = batch.logprobs, batch.old_logprobs.detach()
        loss, masks = self.surrogate(ratio, batch.advantages, trust)
        metrics = {f"clip/frac_{k}": _frac(v, batch.mask) for k, v in masks.items()}
        keep = self.keep(batch, ratio, masks)
        if keep is not None:
            loss = torch.where(keep, loss, torch.zeros_like(loss))
            metrics[f"clip/frac_{self.keep_metric}"] = _frac(~keep, batch.mask)
        frozen = self.detach(batch, ratio, masks)
        if frozen is not None:
            loss = torch.where(frozen, loss.detach(), loss)
            metrics[f"clip/frac_{self.detach_metric}"] = _frac(frozen, batch.mask)
        if trust.weight is not None:
            loss = loss * trust.weight
        metrics.update(_ratio_metrics(ratio, batch.mask))
        metrics.update(trust.metrics)
        return loss, metrics


@dataclass
class _PPOFamily(ClipRule):
    """Shared body of the PPO-style rules (fixed bounds); subclasses only set their defaults."""

    eps_low: float = 0.2
    """Lower clip width ε_low: the ratio r is clipped below at 1 − ε_low (a fraction in [0, 1])."""
    eps_high: float = 0.2
    """Upper clip width ε_high: the ratio r is clipped above at 1 + ε_high (≥ 0)."""
    dual_clip: Optional[float] = None
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(self.eps_low, self.eps_high)


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

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(None, None)

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

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..batch import RolloutBatch
from ..ops.dynamics import centered_covariance
from ..ops.masked import masked_mean
from .base import Component, ConfigError, Registry, check_range

CLIPS: Registry["ClipRule"] = Registry("clip")

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
    eps_high: float = 0.2
    dual_clip: Optional[float] = None

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


@CLIPS.register("dual_clip")
@dataclass
class DualClip(_PPOFamily):
    """Dual-clip PPO (Ye et al., 1912.09729): for A < 0 the loss is also capped, ℓ = min(ℓ_PPO, −c·A), c = 3
    (verl's ``clip_ratio_c`` default), so a huge ratio on a negative-advantage token cannot explode the update."""

    dual_clip: Optional[float] = 3.0


@CLIPS.register("none")
@dataclass
class NoClip(ClipRule):
    """Unclipped importance-sampled policy gradient: ℓ = −A·r (KL-Cov's surrogate, 2505.22617 Eq. 14)."""

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'none'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        return -batch.advantages * ratio, _ratio_metrics(ratio, batch.mask)


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

    ratio: float = 2e-4
    cov_lb: float = 1.0
    cov_ub: float = 5.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    scope: str = "micro"
    seed: int = 0
    _gen: torch.Generator = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("clip_cov", "ratio", self.ratio, lo=0.0, hi=1.0, lo_open=True)
        if not self.cov_lb < self.cov_ub:
            raise ConfigError(f"clip_cov.cov_lb ({self.cov_lb}) must be < clip_cov.cov_ub ({self.cov_ub})")
        check_range("clip_cov", "eps_low", self.eps_low, lo=0.0, hi=1.0)
        check_range("clip_cov", "eps_high", self.eps_high, lo=0.0)
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

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'clip_cov'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        loss, masks = ppo_token_loss(ratio, batch.advantages, self.eps_low, self.eps_high)
        valid = batch.mask > 0
        if self.scope == "micro":
            cov = centered_covariance(batch.logprobs, batch.advantages, batch.mask)
            eligible = valid & ~masks["low"] & ~masks["high"]
            chosen = self.select(cov, eligible, int(valid.sum()))
        else:
            if "clip_cov_detach" not in batch.extras:
                raise ConfigError("clip_cov with scope='batch' needs PolicyObjective.prepare() on the rollout batch")
            chosen = batch.extras["clip_cov_detach"].bool() & valid
        loss = torch.where(chosen, torch.zeros_like(loss), loss)
        metrics = {f"clip/frac_{k}": _frac(v, batch.mask) for k, v in masks.items()}
        metrics["clip/frac_cov"] = _frac(chosen, batch.mask)
        metrics.update(_ratio_metrics(ratio, batch.mask))
        return loss, metrics

    def state_dict(self) -> dict[str, Any]:
        return _generator_state(self._gen)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._gen.set_state(state["generator"])

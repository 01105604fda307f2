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

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..batch import RolloutBatch
from ..ops.dynamics import centered_covariance
from ..ops.masked import masked_mean
from .advantage import ADVANTAGES, AdvantageEstimator, broadcast_to_tokens
from .base import Component, ConfigError, Registry, check_range, component_registry

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


# =============================================================================================================
# Method catalog II (issue 7): entropy-aware clip rules. Shared helpers first, then one rule per paper.
# =============================================================================================================
ENTROPY_SOURCES = ("current", "old")


def _check_entropy_source(owner: str, source: str) -> None:
    if source not in ENTROPY_SOURCES:
        raise ConfigError(f"{owner}.entropy = {source!r} is unknown; choose one of {', '.join(ENTROPY_SOURCES)}")


def token_entropy(batch: RolloutBatch, source: str, who: str) -> torch.Tensor:
    """The detached per-token entropy a selection rule reads: ``current`` (π_θ, ``batch.entropy``, what the Archer
    and ASPO code use) or ``old`` (π_old, ``batch.old_entropy``, fixed for the whole rollout batch)."""
    name = "entropy" if source == "current" else "old_entropy"
    batch.require(name, who=who)
    return getattr(batch, name).detach().float()


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float = 0.8) -> torch.Tensor:
    """Bool (B, T): the valid tokens whose entropy is *above* their own response's ``quantile``-quantile (linear
    interpolation over the response's valid tokens, ``torch.nanquantile``) — the top 20 % "forking" tokens of
    Archer (2507.15778), ASPO (2510.06062) and ESPO (2512.00499) at the default 0.8. Ties at the quantile count
    as low-entropy, as in the reference code (``H > q80``)."""
    valid = mask > 0
    ent = torch.where(valid, entropy.detach().float(), torch.full_like(entropy, float("nan"), dtype=torch.float32))
    q = torch.nanquantile(ent, quantile, dim=-1, keepdim=True)  # (B, 1); NaN for an empty response
    return (ent > q) & valid


def _check_quantile(owner: str, q: float) -> None:
    check_range(owner, "quantile", q, lo=0.0, hi=1.0)


def _clip_metrics(masks: Mapping[str, torch.Tensor], ratio: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    out = {f"clip/frac_{k}": _frac(v, mask) for k, v in masks.items()}
    out.update(_ratio_metrics(ratio, mask))
    return out


def _grad_through(ratio: torch.Tensor) -> torch.Tensor:
    """r / sg(r): value 1, gradient ∇ log π — the carrier of a gradient whose weight is chosen separately."""
    return ratio / ratio.detach()


# ------------------------------------------------------------------------------------------- Park et al.
@CLIPS.register("clip_low_high")
@dataclass
class ClipLowHigh(ClipRule):
    """Clip-low / clip-high as two separate entropy knobs (Park et al., 2509.26114).

    ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)), with ε_high = None meaning no upper bound (clip-high disabled)
    and ε_low = 1 meaning no lower bound. Tabular-softmax theorems of the paper: a *clip-low* event
    (A < 0, r < 1−ε_low) removes an entropy-decreasing update, so clip-low raises entropy; a *clip-high* event
    (A > 0, r > 1+ε_high) removes an entropy-increasing one, so clip-high lowers it; with the standard symmetric
    ε = 0.2 the clip-high effect dominates and entropy falls even under random rewards. The recipe: disable
    clip-high and clip low more aggressively (a smaller ε_low). Defaults ε_low = 0.2 (the standard value; the
    paper's own ε settings were not retrieved) and ε_high = None (clip-high disabled, per the reviews).
    ``clip/frac_low`` and ``clip/frac_high`` count the two events separately.
    """

    eps_low: float = 0.2
    eps_high: Optional[float] = None
    dual_clip: Optional[float] = None

    def __post_init__(self) -> None:
        check_range("clip_low_high", "eps_low", self.eps_low, lo=0.0, hi=1.0)
        if self.eps_high is not None:
            check_range("clip_low_high", "eps_high", self.eps_high, lo=0.0)
        if self.dual_clip is not None:
            check_range("clip_low_high", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'clip_low_high'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        eps_high = float("inf") if self.eps_high is None else self.eps_high
        loss, masks = ppo_token_loss(ratio, batch.advantages, self.eps_low, eps_high, self.dual_clip)
        return loss, _clip_metrics(masks, ratio, batch.mask)


# ------------------------------------------------------------------------------------------- EAG-RL
@CLIPS.register("eag_rl")
@dataclass
class EntropyAdaptiveClipHigh(ClipRule):
    """EAG-RL entropy-aware adaptive up-clipping (Fang et al., 2508.13579), best-supported reading.

    Per trajectory τ: H̄(τ) = mean old-policy entropy over its tokens; min–max normalise it over the rollout
    batch (``scope='batch'``) or over its group (``'group'``), h(τ) ∈ [0, 1] (h = 0 when all are equal), and map
    linearly ε_high(τ) = ε_min + (ε_max − ε_min)·h(τ); the lower bound stays 1 − ε_low. Then
    ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high(τ))). Defaults ε_min = 0.2, ε_max = 0.4 ([3p] summaries),
    ε_low = 0.2 (not found; the PPO default). Departures: the paper averages over the "key clinical-feature"
    tokens only (an EHR-specific tag parse); here every response token counts. The bounds are computed once per
    rollout batch in ``prepare`` (``extras['eag_eps_high']``); without it, over the batch the loss is given.
    The attention-alignment reward of the paper is reward-side and not part of this rule.
    """

    requires = frozenset({"logprobs", "advantages", "old_entropy"})
    eps_low: float = 0.2
    eps_high_min: float = 0.2
    eps_high_max: float = 0.4
    scope: str = "batch"

    def __post_init__(self) -> None:
        check_range("eag_rl", "eps_low", self.eps_low, lo=0.0, hi=1.0)
        check_range("eag_rl", "eps_high_min", self.eps_high_min, lo=0.0)
        if self.eps_high_max < self.eps_high_min:
            raise ConfigError(f"eag_rl.eps_high_max ({self.eps_high_max}) must be ≥ eps_high_min ({self.eps_high_min})")
        if self.scope not in ("batch", "group"):
            raise ConfigError(f"eag_rl.scope = {self.scope!r} is unknown; choose batch or group")

    def upper_widths(self, batch: RolloutBatch) -> torch.Tensor:
        """ε_high(τ) per sequence (B,)."""
        batch.require("old_entropy", who="clip rule 'eag_rl'")
        h = masked_mean(batch.old_entropy.detach().float(), batch.mask, dim=-1)  # (B,)
        has = batch.mask.sum(-1) > 0
        if self.scope == "batch":
            keys = torch.zeros_like(batch.group_ids)
        else:
            keys = batch.group_ids
        norm = torch.zeros_like(h)
        for k in torch.unique(keys):
            sel = (keys == k) & has
            if not bool(sel.any()):
                continue
            lo, hi = h[sel].min(), h[sel].max()
            if float(hi - lo) > 0:
                norm[sel] = (h[sel] - lo) / (hi - lo)
        return self.eps_high_min + (self.eps_high_max - self.eps_high_min) * norm

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        return batch.replace(extras={**batch.extras, "eag_eps_high": self.upper_widths(batch)})

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'eag_rl'")
        eps_high = batch.extras.get("eag_eps_high")
        if eps_high is None:
            eps_high = self.upper_widths(batch)
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        eps_high_t = eps_high.float()[:, None].expand_as(ratio)
        loss, masks = ppo_token_loss(ratio, batch.advantages, torch.full_like(eps_high_t, self.eps_low), eps_high_t)
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics["clip/eps_high_mean"] = float(eps_high.float().mean())
        return loss, metrics


# ------------------------------------------------------------------------------------------- BAPO
def bapo_balance(ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, c_low: float, c_high: float,
                 eps: float) -> float:
    """BAPO's positive/negative balance ρ = P/(N + eps) with the code's value-based contributions:
    P = Σ_{A≥0} min(r, c_high)·A, N = Σ_{A<0} max(r, c_low)·|A| over valid tokens (ρ = ∞ when N = 0)."""
    r = ratio.detach()
    eff = torch.where(adv >= 0, torch.clamp(r, max=c_high), torch.clamp(r, min=c_low)) * adv * mask
    pos = float(eff.clamp(min=0).sum())
    neg = float((-eff.clamp(max=0)).sum())
    return float("inf") if neg <= 0 else pos / (neg + eps)


@CLIPS.register("bapo")
@dataclass
class BAPOClip(ClipRule):
    """BAPO adaptive clipping (Xi et al., 2510.18927), the *code reading* (WooooDyy/BAPO
    ``recipe/bapo/policy_loss.py`` and ``bapo_trainer.yaml``).

    Bounds are explicit ratio bounds c_low < 1 < c_high. ρ = P/N with P = Σ_{A≥0} min(r, c_high)·A and
    N = Σ_{A<0} max(r, c_low)·|A| (``bapo_balance``). Search, per loss call: start at (a⁻, a⁺) = (0.6, 1.2);
    while ρ < ρ₀ and c_low < b⁻ = 0.8: c_low += δ; then while still ρ < ρ₀ and c_high < b⁺ = 2.0: c_high += δ
    (δ = 0.05, ρ recomputed after each step, ρ₀ = 1 — a positive share of ½). Loss: dual-clip PPO with the found
    bounds, ℓ = max(−A·r, −A·clip(r, c_low, c_high)), and min(ℓ, −c·A) for A < 0 with c = 3.

    The other reading (paper/README and a [3p] note of Algorithm 1): ρ is the *positive share* of the surrogate
    magnitude with π_rollout weights, target 0.5 (0.4 in a note), ranges c_low ∈ [0.6, 0.9], c_high ∈ [1.2, 3.0],
    c_high raised first (δ₁ = 0.05) then c_low (δ₂ = 0.02). Note that under the value-based ρ raising c_low
    *increases* N, so the code's first loop, once entered, runs c_low to b⁻ (filtering low-ratio negatives) and
    the balance is restored by c_high alone. The reference all-reduces P and N across data-parallel ranks, here
    they are the micro-batch's. Acts only off-policy (on the first on-policy pass r ≡ 1 and the bounds cannot
    bind).

    Stateless by design (no ``state_dict``): the search restarts from (a⁻, a⁺) at every call, as in the code
    (``ratio_low_cur = ratio_lower_start`` on each loss call) and the card. Carrying the last bounds over as a warm
    start would change the method: the search only ever *raises* a bound, so a warm-started c_high could never
    return to a⁺ once one negative-dominated batch had pushed it up — the bounds would ratchet to (b⁻, b⁺) and stay.
    The searched bounds and ρ of every call are reported as the metrics ``bapo/c_low``, ``bapo/c_high`` and
    ``bapo/pos_neg_ratio``; nothing else would need checkpointing.
    """

    needs_off_policy = True
    c_low: float = 0.6
    c_low_max: float = 0.8
    c_high: float = 1.2
    c_high_max: float = 2.0
    step_low: float = 0.05
    step_high: float = 0.05
    target: float = 1.0
    dual_clip: Optional[float] = 3.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_range("bapo", "c_low", self.c_low, lo=0.0, hi=1.0)
        check_range("bapo", "c_low_max", self.c_low_max, lo=self.c_low, hi=1.0)
        check_range("bapo", "c_high", self.c_high, lo=1.0)
        check_range("bapo", "c_high_max", self.c_high_max, lo=self.c_high)
        check_range("bapo", "step_low", self.step_low, lo=0.0)
        check_range("bapo", "step_high", self.step_high, lo=0.0)
        check_range("bapo", "target", self.target, lo=0.0)
        if self.dual_clip is not None:
            check_range("bapo", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def search(self, ratio: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, float]:
        """(c_low, c_high, ρ) after the code's two-stage search."""
        lo, hi = self.c_low, self.c_high
        rho = bapo_balance(ratio, adv, mask, lo, hi, self.eps)
        while rho < self.target and lo < self.c_low_max and self.step_low > 0:
            lo = min(lo + self.step_low, self.c_low_max)
            rho = bapo_balance(ratio, adv, mask, lo, hi, self.eps)
        while rho < self.target and hi < self.c_high_max and self.step_high > 0:
            hi = min(hi + self.step_high, self.c_high_max)
            rho = bapo_balance(ratio, adv, mask, lo, hi, self.eps)
        return lo, hi, rho

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'bapo'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        lo, hi, rho = self.search(ratio, batch.advantages, batch.mask)
        loss, masks = ppo_token_loss(ratio, batch.advantages, 1.0 - lo, hi - 1.0, self.dual_clip)
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics.update({"bapo/c_low": lo, "bapo/c_high": hi, "bapo/pos_neg_ratio": min(rho, 1e6)})
        return loss, metrics


# ------------------------------------------------------------------------------------------- Archer
@CLIPS.register("archer")
@dataclass
class ArcherClip(ClipRule):
    """Archer dual-token clip (Wang et al., 2507.15778; ArcherCodeR ``dp_actor.py`` / ``core_algos.py``).

    Per response, q = the 0.8-quantile of its token entropies; the top 20 % (H > q, "reasoning"/forking tokens)
    get clip(r, 1−0.5, 1+0.5), the rest (H ≤ q, "knowledge" tokens) clip(r, 1−0.2, 1+0.2); dual clip c = 10.
    Re-implemented by *semantics*: in the reference code the mask named ``high_entropy_mask`` marks the
    low-entropy tokens (H ≤ q80) and receives the ``low_entropy_clip_ratio_*`` (0.2) — the names are swapped,
    the behaviour is the one described here. Entropy: the current policy's (``entropy='current'``, detached, as the
    code); ``'old'`` fixes the split for the whole rollout batch. Pair with the ``archer_kl`` penalty.
    """

    requires = frozenset({"logprobs", "advantages", "entropy"})
    quantile: float = 0.8
    eps_low_entropy: float = 0.2
    eps_high_entropy: float = 0.5
    dual_clip: Optional[float] = 10.0
    entropy: str = "current"

    def __post_init__(self) -> None:
        _check_quantile("archer", self.quantile)
        check_range("archer", "eps_low_entropy", self.eps_low_entropy, lo=0.0, hi=1.0)
        check_range("archer", "eps_high_entropy", self.eps_high_entropy, lo=0.0, hi=1.0)
        if self.dual_clip is not None:
            check_range("archer", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)
        _check_entropy_source("archer", self.entropy)
        self.requires = frozenset({"logprobs", "advantages", "entropy" if self.entropy == "current" else "old_entropy"})

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'archer'")
        high = high_entropy_mask(token_entropy(batch, self.entropy, "clip rule 'archer'"), batch.mask, self.quantile)
        eps = torch.where(high, self.eps_high_entropy, self.eps_low_entropy)
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        loss, masks = ppo_token_loss(ratio, batch.advantages, eps, eps, self.dual_clip)
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics["entropy/high_token_frac"] = _frac(high, batch.mask)
        return loss, metrics


# ------------------------------------------------------------------------------------------- DCPO
def dcpo_bounds(old_logprobs: torch.Tensor, eps_low: float, eps_high: float, max_ratio: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """DCPO dynamic-adaptive ratio bounds from the old probability q = π_old(y): the constraint |(r − 1)·r·q| ≤ ε
    solved for r = p/q gives r_low(q) = ½ + ½·√max(1 − 4ε_low/q, 0) and
    r_high(q) = min(½ + ½·√(1 + 4ε_high/q), max_ratio)."""
    q = old_logprobs.detach().float().exp().clamp(min=1e-30)
    low = 0.5 + 0.5 * torch.sqrt(torch.clamp(1.0 - 4.0 * eps_low / q, min=0.0))
    high = torch.clamp(0.5 + 0.5 * torch.sqrt(1.0 + 4.0 * eps_high / q), max=max_ratio)
    return low, high


@CLIPS.register("dcpo")
@dataclass
class DCPOClip(ClipRule):
    """DCPO dynamic-adaptive clipping, DAC (Yang et al., 2509.02333; lime-RL/DCPO ``get_clip_low_high``).

    ℓ = max(−A·r, −A·clip(r, r_low(q), r_high(q))) with the per-token bounds of ``dcpo_bounds`` (q = π_old of the
    sampled token), then the dual clip min(ℓ, −c·A) for A < 0. Defaults ε_low = 0.16, ε_high = 0.2; upper bound
    capped at 10 (the code's max(c, 10)); c = 3 (verl's ``clip_ratio_c`` default, which the DCPO code reads; the
    paper's own scripts were not collected). A token with q → 1 gets ≈ [0.8, 1.17]; a rare token (q = 0.01) gets
    [0.5, 10]. The method's other parts are the ``dcpo_sas`` advantage and the ``seq-mean-token-sum`` (OTM) loss.
    """

    eps_low: float = 0.16
    eps_high: float = 0.2
    max_ratio: float = 10.0
    dual_clip: Optional[float] = 3.0

    def __post_init__(self) -> None:
        check_range("dcpo", "eps_low", self.eps_low, lo=0.0)
        check_range("dcpo", "eps_high", self.eps_high, lo=0.0)
        check_range("dcpo", "max_ratio", self.max_ratio, lo=1.0)
        if self.dual_clip is not None:
            check_range("dcpo", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'dcpo'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        low, high = dcpo_bounds(batch.old_logprobs, self.eps_low, self.eps_high, self.max_ratio)
        loss, masks = ppo_token_loss(ratio, batch.advantages, 1.0 - low, high - 1.0, self.dual_clip)
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics["clip/bound_high_mean"] = float(masked_mean(high, batch.mask))
        return loss, metrics


@ADVANTAGES.register("dcpo_sas")
@dataclass
class DCPOAdvantage(AdvantageEstimator):
    """DCPO smooth advantage standardisation, SAS (2509.02333; lime-RL/DCPO ``compute_dcpo_outcome_advantage``).

    For a prompt seen for the i-th time (``extras['prompt_id']``, stable across steps):
    A_new = (R − μ_step)/σ_step over the current group and A_total = (R − μ_all)/σ_all over the prompt's history,
    each 0 where its σ is 0; SA_new = ((i−1)/i)·A_new + (1/i)·A_total, SA_total = (1/i)·A_new + ((i−1)/i)·A_total;
    A = SA_new if |SA_new| < |SA_total| else SA_total. A group whose rewards are all equal this step still gets
    A_total/i from its history. History (as the code): μ_all is the mean of the per-visit group means and σ_all²
    pools them, σ_k² = [(k−1)·σ_{k−1}² + σ_step² + ((k−1)/k)·(μ_step − μ_{k−1})²]/k, with σ_step the unbiased
    group std (a group of one has σ_step = 0). ``compute`` updates the history, so call it once per rollout
    batch (``PolicyObjective.compute_advantages`` does); the history is checkpointed by ``state_dict``.

    Lives in the clip module with the rest of DCPO (the lead may move it to ``knobs/advantage.py``).
    """

    _history: dict = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _warned: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        self._history = {}  # prompt id → (visits, mean, var)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        if "prompt_id" not in batch.extras:
            # No cross-step identity: every group is a first visit (SAS = the step standardisation A_new) and
            # nothing is remembered. The trainer and the toy always provide prompt_id.
            if not self._warned:
                warnings.warn("advantage 'dcpo_sas': RolloutBatch.extras['prompt_id'] is missing, so no per-prompt "
                              "history is kept (each group is treated as a first visit)", stacklevel=2)
                self._warned = True
            saved, self._history = self._history, {}
            try:
                return self._compute(batch, -1 - torch.unique(batch.group_ids, return_inverse=True)[1])
            finally:
                self._history = saved
        return self._compute(batch, batch.extras["prompt_id"].long())

    def _compute(self, batch: RolloutBatch, pids: torch.Tensor) -> torch.Tensor:
        rewards = batch.rewards.double()
        out = torch.zeros_like(rewards)
        _, inverse = torch.unique(batch.group_ids, return_inverse=True)
        for g in range(int(inverse.max()) + 1 if inverse.numel() else 0):
            idx = torch.nonzero(inverse == g).flatten()
            r = rewards[idx]
            pid = int(pids[idx[0]])
            mu_new = float(r.mean())
            sd_new = float(r.std()) if r.numel() > 1 else 0.0
            k_old, mu_old, var_old = self._history.get(pid, (0, 0.0, 0.0))
            k = k_old + 1
            if k_old == 0:
                mu_all, var_all = mu_new, sd_new**2
            else:
                mu_all = (mu_old * k_old + mu_new) / k
                var_all = (k_old * var_old + sd_new**2 + (k_old / k) * (mu_new - mu_old) ** 2) / k
            self._history[pid] = (k, mu_all, var_all)
            sd_all = var_all**0.5
            a_new = (r - mu_new) / sd_new if sd_new > 0 else torch.zeros_like(r)
            a_tot = (r - mu_all) / sd_all if sd_all > 0 else torch.zeros_like(r)
            sa_new = ((k - 1) / k) * a_new + (1 / k) * a_tot
            sa_tot = (1 / k) * a_new + ((k - 1) / k) * a_tot
            out[idx] = torch.where(sa_new.abs() < sa_tot.abs(), sa_new, sa_tot)
        return broadcast_to_tokens(out.float(), batch.mask)

    def state_dict(self) -> dict[str, Any]:
        if not self._history:
            return {}
        ids = sorted(self._history)
        return {
            "prompt_ids": torch.tensor(ids, dtype=torch.long),
            "visits": torch.tensor([self._history[i][0] for i in ids], dtype=torch.long),
            "mean": torch.tensor([self._history[i][1] for i in ids], dtype=torch.float64),
            "var": torch.tensor([self._history[i][2] for i in ids], dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._history = {}
        if not state:
            return
        for pid, k, mu, var in zip(state["prompt_ids"].tolist(), state["visits"].tolist(), state["mean"].tolist(),
                                   state["var"].tolist()):
            self._history[int(pid)] = (int(k), float(mu), float(var))


# ------------------------------------------------------------------------------------------- ASPO
@CLIPS.register("aspo")
@dataclass
class ASPOClip(ClipRule):
    """ASPO asymmetric importance sampling (Wang et al., 2510.06062; Archer2.0 ``compute_policy_loss_archer``).

    Tokens split per response by the 0.8 entropy quantile (as Archer); ε = 0.2 on low-entropy, 0.4 on
    high-entropy tokens (the same ε on both sides); soft dual clip c = 3.
    - A < 0: r_c = max(r, 1−ε); ℓ = −A·r_c (gradient −A·r·∇log π, zero below the bound); if r_c > c the weight is
      capped instead of zeroed: ℓ = −A·c·r/sg(r) (gradient −A·c·∇log π).
    - A > 0, flipped ratio: r_c = min(r, 1+ε); ℓ = −A·(r_c/sg(r_c))/sg(r_c) (value −A/r_c, gradient
      −A·(1/r)·∇log π below the bound, zero above it); if 1/r_c > c: ℓ = −A·c·r/sg(r).
    So positive tokens whose ratio already rose get *less* weight and under-trained ones (r < 1) get more, up to c.
    The reference code writes the capped branches as −A·sg(c)·log π (same gradient, different value).
    Pair with the ``archer_kl`` penalty (k3, β = 0.001 on low-entropy tokens only).
    """

    requires = frozenset({"logprobs", "advantages", "entropy"})
    quantile: float = 0.8
    eps_low_entropy: float = 0.2
    eps_high_entropy: float = 0.4
    dual_clip: float = 3.0
    entropy: str = "current"

    def __post_init__(self) -> None:
        _check_quantile("aspo", self.quantile)
        check_range("aspo", "eps_low_entropy", self.eps_low_entropy, lo=0.0, hi=1.0)
        check_range("aspo", "eps_high_entropy", self.eps_high_entropy, lo=0.0, hi=1.0)
        check_range("aspo", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)
        _check_entropy_source("aspo", self.entropy)
        self.requires = frozenset({"logprobs", "advantages", "entropy" if self.entropy == "current" else "old_entropy"})

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'aspo'")
        high = high_entropy_mask(token_entropy(batch, self.entropy, "clip rule 'aspo'"), batch.mask, self.quantile)
        eps = torch.where(high, self.eps_high_entropy, self.eps_low_entropy)
        adv = batch.advantages
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        c = self.dual_clip
        capped = -adv * c * _grad_through(ratio)
        # A < 0: standard lower clip, soft dual clip above c
        r_neg = torch.maximum(ratio, 1.0 - eps)
        dual_neg = (adv < 0) & (r_neg.detach() > c)
        loss_neg = torch.where(dual_neg, capped, -adv * r_neg)
        # A > 0: flipped importance ratio 1/r, upper clip, soft dual clip on 1/r_c above c
        r_pos = torch.minimum(ratio, 1.0 + eps)
        inv = 1.0 / r_pos.detach()
        dual_pos = (adv > 0) & (inv > c)
        loss_pos = torch.where(dual_pos, capped, -adv * _grad_through(r_pos) * inv)
        loss = torch.where(adv < 0, loss_neg, torch.where(adv > 0, loss_pos, torch.zeros_like(loss_neg)))
        masks = {
            "low": (adv < 0) & (ratio.detach() < 1.0 - eps),
            "high": (adv > 0) & (ratio.detach() > 1.0 + eps),
            "dual": dual_neg,
            "dual_pos": dual_pos,
        }
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics["entropy/high_token_frac"] = _frac(high, batch.mask)
        return loss, metrics


# ------------------------------------------------------------------------------------------- CE-GPPO
@CLIPS.register("ce_gppo")
@dataclass
class CEGPPOClip(ClipRule):
    """CE-GPPO gradient-preserving clipping (Su et al., 2509.20712; Kwai-Klear/CE-GPPO
    ``compute_gppo_loss_general_beta``).

    With low = (r < 1−ε_l) ∧ (A < 0) and high = (r > 1+ε_h) ∧ (A > 0):
    ℓ = −β₁·(1−ε_l)·(r/sg(r))·A on low, −β₂·(1+ε_h)·(r/sg(r))·A on high, −r·A elsewhere; then min(ℓ, −c·A) for
    A < 0. Clipped tokens keep the PPO-clipped *value* scaled by β and a bounded gradient (β·(1∓ε)·A·∇log π)
    instead of none. Defaults β₁ = 0.75, β₂ = 1 (7B and code default; the 1.5B script uses β₁ = 0.5),
    ε_l = ε_h = 0.2, c = 10 (the scripts; the function default is 3). Entropy: low tokens (negative, low
    probability) sharpen, high tokens (positive, low probability) explore, so a larger β₁ lowers and a larger β₂
    raises entropy; β₁ < β₂ avoids collapse. The runs add DAPO dynamic sampling (compose it via the sampling slot).
    """

    eps_low: float = 0.2
    eps_high: float = 0.2
    beta_low: float = 0.75
    beta_high: float = 1.0
    dual_clip: Optional[float] = 10.0

    def __post_init__(self) -> None:
        check_range("ce_gppo", "eps_low", self.eps_low, lo=0.0, hi=1.0)
        check_range("ce_gppo", "eps_high", self.eps_high, lo=0.0)
        check_range("ce_gppo", "beta_low", self.beta_low, lo=0.0)
        check_range("ce_gppo", "beta_high", self.beta_high, lo=0.0)
        if self.dual_clip is not None:
            check_range("ce_gppo", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'ce_gppo'")
        adv = batch.advantages
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        r = ratio.detach()
        low = (r < 1.0 - self.eps_low) & (adv < 0)
        high = (r > 1.0 + self.eps_high) & (adv > 0)
        carrier = _grad_through(ratio)
        loss = torch.where(low, -self.beta_low * (1.0 - self.eps_low) * carrier * adv,
                           torch.where(high, -self.beta_high * (1.0 + self.eps_high) * carrier * adv, -adv * ratio))
        masks = {"low": low, "high": high}
        if self.dual_clip is not None:
            cap = -adv * self.dual_clip
            dual = (adv < 0) & (loss > cap)
            loss = torch.where(dual, cap, loss)
            masks["dual"] = dual
        return loss, _clip_metrics(masks, ratio, batch.mask)


# ------------------------------------------------------------------------------------------- M2PO
def m2_threshold(delta_sq: torch.Tensor, budget: float) -> float:
    """τ ≥ 0 with mean_i min(δ_i², τ²) = budget (exact, from the sorted values); ∞ if mean δ² ≤ budget."""
    n = delta_sq.numel()
    if n == 0 or float(delta_sq.mean()) <= budget:
        return float("inf")
    s = torch.sort(delta_sq.double()).values
    target = budget * n
    below = torch.cat([s.new_zeros(1), torch.cumsum(s, 0)[:-1]])  # Σ of the k smallest, k = 0..n−1
    k = torch.arange(n, dtype=s.dtype)
    tau_sq = (target - below) / (n - k)  # solution if exactly k values lie below τ²
    prev = torch.cat([s.new_zeros(1), s[:-1]])
    ok = (tau_sq >= prev - 1e-15) & (tau_sq <= s + 1e-15)
    first = int(torch.nonzero(ok).flatten()[0])
    return float(tau_sq[first].clamp(min=0.0).sqrt())


@CLIPS.register("m2po")
@dataclass
class M2POClip(ClipRule):
    """M2PO second-moment trust region (Zheng et al., 2510.01161; Infini-AI-Lab/M2PO
    ``compute_m2po_policy_loss``).

    δ = log r. Harmful tokens 𝓗 = {A > 0 ∧ r > 1} ∪ {A < 0 ∧ r < 1} (those the update would push further out);
    M₂ = mean_{𝓗} δ². If M₂ ≤ τ_M2 nothing is clipped (ℓ = −A·r). Otherwise τ solves
    mean_{𝓗} min(δ², τ²) = τ_M2 (``m2_threshold``), ε_low = max(1 − e^{−τ}, 0.3), ε_high = max(e^{τ} − 1, 0.5)
    (the code's "miniclip" floors), and ℓ = max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)), no dual clip. So only
    extreme ratios are masked, and only when the batch's second moment exceeds its budget. Default τ_M2 = 0.04.
    The reference picks τ at the sorted breakpoint just below the exact solution (slightly tighter); the paper's
    equivalent view masks the largest |log r| until the rest has M₂ ≤ τ_M2. Acts off-policy only.

    Stateless by design (no ``state_dict``): τ is the closed-form solution for the current micro-batch's harmful
    log-ratios (the reference solves it per micro-batch, from scratch, in ``kpo_clip_harmful_tokens``), not an
    iterative search, so there is nothing to warm-start; carrying τ (or M₂) across calls would make the trust
    region lag the batch it constrains — a different method from the card's, whose budget bounds *this* batch's
    second moment. The per-call M₂, activity and bounds are the metrics ``m2po/M2``, ``m2po/active``,
    ``m2po/eps_low`` and ``m2po/eps_high``. With the floors (0.3, 0.5) the bounds always contain PPO's
    [0.8, 1.2]: M2PO never cuts a gradient that ε = 0.2 PPO keeps.
    """

    needs_off_policy = True
    budget: float = 0.04
    min_eps_low: float = 0.3
    min_eps_high: float = 0.5

    def __post_init__(self) -> None:
        check_range("m2po", "budget", self.budget, lo=0.0, lo_open=True)
        check_range("m2po", "min_eps_low", self.min_eps_low, lo=0.0, hi=1.0)
        check_range("m2po", "min_eps_high", self.min_eps_high, lo=0.0)

    def bounds(self, batch: RolloutBatch) -> tuple[float, float, float, float]:
        """(ε_low, ε_high, M₂, τ) for this batch; ε = (1, ∞) when the budget is met."""
        delta = (batch.logprobs.detach() - batch.old_logprobs.detach()).float().clamp(-20.0, 20.0)
        adv = batch.advantages
        harmful = (batch.mask > 0) & (((adv > 0) & (delta > 0)) | ((adv < 0) & (delta < 0)))
        dsq = delta[harmful] ** 2
        m2 = float(dsq.mean()) if dsq.numel() else 0.0
        tau = m2_threshold(dsq, self.budget)
        if math.isinf(tau):
            return 1.0, float("inf"), m2, tau
        return max(1.0 - math.exp(-tau), self.min_eps_low), max(math.exp(tau) - 1.0, self.min_eps_high), m2, tau

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="clip rule 'm2po'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        eps_low, eps_high, m2, tau = self.bounds(batch)
        loss, masks = ppo_token_loss(ratio, batch.advantages, eps_low, eps_high)
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics.update({"m2po/M2": m2, "m2po/active": float(not math.isinf(tau)),
                        "m2po/eps_low": eps_low, "m2po/eps_high": min(eps_high, 1e6)})
        return loss, metrics


# ------------------------------------------------------------------------------------------- ESPO
@CLIPS.register("espo")
@dataclass
class ESPOClip(ClipRule):
    """ESPO entropy-grouped importance ratios with entropy-adaptive ranges (Sheng et al., 2512.00499), best reading.

    With e_t the old-policy entropy, each response's tokens form K = 2 groups: the top 20 % by e_t (the
    per-response 0.8 quantile, as Archer) and the rest. For a group τ:
    s_τ = exp(mean_{t∈τ} log r_t) (GSPO-style), token ratio s_t = sg(s_τ)·π_θ(y_t)/sg(π_θ(y_t)) (value s_τ,
    gradient s_τ·∇log π), range ε_τ = (α/log|V|)·mean_{t∈τ} e_t, and ℓ_t = max(−A·s_t, −A·clip(s_t, 1−ε_τ, 1+ε_τ)).
    ``group_weighting`` multiplies ℓ_t by |o_i|/(K_i·|τ|) so that, with the ``seq-mean-token-mean`` aggregation,
    the loss is the paper's (1/G)Σ_i (1/K_i) Σ_τ (1/|τ|) Σ_{t∈τ} ℓ_t (every group of a response weighs the same).
    Defaults α = 0.02 (paper; sweep 0.01–0.10), |V| = 151936 (Qwen3, the paper's models — set it to the tokenizer's
    vocabulary). Ambiguities (no code released): the number of groups and the handling of the non-top group are
    not fully specified (K = 2 read from the ablation); the paper writes sg[π_old] in the token ratio, the GSPO form
    sg[π_θ] is used. The paper's advantage only credits verifier-valid responses; use the advantage slot for that.
    """

    requires = frozenset({"logprobs", "advantages", "old_entropy"})
    alpha: float = 0.02
    quantile: float = 0.8
    vocab_size: int = 151936
    group_weighting: bool = True

    def __post_init__(self) -> None:
        check_range("espo", "alpha", self.alpha, lo=0.0, lo_open=True)
        _check_quantile("espo", self.quantile)
        if self.vocab_size < 2:
            raise ConfigError(f"espo.vocab_size = {self.vocab_size!r} is out of range; allowed: [2, inf]")

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", "old_entropy", who="clip rule 'espo'")
        m = batch.mask
        valid = m > 0
        ent = batch.old_entropy.detach().float()
        high = high_entropy_mask(ent, m, self.quantile)
        log_r = torch.clamp(batch.logprobs - batch.old_logprobs.detach(), -20.0, 20.0)
        seq_log_r = torch.zeros_like(log_r)
        eps = torch.zeros_like(log_r)
        weight = torch.ones_like(log_r)
        n_groups = torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
        for grp in (high, valid & ~high):
            g = grp.to(m.dtype)
            size = g.sum(-1, keepdim=True)  # (B, 1)
            n_groups = n_groups + (size.squeeze(-1) > 0).to(m.dtype)
            mean_log_r = (log_r.detach() * g).sum(-1, keepdim=True) / size.clamp(min=1.0)
            mean_ent = (ent * g).sum(-1, keepdim=True) / size.clamp(min=1.0)
            seq_log_r = torch.where(grp, mean_log_r.expand_as(log_r), seq_log_r)
            eps = torch.where(grp, (self.alpha / math.log(self.vocab_size)) * mean_ent.expand_as(log_r), eps)
            weight = torch.where(grp, (m.sum(-1, keepdim=True) / size.clamp(min=1.0)).expand_as(log_r), weight)
        if self.group_weighting:
            weight = weight / n_groups.clamp(min=1.0)[:, None]
        else:
            weight = torch.ones_like(weight)
        s = torch.exp(seq_log_r + batch.logprobs - batch.logprobs.detach())
        loss, masks = ppo_token_loss(s, batch.advantages, eps, eps)
        loss = loss * weight
        metrics = _clip_metrics(masks, s, m)
        metrics["clip/eps_mean"] = float(masked_mean(eps, m))
        return loss, metrics


# ------------------------------------------------------------------------------------------- ERC
@CLIPS.register("erc")
@dataclass
class EntropyRatioClip(ClipRule):
    """ERC entropy-ratio clipping (Su et al., 2512.05591; Kwai-Klear/ERC ``grpo_erc``).

    ℓ_t = DAPO dual-clip PPO loss (ε_low = 0.2, ε_high = 0.28, c = 10); ρ_t = (H_t(π_θ) + 1e-8)/(H_t(π_old) + 1e-8)
    from the full-vocabulary entropies at the token's position; where ρ_t ∉ (1 − β_low, 1 + β_high) the token's
    loss is detached, ℓ_t ← sg(ℓ_t) (no gradient, still counted in the token-mean denominator). Defaults
    β_low = β_high = 0.05. Bidirectional: a token whose update moved its local entropy by more than ±5 % stops
    pushing, which damps both collapse and explosion, and it also constrains the probability moves of *unsampled*
    actions that the ratio clip ignores. Needs ``old_entropy`` (the trainer computes it with the old log-probs);
    acts off-policy only (ρ ≡ 1 on the first pass).
    """

    requires = frozenset({"logprobs", "advantages", "entropy", "old_entropy"})
    needs_off_policy = True
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: Optional[float] = 10.0
    beta_low: float = 0.05
    beta_high: float = 0.05

    def __post_init__(self) -> None:
        check_range("erc", "eps_low", self.eps_low, lo=0.0, hi=1.0)
        check_range("erc", "eps_high", self.eps_high, lo=0.0)
        check_range("erc", "beta_low", self.beta_low, lo=0.0, hi=1.0)
        check_range("erc", "beta_high", self.beta_high, lo=0.0)
        if self.dual_clip is not None:
            check_range("erc", "dual_clip", self.dual_clip, lo=1.0, lo_open=True)

    def pg_loss(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", "entropy", "old_entropy", who="clip rule 'erc'")
        ratio = importance_ratio(batch.logprobs, batch.old_logprobs)
        loss, masks = ppo_token_loss(ratio, batch.advantages, self.eps_low, self.eps_high, self.dual_clip)
        rho = (batch.entropy.detach().float() + 1e-8) / (batch.old_entropy.detach().float() + 1e-8)
        frozen = (rho <= 1.0 - self.beta_low) | (rho >= 1.0 + self.beta_high)
        loss = torch.where(frozen, loss.detach(), loss)
        masks["entropy_ratio"] = frozen
        metrics = _clip_metrics(masks, ratio, batch.mask)
        metrics["entropy/ratio_mean"] = float(masked_mean(rho, batch.mask))
        return loss, metrics

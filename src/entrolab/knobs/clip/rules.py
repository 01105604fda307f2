"""The clip knob's entropy-aware trust regions: rules whose bounds depend on the token's entropy, probability,
group balance or the batch's second moment, or that keep a scaled gradient for clipped tokens (catalog II,
``docs/methods-clip-kl.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.masked import masked_mean
from ...registry import check_range
from ..token_select import (
    check_entropy_source,
    check_quantile,
    high_entropy_mask,
    token_entropy,
)
from .base import (
    CLIPS,
    ClipRule,
    TrustRegion,
    _frac,
)


# =============================================================================================================
# Method catalog II (issue 7): entropy-aware clip rules. Shared helpers first, then one rule per paper.
# =============================================================================================================
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
    """Lower clip width ε_low, bound 1 − ε_low (1 = no clip-low; smaller clips more, raising entropy; usual 0.2)."""
    eps_high: Optional[float] = None
    """Upper clip width ε_high, bound 1 + ε_high; None = clip-high disabled (the recipe, per the reviews)."""
    dual_clip: Optional[float] = None
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(self.eps_low, self.eps_high)


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
    """Lower clip width ε_low, bound 1 − ε_low (not found in the paper: the PPO default 0.2)."""
    eps_high_min: float = 0.2
    """ε_min: upper clip width of the lowest-entropy trajectory, h(τ) = 0 ([3p] summaries: 0.2)."""
    eps_high_max: float = 0.4
    """ε_max: upper clip width of the highest-entropy trajectory, h(τ) = 1; ≥ eps_high_min ([3p] summaries: 0.4)."""
    scope: str = "batch"
    """Where the mean entropy H̄(τ) is min–max normalised: 'batch' (rollout batch) or 'group' (the prompt's group)."""

    def __post_init__(self) -> None:
        super().__post_init__()
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

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        eps_high = batch.extras.get("eag_eps_high")
        if eps_high is None:
            eps_high = self.upper_widths(batch)
        eps_high_t = eps_high.float()[:, None].expand_as(ratio)
        return TrustRegion(torch.full_like(eps_high_t, self.eps_low), eps_high_t,
                           metrics={"clip/eps_high_mean": float(eps_high.float().mean())})


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
    """Start a⁻ of the lower ratio bound c_low (a ratio < 1, not a width; code 0.6)."""
    c_low_max: float = 0.8
    """Cap b⁻ up to which the search raises c_low (in [c_low, 1]; code 0.8)."""
    c_high: float = 1.2
    """Start a⁺ of the upper ratio bound c_high (a ratio ≥ 1, not a width; code 1.2)."""
    c_high_max: float = 2.0
    """Cap b⁺ up to which the search raises c_high (≥ c_high; code 2.0)."""
    step_low: float = 0.05
    """Step δ by which c_low is raised while ρ < ρ₀ (code 0.05; 0 skips that stage)."""
    step_high: float = 0.05
    """Step δ by which c_high is raised while ρ < ρ₀ (code 0.05; 0 skips that stage)."""
    target: float = 1.0
    """Target ρ₀ of the balance ρ = P/N, positive over negative contributions (1 = a positive share of ½)."""
    dual_clip: Optional[float] = 3.0
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""
    eps: float = 1e-8
    """Added to N in ρ = P/(N + eps) to avoid division by zero."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("bapo", "c_low", self.c_low, lo=0.0, hi=1.0)
        check_range("bapo", "c_low_max", self.c_low_max, lo=self.c_low, hi=1.0)
        check_range("bapo", "c_high", self.c_high, lo=1.0)
        check_range("bapo", "c_high_max", self.c_high_max, lo=self.c_high)
        check_range("bapo", "step_low", self.step_low, lo=0.0)
        check_range("bapo", "step_high", self.step_high, lo=0.0)
        check_range("bapo", "target", self.target, lo=0.0)

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

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        lo, hi, rho = self.search(ratio, batch.advantages, batch.mask)
        return TrustRegion(1.0 - lo, hi - 1.0,
                           metrics={"bapo/c_low": lo, "bapo/c_high": hi, "bapo/pos_neg_ratio": min(rho, 1e6)})


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
    """Per-response entropy quantile q: tokens with H > q are high-entropy (forking) (0.8 = the top 20 %)."""
    eps_low_entropy: float = 0.2
    """Symmetric clip width ε on low-entropy (knowledge) tokens, clip(r, 1−ε, 1+ε)."""
    eps_high_entropy: float = 0.5
    """Symmetric clip width ε on high-entropy (reasoning) tokens, clip(r, 1−ε, 1+ε)."""
    dual_clip: Optional[float] = 10.0
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""
    entropy: str = "current"
    """Entropy the split reads: 'current' (π_θ, detached, as the code) or 'old' (π_old, fixed per rollout batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_quantile("archer", self.quantile)
        check_range("archer", "eps_low_entropy", self.eps_low_entropy, lo=0.0, hi=1.0)
        check_range("archer", "eps_high_entropy", self.eps_high_entropy, lo=0.0, hi=1.0)
        check_entropy_source("archer", self.entropy)
        self.requires = frozenset({"logprobs", "advantages", "entropy" if self.entropy == "current" else "old_entropy"})

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        high = high_entropy_mask(token_entropy(batch, self.entropy, "clip rule 'archer'"), batch.mask, self.quantile)
        eps = torch.where(high, self.eps_high_entropy, self.eps_low_entropy)
        return TrustRegion(eps, eps, metrics={"entropy/high_token_frac": _frac(high, batch.mask)})


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
    """ε_low of the constraint |(r − 1)·r·q| ≤ ε: r_low(q) = ½ + ½·√max(1 − 4ε_low/q, 0) (not a clip width)."""
    eps_high: float = 0.2
    """ε_high of the same constraint: r_high(q) = ½ + ½·√(1 + 4ε_high/q), capped at max_ratio (not a clip width)."""
    max_ratio: float = 10.0
    """Cap on the upper ratio bound r_high (a ratio ≥ 1; the code's max(c, 10))."""
    dual_clip: Optional[float] = 3.0
    """Dual-clip cap c (> 1) on A < 0 tokens; None = off (verl's clip_ratio_c default 3, read by the DCPO code)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("dcpo", "max_ratio", self.max_ratio, lo=1.0)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        low, high = dcpo_bounds(batch.old_logprobs, self.eps_low, self.eps_high, self.max_ratio)
        return TrustRegion(1.0 - low, high - 1.0, metrics={"clip/bound_high_mean": float(masked_mean(high, batch.mask))})


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
    """Per-response entropy quantile q: tokens with H > q are high-entropy (0.8 = the top 20 %, as Archer)."""
    eps_low_entropy: float = 0.2
    """Clip width ε on low-entropy tokens (the same ε on both sides)."""
    eps_high_entropy: float = 0.4
    """Clip width ε on high-entropy tokens (the same ε on both sides)."""
    dual_clip: float = 3.0
    """Soft dual-clip cap c (> 1): a ratio r_c (A < 0) or 1/r_c (A > 0) above c gets weight c, not zero."""
    entropy: str = "current"
    """Entropy the split reads: 'current' (π_θ, detached) or 'old' (π_old, fixed per rollout batch)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_quantile("aspo", self.quantile)
        check_range("aspo", "eps_low_entropy", self.eps_low_entropy, lo=0.0, hi=1.0)
        check_range("aspo", "eps_high_entropy", self.eps_high_entropy, lo=0.0, hi=1.0)
        check_entropy_source("aspo", self.entropy)
        self.requires = frozenset({"logprobs", "advantages", "entropy" if self.entropy == "current" else "old_entropy"})

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        high = high_entropy_mask(token_entropy(batch, self.entropy, "clip rule 'aspo'"), batch.mask, self.quantile)
        eps = torch.where(high, self.eps_high_entropy, self.eps_low_entropy)
        return TrustRegion(eps, eps, metrics={"entropy/high_token_frac": _frac(high, batch.mask)})

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The asymmetric loss of the class docstring (flipped ratio for A > 0, soft dual clips on both signs)."""
        eps = trust.eps_low
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
        return loss, masks


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
    """Lower clip width ε_l: A < 0 tokens with r < 1 − ε_l are 'low' and keep a β₁-scaled gradient."""
    eps_high: float = 0.2
    """Upper clip width ε_h: A > 0 tokens with r > 1 + ε_h are 'high' and keep a β₂-scaled gradient."""
    beta_low: float = 0.75
    """β₁: gradient scale on low-clipped tokens; larger lowers entropy (7B and code 0.75; 1.5B script 0.5)."""
    beta_high: float = 1.0
    """β₂: gradient scale on high-clipped tokens; larger raises entropy (7B and code 1)."""
    dual_clip: Optional[float] = 10.0
    """Dual-clip cap c (> 1) on A < 0 tokens, min(ℓ, −c·A); None = off (the scripts 10; the function default 3)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("ce_gppo", "beta_low", self.beta_low, lo=0.0)
        check_range("ce_gppo", "beta_high", self.beta_high, lo=0.0)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(self.eps_low, self.eps_high)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Clipped tokens keep a β-scaled, bounded gradient (class docstring); then the dual clip for A < 0."""
        r = ratio.detach()
        low = (r < 1.0 - trust.eps_low) & (adv < 0)
        high = (r > 1.0 + trust.eps_high) & (adv > 0)
        carrier = _grad_through(ratio)
        loss = torch.where(low, -self.beta_low * (1.0 - trust.eps_low) * carrier * adv,
                           torch.where(high, -self.beta_high * (1.0 + trust.eps_high) * carrier * adv, -adv * ratio))
        masks = {"low": low, "high": high}
        if self.dual_clip is not None:
            cap = -adv * self.dual_clip
            dual = (adv < 0) & (loss > cap)
            loss = torch.where(dual, cap, loss)
            masks["dual"] = dual
        return loss, masks


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
    """Budget τ_M2 on M₂, the harmful tokens' mean (log r)² (squared log-ratio, > 0); below it nothing is clipped."""
    min_eps_low: float = 0.3
    """Floor of the lower clip width, ε_low = max(1 − e^{−τ}, this) (the code's miniclip 0.3)."""
    min_eps_high: float = 0.5
    """Floor of the upper clip width, ε_high = max(e^{τ} − 1, this) (the code's miniclip 0.5)."""

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

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        eps_low, eps_high, m2, tau = self.bounds(batch)
        return TrustRegion(eps_low, eps_high, metrics={"m2po/M2": m2, "m2po/active": float(not math.isinf(tau)),
                                                       "m2po/eps_low": eps_low, "m2po/eps_high": min(eps_high, 1e6)})


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
    """α in the group range ε_τ = (α/log|V|)·mean old entropy of the group (paper 0.02; sweep 0.01–0.10)."""
    quantile: float = 0.8
    """Per-response old-entropy quantile splitting the K = 2 groups (0.8 = the top 20 %, as Archer)."""
    vocab_size: int = 151936
    """|V| in ε_τ (Qwen3's 151936, the paper's models; set it to the tokenizer's vocabulary size)."""
    group_weighting: bool = True
    """Weight ℓ_t by |o_i|/(K_i·|τ|) so every group of a response weighs the same (with seq-mean-token-mean)."""

    def __post_init__(self) -> None:
        check_range("espo", "alpha", self.alpha, lo=0.0, lo_open=True)
        check_quantile("espo", self.quantile)
        if self.vocab_size < 2:
            raise ConfigError(f"espo.vocab_size = {self.vocab_size!r} is out of range; allowed: [2, inf]")

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        """The grouped ratio s_t, the group ranges ε_τ and the group weights (class docstring)."""
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
        return TrustRegion(eps, eps, ratio=s, weight=weight, metrics={"clip/eps_mean": float(masked_mean(eps, m))})


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
    detach_metric = "entropy_ratio"
    eps_low: float = 0.2
    """Lower clip width ε_low of the DAPO-style dual-clip PPO loss, bound 1 − ε_low."""
    eps_high: float = 0.28
    """Upper clip width ε_high of the DAPO-style dual-clip PPO loss, bound 1 + ε_high."""
    dual_clip: Optional[float] = 10.0
    """Dual-clip cap c (> 1) on A < 0 tokens, ℓ = min(ℓ, −c·A); None = no dual clip."""
    beta_low: float = 0.05
    """β_low: a token whose entropy ratio ρ_t = H_θ/H_old ≤ 1 − β_low is detached (a fraction: 0.05 = −5 %)."""
    beta_high: float = 0.05
    """β_high: a token with entropy ratio ρ_t ≥ 1 + β_high is detached (a fraction: 0.05 = +5 %)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("erc", "beta_low", self.beta_low, lo=0.0, hi=1.0)
        check_range("erc", "beta_high", self.beta_high, lo=0.0)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        rho = self._entropy_ratio(batch)
        return TrustRegion(self.eps_low, self.eps_high, metrics={"entropy/ratio_mean": float(masked_mean(rho, batch.mask))})

    def detach(self, batch: RolloutBatch, ratio: torch.Tensor, clipped: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens whose local entropy moved by more than ±β: ρ_t ∉ (1 − β_low, 1 + β_high)."""
        rho = self._entropy_ratio(batch)
        return (rho <= 1.0 - self.beta_low) | (rho >= 1.0 + self.beta_high)

    @staticmethod
    def _entropy_ratio(batch: RolloutBatch) -> torch.Tensor:
        return (batch.entropy.detach().float() + 1e-8) / (batch.old_entropy.detach().float() + 1e-8)

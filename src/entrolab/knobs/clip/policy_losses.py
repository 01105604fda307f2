"""The policy losses of verl 0.9.1 and TRL 1.16 that the catalog lacked (method catalog V, issue 15): sequence-level
ratios (GSPO, GMPO, VESPO), clipped or truncated importance-sampling weights on a log-likelihood surrogate (CISPO,
DPPO), a soft gate instead of a hard clip (SAPO), and surrogate-free policy gradients (GPG, DRO). Each is a
:class:`~.base.ClipRule`: it states its trust region (bounds, a replacement ratio or a token weight) and, where it is
not PPO's clipped ratio, its own surrogate.

Several of these losses are written on log π rather than on the ratio r: ℓ = −sg(w)·A·log π (its gradient is
−w·A·∇log π, the importance-weighted policy gradient with a weight w that passes no gradient). They read the current
log-probs the template hands them (``TrustRegion.logprobs``), so the loss *value* equals the anchor's too. Every
docstring names the anchor function the rule equals (``tests/test_methods_baselines.py`` checks loss and gradient on
fixed inputs against numbers computed from verl 0.9.1 and TRL 1.16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ...batch import RolloutBatch
from ...ops.masked import masked_mean
from ...registry import check_range
from .base import CLIPS, ClipRule, TrustRegion


def _log_policy(ratio: torch.Tensor, trust: TrustRegion) -> torch.Tensor:
    """log π_θ with gradient: the batch's log-probs the template handed over, else log r (same gradient)."""
    return trust.logprobs if trust.logprobs is not None else torch.log(ratio)


def _log_ratio(ratio: torch.Tensor, trust: TrustRegion) -> torch.Tensor:
    """log π_θ − log π_old with gradient (unclamped when the template handed the log-probs over)."""
    if trust.logprobs is not None and trust.old_logprobs is not None:
        return trust.logprobs - trust.old_logprobs
    return torch.log(ratio)


def sequence_log_ratio(batch: RolloutBatch, reduce: str = "mean") -> torch.Tensor:
    """(B,) Σ_t or mean_t of log π_θ − log π_old over each response's valid tokens, without gradient."""
    m = batch.mask
    s = ((batch.logprobs.detach() - batch.old_logprobs.detach()) * m).sum(-1)
    return s / m.sum(-1).clamp(min=1.0) if reduce == "mean" else s


# ------------------------------------------------------------------------------------------- GSPO
@CLIPS.register("gspo")
@dataclass
class GSPOClip(ClipRule):
    """GSPO: group sequence policy optimisation (Zheng et al., arXiv 2507.18071).

    The importance ratio is the sequence's, the geometric mean of its token ratios, s_i = exp((1/|o_i|) Σ_t log r_t),
    clipped at the sequence level: every token of response i carries s_{i,t} = sg(s_i)·π_θ(y_t)/sg(π_θ(y_t))
    (value s_i, gradient s_i·∇log π_t; log s_{i,t} capped at 10) and ℓ_t = max(−A·s_{i,t}, −A·clip(s_{i,t}, 1−ε_low,
    1+ε_high)). With the paper's ``seq-mean-token-mean`` aggregation the loss is (1/G) Σ_i max(−A_i s_i, −A_i
    clip(s_i)). Defaults ε_low = 3e-4, ε_high = 4e-4 (the paper; sequence ratios stay much closer to 1 than token
    ratios). With the ``seq-mean-token-sum`` aggregation it is LUSPO (Liu et al., arXiv 2602.05261), which scales
    each sequence's loss by its length to remove GSPO's bias toward short responses. Anchors: verl
    ``compute_policy_loss_gspo`` (``policy_loss.loss_mode=gspo``); TRL ``importance_sampling_level="sequence"`` with
    ``loss_type="grpo"``, and, with ``seq-mean-token-sum``, TRL's ``loss_type="luspo"``.
    """

    eps_low: float = 3e-4
    """Lower clip width of the sequence ratio, bound 1 − ε_low (the paper's 3e-4)."""
    eps_high: float = 4e-4
    """Upper clip width of the sequence ratio, bound 1 + ε_high (the paper's 4e-4)."""

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        seq = sequence_log_ratio(batch, "mean")
        log_s = torch.clamp(batch.logprobs - batch.logprobs.detach() + seq[:, None], max=10.0)
        s = torch.exp(log_s)
        return TrustRegion(self.eps_low, self.eps_high, ratio=s,
                           metrics={"gspo/seq_ratio_mean": float(torch.exp(seq).mean())})


# ------------------------------------------------------------------------------------------- CISPO
@CLIPS.register("cispo")
@dataclass
class CISPOClip(ClipRule):
    """CISPO: clipped importance-sampling policy optimisation (MiniMax-M1, arXiv 2506.13585).

    The importance-sampling *weight* is clipped and detached, the gradient is every token's:
    ℓ_t = −sg(clip(r_t, 1−ε_low, 1+ε_high))·A·log π_θ(y_t). Unlike PPO, a token whose ratio left the trust region
    keeps a (bounded-weight) gradient, so the rare, low-probability "forking" tokens PPO clips after their first
    update keep learning — the report ties this to keeping entropy from collapsing. Defaults: no lower bound
    (ε_low None; the report sets ε_low large), upper bound 1 + ε_high = 5 (ε_high = 4, the ε_max = 5 that TRL's
    docs take from ScaleRL, arXiv 2510.13786). Anchors: verl ``compute_policy_loss_cispo`` (bounds 1 − ε_low and
    1 + ε_high); TRL ``loss_type="cispo"``, whose ``epsilon_high`` is the cap itself (TRL 5.0 = ε_high 4 here) and
    which has no lower bound. ``clip/frac_high``: share of tokens whose weight was capped.
    """

    eps_low: Optional[float] = None
    """Lower bound 1 − ε_low of the detached weight (a fraction in [0, 1]); None = no lower bound (MiniMax-M1)."""
    eps_high: float = 4.0
    """Upper bound 1 + ε_high of the detached weight (ε_high = 4: cap 5, ScaleRL's ε_max via TRL's docs)."""

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(self.eps_low, self.eps_high)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ℓ = −sg(clip(r))·A·log π (class docstring)."""
        lo = None if trust.eps_low is None else 1.0 - trust.eps_low
        hi = 1.0 + trust.eps_high
        r = ratio.detach()
        w = torch.clamp(r, min=lo, max=hi)
        masks = {"high": r > hi}
        if lo is not None:
            masks["low"] = r < lo
        return -w * adv * _log_policy(ratio, trust), masks


# ------------------------------------------------------------------------------------------- SAPO
@CLIPS.register("sapo")
@dataclass
class SAPOClip(ClipRule):
    """SAPO: soft adaptive policy optimisation (Gao et al., Qwen, arXiv 2511.20347).

    A smooth, temperature-controlled gate replaces the hard clip: f_τ(r) = σ(τ·(r − 1))·4/τ and ℓ_t = −f_τ(r_t)·A,
    with τ = τ_pos for A > 0 and τ_neg otherwise. At r = 1 the gradient is exactly the policy gradient
    (f'(1) = 1); it decays smoothly as r leaves 1 instead of dropping to zero at 1 ± ε, and τ_neg > τ_pos
    attenuates negative-advantage tokens faster (their updates spread probability over the vocabulary and destabilise
    training, the paper argues). Defaults τ_pos = 1.0, τ_neg = 1.05 (verl and TRL). The anchors aggregate with
    ``seq-mean-token-mean`` (the catalog entry sets it). Anchors: verl ``compute_policy_loss_sapo``; TRL
    ``loss_type="sapo"``.
    """

    tau_pos: float = 1.0
    """Gate temperature τ for A > 0 tokens, f = σ(τ(r − 1))·4/τ (verl and TRL default 1.0)."""
    tau_neg: float = 1.05
    """Gate temperature τ for A ≤ 0 tokens (verl and TRL default 1.05; > τ_pos attenuates negatives faster)."""

    def __post_init__(self) -> None:
        check_range("sapo", "tau_pos", self.tau_pos, lo=0.0, lo_open=True)
        check_range("sapo", "tau_neg", self.tau_neg, lo=0.0, lo_open=True)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(None, None)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ℓ = −σ(τ(r − 1))·(4/τ)·A (class docstring)."""
        tau = torch.where(adv > 0, torch.full_like(adv, self.tau_pos), torch.full_like(adv, self.tau_neg))
        return -torch.sigmoid(tau * (ratio - 1.0)) * (4.0 / tau) * adv, {}


# ------------------------------------------------------------------------------------------- GMPO
@CLIPS.register("gmpo")
@dataclass
class GMPOClip(ClipRule):
    """GMPO: geometric-mean policy optimisation (Zhao et al., arXiv 2507.20673).

    The sequence's objective uses the geometric mean of its token ratios instead of their arithmetic mean, which an
    outlier token cannot dominate, with token-level clipping in log space: for sign s = sgn(A),
    ℓ̃_t = s·min(s·log r_t, s·clip(log r_t, −ε_low, ε_high)), R_i = exp((1/|o_i|) Σ_t ℓ̃_t) and the sequence loss
    −Â_i·R_i with Â_i the mean advantage of response i. Here every token carries −A_t·R_i (the ratio replaced by
    R_i), which the catalog entry's ``seq-mean-token-mean`` aggregation turns into exactly (1/G) Σ_i −Â_i R_i.
    Defaults ε_low = ε_high = 0.4 (the paper's clip range (e^−0.4, e^0.4)). Anchor: verl
    ``compute_policy_loss_geo_mean`` (``loss_mode=geo_mean``), which averages over every row of the batch.
    ``clip/frac_high``/``clip/frac_low``: tokens whose log-ratio was clipped, A > 0 / A < 0.
    """

    log_eps_low: float = 0.4
    """Lower clip of log r_t at −ε_low (log space; the paper's 0.4, ratio bound e^−0.4)."""
    log_eps_high: float = 0.4
    """Upper clip of log r_t at ε_high (log space; the paper's 0.4, ratio bound e^0.4)."""

    def __post_init__(self) -> None:
        check_range("gmpo", "log_eps_low", self.log_eps_low, lo=0.0)
        check_range("gmpo", "log_eps_high", self.log_eps_high, lo=0.0)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        m, adv = batch.mask, batch.advantages
        log_r = batch.logprobs - batch.old_logprobs.detach()
        sign = torch.sign(adv)
        clamped = torch.clamp(log_r, -self.log_eps_low, self.log_eps_high)
        kept = sign * torch.minimum(sign * log_r, sign * clamped)
        seq = torch.exp((kept * m).sum(-1) / (m.sum(-1) + 1e-8))
        clipped = (log_r.detach() != clamped.detach()).float()
        return TrustRegion(None, None, ratio=seq[:, None].expand_as(log_r), metrics={
            "clip/frac_high": float(masked_mean(clipped * (adv > 0), m)),
            "clip/frac_low": float(masked_mean(clipped * (adv < 0), m))})


# ------------------------------------------------------------------------------------------- GPG
@CLIPS.register("gpg")
@dataclass
class GPGLoss(ClipRule):
    """GPG: group policy gradient without a surrogate (Chu et al., arXiv 2504.02546): the plain REINFORCE loss
    ℓ_t = −A·log π_θ(y_t) — no ratio, no clip, no KL; its gradient equals the unclipped importance-sampled one on
    the first (on-policy) update and ignores π_old afterwards. Pair it with the ``gpg`` advantage (the catalog
    entry does). Anchor: verl ``compute_policy_loss_gpg``."""

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(None, None)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ℓ = −A·log π."""
        return -adv * _log_policy(ratio, trust), {}


# ------------------------------------------------------------------------------------------- DPPO
class _DPPO(ClipRule):
    """Shared body of DPPO's binary-divergence rules: the truncated-IS log-likelihood surrogate
    ℓ_t = −A·sg(min(r_t, c))·log π_θ(y_t), kept only on tokens inside the divergence trust region (``keep``)."""

    keep_metric = "divergence"
    delta_low: float
    delta_high: float
    trunc: float

    def __post_init__(self) -> None:
        check_range(self.name, "delta_low", self.delta_low, lo=0.0)
        check_range(self.name, "delta_high", self.delta_high, lo=0.0)
        check_range(self.name, "trunc", self.trunc, lo=1.0, lo_open=True)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(None, None)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ℓ = −A·sg(min(r, c))·log π; ``clip/frac_truncated``: tokens whose weight hit c."""
        w = torch.clamp(ratio.detach(), max=self.trunc)
        return -adv * w * _log_policy(ratio, trust), {"truncated": ratio.detach() > self.trunc}

    def divergence_ok(self, p: torch.Tensor, p_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, batch: RolloutBatch, ratio: torch.Tensor, clipped: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens inside the trust region: those whose move stays within δ, or that move against their advantage."""
        p = torch.exp(batch.logprobs.detach().float())
        p_old = torch.exp(batch.old_logprobs.detach().float())
        return self.divergence_ok(p, p_old, batch.advantages)


@CLIPS.register("dppo_tv")
@dataclass
class DPPOTVClip(_DPPO):
    """DPPO-Binary-TV: divergence proximal policy optimisation with a total-variation trust region (Qi et al.,
    "Rethinking the Trust Region in LLM Reinforcement Learning", arXiv 2602.04879).

    PPO's ratio clip over-penalises low-probability tokens (1e-5 → 1e-3 is a ratio of 100 and a negligible
    divergence) and under-penalises high-probability ones (0.99 → 0.8 is a ratio of 0.81 and a large one). DPPO
    bounds the divergence between the binary distributions {π(y_t), 1 − π(y_t)} instead, whose TV distance is
    |π − π_old|: a token is kept if A > 0 and π − π_old ≤ δ_high, or A ≤ 0 and π − π_old ≥ −δ_low; kept tokens
    get ℓ = −A·sg(min(r, c))·log π (truncated importance sampling, c = 20), the others 0. Defaults δ = 0.15 (verl's
    example script for the paper), c = 20 (verl's default ``clip_ratio_c`` for DPPO). Anchor: verl
    ``compute_policy_loss_dppo_tv``. ``clip/frac_divergence``: tokens outside the region.
    """

    delta_low: float = 0.15
    """TV threshold δ_low for A ≤ 0 tokens: kept while π − π_old ≥ −δ_low (verl's DPPO script 0.15)."""
    delta_high: float = 0.15
    """TV threshold δ_high for A > 0 tokens: kept while π − π_old ≤ δ_high (verl's DPPO script 0.15)."""
    trunc: float = 20.0
    """Truncation c of the detached importance weight min(r, c) (verl's DPPO default 20; > 1)."""

    def divergence_ok(self, p: torch.Tensor, p_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        diff = p - p_old
        return torch.where(adv > 0, diff <= self.delta_high, diff >= -self.delta_low)


@CLIPS.register("dppo_kl")
@dataclass
class DPPOKLClip(_DPPO):
    """DPPO-Binary-KL: DPPO with a KL trust region on the binary distributions (Qi et al., arXiv 2602.04879).

    D = π_old·log(π_old/π) + (1 − π_old)·log((1 − π_old + 1e-8)/(1 − π + 1e-8)), the KL between {π_old, 1 − π_old}
    and {π, 1 − π}; a token is kept if A > 0 and (D ≤ δ_high or π ≤ π_old), or A ≤ 0 and (D ≤ δ_low or π ≥ π_old) —
    a move against the advantage is never cut. Kept tokens get ℓ = −A·sg(min(r, c))·log π, the others 0. Defaults
    δ = 0.05 (verl's example script for the paper), c = 20. Anchor: verl ``compute_policy_loss_dppo_kl``.
    """

    delta_low: float = 0.05
    """Binary-KL threshold δ_low for A ≤ 0 tokens moving down (verl's DPPO script 0.05)."""
    delta_high: float = 0.05
    """Binary-KL threshold δ_high for A > 0 tokens moving up (verl's DPPO script 0.05)."""
    trunc: float = 20.0
    """Truncation c of the detached importance weight min(r, c) (verl's DPPO default 20; > 1)."""

    def divergence_ok(self, p: torch.Tensor, p_old: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
        kl = p_old * (torch.log(p_old) - torch.log(p)) + (1.0 - p_old) * torch.log((1.0 - p_old + 1e-8)
                                                                                   / (1.0 - p + 1e-8))
        return torch.where(adv > 0, (kl <= self.delta_high) | (p <= p_old), (kl <= self.delta_low) | (p >= p_old))


# ------------------------------------------------------------------------------------------- DRO
@CLIPS.register("dro")
@dataclass
class DROLoss(ClipRule):
    """DRO: direct reward optimisation's quadratic log-ratio penalty (Richemond et al., arXiv 2405.19107; the
    policy-mirror-descent form of Kimi k1.5, arXiv 2501.12599): ℓ_t = −(A·log π_θ(y_t) − ½β·(log π_θ(y_t) −
    log π_old(y_t))²). No clip: the penalty, whose gradient β·log r·∇log π pulls every token back towards the
    rollout policy, is the trust region — on every token, including those with A = 0. Default β = 0.05 (the usage
    example of verl's DRO loss and of Tinker's ``dro``; verl has no default and refuses none). Anchor: verl
    ``compute_policy_loss_dro``."""

    beta: float = 0.05
    """β of the penalty ½β(log π − log π_old)² (> 0; verl's and Tinker's usage example 0.05)."""

    def __post_init__(self) -> None:
        check_range("dro", "beta", self.beta, lo=0.0, lo_open=True)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        return TrustRegion(None, None)

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """ℓ = −(A·log π − ½β(log r)²)."""
        return -(adv * _log_policy(ratio, trust) - 0.5 * self.beta * _log_ratio(ratio, trust) ** 2), {}


# ------------------------------------------------------------------------------------------- VESPO
@CLIPS.register("vespo")
@dataclass
class VESPOLoss(ClipRule):
    """VESPO: variational sequence-level soft policy optimisation (arXiv 2602.10693).

    A smooth, asymmetric Gamma-shaped weight of the *sequence* importance ratio w_i = exp(Σ_t log r_t) (the product
    of its token ratios; log w clamped to [log 1e-8, 20], each log r_t to ±20) replaces the hard clip:
    φ(w) = e^λ·w^k·e^(−λw) (φ(1) = 1), detached, and ℓ_t = −φ(w_i)·A·log π_θ(y_t), with (k, λ) = (k_pos, λ_pos) for
    A ≥ 0 and (k_neg, λ_neg) otherwise. φ falls to 0 both as w → 0 (power k) and as w grows (decay λ), so stale
    or runaway sequences stop pushing. Defaults k_pos = 2, λ_pos = 3, k_neg = 3, λ_neg = 2 (TRL). The catalog
    entry aggregates with ``token-mean`` (TRL's normalisation for vespo). Anchor: TRL ``loss_type="vespo"``
    (``GRPOTrainer.get_gamma_weights``). Metric ``vespo/phi_mean``.
    """

    k_pos: float = 2.0
    """Power k for A ≥ 0 sequences: how fast φ falls as w → 0 (TRL default 2)."""
    lambda_pos: float = 3.0
    """Decay λ for A ≥ 0 sequences: how fast φ falls as w grows past 1 (TRL default 3; floored at 1e-4)."""
    k_neg: float = 3.0
    """Power k for A < 0 sequences (TRL default 3)."""
    lambda_neg: float = 2.0
    """Decay λ for A < 0 sequences (TRL default 2; floored at 1e-4)."""

    def __post_init__(self) -> None:
        for name in ("k_pos", "lambda_pos", "k_neg", "lambda_neg"):
            check_range("vespo", name, getattr(self, name), lo=0.0)

    def trust_region(self, batch: RolloutBatch, ratio: torch.Tensor) -> TrustRegion:
        m, adv = batch.mask, batch.advantages
        log_r = torch.clamp(batch.logprobs.detach() - batch.old_logprobs.detach(), -20.0, 20.0)
        log_w = torch.clamp((log_r * m).sum(-1, keepdim=True), math.log(1e-8), 20.0)
        nonneg = adv >= 0
        k = torch.where(nonneg, torch.full_like(adv, self.k_pos), torch.full_like(adv, self.k_neg))
        lam = torch.where(nonneg, torch.full_like(adv, self.lambda_pos), torch.full_like(adv, self.lambda_neg))
        lam = lam.clamp(min=1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
        return TrustRegion(None, None, weight=phi, metrics={"vespo/phi_mean": float(masked_mean(phi, m))})

    def surrogate(self, ratio: torch.Tensor, adv: torch.Tensor, trust: TrustRegion
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """−A·log π; the template multiplies it by the detached φ(w) of :meth:`trust_region`."""
        return -adv * _log_policy(ratio, trust), {}

"""Token selection and reweighting terms (catalog III): every token subset or weight goes through ``token_select``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.masked import masked_mean
from ...registry import check_range
from ..clip.base import importance_ratio
from ..controllers import EntropyController, batch_entropy
from ..extras import ForwardContext, RolloutContext, rollout_topk
from ..token_select import (
    TokenWeighting,
    check_choice,
    current_or_old,
    normalise,
    top_fraction,
)
from .base import TERMS, ObjectiveTerm, _require_extra, _seq_values


# --------------------------------------------------------------------------------------------- token selection
def _scope_requires(scope: str, batch_fields: set[str], micro_fields: set[str]) -> frozenset[str]:
    return frozenset(batch_fields if scope == "batch" else micro_fields)


@TERMS.register("forking_tokens")
@dataclass
class ForkingTokens(TokenWeighting, ObjectiveTerm):
    """Train only on high-entropy "forking" tokens (Wang et al., 2506.01939, "Beyond the 80/20 rule"):

        ℓ_t ← m_t·ℓ_t / (Σ m / N),   m_t = 𝟙[H_t among the top ⌈ρ·N⌉ entropies of the batch's N valid tokens]

    ρ = 0.2 (``entropy_top_ratio``). The reference code masks the DAPO loss with response_mask ⊙ m and takes the
    token-mean over the **selected** tokens (``normalizer="selected"``); ``"all"`` divides by every valid token, as
    the paper's written objective does. ``scope="batch"`` (default) ranks the whole rollout batch once, in
    ``prepare``, by the rollout policy's entropy; ``"micro"`` ranks each micro-batch by the current entropy (the
    reference ``get_global_entropy_top_mask`` over the micro-batch present).
    """

    ratio: float = 0.2
    """ρ: fraction of the batch's valid tokens kept, the top ⌈ρ·N⌉ by entropy (a fraction; entropy_top_ratio 0.2)."""
    scope: str = "batch"
    """'batch': weights once per rollout batch (π_old), in prepare; 'micro': per micro-batch (current π_θ)."""
    normalizer: str = "selected"
    """'selected': mean over the selected tokens, Σw·ℓ/Σw; 'all': over every valid token (code: selected)."""

    def __post_init__(self) -> None:
        check_range("forking_tokens", "ratio", self.ratio, lo=0.0, hi=1.0, lo_open=True)
        self._check_selection_fields()

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return _scope_requires(self.scope, {"old_entropy"}, {"entropy"})

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        ent = current_or_old(batch, "entropy", current)
        return top_fraction(ent, batch.mask, self.ratio).float(), {}


@TERMS.register("d3s")
@dataclass
class D3STokens(TokenWeighting, ObjectiveTerm):
    """D³S token-level down-sampling (Wang et al., 2509.22115): keep the tokens with the largest |A_t|·H_t across
    the batch, with a keep ratio relaxed from ρ_start to ρ_end over ``schedule_steps`` RL steps:

        ρ_k = ρ_start + (ρ_end − ρ_start)·min(1, k / K),   m_t = 𝟙[|A_t|·H_t among the top ⌈ρ_k·N⌉],
        ℓ_t ← m_t·ℓ_t (normalised over the kept tokens)

    Keep ratios and schedule were not recovered from the paper: ρ_start = 0.2, ρ_end = 1, K = 200 are readings.
    The sample-level half (keep the rollout subset maximising Var(A)) belongs to the sampling knob, not here.
    """

    ratio_start: float = 0.2
    """ρ_start: keep ratio at step 0, the top ⌈ρ·N⌉ tokens by |A|·H (a fraction; a reading)."""
    ratio_end: float = 1.0
    """ρ_end: keep ratio after schedule_steps (a fraction; 1 keeps every token; a reading)."""
    schedule_steps: int = 200
    """K: RL steps of the linear relaxation from ρ_start to ρ_end (a reading)."""
    scope: str = "batch"
    """'batch': weights once per rollout batch (π_old), in prepare; 'micro': per micro-batch (current π_θ)."""
    normalizer: str = "selected"
    """'selected': mean over the selected tokens, Σw·ℓ/Σw; 'all': over every valid token."""
    _step: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        check_range("d3s", "ratio_start", self.ratio_start, lo=0.0, hi=1.0, lo_open=True)
        check_range("d3s", "ratio_end", self.ratio_end, lo=0.0, hi=1.0, lo_open=True)
        if self.schedule_steps < 1:
            raise ConfigError(f"d3s.schedule_steps = {self.schedule_steps} must be >= 1")
        self._check_selection_fields()

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return _scope_requires(self.scope, {"old_entropy", "advantages"}, {"entropy", "advantages"})

    def ratio(self) -> float:
        frac = min(1.0, self._step / self.schedule_steps)
        return self.ratio_start + (self.ratio_end - self.ratio_start) * frac

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("advantages", who="objective term 'd3s'")
        score = batch.advantages.detach().abs().float() * current_or_old(batch, "entropy", current)
        return top_fraction(score, batch.mask, self.ratio()).float(), {"d3s/keep_ratio": self.ratio()}

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out, metrics = TokenWeighting.apply(self, loss, batch)
        metrics["d3s/keep_ratio"] = self.ratio()
        return out, metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        self._step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._step = int(state["step"])


@TERMS.register("dart_gui")
@dataclass
class HighEntropySteps(TokenWeighting, ObjectiveTerm):
    """DART-GUI step selection (Li et al., 2509.23866): aggregate token entropy into step entropy and train only
    on the high-entropy steps of the batch:

        H̄_s = mean of H_t over the tokens of step s,   m_t = 𝟙[step(t) among the top ⌈ρ·S⌉ steps by H̄_s]

    Steps come from ``batch.extras["step_id"]`` (B, T) (ids within a response, e.g. one per agent turn); without
    it each response is one step. The selection ratio was not recovered (ρ = 0.2, the 80/20 reading at step
    granularity, is a parameter). DART-GUI's truncated importance weight belongs to the clip knob.
    """

    ratio: float = 0.2
    """ρ: fraction of the batch's steps kept, the top ⌈ρ·S⌉ by mean entropy (a fraction; a reading, 80/20)."""
    scope: str = "batch"
    """'batch': weights once per rollout batch (π_old), in prepare; 'micro': per micro-batch (current π_θ)."""
    normalizer: str = "selected"
    """'selected': mean over the selected tokens, Σw·ℓ/Σw; 'all': over every valid token."""

    def __post_init__(self) -> None:
        check_range("dart_gui", "ratio", self.ratio, lo=0.0, hi=1.0, lo_open=True)
        self._check_selection_fields()

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return _scope_requires(self.scope, {"old_entropy"}, {"entropy"})

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        ent = current_or_old(batch, "entropy", current)
        steps = batch.extras.get("step_id")
        units = torch.zeros_like(batch.response_ids) if steps is None else steps.long()
        return top_fraction(ent, batch.mask, self.ratio, units=units).float(), {}


def lemma1_sampled_logit(logp: torch.Tensor, entropy: torch.Tensor, dz: torch.Tensor) -> torch.Tensor:
    """Lemma 1 of 2505.22617 (``ops.dynamics.predicted_entropy_change``) for a logit change on the sampled token
    only, Δz = dz·e_a: ΔH ≈ −Cov_π(log π, Δz) = −dz·π_a·(log π_a + H)."""
    return -dz * logp.exp() * (logp + entropy)


def steer_omega(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """STEER's per-token entropy-change estimate Ω_t = (A_t/π_old)·π(1 − π)·(log π + H) (2510.10150; detached).

    Ω is −ΔH of Lemma 1 (``lemma1_sampled_logit``, the one-hot case of ``ops.dynamics.predicted_entropy_change``)
    for a change of the sampled token's logit alone by δ = (A/π_old)·(1 − π).
    """
    lp, olp, a, h = (x.detach().float() for x in (logp, old_logp, adv, entropy))
    dz = a * (1.0 - lp.exp()) / olp.exp()
    return -lemma1_sampled_logit(lp, h, dz)


@TERMS.register("steer")
@dataclass
class Steer(TokenWeighting, ObjectiveTerm):
    """STEER (Hao et al., 2510.10150; ``compute_token_weights``): down-weight the tokens predicted to change the
    entropy most, in either direction.

        Ω_t = (A_t/π_old(o_t))·π_θ(o_t)·(1 − π_θ(o_t))·(log π_θ(o_t) + H_t)          (``steer_omega``)
        exponential: w = clamp(exp(−k·|Ω_t|), w_min, 1),  k = −ln(w_min)/max(max_batch |Ω|, 0.02)
        linear:      w = w_max − (|Ω| − min|Ω|)/(max|Ω| − min|Ω|)·(w_max − w_min)
        ℓ_t ← w_t·ℓ_t  (token-mean over all tokens: ``normalizer="all"``)

    Defaults (code): exponential, w_min = 0.8 (the linear mode's are 0.8/1.2, set ``w_max``). ``scope="micro"``
    (the code's) uses the current π_θ and H; ``"batch"`` computes Ω once on the rollout batch, where π_θ = π_old.
    """

    mode: str = "exp"
    """Weight map of |Ω|: 'exp' (w = clamp(exp(−k·|Ω|), w_min, 1), the code's default) or 'linear'."""
    w_min: float = 0.8
    """Smallest token weight, given to the largest |Ω| (in (0, 1]; code 0.8)."""
    w_max: float = 1.0
    """Largest token weight of the linear mode, given to the smallest |Ω| (≥ w_min; the code's linear 1.2)."""
    omega_floor: float = 0.02
    """Floor of max |Ω| in the exp mode's k = −ln(w_min)/max(max|Ω|, floor) (code 0.02)."""
    scope: str = "micro"
    """'micro': Ω per micro-batch from the current π_θ and H (code); 'batch': once per rollout batch (π_θ = π_old)."""
    normalizer: str = "all"
    """'selected': mean over the selected tokens, Σw·ℓ/Σw; 'all': over every valid token (code: all)."""

    def __post_init__(self) -> None:
        check_choice("steer", "mode", self.mode, ("exp", "linear"))
        check_range("steer", "w_min", self.w_min, lo=0.0, hi=1.0, lo_open=True)
        check_range("steer", "w_max", self.w_max, lo=self.w_min)
        check_range("steer", "omega_floor", self.omega_floor, lo=0.0, lo_open=True)
        self._check_selection_fields()

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return _scope_requires(self.scope, {"old_entropy", "advantages"}, {"entropy", "logprobs", "advantages"})

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("advantages", who="objective term 'steer'")
        logp = current_or_old(batch, "logprobs", current)
        ent = current_or_old(batch, "entropy", current)
        omega = steer_omega(logp, batch.old_logprobs, batch.advantages, ent).abs()
        valid = batch.mask > 0
        if not bool(valid.any()):
            return torch.zeros_like(omega), {}
        hi, lo = float(omega[valid].max()), float(omega[valid].min())
        if self.mode == "exp":
            k = -math.log(self.w_min) / max(hi, self.omega_floor)
            w = torch.exp(-k * omega).clamp(self.w_min, 1.0)
        else:
            span = hi - lo
            w = torch.full_like(omega, self.w_max) if span <= 0 else \
                self.w_max - (omega - lo) / span * (self.w_max - self.w_min)
        return w, {"steer/omega_max": hi}


@TERMS.register("ulorl")
@dataclass
class MaskMasteredPositives(TokenWeighting, ObjectiveTerm):
    """UloRL's dynamic masking of well-mastered positive tokens, DMMPT (Du et al., 2507.19766 Eqs. 9–10):

        mask_{i,t} = 𝟙[r_i ≥ r⁺] · 𝟙[p(o_{i,t}) ≥ τ] · 𝟙[H̄_i < σ],     ℓ_{i,t} ← (1 − mask_{i,t})·ℓ_{i,t}

    token-mean over **all** tokens (``normalizer="all"``, the paper's J). H̄_i = mean token entropy of response i
    (``entropy_scope="response"``, the paper's) or of the whole batch (``"batch"``, the survey's "policy's average
    entropy"); the gate "H̄ < σ" is an ``EntropyController`` error sign with target σ. p is the rollout policy's
    probability at batch scope. Defaults (paper): τ = 0.99, σ = 0.2, r⁺ = 1 (binary rewards).
    """

    tau: float = 0.99
    """τ: a token of a positive response is masked when its probability p(o_t) ≥ τ (paper 0.99)."""
    sigma: float = 0.2
    """σ: masking is on only while the mean entropy H̄ < σ, in nats per token (paper 0.2)."""
    positive_reward: float = 1.0
    """r⁺: a response is positive when its reward ≥ r⁺ (paper 1, binary rewards)."""
    entropy_scope: str = "response"
    """Entropy compared with σ: 'response' (its own mean, the paper's) or 'batch' (the batch's mean)."""
    scope: str = "batch"
    """'batch': weights once per rollout batch (π_old), in prepare; 'micro': per micro-batch (current π_θ)."""
    normalizer: str = "all"
    """'selected': mean over the selected tokens, Σw·ℓ/Σw; 'all': over every valid token (paper: all)."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("ulorl", "tau", self.tau, lo=0.0, hi=1.0)
        check_range("ulorl", "sigma", self.sigma, lo=0.0)
        check_choice("ulorl", "entropy_scope", self.entropy_scope, ("response", "batch"))
        self._check_selection_fields()
        self._ctl = EntropyController(low=self.sigma, high=self.sigma, owner="ulorl")

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return _scope_requires(self.scope, {"old_entropy"}, {"entropy", "logprobs"})

    def mastered(self, batch: RolloutBatch, current: bool) -> torch.Tensor:
        """Bool (B, T): the masked tokens."""
        logp = current_or_old(batch, "logprobs", current)
        ent = current_or_old(batch, "entropy", current)
        m = batch.mask
        if self.entropy_scope == "response":
            h = _seq_values(ent, m)
        else:
            h = torch.full((m.shape[0],), float(masked_mean(ent, m)))
        low = torch.tensor([self._ctl.error(float(x)) < 0 for x in h], dtype=torch.bool)
        positive = batch.rewards.float() >= self.positive_reward
        return (positive & low)[:, None] & (logp.exp() >= self.tau) & (m > 0)

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        masked = self.mastered(batch, current)
        return 1.0 - masked.float(), {"ulorl/masked_frac": float(masked_mean(masked.float(), batch.mask))}

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        out, metrics = TokenWeighting.apply(self, loss, batch)
        metrics["ulorl/masked_frac"] = 1.0 - metrics.pop(f"select/{self.name}_frac")
        return out, metrics


@TERMS.register("simko")
@dataclass
class SimKO(ObjectiveTerm):
    """SimKO (Peng et al., 2510.14807; ``compute_policy_loss_simko``): asymmetric top-K smoothing at forking tokens.

    Forking tokens: H_t > the τ-quantile of its response's entropies (top 20 % per response, τ = 0.8). There,
    - correct responses (A > 0): the ratio becomes r̃ = (1 − α)·r + (α/K)·Σ_k r^(k)·sg(r/r^(k)), r^(k) the ratio of
      the k-th top candidate token — equal to r in value, its gradient spread over the top-K candidates;
    - incorrect responses (A < 0) whose sampled token is the rollout policy's top-1: the advantage is scaled by 1.1.
    The term adds ℓ_PPO(r̃, Ã) − ℓ_PPO(r, A) (value 0 where nothing changes) to the incoming loss, so with a PPO clip
    rule of the same ε the result is SimKO's loss. Defaults (code): K = 3, α = 0.01, τ = 0.8, scale 1.1, ε = 0.2.

    The PPO surrogate is the objective's own clip rule (``ClipRule.surrogate`` with its trust region), composed, not
    re-implemented: SimKO's ε is the clip knob's ε.

    Computes its extras from the engine's logits: ``topk_ids`` and ``old_topk_logprobs`` (B, T, K) — the rollout
    policy's top-K tokens, sorted, and their log π_old — once per rollout batch, and ``topk_logprobs`` (b, T, K) —
    log π_θ of the *same* token ids, with gradient — in every update forward.
    """

    extras = frozenset({"topk_ids", "old_topk_logprobs", "topk_logprobs"})
    engine_primitives = frozenset({"rollout_logits", "policy_logits"})
    requires = frozenset({"logprobs", "advantages", "old_entropy"})
    top_k: int = 3
    """K: number of top candidate tokens the positive ratio's gradient is spread over (code 3)."""
    alpha: float = 0.01
    """α: share of the smoothed top-K part in r̃ = (1 − α)·r + (α/K)·Σ_k ... (a fraction; code 0.01)."""
    tau: float = 0.8
    """τ: per-response entropy quantile; tokens above it are forking (0.8 = the top 20 %; code 0.8)."""
    neg_scale: float = 1.1
    """Advantage scale on top-1 sampled tokens of incorrect responses at forking tokens (code 1.1)."""
    _clip: Any = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"simko.top_k = {self.top_k} must be >= 1")
        check_range("simko", "alpha", self.alpha, lo=0.0, hi=1.0)
        check_range("simko", "tau", self.tau, lo=0.0, hi=1.0, hi_open=True)
        check_range("simko", "neg_scale", self.neg_scale, lo=0.0)

    def attach(self, objective: Any) -> None:
        self._clip = objective.clip

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        ids, logps = rollout_topk(ctx, self.top_k)
        return {"topk_ids": ids, "old_topk_logprobs": logps}

    def forward_extras(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        return {"topk_logprobs": torch.log_softmax(ctx.logits(), -1).gather(-1, ctx.micro.extras["topk_ids"].long())}

    def forking(self, batch: RolloutBatch) -> torch.Tensor:
        return top_fraction(batch.old_entropy, batch.mask, 1.0 - self.tau, within="sequence", rule="quantile")

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        how = "the engine must provide the top-K candidates' log-probs (see the SimKO docstring)"
        old_top = _require_extra(batch, "old_topk_logprobs", self.name, how).float()[..., : self.top_k]
        cur_top = _require_extra(batch, "topk_logprobs", self.name, how)[..., : self.top_k]
        adv = batch.advantages
        fork = self.forking(batch)
        r = importance_ratio(batch.logprobs, batch.old_logprobs)
        r_k = torch.exp(torch.clamp(cur_top - old_top, -20.0, 20.0))  # (B, T, K)
        spread = (r_k * (r[..., None] / r_k).detach()).mean(-1)
        r_tilde = (1.0 - self.alpha) * r + self.alpha * spread
        top1 = batch.old_logprobs.detach() >= old_top[..., 0] - 1e-6
        pos = fork & (adv > 0)
        neg = fork & (adv < 0) & top1
        a_tilde = torch.where(neg, self.neg_scale * adv, adv)
        ratio = torch.where(pos, r_tilde, r)
        if self._clip is None:
            raise ConfigError("simko composes the objective's clip rule: build it inside a PolicyObjective")
        trust = self._clip.trust_region(batch, r)
        new, _ = self._clip.surrogate(ratio, a_tilde, trust)
        plain, _ = self._clip.surrogate(r, adv, trust)
        changed = pos | neg
        out = loss + torch.where(changed, new - plain, torch.zeros_like(new))
        m = batch.mask
        return out, {"simko/fork_frac": float(masked_mean(fork.float(), m)),
                     "simko/pos_frac": float(masked_mean(pos.float(), m)),
                     "simko/neg_top1_frac": float(masked_mean(neg.float(), m))}


# --------------------------------------------------------------------------------------------- loss reweighting
SCHEDULES = ("entropy", "stage", "epoch")


@TERMS.register("pos_adv_reweight")
@dataclass
class PositiveAdvantageReweight(ObjectiveTerm):
    """Positive-advantage reweighting (Jin et al., 2511.05993 — the survey's Prog-Adv-Reweight):

        ℓ_t ← λ_k·ℓ_t if A_t > 0, else ℓ_t

    with λ scheduled:
    - ``entropy`` (the paper's main): λ_{k+1} = clip(λ_k − Δ, 0, 1) if H_k < δ, else clip(λ_k + Δ, 0, 1)
      (an ``EntropyController``, sign law, H_k the step's rollout entropy), λ₀ = 0;
    - ``stage``: λ = 0 for the first half of ``total_steps``, then linear 0 → 1;
    - ``epoch``: λ = (e − 1)/(E − 1) in epoch e = 1..E (E = ``num_epochs`` of ``steps_per_epoch`` steps).
    Defaults (paper): δ = 0.2, Δ = 0.05, λ₀ = 0.
    """

    requires = frozenset({"advantages", "old_entropy"})
    schedule: str = "entropy"
    """How λ is scheduled: 'entropy' (controller, the paper's main), 'stage' or 'epoch'."""
    target: float = 0.2
    """δ: entropy threshold in nats per token; λ falls while H_k < δ, else rises (schedule entropy; paper 0.2)."""
    delta: float = 0.05
    """Δ: step of λ per RL step (schedule entropy; paper 0.05)."""
    init: float = 0.0
    """Initial weight λ₀ of positive-advantage tokens (paper 0)."""
    total_steps: int = 0
    """RL steps of the stage schedule: λ = 0 for the first half, then linear 0 → 1 (needs ≥ 2)."""
    num_epochs: int = 0
    """E of the epoch schedule, λ = (e − 1)/(E − 1) in epoch e (needs ≥ 2)."""
    steps_per_epoch: int = 0
    """RL steps per epoch of the epoch schedule (needs ≥ 1)."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _step: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        check_choice("pos_adv_reweight", "schedule", self.schedule, SCHEDULES)
        check_range("pos_adv_reweight", "delta", self.delta, lo=0.0)
        if self.schedule == "stage" and self.total_steps < 2:
            raise ConfigError("pos_adv_reweight with schedule='stage' needs total_steps >= 2")
        if self.schedule == "epoch" and (self.num_epochs < 2 or self.steps_per_epoch < 1):
            raise ConfigError("pos_adv_reweight with schedule='epoch' needs num_epochs >= 2 and steps_per_epoch >= 1")
        self._ctl = EntropyController(low=self.target, high=self.target, ki=self.delta, law="sign",
                                      form="incremental", init=self.init, lo=0.0, hi=1.0, owner="pos_adv_reweight")

    def weight(self) -> float:
        """λ for this step's update."""
        k = self._step
        if self.schedule == "entropy":
            return self._ctl.value()
        if self.schedule == "stage":
            half = self.total_steps / 2.0
            return 0.0 if k < half else min(1.0, (k - half) / half)
        epoch = min(self.num_epochs, k // self.steps_per_epoch + 1)
        return (epoch - 1) / (self.num_epochs - 1)

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        if self.schedule == "entropy":
            self._ctl.observe(batch_entropy(batch))
        return batch

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        lam = self.weight()
        w = torch.where(batch.advantages > 0, torch.full_like(loss, lam), torch.ones_like(loss))
        return loss * w, {"control/pos_adv_reweight/value": lam}

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        self._ctl.commit()
        self._step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._ctl.state_dict(), "step": self._step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ctl.load_state_dict(state["controller"])
        self._step = int(state["step"])


@TERMS.register("entropic")
@dataclass
class EntroPIC(ObjectiveTerm):
    """EntroPIC (Yang et al., 2511.15248; released ``compute_policy_loss_entropic``): PI control of entropy through
    the loss of high-probability tokens.

        e_k = H_k − H*,   α_k = clip(K_p·e_k + K_i·Σ_{τ<k} e_τ, −1, 1)
        ℓ_t ← ℓ_t + α_k·w_t·(−r_t·|A_t|),   w = 𝟙[π_θ(o_t) > p_hi] normalised over the selected tokens

    i.e. high-probability tokens of positive samples are weighted (1 + α) and of negative samples (1 − α): when
    entropy is too low (α < 0) the positive ones are damped and the negative ones pushed down harder, which raises
    entropy, and the reverse when it is too high. Defaults (code): K_p = 1, K_i = 0.01, p_hi = 0.95, α ∈ [−1, 1].
    H* has no published default (the code disables control with −1): 0.2 is a reading. **Departure:** the code
    measures H on each micro-batch's current entropy and integrates per micro-batch; here H_k is the step's rollout
    entropy and the integral advances once per RL step.
    """

    requires = frozenset({"logprobs", "advantages", "old_entropy"})
    target: float = 0.2
    """Target entropy H* in nats per token (no published default; the code disables control with −1; a reading)."""
    kp: float = 1.0
    """K_p: proportional gain on e_k = H_k − H*, per nat (code 1)."""
    ki: float = 0.01
    """K_i: integral gain on the summed error, per nat per step (code 0.01)."""
    high_prob: float = 0.95
    """p_hi: tokens with π_θ(o_t) > p_hi are the ones reweighted (a probability; code 0.95)."""
    alpha_max: float = 1.0
    """Bound of the control output, α ∈ [−alpha_max, alpha_max] (code 1)."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("entropic", "target", self.target, lo=0.0)
        check_range("entropic", "high_prob", self.high_prob, lo=0.0, hi=1.0)
        check_range("entropic", "alpha_max", self.alpha_max, lo=0.0)
        self._ctl = EntropyController(low=self.target, high=self.target, kp=self.kp, ki=self.ki, law="linear",
                                      form="positional", init=0.0, lo=-self.alpha_max, hi=self.alpha_max,
                                      owner="entropic")

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        self._ctl.observe(batch_entropy(batch))
        return batch

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        alpha = self._ctl.value()
        sel = (batch.logprobs.detach().exp() > self.high_prob).float()
        w = normalise(sel, batch.mask, "selected")
        r = importance_ratio(batch.logprobs, batch.old_logprobs)
        metrics = self._ctl.metrics("control/entropic")
        metrics["entropic/high_prob_frac"] = float(masked_mean(sel, batch.mask))
        return loss + alpha * w.to(loss.dtype) * (-r * batch.advantages.abs()), metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        self._ctl.commit()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._ctl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ctl.load_state_dict(state["controller"])

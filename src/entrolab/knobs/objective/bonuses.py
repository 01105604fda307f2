"""Entropy bonuses with a controlled coefficient (catalog III): every entropy-targeting coefficient is a
``controllers.EntropyController``.
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
from ..controllers import EntropyController, TokenMeanMeter, batch_entropy
from ..extras import ForwardContext, RolloutContext, answer_start_positions
from .base import TERMS, EntropyBonus, ObjectiveTerm, _require_extra, entropy_with_grad


# --------------------------------------------------------------------------------------------- entropy bonuses
@TERMS.register("adaptive_entropy")
@dataclass
class AdaptiveEntropyBonus(ObjectiveTerm):
    """Adaptive entropy control (Skywork-OR1, He et al., 2505.22312): an entropy bonus whose coefficient steps
    toward a target entropy H*, one step per RL step:

        ℓ_t ← ℓ_t − α_k·H_t,   α_k = c_k·𝟙[H_k ≤ H*] (``gate``),   c_{k+1} = clip(c_k + Δ·sign(H* − H_k), c_min, c_max)

    H_k = token-mean rollout entropy of step k (``old_entropy``), H_t the current full-vocabulary entropy (with
    gradient). Defaults from the released 7B script (``adaptive_entropy.*``): H* = 0.2, Δ = 0.001, c ∈ [0, 0.5];
    c₀ = 0 and the below-target gate follow the paper's description. An ``EntropyController`` (sign law,
    incremental form) holds c.
    """

    requires = frozenset({"entropy", "old_entropy"})
    target: float = 0.2
    """Target entropy H* in nats per token (mean rollout entropy); the coefficient steps toward it (7B script 0.2)."""
    delta: float = 0.001
    """Step Δ of the coefficient per RL step, c ← c + Δ·sign(H* − H_k) (7B script 0.001)."""
    init: float = 0.0
    """Initial coefficient c₀ (paper's description: 0)."""
    coef_min: float = 0.0
    """Lower clip c_min of the coefficient (7B script 0)."""
    coef_max: float = 0.5
    """Upper clip c_max of the coefficient (7B script 0.5)."""
    gate: bool = True
    """Apply the bonus only while H_k ≤ H* (α_k = 0 above the target), as the paper describes."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("adaptive_entropy", "target", self.target, lo=0.0)
        check_range("adaptive_entropy", "delta", self.delta, lo=0.0)
        check_range("adaptive_entropy", "coef_min", self.coef_min, lo=0.0)
        self._ctl = EntropyController(low=self.target, high=self.target, ki=-self.delta, law="sign",
                                      form="incremental", init=self.init, lo=self.coef_min, hi=self.coef_max,
                                      owner="adaptive_entropy")

    def coefficient(self) -> float:
        """α_k for this step's update (0 while the gate is shut)."""
        h = self._ctl.pending
        if self.gate and h is not None and h > self.target:
            return 0.0
        return self._ctl.value()

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        self._ctl.observe(batch_entropy(batch))
        return batch

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, self.name)
        coef = self.coefficient()
        metrics = self._ctl.metrics("control/adaptive_entropy")
        metrics["control/adaptive_entropy/coef"] = coef
        return loss - coef * ent, metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        self._ctl.commit()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._ctl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ctl.load_state_dict(state["controller"])


def difficulty_weights(rewards: torch.Tensor, group_ids: torch.Tensor, correct_threshold: float) -> torch.Tensor:
    """AER's difficulty allocation (B,): d_q = 1 − acc_q with acc_q the fraction of prompt q's responses whose
    reward ≥ ``correct_threshold``, normalised to mean 1 over the batch's prompts (all 0 if every prompt is
    solved), broadcast to the prompt's responses."""
    correct = (rewards >= correct_threshold).float()
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    acc = torch.zeros(len(uniq)).index_add_(0, inv, correct) / torch.zeros(len(uniq)).index_add_(
        0, inv, torch.ones_like(correct))
    d = 1.0 - acc
    mean = float(d.mean())
    return (d / mean)[inv] if mean > 0 else torch.zeros_like(correct)


@TERMS.register("aer")
@dataclass
class AdaptiveEntropyRegularization(ObjectiveTerm):
    """AER (Zhang et al., 2510.10959): difficulty-aware entropy bonus with an initial-anchored target.

        ℓ_{i,t} ← ℓ_{i,t} − α_k·d_{q(i)}·H_{i,t}
        d_q = (1 − acc_q) / mean_q'(1 − acc_q')                       (harder prompts get more bonus)
        H* = ρ·H₀ (H₀ the first step's rollout entropy),  α_{k+1} = clip(α_k − η·(H_k − H*), 0, α_max)

    The paper's three components are implemented as described in its abstract; the exact formulas and values
    were not recovered, so every default here (ρ = 0.5, η = 1e-3, α₀ = 1e-3, α_max = 1e-2, correct ⇔ reward ≥ 1)
    is a reading, each a parameter. α_max = 1e-2 is where a fixed bonus made entropy explode in 2505.22617 §4.1.
    """

    requires = frozenset({"entropy", "old_entropy"})
    target_ratio: float = 0.5
    """ρ of the initial-anchored target H* = ρ·H₀, H₀ the first step's rollout entropy (> 0; a reading)."""
    gain: float = 1e-3
    """η of the coefficient update α ← clip(α − η·(H_k − H*), 0, α_max), per nat of error (a reading)."""
    init: float = 1e-3
    """Initial coefficient α₀ (a reading)."""
    coef_max: float = 1e-2
    """Upper clip α_max of the coefficient (a reading: where a fixed bonus made entropy explode in 2505.22617)."""
    correct_threshold: float = 1.0
    """A response is correct when its reward ≥ this (accuracy for the difficulty d_q; a reading)."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("aer", "target_ratio", self.target_ratio, lo=0.0, lo_open=True)
        check_range("aer", "gain", self.gain, lo=0.0)
        self._ctl = EntropyController(low=0.0, high=0.0, anchor=self.target_ratio, ki=-self.gain, law="linear",
                                      form="incremental", init=self.init, lo=0.0, hi=self.coef_max, owner="aer")

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        self._ctl.observe(batch_entropy(batch))
        d = difficulty_weights(batch.rewards.float(), batch.group_ids, self.correct_threshold)
        return batch.replace(extras={**batch.extras, "aer_difficulty": d})

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, self.name)
        d = _require_extra(batch, "aer_difficulty", self.name, "call PolicyObjective.prepare() on the rollout batch")
        coef = self._ctl.value()
        metrics = self._ctl.metrics("control/aer")
        metrics["aer/difficulty_max"] = float(d.max()) if d.numel() else 0.0
        return loss - coef * d.to(loss.dtype)[:, None] * ent, metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        self._ctl.commit()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._ctl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ctl.load_state_dict(state["controller"])


def clamped_entropy_from_logits(logits: torch.Tensor, clamp_p: float, temperature: float = 1.0) -> torch.Tensor:
    """AEnt's clamped entropy (2509.03493) per position: drop the ⌊p·|V|⌋ lowest logits, renormalise, and take the
    entropy H̃ = logsumexp(z̃) − Σ softmax(z̃)·z̃ of what is left, z = logits/T. Differentiable; (..., V) → (...).

    Engines compute it in the policy forward pass (chunked over tokens, like the fused entropy) and pass it as
    ``batch.extras["clamped_entropy"]`` with gradient.
    """
    check_range("clamped_entropy", "clamp_p", clamp_p, lo=0.0, hi=1.0, hi_open=True)
    z = logits.float() / temperature
    keep = z.shape[-1] - int(clamp_p * z.shape[-1])
    top = torch.topk(z, keep, dim=-1).values if keep < z.shape[-1] else z
    logp = torch.log_softmax(top, -1)
    return -(logp.exp() * logp).sum(-1)


@TERMS.register("aent")
@dataclass
class AEnt(ObjectiveTerm):
    """AEnt (Shen, 2509.03493; ``recipe/aent``): clamped-entropy bonus with a band controller.

        ℓ_t ← ℓ_t − λ_k·H̃_t,   H̃_t = entropy of π(·|s_t) restricted to its top (1 − p)·|V| tokens, renormalised
        λ_{k+1} = clip(λ_k − η·[min(0, H̃_k − H_low) + max(0, H̃_k − H_high) + c_reg·(λ_k − λ₀)], λ_min, λ_max)

    after a warm-up of W steps (λ = λ₀ before). H̃_k = token-mean clamped entropy of step k's updates.
    Defaults from the OpenR1 1.5B script: p = 0.25, λ₀ = 3e-4, [H_low, H_high] = [0.35, 0.62], η = 1e-4,
    W = 156, λ ∈ [4e-5, 1e-3], c_reg = 0 (the README's config uses p = 0.3, λ₀ = 2e-4).

    Needs ``batch.extras["clamped_entropy"]`` (B, T): H̃ of the *current* policy with gradient, computed by the
    forward pass from the logits with ``clamped_entropy_from_logits(logits, clamp_p)`` — the full-vocabulary
    ``batch.entropy`` is not enough (the top-(1−p) set needs every logit). ``clamp_p = 0`` falls back to
    ``batch.entropy`` (no truncation, only the adaptive coefficient).
    """

    extras = frozenset({"clamped_entropy"})
    engine_primitives = frozenset({"policy_logits"})
    clamp_p: float = 0.25
    """Fraction p of |V|, the lowest logits, dropped for H̃; 0 = full entropy (1.5B script 0.25; README 0.3)."""
    init: float = 3e-4
    """Initial coefficient λ₀, held through the warm-up (OpenR1 1.5B script 3e-4; the README's config 2e-4)."""
    ent_low: float = 0.35
    """Lower edge H_low of the target band for H̃, in nats per token (1.5B script 0.35)."""
    ent_high: float = 0.62
    """Upper edge H_high of the target band for H̃, in nats per token (1.5B script 0.62)."""
    lr: float = 1e-4
    """η: step of λ per nat of band error per RL step (1.5B script 1e-4)."""
    warmup: int = 156
    """W: RL steps with λ = λ₀ before the controller acts (1.5B script 156)."""
    coef_min: float = 4e-5
    """Lower clip λ_min of the coefficient (1.5B script 4e-5)."""
    coef_max: float = 1e-3
    """Upper clip λ_max of the coefficient (1.5B script 1e-3)."""
    c_reg: float = 0.0
    """c_reg: pull of λ back toward λ₀ in the update, η·c_reg·(λ − λ₀) (1.5B script 0)."""
    _ctl: EntropyController = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _meter: TokenMeanMeter = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("aent", "clamp_p", self.clamp_p, lo=0.0, hi=1.0, hi_open=True)
        check_range("aent", "lr", self.lr, lo=0.0)
        check_range("aent", "c_reg", self.c_reg, lo=0.0)
        self._ctl = EntropyController(low=self.ent_low, high=self.ent_high, ki=-self.lr, law="linear",
                                      form="incremental", init=self.init, lo=self.coef_min, hi=self.coef_max,
                                      leak=self.lr * self.c_reg, warmup=self.warmup, owner="aent")
        self._meter = TokenMeanMeter()

    @property
    def requires(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"entropy"}) if self.clamp_p == 0 else frozenset({"logprobs"})

    def forward_extras(self, ctx: ForwardContext) -> dict[str, torch.Tensor]:
        """``clamped_entropy`` (b, T): H̃ of the current policy's logits, with gradient."""
        return {"clamped_entropy": clamped_entropy_from_logits(ctx.logits(), self.clamp_p)}

    def clamped_entropy(self, batch: RolloutBatch) -> torch.Tensor:
        if self.clamp_p == 0:
            return entropy_with_grad(batch, self.name)
        h = _require_extra(batch, "clamped_entropy", self.name,
                           "the policy forward must add clamped_entropy_from_logits(logits, clamp_p) with gradient")
        return entropy_with_grad(batch, self.name, h)

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.clamped_entropy(batch)
        self._meter.add(h, batch.mask)
        coef = self._ctl.value()
        metrics = self._ctl.metrics("control/aent")
        metrics["aent/clamped_entropy"] = float(masked_mean(h.detach(), batch.mask))
        return loss - coef * h, metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        h = self._meter.pop()
        if h is not None:
            self._ctl.observe(h)
        self._ctl.commit()

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self._ctl.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._ctl.load_state_dict(state["controller"])


STAGE_OTHER, STAGE_REFLECTION, STAGE_ANSWER = 0, 1, 2


def stage_ids_from_answer_start(mask: torch.Tensor, answer_start: torch.Tensor) -> torch.Tensor:
    """(B, T) stage ids for AEPO-He: 1 (reflection) before ``answer_start[i]`` (B,), 2 (answer) from it; 0 on
    padding. Engines locate ``answer_start`` from the response's answer marker (e.g. the first token after
    ``</think>`` or of ``<answer>``); a response without one is all reflection (answer_start = T)."""
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device)[None, :]
    ids = torch.where(pos < answer_start.long()[:, None], STAGE_REFLECTION, STAGE_ANSWER)
    return torch.where(mask > 0, ids, torch.full_like(ids, STAGE_OTHER))


@TERMS.register("aepo_stage_entropy")
@dataclass
class StageEntropy(ObjectiveTerm):
    """Stage-dependent entropy (AEPO's Adaptive-Entropy Optimization, He et al., 2511.06380):

        ℓ_t ← ℓ_t − α_r·H_t·𝟙[stage_t = reflection] + α_a·H_t·𝟙[stage_t = answer]

    more exploration inside the reflection, commitment at the answer. Needs ``batch.extras["stage"]`` (B, T) int
    (0 other, 1 reflection, 2 answer; see ``stage_ids_from_answer_start``). The paper's formulas and values were not
    recovered: α_r = α_a = 1e-3 (the usual bonus scale) is a reading. The Reflection-aware Information Filtration
    (RIF) half of AEPO is not implemented.
    """

    extras = frozenset({"stage"})
    engine_primitives = frozenset({"tokenizer"})
    requires = frozenset({"entropy"})
    coef_reflection: float = 1e-3
    """α_r: entropy bonus weight on reflection-stage tokens (a reading: the usual bonus scale)."""
    coef_answer: float = 1e-3
    """α_a: entropy penalty weight on answer-stage tokens (a reading: the usual bonus scale)."""

    def __post_init__(self) -> None:
        check_range("aepo_stage_entropy", "coef_reflection", self.coef_reflection, lo=0.0)
        check_range("aepo_stage_entropy", "coef_answer", self.coef_answer, lo=0.0)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``stage`` (B, T): reflection before each response's answer marker, answer from it."""
        b = ctx.batch
        start = answer_start_positions(ctx.require_tokenizer(self.name), b.response_ids, b.mask)
        return {"stage": stage_ids_from_answer_start(b.mask, start)}

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, self.name)
        stage = _require_extra(batch, "stage", self.name,
                               "the engine must tag response tokens (1 reflection, 2 answer), e.g. with "
                               "stage_ids_from_answer_start")
        refl = (stage == STAGE_REFLECTION).to(loss.dtype)
        ans = (stage == STAGE_ANSWER).to(loss.dtype)
        m = batch.mask
        metrics = {"aepo/reflection_frac": float(masked_mean(refl, m)),
                   "aepo/entropy_reflection": float((ent.detach() * refl * m).sum() / (refl * m).sum().clamp(min=1)),
                   "aepo/entropy_answer": float((ent.detach() * ans * m).sum() / (ans * m).sum().clamp(min=1))}
        return loss - self.coef_reflection * refl * ent + self.coef_answer * ans * ent, metrics


def epo_phase_weight(step: int, total_steps: int) -> float:
    """EPO's phase weight w(e) (released ``dp_actor.py``): over the first half, prog = e/(E/2) and
    w = 1 − 0.2·(1 − exp(−2·prog)) (1 → ≈0.83); over the second half, prog = (e − E/2)/(E/2) and
    w = 0.8·exp(−3·prog)."""
    half = total_steps / 2.0
    if step < half:
        return 1.0 - 0.2 * (1.0 - math.exp(-2.0 * step / half))
    return 0.8 * math.exp(-3.0 * min(1.0, (step - half) / half))


@TERMS.register("epo")
@dataclass
class EPOSmoothing(ObjectiveTerm):
    """EPO (Xu et al., 2509.22576): entropy bonus plus a smoothing penalty toward the historical per-turn entropy.

        ℓ_t ← ℓ_t − c_H·H_t + c_H·c_s·w(e)·P_t
        P_t = ReLU(H_t − κ_h·H̄_k) + ReLU(κ_l·H̄_k − H_t)      for turns k ≥ ``penalty_from_turn``, else 0

    H̄_k = running mean (over all previous steps) of the rollout entropy of turn k (``batch.extras["turn_id"]``
    (B, T); every token is turn 0 when absent); w(e) the phase weight over ``total_steps`` (``epo_phase_weight``).
    Defaults from the released code: c_H = 1e-3, c_s = 1, κ_l = 0.8, κ_h = 1.2, total_steps = 150 (its hard-coded
    ``max_epochs``). **Departure:** the released penalty is a constant p_out chosen by ``torch.where`` and so carries
    no gradient (it only changes the logged loss); this P is the differentiable deviation outside the band
    [κ_l·H̄, κ_h·H̄], which pulls H_t back into it. The code penalises turns k ≥ max_turns/2 only.
    """

    requires = frozenset({"entropy", "old_entropy"})
    coef: float = 1e-3
    """c_H: entropy bonus weight, ℓ_t ← ℓ_t − c_H·H_t (released code 1e-3)."""
    smooth_coef: float = 1.0
    """c_s: weight of the smoothing penalty relative to c_H (released code 1)."""
    kappa_low: float = 0.8
    """κ_l: lower edge of the band [κ_l·H̄_k, κ_h·H̄_k] around the turn's historical entropy (released code 0.8)."""
    kappa_high: float = 1.2
    """κ_h: upper edge of that band, ≥ κ_l (released code 1.2)."""
    total_steps: int = 150
    """E: RL steps over which the phase weight w(e) runs (the code's hard-coded max_epochs 150)."""
    penalty_from_turn: int = 0
    """First turn index k the smoothing penalty covers (the code penalises k ≥ max_turns/2)."""
    phase_weight: bool = True
    """Multiply the penalty by the phase weight w(e) of epo_phase_weight (False: w = 1)."""
    _sums: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _counts: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _pending: dict = field(init=False, repr=False, compare=False, default_factory=dict)
    _step: int = field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self) -> None:
        check_range("epo", "coef", self.coef, lo=0.0)
        check_range("epo", "smooth_coef", self.smooth_coef, lo=0.0)
        if not 0.0 <= self.kappa_low <= self.kappa_high:
            raise ConfigError(f"epo: need 0 <= kappa_low ({self.kappa_low}) <= kappa_high ({self.kappa_high})")
        if self.total_steps < 1:
            raise ConfigError(f"epo.total_steps = {self.total_steps} must be >= 1")

    @staticmethod
    def _turns(batch: RolloutBatch) -> torch.Tensor:
        t = batch.extras.get("turn_id")
        return torch.zeros_like(batch.response_ids) if t is None else t.long()

    def history(self) -> dict[int, float]:
        """Turn index → running mean entropy H̄_k over the committed steps."""
        return {k: self._sums[k] / self._counts[k] for k in self._sums}

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        turns, m = self._turns(batch), batch.mask > 0
        ent = batch.old_entropy.detach().float()
        self._pending = {int(k): float(ent[m & (turns == k)].mean()) for k in torch.unique(turns[m]).tolist()}
        return batch

    def penalty(self, ent: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(P (B, T) with gradient, bool mask of the tokens it covers: a history exists and the turn is late)."""
        turns = self._turns(batch)
        hist = self.history()
        hbar = torch.zeros_like(ent, dtype=torch.float32)
        covered = torch.zeros_like(turns, dtype=torch.bool)
        for k, h in hist.items():
            on = (turns == k) & (k >= self.penalty_from_turn)
            hbar = torch.where(on, torch.full_like(hbar, h), hbar)
            covered |= on
        covered &= batch.mask > 0
        dev = torch.relu(ent - self.kappa_high * hbar) + torch.relu(self.kappa_low * hbar - ent)
        return torch.where(covered, dev, torch.zeros_like(dev)), covered

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, self.name)
        pen, covered = self.penalty(ent, batch)
        w = epo_phase_weight(self._step, self.total_steps) if self.phase_weight else 1.0
        metrics = {"epo/penalty": float(masked_mean(pen.detach(), batch.mask)),
                   "epo/outside_band_frac": float(masked_mean((pen.detach() > 0).float(), batch.mask)),
                   "epo/phase_weight": w}
        return loss - self.coef * ent + self.coef * self.smooth_coef * w * pen, metrics

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        for k, h in self._pending.items():
            self._sums[k] = self._sums.get(k, 0.0) + h
            self._counts[k] = self._counts.get(k, 0) + 1
        self._pending = {}
        self._step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self._sums), "counts": dict(self._counts), "step": self._step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._sums = {int(k): float(v) for k, v in state["sums"].items()}
        self._counts = {int(k): int(v) for k, v in state["counts"].items()}
        self._step = int(state["step"])
        self._pending = {}


@TERMS.register("evol_rl_bonus")
@dataclass
class EvolRLBonus(EntropyBonus):
    """EVOL-RL's entropy bonus (2509.15194; README example coefficient 0.003): ℓ_t ← ℓ_t − α·H_t. EVOL-RL is
    label-free: the term names the ``evol_rl`` reward source (``env/reward_sources.py``: majority selects, novelty
    varies), which the engine runs in place of the verifier's rewards; an engine that cannot run reward sources
    refuses the method up front."""

    reward_source = "evol_rl"
    engine_primitives = frozenset({"reward_sources"})
    coef: float = 0.003
    """α in ℓ_t ← ℓ_t − α·H_t (the README example's 0.003)."""

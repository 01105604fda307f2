"""Objective knob: terms that transform the per-token loss matrix before aggregation.

A term maps (ℓ (B, T), batch) → (ℓ' (B, T), metrics). Terms compose in order and share the policy loss's mask
and aggregation mode, so a bonus is weighted exactly like the tokens it rides on.

Terms (catalog III, ``docs/methods-objective.md``): entropy bonuses with a controlled coefficient
(``adaptive_entropy``, ``aer``, ``aent``, ``aepo_stage_entropy``, ``epo``, ``evol_rl_bonus``), entropy objectives
(``entropy_minimization``, ``flowrl``), token selection (``forking_tokens``, ``d3s``, ``dart_gui``, ``ulorl``) and
reweighting (``steer``, ``simko``, ``pos_adv_reweight``, ``entropic``). Every entropy-targeting coefficient is a
``controllers.EntropyController``; every token subset or weight goes through ``token_select``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Optional

import torch

from ..batch import BatchError, RolloutBatch
from ..ops.masked import masked_mean
from .base import Component, ConfigError, Registry, check_range, component_registry
from .clip import importance_ratio, ppo_token_loss
from .controllers import EntropyController, TokenMeanMeter, batch_entropy
from .token_select import TokenWeighting, check_choice, current_or_old, normalise, top_fraction

TERMS: Registry["ObjectiveTerm"] = component_registry("objective")


class ObjectiveTerm(Component):
    """Base: ``apply(loss (B, T), batch) -> (loss (B, T), metrics)``.

    ``replaces_surrogate``: the term discards the policy-gradient surrogate it is given and returns its own loss
    (one-shot EM, FlowRL); ``PolicyObjective`` then hands it the surrogate alone and adds the KL knob's penalty back,
    so KL-knob methods compose with it.
    """

    replaces_surrogate: ClassVar[bool] = False

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


@TERMS.register("entropy_bonus")
@dataclass
class EntropyBonus(ObjectiveTerm):
    """Entropy bonus: ℓ_t ← ℓ_t − α·H_t, H_t the full-vocabulary entropy of the current policy at token t.

    Default α = 1e-3 (verl's former ``entropy_coeff`` default; RAGEN and EPO use it). Cui et al. (2505.22617 §4.1):
    1e-4..1e-3 had little effect, 1e-2 made entropy explode, 5e-3 stabilised it. The gradient must flow through
    H (a bonus computed under no_grad silently does nothing): this term refuses a detached entropy while the
    policy log-probs carry gradient.
    """

    requires = frozenset({"entropy"})
    coef: float = 1e-3

    def __post_init__(self) -> None:
        check_range("entropy_bonus", "coef", self.coef)

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, "entropy_bonus")
        return loss - self.coef * ent, {"entropy/bonus": float(self.coef * masked_mean(ent.detach(), batch.mask))}


def entropy_with_grad(batch: RolloutBatch, who: str, tensor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``batch.entropy`` (or ``tensor``), refusing a detached one while the policy log-probs carry gradient — a bonus
    computed under no_grad silently does nothing."""
    if tensor is None:
        batch.require("entropy", who=f"objective term {who!r}")
        tensor = batch.entropy
    if batch.logprobs is not None and batch.logprobs.requires_grad and not tensor.requires_grad:
        raise BatchError(
            f"objective term {who!r}: the entropy carries no gradient, so the term would do nothing; "
            "compute the entropy with gradient enabled (e.g. fused_logprobs_entropy outside torch.no_grad)"
        )
    return tensor


# =====================================================================================================================
# Catalog III — the objective knob's entropy methods. Shared machinery: controllers.EntropyController (every
# entropy-targeting coefficient or weight) and token_select (every token subset / reweighting).
# =====================================================================================================================


def _require_extra(batch: RolloutBatch, key: str, who: str, how: str) -> torch.Tensor:
    if key not in batch.extras:
        raise BatchError(f"objective term {who!r} needs batch.extras[{key!r}], which the batch does not carry: {how}")
    return batch.extras[key]


def _seq_values(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-response mean of a (B, T) tensor over its valid tokens (B,) — e.g. the sequence advantage."""
    m = mask.float()
    return (torch.where(m > 0, x, torch.zeros_like(x)) * m).sum(-1) / m.sum(-1).clamp(min=1.0)


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
    delta: float = 0.001
    init: float = 0.0
    coef_min: float = 0.0
    coef_max: float = 0.5
    gate: bool = True
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
    gain: float = 1e-3
    init: float = 1e-3
    coef_max: float = 1e-2
    correct_threshold: float = 1.0
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

    engine_extras = frozenset({'clamped_entropy'})

    clamp_p: float = 0.25
    init: float = 3e-4
    ent_low: float = 0.35
    ent_high: float = 0.62
    lr: float = 1e-4
    warmup: int = 156
    coef_min: float = 4e-5
    coef_max: float = 1e-3
    c_reg: float = 0.0
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

    engine_extras = frozenset({'stage'})

    requires = frozenset({"entropy"})
    coef_reflection: float = 1e-3
    coef_answer: float = 1e-3

    def __post_init__(self) -> None:
        check_range("aepo_stage_entropy", "coef_reflection", self.coef_reflection, lo=0.0)
        check_range("aepo_stage_entropy", "coef_answer", self.coef_answer, lo=0.0)

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
    smooth_coef: float = 1.0
    kappa_low: float = 0.8
    kappa_high: float = 1.2
    total_steps: int = 150
    penalty_from_turn: int = 0
    phase_weight: bool = True
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


@TERMS.register("entropy_minimization")
@dataclass
class EntropyMinimization(ObjectiveTerm):
    """One-shot entropy minimisation (Gao et al., 2505.20282; ``train.py``): ℓ_t ← c·H_t, minimised.

    With ``replace_pg`` (default) the policy-gradient surrogate is discarded (a KL knob's penalty, if one is composed,
    stays): the method is unsupervised and needs no reward. H_t is the entropy of the sampling
    distribution softmax(z/τ): the paper samples and measures at τ = 0.5 (top-p 0.95), so run the engine with
    temperature 0.5. Defaults: c = 1 (the loss is the plain token-mean entropy).
    """

    requires = frozenset({"entropy"})
    coef: float = 1.0
    replace_pg: bool = True

    def __post_init__(self) -> None:
        check_range("entropy_minimization", "coef", self.coef, lo=0.0)

    @property
    def replaces_surrogate(self) -> bool:  # type: ignore[override]
        return self.replace_pg

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        ent = entropy_with_grad(batch, self.name)
        base = torch.zeros_like(loss) if self.replace_pg else loss
        return base + self.coef * ent, {"em/entropy": float(masked_mean(ent.detach(), batch.mask))}


@TERMS.register("flowrl")
@dataclass
class FlowRL(ObjectiveTerm):
    """FlowRL (Zhu et al., 2509.15207): match the reward-induced distribution π* ∝ exp(β·r̂)·π_ref with a
    trajectory-balance residual and a learned log-partition log Z(x):

        Δ_i = log Z(x_i) + (1/|y_i|)·Σ_t log π_θ(y_{i,t}) − β·r̂_i − (1/|y_i|)·Σ_t log π_ref(y_{i,t})
        loss = mean_i w_i·Δ_i²,   w_i = clip(exp(Σ_t (log π_θ − log π_old)), 1 − ε, 1 + ε), detached (ε: weight_clip)

    r̂_i is the advantage knob's (group-normalised) advantage of response i. The per-token loss is w_i·Δ_i²/|y_i| on
    every token of response i, so the catalog entry's ``seq-mean-token-sum`` aggregation gives mean_i w_i·Δ_i².
    The incoming surrogate is replaced (a composed KL knob's penalty stays). β = 15 (``compute_flowrl_objective``), ε = 0.2.
    **Departures:** log Z is a learned per-prompt table indexed by ``prompt_id mod num_buckets`` (a component-owned
    parameter, via ``parameters()``) instead of the paper's 3-layer MLP on the prompt's mean-pooled hidden state;
    w_i is clipped as the paper writes (the released code multiplies by the unclipped weight).
    """

    replaces_surrogate = True

    requires = frozenset({"logprobs", "ref_logprobs", "advantages"})
    beta: float = 15.0
    weight_clip: float = 0.2
    num_buckets: int = 4096
    _log_z: torch.nn.Parameter = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("flowrl", "beta", self.beta, lo=0.0)
        check_range("flowrl", "weight_clip", self.weight_clip, lo=0.0, hi=1.0)
        if self.num_buckets < 1:
            raise ConfigError(f"flowrl.num_buckets = {self.num_buckets} must be >= 1")
        self._log_z = torch.nn.Parameter(torch.zeros(self.num_buckets))

    def parameters(self) -> list:
        return [self._log_z]

    def state_dict(self) -> dict[str, Any]:
        return {"log_z": self._log_z.detach().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        log_z = torch.as_tensor(state["log_z"])
        if log_z.shape != self._log_z.shape:
            raise ConfigError(f"flowrl: checkpointed log Z has shape {tuple(log_z.shape)}, expected "
                              f"{tuple(self._log_z.shape)} (num_buckets = {self.num_buckets})")
        with torch.no_grad():
            self._log_z.copy_(log_z)  # in place: the optimizer keeps holding the same parameter

    def log_z(self, batch: RolloutBatch) -> torch.Tensor:
        pid = _require_extra(batch, "prompt_id", self.name, "engines provide a stable prompt id per sample")
        return self._log_z[torch.remainder(pid.long(), self.num_buckets).to(self._log_z.device)]

    def residual(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(Δ (B,) with gradient to π_θ and log Z, IS weight w (B,) detached)."""
        m = batch.mask
        L = m.sum(-1).clamp(min=1.0)

        def seq_sum(x: torch.Tensor) -> torch.Tensor:
            return (torch.where(m > 0, x, torch.zeros_like(x)) * m).sum(-1)

        r_hat = _seq_values(batch.advantages.detach().float(), m)
        delta = (self.log_z(batch) + seq_sum(batch.logprobs) / L - self.beta * r_hat
                 - seq_sum(batch.ref_logprobs.detach()) / L)
        log_w = seq_sum(batch.logprobs.detach() - batch.old_logprobs.detach())
        w = torch.exp(torch.clamp(log_w, -20.0, 20.0)).clamp(1.0 - self.weight_clip, 1.0 + self.weight_clip)
        return delta, w

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", "advantages", who="objective term 'flowrl'")
        delta, w = self.residual(batch)
        m = batch.mask
        per_tok = (w * delta ** 2 / m.sum(-1).clamp(min=1.0))[:, None] * m
        return per_tok.to(loss.dtype), {"flowrl/residual_sq": float((delta.detach() ** 2).mean()),
                                        "flowrl/log_z_mean": float(self.log_z(batch).detach().mean())}


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
    scope: str = "batch"
    normalizer: str = "selected"

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
    ratio_end: float = 1.0
    schedule_steps: int = 200
    scope: str = "batch"
    normalizer: str = "selected"
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
    scope: str = "batch"
    normalizer: str = "selected"

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
    w_min: float = 0.8
    w_max: float = 1.0
    omega_floor: float = 0.02
    scope: str = "micro"
    normalizer: str = "all"

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

    Needs, beyond per-token log-probs (engine hooks): ``extras["old_topk_logprobs"]`` (B, T, K) — log π_old of the
    rollout policy's top-K tokens, sorted, from the rollout forward — and ``extras["topk_logprobs"]`` (B, T, K) —
    log π_θ of the *same* token ids, with gradient, from the update forward.
    """

    engine_extras = frozenset({'topk_ids', 'old_topk_logprobs', 'topk_logprobs'})

    requires = frozenset({"logprobs", "advantages", "old_entropy"})
    top_k: int = 3
    alpha: float = 0.01
    tau: float = 0.8
    neg_scale: float = 1.1
    eps_low: float = 0.2
    eps_high: float = 0.2

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"simko.top_k = {self.top_k} must be >= 1")
        check_range("simko", "alpha", self.alpha, lo=0.0, hi=1.0)
        check_range("simko", "tau", self.tau, lo=0.0, hi=1.0, hi_open=True)
        check_range("simko", "neg_scale", self.neg_scale, lo=0.0)

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
        new, _ = ppo_token_loss(ratio, a_tilde, self.eps_low, self.eps_high)
        plain, _ = ppo_token_loss(r, adv, self.eps_low, self.eps_high)
        changed = pos | neg
        out = loss + torch.where(changed, new - plain, torch.zeros_like(new))
        m = batch.mask
        return out, {"simko/fork_frac": float(masked_mean(fork.float(), m)),
                     "simko/pos_frac": float(masked_mean(pos.float(), m)),
                     "simko/neg_top1_frac": float(masked_mean(neg.float(), m))}


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
    sigma: float = 0.2
    positive_reward: float = 1.0
    entropy_scope: str = "response"
    scope: str = "batch"
    normalizer: str = "all"
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
    target: float = 0.2
    delta: float = 0.05
    init: float = 0.0
    total_steps: int = 0
    num_epochs: int = 0
    steps_per_epoch: int = 0
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
    kp: float = 1.0
    ki: float = 0.01
    high_prob: float = 0.95
    alpha_max: float = 1.0
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


# --------------------------------------------------------------------------------------------- EVOL-RL (reward side)
def evol_rl_rewards(answers: "list[Optional[str]]", texts: "list[str]", group_ids: torch.Tensor, *,
                    embed: Optional[Any] = None, equivalence: str = "math") -> torch.Tensor:
    """EVOL-RL's label-free rewards (Zhou et al., 2509.15194; ``reward_manager/semantic_novelty.py``), (B,):
    "majority selects, novelty varies".

    Per prompt (``group_ids``): the answers are clustered (``entrolab.env.equivalence.cluster_answers``, mode
    ``equivalence``) and the largest cluster of present answers is the majority (ties: first seen). With s_ij the
    cosine similarity of the embedded ``texts`` (the response after ``</think>``),
        ν_i = 1 − [0.5·mean_{j ∈ set(i), j≠i} s_ij + 0.5·max_{j≠i} s_ij],     set(i) = majority or non-majority,
    min–max normalised within each set to ν̂ ∈ [0, 1] (a set whose ν are all equal gets ½, a singleton 1), and
        r_i = 0.5 + 0.5·ν̂_i (majority),   r_i = −1 + 0.5·ν̂_i (non-majority),   r_i = −1 (no answer).
    ``embed``: strings → (n, d) tensor (default: ``equivalence.load_embedder()``, all-MiniLM-L6-v2; the paper uses
    Qwen3-Embedding-4B served by vLLM).
    """
    from ..env.equivalence import cluster_answers, load_embedder

    B = len(answers)
    if len(texts) != B or group_ids.shape[0] != B:
        raise ValueError(f"evol_rl_rewards: {B} answers, {len(texts)} texts and {group_ids.shape[0]} group ids")
    embed = embed if embed is not None else load_embedder()
    rewards = torch.full((B,), -1.0)
    for g in torch.unique(group_ids).tolist():
        idx = [i for i in range(B) if int(group_ids[i]) == g]
        present = [i for i in idx if answers[i] is not None and str(answers[i]).strip()]
        if not present:
            continue
        ids = cluster_answers([answers[i] for i in present], mode=equivalence)
        counts: dict[int, int] = {}
        for c in ids:
            counts[c] = counts.get(c, 0) + 1
        top = max(counts.values())
        major_id = next(c for c in ids if counts[c] == top)
        in_major = {i: c == major_id for i, c in zip(present, ids)}
        e = torch.nn.functional.normalize(torch.as_tensor(embed([texts[i] for i in present])).float(), dim=-1)
        sim = e @ e.T
        n = len(present)
        nu = torch.zeros(n)
        for a in range(n):
            others = [b for b in range(n) if b != a]
            same = [b for b in others if in_major[present[b]] == in_major[present[a]]]
            s_max = float(sim[a, others].max()) if others else 0.0
            s_mean = float(sim[a, same].mean()) if same else 0.0
            nu[a] = 1.0 - (0.5 * s_mean + 0.5 * s_max)
        for major in (True, False):
            members = [a for a in range(n) if in_major[present[a]] == major]
            if not members:
                continue
            v = nu[members]
            span = float(v.max() - v.min())
            hat = torch.ones_like(v) if len(members) == 1 else (
                torch.full_like(v, 0.5) if span <= 1e-12 else (v - v.min()) / span)
            base = 0.5 if major else -1.0
            for a, h in zip(members, hat.tolist()):
                rewards[present[a]] = base + 0.5 * h
    return rewards


@TERMS.register("evol_rl_bonus")
@dataclass
class EvolRLBonus(EntropyBonus):
    """EVOL-RL's entropy bonus (2509.15194; README example coefficient 0.003): ℓ_t ← ℓ_t − α·H_t, guarded so the
    method cannot silently run on verifier rewards: the batch must carry ``extras["evol_rl_shaped"]`` (B,), set by
    the engine's reward hook after replacing the rewards with ``evol_rl_rewards``."""

    engine_extras = frozenset({'evol_rl_shaped'})

    coef: float = 0.003

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        _require_extra(batch, "evol_rl_shaped", self.name,
                       "EVOL-RL is label-free: the engine must replace the rewards with evol_rl_rewards(...) "
                       "(majority + novelty) and mark the batch with extras['evol_rl_shaped']")
        return super().apply(loss, batch)

"""The advantage estimators of verl 0.9.1 that the catalog lacked (method catalog V, issue 15): PPO's generalised
advantage estimation with a value model, REINFORCE++ with global whitening, ReMax's greedy baseline, OPO's
length-weighted baseline, the optimal token baseline, GRPO's pass@k variant, GDPO's decoupled normalisation and
GPG's rescaled group baseline.

Outcome rewards enter as verl enters them, on the last valid token of each response (``ops.value``); with the
default γ = 1 the reward-to-go is then R on every valid token. Every docstring names the anchor (a function of
verl's ``trainer/ppo/core_algos.py``) the estimator equals on the fixed inputs of ``tests/test_methods_baselines.py``.
Group-relative estimators give a group of one response advantage 0, as the rest of the advantage knob does (verl
instead keeps the raw reward for such a group, or raises); the docstrings say where that applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ...batch import BatchError, RolloutBatch
from ...env.rewards import extract_boxed
from ...errors import ConfigError
from ...ops.masked import masked_whiten
from ...ops.value import discounted_returns, gae, outcome_token_rewards
from ...registry import check_range
from ..extras import RolloutContext
from .base import ADVANTAGES, AdvantageEstimator, broadcast_to_tokens, group_statistics


def _extra(batch: RolloutBatch, key: str, who: str, primitive: str) -> torch.Tensor:
    if key not in batch.extras:
        raise BatchError(f"{who} advantages need batch.extras[{key!r}], which the component computes from the "
                         f"engine's `{primitive}` primitive in its rollout_extras; run it in an engine that provides "
                         "it (`entrolab train`, the toy) or supply the extra")
    return batch.extras[key]


def _group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, (int(inverse.max()) + 1 if inverse.numel() else 0)


# ------------------------------------------------------------------------------------------- GAE (PPO)
@ADVANTAGES.register("gae")
@dataclass
class GAEAdvantage(AdvantageEstimator):
    """Generalised advantage estimation with a value model: PPO's advantages (Schulman et al., arXiv 1506.02438;
    PPO 1707.06347).

    With token rewards r_t (the outcome reward on the last valid token) and the value model's predictions V_t at the
    rollout: δ_t = r_t + γ·V_{t+1} − V_t, Â_t = δ_t + γλ·Â_{t+1}, returns G_t = Â_t + V_t (the critic's regression
    targets, stored in ``extras['returns']`` by :meth:`prepare`), and the advantages are Â whitened over the batch's
    valid tokens. Defaults γ = λ = 1 (verl's ``algorithm.gamma``/``lam``), so Â_t = R − V_t before whitening: the
    value model is a per-token baseline, learnt, instead of a group's mean. Needs the engine's ``values`` primitive
    (a value head or a critic model trained in the same update loop: ``engine/critic.py``; the toy has a value
    table). No groups: works with one response per prompt. Anchor: verl ``compute_gae_advantage_return``.
    """

    engine_primitives = frozenset({"values"})
    extras = frozenset({"values", "returns"})
    groupwise: ClassVar[bool] = False
    gamma: float = 1.0
    """Discount γ in [0, 1] of the TD error δ_t = r_t + γV_{t+1} − V_t (verl's algorithm.gamma 1.0)."""
    lam: float = 1.0
    """GAE λ in [0, 1]: 1 = Monte-Carlo return minus V_t, 0 = the one-step TD error (verl's algorithm.lam 1.0)."""
    whiten: bool = True
    """Whiten Â over the batch's valid tokens (verl does); the returns G = Â + V stay unwhitened."""

    def __post_init__(self) -> None:
        check_range("gae", "gamma", self.gamma, lo=0.0, hi=1.0)
        check_range("gae", "lam", self.lam, lo=0.0, hi=1.0)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        return {"values": ctx.values()}

    def advantages_and_returns(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(Â unwhitened, G) for the batch (0 on padding)."""
        values = _extra(batch, "values", "gae", "values")
        return gae(outcome_token_rewards(batch.rewards, batch.mask), values, batch.mask, self.gamma, self.lam)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        adv, _ = self.advantages_and_returns(batch)
        return masked_whiten(adv, batch.mask) if self.whiten else adv

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        """Store the critic's regression targets G_t in ``extras['returns']`` (once per rollout batch)."""
        _, returns = self.advantages_and_returns(batch)
        return batch.replace(extras={**batch.extras, "returns": returns})


# ------------------------------------------------------------------------------------------- REINFORCE++
@ADVANTAGES.register("reinforce_pp")
@dataclass
class ReinforcePPAdvantage(AdvantageEstimator):
    """REINFORCE++ (Hu, arXiv 2501.03262): no critic and no group — the discounted reward-to-go G_t = Σ_{k≥t}
    γ^{k−t} r_k of every token, whitened over all valid tokens of the batch (global advantage normalisation, the
    paper's remedy for the bias of per-prompt baselines): A_t = (G_t − mean_batch G)/std_batch G. Default γ = 1.
    Works with one response per prompt. Anchor: verl ``compute_reinforce_plus_plus_outcome_advantage``."""

    groupwise: ClassVar[bool] = False
    gamma: float = 1.0
    """Discount γ in [0, 1] of the reward-to-go (verl's algorithm.gamma 1.0)."""

    def __post_init__(self) -> None:
        check_range("reinforce_pp", "gamma", self.gamma, lo=0.0, hi=1.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        returns = discounted_returns(outcome_token_rewards(batch.rewards, batch.mask), batch.mask, self.gamma)
        return masked_whiten(returns, batch.mask)


# ------------------------------------------------------------------------------------------- ReMax
@ADVANTAGES.register("remax")
@dataclass
class ReMaxAdvantage(AdvantageEstimator):
    """ReMax (Li et al., arXiv 2310.10505): REINFORCE with the reward of the *greedy* response to the same prompt as
    the baseline, A_t = G_t − R(ŷ_greedy) with G_t the reward-to-go (R on every valid token). The baseline costs one
    greedy generation per prompt (the engine's ``greedy_rollout`` primitive, scored by the task's verifier) and no
    value model; it needs no group. Anchor: verl ``compute_remax_outcome_advantage``."""

    engine_primitives = frozenset({"greedy_rollout"})
    extras = frozenset({"greedy_reward"})
    groupwise: ClassVar[bool] = False

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        return {"greedy_reward": ctx.greedy_rewards()}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        baseline = _extra(batch, "greedy_reward", "remax", "greedy_rollout").float()
        returns = discounted_returns(outcome_token_rewards(batch.rewards, batch.mask), batch.mask, 1.0)
        return returns - baseline[:, None] * batch.mask


# ------------------------------------------------------------------------------------------- OPO
@ADVANTAGES.register("opo")
@dataclass
class OPOAdvantage(AdvantageEstimator):
    """OPO: on-policy RL with the optimal baseline (Hao et al., arXiv 2505.23585): the variance-minimising baseline of
    a sequence-level policy gradient weighs each response by its length, b = Σ_j |o_j|·R_j / Σ_j |o_j| over the
    prompt's group, and A_i = R_i − b (no std division). Anchor: verl ``compute_opo_outcome_advantage`` (which keeps
    R for a group of one; here 0)."""

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        inv, n = _group_index(batch.group_ids)
        length = batch.mask.sum(-1).float()
        r = batch.rewards.float()
        num = torch.zeros(n).index_add_(0, inv, length * r)
        den = torch.zeros(n).index_add_(0, inv, length)
        count = torch.zeros(n).index_add_(0, inv, torch.ones_like(r))
        adv = r - (num / den.clamp(min=1e-12))[inv]
        adv = torch.where(count[inv] > 1, adv, torch.zeros_like(adv))
        return broadcast_to_tokens(adv, batch.mask)


# ------------------------------------------------------------------------------------------- optimal token baseline
@ADVANTAGES.register("optimal_token_baseline")
@dataclass
class OptimalTokenBaselineAdvantage(AdvantageEstimator):
    """Optimal token baseline (verl ``compute_optimal_token_baseline_advantage``; verl's docs, no paper): a baseline
    per position instead of per response, weighted by each path's accumulated score-function variance.

    For a softmax policy ‖∇ log π(y_t)‖² ∝ w_t = 1 − 2π_t + Σ_v π_v² (π_t the sampled token's probability, Σπ² over
    the rollout policy's distribution at that position); W_t = Σ_{j≤t} w_j. Within a prompt's group, position t's
    baseline is B_t = Σ_i G_{i,t}·W_{i,t} / (Σ_i W_{i,t} + ε) over the responses still running at t, and
    A_{i,t} = G_{i,t} − B_t with G the reward-to-go (R on every valid token). ``zero_tail``: past the second-longest
    response of the group, the single longest response gets baseline 0 (no other path to compare). Needs Σπ² from
    the rollout policy's logits (``rollout_logits`` primitive; ``extras['sum_pi_squared']``). A group of one gets 0
    (verl keeps its return).
    """

    engine_primitives = frozenset({"rollout_logits"})
    extras = frozenset({"sum_pi_squared"})
    zero_tail: bool = True
    """Zero the baseline of the longest response past the group's second-longest (verl's handle_zero_tail True)."""
    eps: float = 1e-8
    """ε in the denominator Σ_i W_{i,t} + ε (verl's epsilon 1e-8)."""

    def __post_init__(self) -> None:
        check_range("optimal_token_baseline", "eps", self.eps, lo=0.0)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        if "sum_pi_squared" not in ctx.cache:
            parts = [torch.softmax(z.float(), -1).pow(2).sum(-1).cpu() for _, z in ctx.old_logits()]
            ctx.cache["sum_pi_squared"] = torch.cat(parts) * ctx.batch.mask
        return {"sum_pi_squared": ctx.cache["sum_pi_squared"]}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        m = batch.mask
        sum_sq = _extra(batch, "sum_pi_squared", "optimal_token_baseline", "rollout_logits").float()
        returns = discounted_returns(outcome_token_rewards(batch.rewards, m), m, 1.0)
        w = 1.0 - 2.0 * torch.exp(batch.old_logprobs.float()) + sum_sq
        W = torch.cumsum(w * m, -1)
        baselines = torch.zeros_like(returns)
        inv, n = _group_index(batch.group_ids)
        singleton = torch.zeros(batch.batch_size, dtype=torch.bool)
        for g in range(n):
            rows = torch.nonzero(inv == g).flatten()
            if rows.numel() == 1:
                singleton[rows] = True
                continue
            Wg, mg = W[rows], m[rows]
            b = (returns[rows] * Wg * mg).sum(0) / ((Wg * mg).sum(0) + self.eps)
            baselines[rows] = b.expand(rows.numel(), -1)
            if self.zero_tail:
                lengths = mg.sum(-1)
                top, second = torch.sort(lengths).values[-2:].flip(0).tolist()
                longest = torch.nonzero(lengths == top).flatten()
                if longest.numel() == 1 and top > second:
                    baselines[rows[longest[0]], int(second):] = 0.0
        adv = (returns - baselines) * m
        return torch.where(singleton[:, None], torch.zeros_like(adv), adv)


# ------------------------------------------------------------------------------------------- GRPO pass@k
@ADVANTAGES.register("grpo_passk")
@dataclass
class GRPOPassKAdvantage(AdvantageEstimator):
    """Pass@k GRPO (Tang et al., "Optimizing Language Models for Inference Time Objectives using Reinforcement
    Learning", arXiv 2503.19595): the group's objective is its best response (pass@k with k = the group size), so
    only the best response gets credit — its margin over the second best, A = (R_max − R_2nd)/(std_G R + ε) — and
    every other response 0. A group whose best reward is tied gets 0 throughout. Defaults: divide by the unbiased
    group std (verl's norm_adv_by_std_in_grpo), ε = 1e-6. Anchor: verl ``compute_grpo_passk_outcome_advantage``
    (which refuses groups of one; here 0)."""

    norm_by_std: bool = True
    """Divide the margin by the group's unbiased reward std (verl's norm_adv_by_std_in_grpo True)."""
    eps: float = 1e-6
    """ε added to the std (verl's epsilon 1e-6)."""

    def __post_init__(self) -> None:
        check_range("grpo_passk", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        r = batch.rewards.float()
        adv = torch.zeros_like(r)
        inv, n = _group_index(batch.group_ids)
        for g in range(n):
            rows = torch.nonzero(inv == g).flatten()
            if rows.numel() < 2:
                continue
            top = torch.sort(r[rows], descending=True).values
            margin = top[0] - top[1]
            if self.norm_by_std:
                margin = margin / (r[rows].std() + self.eps)
            adv[rows[int(torch.argmax(r[rows]))]] = margin
        return broadcast_to_tokens(adv, batch.mask)


# ------------------------------------------------------------------------------------------- GDPO
REWARD_COMPONENTS = ("reward", "correct", "format")


@ADVANTAGES.register("gdpo")
@dataclass
class GDPOAdvantage(AdvantageEstimator):
    """GDPO: group reward-decoupled normalisation (arXiv 2601.05242): with several rewards, normalise each within the
    group *before* summing, so a dominant reward cannot drown a weaker one: A_k = (r_k − mean_G r_k)/(std_G r_k + ε)
    per component k, A = Σ_k w_k·A_k, then A is whitened over the batch's valid tokens. Components here:
    ``correct`` (the reward source's correctness), ``format`` (a \\boxed{} answer is present) and ``reward`` (the
    run's scalar reward); defaults correct + format with weights 1 (the paper's setting pairs a task reward with a
    format reward; verl requires the keys to be named). Groups of one get 0 and stay out of the whitening (verl
    keeps their raw components). Anchor: verl ``compute_gdpo_outcome_advantage``."""

    engine_primitives = frozenset({"texts"})
    extras = frozenset({"reward_components"})
    components: tuple = ("correct", "format")
    """Reward components normalised separately: any of 'correct', 'format' (\\boxed{} present), 'reward'."""
    weights: tuple = ()
    """Weight w_k of each component in A = Σ w_k A_k (empty = all 1, verl's default)."""
    eps: float = 1e-6
    """ε added to each component's group std (verl's epsilon 1e-6)."""

    def __post_init__(self) -> None:
        self.components = tuple(self.components)
        self.weights = tuple(float(w) for w in self.weights)
        bad = [c for c in self.components if c not in REWARD_COMPONENTS]
        if not self.components or bad:
            raise ConfigError(f"gdpo.components = {list(self.components)!r}: choose from {', '.join(REWARD_COMPONENTS)}")
        if self.weights and len(self.weights) != len(self.components):
            raise ConfigError(f"gdpo.weights has {len(self.weights)} entries for {len(self.components)} components")
        check_range("gdpo", "eps", self.eps, lo=0.0)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        cols = {"reward": ctx.batch.rewards.float(), "correct": ctx.correct_tensor(),
                "format": torch.tensor([float(extract_boxed(t) is not None) for t in ctx.texts])}
        return {"reward_components": torch.stack([cols[c] for c in self.components], -1)}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        comps = _extra(batch, "reward_components", "gdpo", "texts").float()
        if comps.shape[-1] != len(self.components):
            raise BatchError(f"gdpo: extras['reward_components'] has {comps.shape[-1]} columns for "
                             f"{len(self.components)} components")
        weights = self.weights or (1.0,) * len(self.components)
        total = torch.zeros(batch.batch_size)
        count = None
        for k, w in enumerate(weights):
            mean, std, count = group_statistics(comps[:, k], batch.group_ids)
            total = total + w * (comps[:, k] - mean) / (std + self.eps)
        comparable = batch.mask * (count > 1).to(batch.mask.dtype)[:, None]
        return masked_whiten(broadcast_to_tokens(total, comparable), comparable)


# ------------------------------------------------------------------------------------------- GPG
GPG_ALPHAS = ("nonzero_reward", "valid_group", "none")


@ADVANTAGES.register("gpg")
@dataclass
class GPGAdvantage(AdvantageEstimator):
    """GPG's advantage (Chu et al., arXiv 2504.02546): the group-mean baseline without std division, rescaled for the
    rows that carry no signal, A_i = α·(R_i − mean_G R)/F_norm. α counters the gradient shrinkage when many groups
    are all-correct or all-wrong: the paper's α = B/(B − M) with M the rows of such groups (``valid_group``); verl
    computes α = B / (number of rows with a non-zero reward) (``nonzero_reward``, the default: the anchor's).
    F_norm = 1 (verl). Anchor: verl ``compute_gpg_outcome_advantage`` (which keeps α·R for a group of one; here 0)."""

    alpha: str = "nonzero_reward"
    """How α is counted: 'nonzero_reward' (B/#rows with R ≠ 0, verl), 'valid_group' (B/(B − M), the paper), 'none'."""
    f_norm: float = 1.0
    """F_norm dividing the centred reward (> 0; verl 1.0)."""

    def __post_init__(self) -> None:
        if self.alpha not in GPG_ALPHAS:
            raise ConfigError(f"gpg.alpha = {self.alpha!r}; choose one of {', '.join(GPG_ALPHAS)}")
        check_range("gpg", "f_norm", self.f_norm, lo=0.0, lo_open=True)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        r = batch.rewards.float()
        mean, std, count = group_statistics(r, batch.group_ids)
        B = float(r.numel())
        if self.alpha == "nonzero_reward":
            alpha = B / max(1.0, float(torch.count_nonzero(r)))
        elif self.alpha == "valid_group":
            alpha = B / max(1.0, float(((std > 0) & (count > 1)).sum()))
        else:
            alpha = 1.0
        adv = torch.where(count > 1, alpha * (r - mean) / self.f_norm, torch.zeros_like(r))
        return broadcast_to_tokens(adv, batch.mask)

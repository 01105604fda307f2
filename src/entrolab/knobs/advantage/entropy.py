"""Advantage knob, entropy-shaped estimators (issue 6, "Method catalog I").

Each component maps a ``RolloutBatch`` to advantages (B, T), like the baselines in ``advantage.py``, and registers
in the same ``ADVANTAGES`` registry. Entropies are the rollout policy's full-vocabulary token entropies at the
sampling temperature (``batch.old_entropy``), so every estimator runs once per rollout batch with no gradient.
What a component needs beyond the batch fields it computes itself in ``rollout_extras`` from engine primitives
(``knobs/extras.py``: texts, the tokenizer, the rollout policy's logits):

- ``answer_cluster`` (B,) int: the response's final-answer cluster within its group (``equivalence.cluster_answers``),
  −1 when it has no answer (EMPO, SEED-GRPO);
- ``correct`` (B,) float 0/1: the verifier's verdict, or the majority-vote pseudo-label under a label-free reward
  source (PEAR, AdaThink-Med, LESS);
- ``phase`` (B, T) int: 1 thinking, 2 answer, 0 the marker itself and padding (PEAR);
- ``step_id`` (B, T) int: 0, 1, 2, ... the step (delimiter-split segment) of each token (EMPG, ACPO);
- ``self_certainty`` (B, T): logsumexp(z) − mean_v z_v of the rollout logits, and ``sampled_logit`` (B, T): z of the
  sampled token, both at the sampling temperature (UCAS).

Stateful components (AdaThink-Med's EMAs) update in ``compute``, which ``PolicyObjective.compute_advantages`` calls
once per rollout batch, and checkpoint through ``state_dict``. A group of one response offers no comparison: every
estimator here gives it advantage 0, and EMPG leaves it out of its batch re-centring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ...batch import BatchError, RolloutBatch
from ...env.equivalence import MODES as _EQUIVALENCE_MODES
from ...env.reward_sources import answer_clusters
from ...errors import ConfigError
from ...registry import check_range
from ..extras import (
    RolloutContext,
    certainty_and_sampled_logit,
    phase_ids,
    step_ids,
)
from .base import ADVANTAGES, AdvantageEstimator, broadcast_to_tokens, group_statistics

EQUIVALENCE_MODES = tuple(m for m in _EQUIVALENCE_MODES if m != "judge")  # a judge is a callable, not a config value


DEFAULT_PHASE_MARKER = "</think>"


DEFAULT_STEP_DELIMITER = "\n\n"  # a blank line


# ============================================================================================ shared helpers
def _choice(owner: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{owner}.{name} = {value!r} is not allowed; choose one of: {', '.join(allowed)}")


def _need_entropy(batch: RolloutBatch, who: str) -> torch.Tensor:
    batch.require("old_entropy", who=f"advantage {who!r}")
    return batch.old_entropy.detach().float()


def _need_extra(batch: RolloutBatch, name: str, who: str) -> torch.Tensor:
    if name not in batch.extras:
        raise BatchError(f"advantage {who!r} needs RolloutBatch.extras[{name!r}], which it computes in its "
                         "rollout_extras from the engine's primitives (knobs/extras.py); this batch does not carry it: "
                         "run PolicyObjective.rollout_extras on the rollout batch")
    return batch.extras[name]


def group_index(group_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B,) group index 0..n−1 of each sample, and n."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, (int(inverse.max()) + 1 if inverse.numel() else 0)


def seq_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean of x over each row's valid tokens (0 for an empty row)."""
    m = mask.float()
    return (x.float() * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def grpo_advantage(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) (R − mean_G R)/(std_G R + ε), unbiased std, 0 for a group of one (as ``GRPOAdvantage``)."""
    mean, std, count = group_statistics(rewards, group_ids)
    adv = (rewards.float() - mean) / (std + eps)
    return torch.where(count > 1, adv, torch.zeros_like(adv))


def group_zscore(values: torch.Tensor, group_ids: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) within-group z-score of a per-response value (the GRPO normalisation applied to any statistic)."""
    return grpo_advantage(values, group_ids, eps)


def semantic_entropy_counts(cluster: torch.Tensor, group_ids: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Answer-frequency statistics per response, each (B,): p(c_i) = |c_i|/G (the share of its group in its own
    cluster, the missing answers −1 forming one cluster), the group's semantic entropy H_sem = −Σ_c p(c) log p(c),
    and the group's largest cluster share max_c p(c)."""
    inverse, n = group_index(group_ids)
    p_own = torch.zeros(cluster.shape[0])
    h_sem = torch.zeros(cluster.shape[0])
    p_max = torch.zeros(cluster.shape[0])
    for g in range(n):
        idx = torch.nonzero(inverse == g).flatten()
        _, cinv, counts = torch.unique(cluster[idx].long(), return_inverse=True, return_counts=True)
        p = counts.double() / len(idx)
        p_own[idx] = p[cinv].float()
        h_sem[idx] = float(-(p * p.log()).sum())
        p_max[idx] = float(p.max())
    return p_own, h_sem, p_max


# ============================================================================================ 2.1 Cheng et al.
@ADVANTAGES.register("entropy_advantage")
@dataclass
class EntropyAdvantage(AdvantageEstimator):
    """Entropy-based advantage shaping (Cheng et al., "Reasoning with Exploration: An Entropy Perspective",
    arXiv 2506.14758):

        ψ(H_t) = min(α·sg(H_t), |A_t|/κ),     Â_t = A_t + ψ(H_t),

    A the GRPO advantage. The clip |A|/κ (κ > 1) keeps the bonus from dominating or flipping the sign of A: a
    positive advantage grows by at most 1/κ of itself, a negative one shrinks by at most that much, and a zero
    advantage stays zero. Defaults α = 0.4 (their GRPO setting; 0.1 with PPO), κ = 2 (third-party verl config).

    Departure: H is the rollout policy's entropy (``old_entropy``), computed once per rollout batch; the paper's
    one-line change reads it in the loss pass, which is the same on the first (on-policy) mini-batch only.
    """

    requires = frozenset({"old_entropy"})
    alpha: float = 0.4
    """α: weight of the entropy bonus ψ = min(α·H_t, |A_t|/κ), per nat (their GRPO setting 0.4; 0.1 with PPO)."""
    kappa: float = 2.0
    """κ > 1: caps the bonus at |A_t|/κ so it never flips A's sign (third-party verl config 2)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("entropy_advantage", "alpha", self.alpha, lo=0.0)
        check_range("entropy_advantage", "kappa", self.kappa, lo=1.0, lo_open=True)
        check_range("entropy_advantage", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        H = _need_entropy(batch, self.name)
        A = broadcast_to_tokens(grpo_advantage(batch.rewards, batch.group_ids, self.eps), batch.mask)
        psi = torch.minimum(self.alpha * H, A.abs() / self.kappa)
        return (A + psi) * batch.mask


# ============================================================================================ 2.2 RL-ZVP
@ADVANTAGES.register("rl_zvp")
@dataclass
class RLZVPAdvantage(AdvantageEstimator):
    """RL-ZVP, "No Prompt Left Behind" (arXiv 2509.21880, Eq. 5–6): GRPO advantages where the group's rewards
    vary; for a zero-variance prompt (std = 0) entropy-shaped token advantages instead of zero,

        Â_{i,t} = α·sg(H_{i,t})                           if R_i > 0 (all-correct group),
        Â_{i,t} = −α·(max_k sg(H_{i,k}) − sg(H_{i,t}))     if R_i ≤ 0 (all-wrong group),

    the max over the valid tokens of the same response. Default α = 0.1 (best of 0.05/0.1/0.2/0.3). A group of
    one response has no variance to speak of and gets 0, as under GRPO.
    """

    requires = frozenset({"old_entropy"})
    alpha: float = 0.1
    """α: per-nat scale of the entropy advantages of zero-variance groups (best of 0.05/0.1/0.2/0.3: 0.1)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("rl_zvp", "alpha", self.alpha, lo=0.0)
        check_range("rl_zvp", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        H = _need_entropy(batch, self.name)
        mask = batch.mask
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        A = broadcast_to_tokens(grpo_advantage(batch.rewards, batch.group_ids, self.eps), mask)
        zero_var = ((std <= 1e-12) & (count > 1))[:, None]
        h_max = H.masked_fill(mask == 0, float("-inf")).max(-1).values.clamp(min=0.0)[:, None]  # (B, 1)
        positive = (batch.rewards > 0)[:, None]
        zvp = torch.where(positive, self.alpha * H, -self.alpha * (h_max - H))
        return torch.where(zero_var, zvp, A) * mask


# ============================================================================================ 2.3 EMPO
@ADVANTAGES.register("empo")
@dataclass
class EMPOAdvantage(AdvantageEstimator):
    """EMPO, Entropy-Minimized Policy Optimization (arXiv 2504.05812; QingyangZhang/EMPO
    ``rewards.py::get_empo_math_reward``). Label-free: the verifier's rewards are ignored.

    Per prompt, the G final answers are clustered by meaning (``extras['answer_cluster']``: math-verify for math,
    the packaged MiniLM embedder for free text); p(c) = |c|/G and the semantic entropy H_sem = −Σ_c p(c) log p(c),
    the missing answers counting as one cluster. The reward is the frequency of the response's own cluster,

        r_i = p(c(o_i))  if H_sem < log G (entropy thresholding) and o_i has an answer,   else 0,

    so a prompt whose G answers are all different gets no signal. Advantage: GRPO on r with ε = 1e-4 (the code's
    TRL setting). ``min_confidence`` > 0 adds the later verl version's filter max_c p(c) ≥ it (0.25 there);
    0 disables it (the TRL version). Minimising H_sem concentrates the answer distribution.
    """

    extras = frozenset({'answer_cluster'})
    engine_primitives = frozenset({'texts'})
    eps: float = 1e-4
    """ε added to the std of the semantic-frequency rewards in the GRPO step (the code's TRL setting 1e-4)."""
    min_confidence: float = 0.0
    """Filter max_c p(c) ≥ this, a share of the group (later verl version 0.25); 0 = off (TRL version)."""
    equivalence: str = "math"
    """How final answers are clustered for extras['answer_cluster']: an equivalence mode (math = math-verify)."""

    def __post_init__(self) -> None:
        check_range("empo", "eps", self.eps, lo=0.0)
        check_range("empo", "min_confidence", self.min_confidence, lo=0.0, hi=1.0)
        _choice("empo", "equivalence", self.equivalence, EQUIVALENCE_MODES)

    def rewards(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) EMPO's semantic-frequency rewards."""
        cluster = _need_extra(batch, "answer_cluster", self.name).long()
        p_own, h_sem, p_max = semantic_entropy_counts(cluster, batch.group_ids)
        _, _, count = group_statistics(batch.rewards, batch.group_ids)
        gate = (h_sem < torch.log(count) - 1e-9) & (p_max >= self.min_confidence)
        return torch.where(gate & (cluster >= 0), p_own, torch.zeros_like(p_own))

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``answer_cluster`` (B,): each response's final-answer cluster within its group (``equivalence``), −1 for
        no answer."""
        return {"answer_cluster": answer_clusters(ctx.answers(), ctx.batch.group_ids, self.equivalence)}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        r = self.rewards(batch)
        return broadcast_to_tokens(grpo_advantage(r, batch.group_ids, self.eps), batch.mask)


# ============================================================================================ 2.4 Deng et al.
@ADVANTAGES.register("entropy_position")
@dataclass
class EntropyPositionAdvantage(AdvantageEstimator):
    """Perplexity- and position-based advantage shaping (Deng et al., "Decomposing the Entropy-Performance
    Exchange", arXiv 2508.02260) — APPROXIMATE: the paper's exact formulas and coefficients were not retrieved.

    Its findings: in the plateau stage, learning concentrates on high-entropy tokens of *low-perplexity* responses
    and on tokens *near the end* of a response. Our reading of its two shapings of the GRPO advantage A_i:

        (ppl)       Â_i   = A_i · max(0, 1 − α·ŵ_i),   ŵ_i = z-score within the group of log PPL_i = −mean_t log π_old,
        (position)  Â_i,t = Â_i + β·sign(A_i)·(t + 1)/|o_i|,

    so lower-perplexity responses weigh more and |Â| grows toward the end of a response (the sign of A kept).
    ``variant`` = "both" (default), "ppl" or "position"; α = 0.1, β = 0.1 are our choices.
    """

    variant: str = "both"
    """Which shaping: 'both', 'ppl' (perplexity weighting) or 'position' (growth toward the end)."""
    ppl_alpha: float = 0.1
    """α in Â = A·max(0, 1 − α·ŵ), ŵ the in-group z-score of log perplexity (our choice; paper's not found)."""
    position_beta: float = 0.1
    """β of the position term β·sign(A)·(t + 1)/|o|, added per token (our choice; paper's not found)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        _choice("entropy_position", "variant", self.variant, ("both", "ppl", "position"))
        check_range("entropy_position", "ppl_alpha", self.ppl_alpha, lo=0.0)
        check_range("entropy_position", "position_beta", self.position_beta, lo=0.0)
        check_range("entropy_position", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mask = batch.mask
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps)
        if self.variant in ("both", "ppl"):
            log_ppl = -seq_mean(batch.old_logprobs.detach(), mask)
            w_hat = group_zscore(log_ppl, batch.group_ids, self.eps)
            A = A * (1.0 - self.ppl_alpha * w_hat).clamp(min=0.0)
        adv = broadcast_to_tokens(A, mask)
        if self.variant in ("both", "position"):
            length = mask.sum(-1, keepdim=True).clamp(min=1.0)
            rel = torch.arange(1, mask.shape[1] + 1, dtype=torch.float32)[None, :] / length
            adv = adv + self.position_beta * torch.sign(A)[:, None] * rel
        return adv * mask


# ============================================================================================ 2.5 PEAR
@ADVANTAGES.register("pear")
@dataclass
class PEARAdvantage(AdvantageEstimator):
    """PEAR, Phase Entropy Aware Reward (arXiv 2510.08026). With the response split at ``</think>``
    (``extras['phase']``: 1 thinking, 2 answer, 0 the marker) and the rollout policy's token entropies,

        H̄_think = mean_{phase 1} H_t,   H̄_answer = mean_{phase 2} H_t (0 without a marker),
        P(y) = max(0, H̄_think − α·H̄_answer),
        r(y) = min(1, s − P(y)) if the answer is correct (``extras['correct']``), else r_fmt,

    then GRPO on r. Default α = 1 (ablation −1, 0, 0.5, 1, 2). s and r_fmt were not found: s = 1 here, and r_fmt is
    the engine's reward of the incorrect response (its format reward, 0 without one). ``phase_marker``: the marker
    string(s), ``|``-separated (default ``</think>``; e.g. ``</think>|\\boxed`` for models without think tags).
    Lower thinking entropy earns a higher reward: the thinking phase sharpens, and shortens.
    """

    extras = frozenset({'phase', 'correct'})
    engine_primitives = frozenset({'texts', 'tokenizer'})
    requires = frozenset({"old_entropy"})
    alpha: float = 1.0
    """α in the phase penalty P = max(0, H̄_think − α·H̄_answer), entropies in nats (ablation −1 to 2; 1)."""
    s: float = 1.0
    """s in the correct-answer reward min(1, s − P) (not found in the paper: 1)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""
    phase_marker: str = DEFAULT_PHASE_MARKER
    """Marker string(s) that end the thinking phase (``|``-separated alternatives, e.g. ``</think>``)."""

    def __post_init__(self) -> None:
        check_range("pear", "eps", self.eps, lo=0.0)
        if not self.phase_marker or any(not m for m in self.phase_marker.split("|")):
            raise ConfigError("pear.phase_marker must be one or more non-empty markers separated by '|'")

    def penalty(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) P(y) = max(0, H̄_think − α·H̄_answer)."""
        H = _need_entropy(batch, self.name)
        phase = _need_extra(batch, "phase", self.name).long()
        think = ((phase == 1) & (batch.mask > 0)).float()
        answer = ((phase == 2) & (batch.mask > 0)).float()
        h_think = seq_mean(H, think)
        h_answer = seq_mean(H, answer)  # 0 when there is no answer phase
        return (h_think - self.alpha * h_answer).clamp(min=0.0)

    def rewards(self, batch: RolloutBatch) -> torch.Tensor:
        correct = _need_extra(batch, "correct", self.name).float() > 0.5
        shaped = (self.s - self.penalty(batch)).clamp(max=1.0)
        return torch.where(correct, shaped, batch.rewards.float())

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``phase`` (B, T): thinking/answer phases split at ``phase_marker``; ``correct`` (B,) 0/1."""
        b = ctx.batch
        tok = ctx.require_tokenizer("pear")
        return {"correct": ctx.correct_tensor(),
                "phase": phase_ids(tok, b.response_ids, b.mask, self.phase_marker.split("|"))}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        return broadcast_to_tokens(grpo_advantage(self.rewards(batch), batch.group_ids, self.eps), batch.mask)


# ============================================================================================ steps (EMPG, ACPO)
def step_table(step_id: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Flatten the (response, step) pairs of a batch: per token its flat step index (B, T) (−1 on padding), the
    row of each flat step (S,), and S. Step ids are 0, 1, 2, ... within a response (gaps are allowed)."""
    B, T = step_id.shape
    sid = step_id.long().clamp(min=0)
    width = int(sid.max()) + 1 if sid.numel() else 1
    key = torch.arange(B)[:, None] * width + sid
    valid = mask > 0
    uniq, flat = torch.unique(key[valid], return_inverse=True)
    out = torch.full((B, T), -1, dtype=torch.long)
    out[valid] = flat
    return out, uniq // width, int(uniq.numel())


def step_means(values: torch.Tensor, flat: torch.Tensor, S: int) -> torch.Tensor:
    """(S,) mean of a (B, T) value over the tokens of each flat step."""
    valid = flat >= 0
    total = torch.zeros(S, dtype=torch.float64).index_add_(0, flat[valid], values[valid].double())
    n = torch.zeros(S, dtype=torch.float64).index_add_(0, flat[valid], torch.ones_like(values[valid]).double())
    return (total / n.clamp(min=1.0)).float()


def next_step(rows: torch.Tensor) -> torch.Tensor:
    """(S,) flat index of the next step of the same response, −1 for a response's last step (flat steps are sorted
    by (row, step id), so the next step of a response is the next flat index when it has the same row)."""
    S = rows.numel()
    nxt = torch.arange(1, S + 1)
    same = torch.zeros(S, dtype=torch.bool)
    if S > 1:
        same[:-1] = rows[1:] == rows[:-1]
    return torch.where(same, nxt, torch.full_like(nxt, -1))


# ============================================================================================ 2.6 EMPG
@ADVANTAGES.register("empg")
@dataclass
class EMPGAdvantage(AdvantageEstimator):
    """EMPG, Entropy-Modulated Policy Gradients (arXiv 2509.09265), on the steps of a response.

    A step is a segment of the response (``extras['step_id']``; the engine splits at ``step_delimiter``, default a
    blank line — the paper's steps are the reason–act turns of an agent). With H_k the mean token entropy of step
    k and H_norm its min–max normalisation over all steps of the batch,

        g(H_k) = exp(−k·H_norm,k) / mean_batch exp(−k·H_norm)   (self-calibrating: mean g = 1),
        f(H_{k+1}) = exp(−k′·H_norm,k+1)                        (future clarity; 0 after the last step),
        A_mod(i, k) = A_i·g(H_k) + ζ·f(H_{k+1}),

    A_i the GRPO advantage, then A_mod is re-centred to zero mean over the steps of the batch (groups of one get 0
    and are left out of the mean). Confident steps
    (g > 1) get amplified credit or blame, uncertain ones attenuated; steps leading into low-entropy states get a
    bonus. k, k′ and ζ were not found: k = k′ = 1, ζ = 0.05 are our choices.
    """

    extras = frozenset({'step_id'})
    engine_primitives = frozenset({'tokenizer'})
    requires = frozenset({"old_entropy"})
    k: float = 1.0
    """k in the step gain g = exp(−k·H_norm)/mean exp(−k·H_norm) (not found: our choice 1)."""
    k_next: float = 1.0
    """k′ in the future-clarity bonus f = exp(−k′·H_norm of the next step) (not found: our choice 1)."""
    zeta: float = 0.05
    """ζ: weight of the future-clarity bonus in A_mod = A·g + ζ·f (not found: our choice 0.05)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""
    step_delimiter: str = DEFAULT_STEP_DELIMITER
    """String at which the engine splits a response into steps (default a blank line)."""

    def __post_init__(self) -> None:
        for name in ("k", "k_next", "zeta", "eps"):
            check_range("empg", name, getattr(self, name), lo=0.0)
        if not self.step_delimiter:
            raise ConfigError("empg.step_delimiter must be a non-empty string")

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``step_id`` (B, T): the steps of each response, split after each ``step_delimiter``."""
        b = ctx.batch
        return {"step_id": step_ids(ctx.require_tokenizer(self.name), b.response_ids, b.mask, self.step_delimiter)}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        H = _need_entropy(batch, self.name)
        flat, rows, S = step_table(_need_extra(batch, "step_id", self.name), batch.mask)
        if S == 0:
            return torch.zeros_like(batch.mask)
        h = step_means(H, flat, S)
        h_norm = (h - h.min()) / (h.max() - h.min() + 1e-8)
        e = torch.exp(-self.k * h_norm)
        g = e / e.mean()
        nxt = next_step(rows)
        f = torch.where(nxt >= 0, torch.exp(-self.k_next * h_norm[nxt.clamp(min=0)]), torch.zeros_like(h))
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps)
        _, _, count = group_statistics(batch.rewards, batch.group_ids)
        compared = (count > 1)[rows]  # a group of one offers no comparison: 0, and out of the re-centring
        a_mod = A[rows] * g + self.zeta * f
        if bool(compared.any()):
            a_mod = a_mod - a_mod[compared].mean()
        a_mod = torch.where(compared, a_mod, torch.zeros_like(a_mod))
        return torch.where(flat >= 0, a_mod[flat.clamp(min=0)], torch.zeros_like(batch.mask))


# ============================================================================================ 2.7 EM-RL
@ADVANTAGES.register("em_rl")
@dataclass
class EMRLAdvantage(AdvantageEstimator):
    """EM-RL (Agarwal et al., "The Unreasonable Effectiveness of Entropy Minimization", arXiv 2505.15134):
    REINFORCE with the leave-one-out baseline and the negative entropy as the *only* reward (label-free),

        token variant:    r(y) = −Σ_t H_t            (rollout policy's full-vocabulary entropies),
        sequence variant: r(y) = Σ_t log π(y_t|y_<t) = log π(y)   (the trajectory's own log-likelihood),
        A_i = r_i − mean_{j≠i} r_j.

    The verifier's rewards are ignored. Training settings (N, lr, steps) were not found; the variants have no
    hyperparameter. Both variants lower entropy by design.
    """

    requires = frozenset({"old_entropy"})
    variant: str = "token"
    """Reward: 'token' (r = −Σ_t H_t, the negative entropy) or 'sequence' (r = log π(y))."""

    def __post_init__(self) -> None:
        _choice("em_rl", "variant", self.variant, ("token", "sequence"))

    def rewards(self, batch: RolloutBatch) -> torch.Tensor:
        if self.variant == "token":
            return -(_need_entropy(batch, self.name) * batch.mask).sum(-1)
        return (batch.old_logprobs.detach().float() * batch.mask).sum(-1)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        r = self.rewards(batch)
        mean, _, count = group_statistics(r, batch.group_ids)
        scale = count / (count - 1).clamp(min=1.0)
        adv = torch.where(count > 1, scale * (r - mean), torch.zeros_like(mean))
        return broadcast_to_tokens(adv, batch.mask)


# ============================================================================================ 2.8 SEED-GRPO
SEED_FORMS = ("reciprocal", "linear", "exponential")


def cluster_semantic_entropy(cluster: torch.Tensor, seq_logprob: torch.Tensor,
                             group_ids: torch.Tensor) -> torch.Tensor:
    """(B,) SEED-GRPO's semantic entropy of each response's prompt: with p(C_k|q) = Σ_{o∈C_k} π_old(o|q) (the
    sequence probabilities, in log space: logsumexp of Σ_t log π_old), SE(q) = −(1/K) Σ_k log p(C_k|q) over the K
    clusters of the group (the Monte-Carlo estimator of Kuhn et al., 2302.09664); missing answers form one cluster."""
    inverse, n = group_index(group_ids)
    out = torch.zeros(cluster.shape[0])
    for g in range(n):
        idx = torch.nonzero(inverse == g).flatten()
        _, cinv = torch.unique(cluster[idx].long(), return_inverse=True)
        K = int(cinv.max()) + 1
        lp = seq_logprob[idx].double()
        log_pc = torch.stack([torch.logsumexp(lp[cinv == k], 0) for k in range(K)])
        out[idx] = float(-log_pc.mean())
    return out


@ADVANTAGES.register("seed_grpo")
@dataclass
class SEEDGRPOAdvantage(AdvantageEstimator):
    """SEED-GRPO, Semantic-Entropy-Enhanced GRPO (arXiv 2505.12346): the Dr. GRPO advantage A_i = r_i − r̄ scaled
    per prompt by its semantic entropy SE(q) (``cluster_semantic_entropy``; answers clustered by meaning in
    ``extras['answer_cluster']``), with SE_max = log G and x = α·SE(q)/SE_max:

        "reciprocal" (default, the reference implementation as reported by a third party):  Â_i = A_i/(1 + x),
            α = 0.0417 (i.e. α' = 0.0417/log G);
        "linear": Â_i = A_i·max(0, 1 − x);  "exponential": Â_i = A_i·exp(−x)   (paper Eq. 6 leaves f open; its α
            = 0.02).

    Prompts the model is semantically unsure of get more conservative updates, confident ones aggressive updates.
    """

    extras = frozenset({'answer_cluster'})
    engine_primitives = frozenset({'texts'})
    alpha: float = 0.0417
    """α in x = α·SE(q)/log G (reciprocal form 0.0417, as reported for the reference; the paper's α 0.02)."""
    form: str = "reciprocal"
    """Scale f(x): 'reciprocal' 1/(1 + x), 'linear' max(0, 1 − x) or 'exponential' exp(−x)."""
    equivalence: str = "math"
    """How final answers are clustered for extras['answer_cluster']: an equivalence mode (math = math-verify)."""

    def __post_init__(self) -> None:
        check_range("seed_grpo", "alpha", self.alpha, lo=0.0)
        _choice("seed_grpo", "form", self.form, SEED_FORMS)
        _choice("seed_grpo", "equivalence", self.equivalence, EQUIVALENCE_MODES)

    def scale(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) the factor f applied to each response's Dr. GRPO advantage."""
        cluster = _need_extra(batch, "answer_cluster", self.name)
        seq_lp = (batch.old_logprobs.detach().float() * batch.mask).sum(-1)
        se = cluster_semantic_entropy(cluster, seq_lp, batch.group_ids)
        _, _, count = group_statistics(batch.rewards, batch.group_ids)
        x = self.alpha * se / torch.log(count.clamp(min=2.0))
        if self.form == "reciprocal":
            return 1.0 / (1.0 + x)
        if self.form == "linear":
            return (1.0 - x).clamp(min=0.0)
        return torch.exp(-x)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``answer_cluster`` (B,): each response's final-answer cluster within its group (``equivalence``), −1 for
        no answer."""
        return {"answer_cluster": answer_clusters(ctx.answers(), ctx.batch.group_ids, self.equivalence)}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mean, _, count = group_statistics(batch.rewards, batch.group_ids)
        A = torch.where(count > 1, batch.rewards.float() - mean, torch.zeros_like(mean))
        return broadcast_to_tokens(A * self.scale(batch), batch.mask)


# ============================================================================================ 2.9 EDGE-GRPO
@ADVANTAGES.register("edge_grpo")
@dataclass
class EDGEGRPOAdvantage(AdvantageEstimator):
    """EDGE-GRPO's entropy-driven advantage, EDA (arXiv 2507.21848; ZhangXJ199/EDGE-GRPO
    ``grpo_aha_trainer.py``): with P_i = mean_t H_{i,t} the response's mean token entropy and P̂_i = P_i/mean_batch P,

        Â_i = A_i / P̂_i,       A_i the GRPO advantage (std + 1e-4),

    so confident (low-entropy) responses get larger |Â| and uncertain ones smaller. Departures: P_i is the rollout
    policy's entropy, computed once and without gradient (the code keeps P_i's gradient, detaching only the batch
    mean). Guided Error Correction (GEC), the paper's other half, is the sampling strategy ``edge_gec``
    (``knobs/sampling/guided.py``); the catalog entry ``edge_grpo`` sets both.
    """

    requires = frozenset({"old_entropy"})
    eps: float = 1e-4
    """ε added to the group reward std of the GRPO advantage (the code's 1e-4)."""

    def __post_init__(self) -> None:
        check_range("edge_grpo", "eps", self.eps, lo=0.0)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        P = seq_mean(_need_entropy(batch, self.name), batch.mask)
        has = batch.mask.sum(-1) > 0
        p_hat = P / P[has].mean().clamp(min=1e-8) if bool(has.any()) else torch.ones_like(P)
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps) / p_hat.clamp(min=1e-8)
        return broadcast_to_tokens(A, batch.mask)


# ============================================================================================ 2.10 UCAS
@ADVANTAGES.register("ucas")
@dataclass
class UCASAdvantage(AdvantageEstimator):
    """UCAS, Uncertainty-aware Advantage Shaping (arXiv 2510.10649; xvolcano02/UCAS
    ``core_algos.py::compute_ucas_advantage``). With c_t = logsumexp(z_t) − mean_v z_t,v the token self-certainty
    (``extras['self_certainty']``), C_i = Σ_t c_t, Ĉ_i its z-score within the group and A_i the GRPO advantage:

        stage 1:  m_i = exp(−b₊·Ĉ_i) if A_i > 0,   m_i = exp(b₋·Ĉ_i) if A_i ≤ 0,
        stage 2:  raw_i,t = A_i·m_i − λ·minmax_batch(z_i,t,o_t),
                  Â_i,t = max(raw_i,t, 0) if A_i·m_i > 0 else raw_i,t,

    z_{i,t,o_t} the logit of the sampled token (``extras['sampled_logit']``), min–max normalised over the valid tokens
    of the batch. Correct-but-uncertain responses are amplified, wrong-but-confident ones punished harder, locally
    over-confident tokens penalised, and a positive trajectory never flips sign. Defaults (code, hard-coded):
    b₊ = 0.25, b₋ = 0.35, λ = 0.05.
    """

    extras = frozenset({'self_certainty', 'sampled_logit'})
    engine_primitives = frozenset({'rollout_logits'})
    b_pos: float = 0.25
    """b₊: modulation exp(−b₊·Ĉ) of positive advantages by the self-certainty z-score (code, hard-coded 0.25)."""
    b_neg: float = 0.35
    """b₋: modulation exp(b₋·Ĉ) of non-positive advantages (code, hard-coded 0.35)."""
    lam: float = 0.05
    """λ: weight of the min–max normalised sampled-token logit subtracted per token (code, hard-coded 0.05)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        for name in ("b_pos", "b_neg", "lam", "eps"):
            check_range("ucas", name, getattr(self, name), lo=0.0)

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``self_certainty`` and ``sampled_logit`` (B, T) from the rollout policy's temperature-scaled logits."""
        cert, logit = certainty_and_sampled_logit(ctx)
        return {"self_certainty": cert, "sampled_logit": logit}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        mask = batch.mask
        c = _need_extra(batch, "self_certainty", self.name).float()
        z = _need_extra(batch, "sampled_logit", self.name).float()
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps)
        C_hat = group_zscore((c * mask).sum(-1), batch.group_ids, self.eps)
        m = torch.where(A > 0, torch.exp(-self.b_pos * C_hat), torch.exp(self.b_neg * C_hat))
        valid = mask > 0
        if bool(valid.any()):
            lo, hi = z[valid].min(), z[valid].max()
            z_norm = (z - lo) / (hi - lo + 1e-8)
        else:
            z_norm = torch.zeros_like(z)
        scaled = (A * m)[:, None]
        raw = scaled - self.lam * z_norm
        _, _, count = group_statistics(batch.rewards, batch.group_ids)
        compared = (count > 1).float()[:, None]  # a group of one offers no comparison: 0 (as every estimator here)
        return torch.where(scaled > 0, raw.clamp(min=0.0), raw) * mask * compared


# ============================================================================================ 2.11 ACPO
@ADVANTAGES.register("acpo")
@dataclass
class ACPOAdvantage(AdvantageEstimator):
    """ACPO, Attribution-based Contribution to Policy Optimization (arXiv 2510.08899) — APPROXIMATE: only the
    abstract and summaries were found (no formulas, no code). Our reading of its step credit assignment:

    steps are the delimiter-split segments of a response (``extras['step_id']``, as EMPG); the attribution of step k
    is a mutual-information surrogate, the entropy it resolves, a_k = max(0, H̄_k − H̄_{k+1}) (H̄_{K} = 0 after the
    last step: the answer is then determined), normalised over the response's K steps, ã_k = a_k/Σ_j a_j (uniform
    when Σ a = 0). Each step's share of the outcome advantage is

        Â_{i,t} = A_i·((1 − β) + β·K_i·ã_{i,k(t)}),     mean over steps of the factor = 1,

    A_i the GRPO advantage, β = 0.5 our choice. Not implemented: the difficulty-aware two-stage curriculum, the
    reference-policy and confidence-weighted rewards of the convergence stage, and semantic (model-based) step
    segmentation.
    """

    extras = frozenset({'step_id'})
    engine_primitives = frozenset({'tokenizer'})
    requires = frozenset({"old_entropy"})
    beta: float = 0.5
    """β ∈ [0, 1]: share of the advantage redistributed by step attribution, (1 − β) + β·K·ã (our choice 0.5)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""
    step_delimiter: str = DEFAULT_STEP_DELIMITER
    """String at which the engine splits a response into steps (default a blank line)."""

    def __post_init__(self) -> None:
        check_range("acpo", "beta", self.beta, lo=0.0, hi=1.0)
        check_range("acpo", "eps", self.eps, lo=0.0)
        if not self.step_delimiter:
            raise ConfigError("acpo.step_delimiter must be a non-empty string")

    def step_weights(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, T) the attribution factor (1 − β) + β·K·ã of each token's step (0 on padding)."""
        H = _need_entropy(batch, self.name)
        flat, rows, S = step_table(_need_extra(batch, "step_id", self.name), batch.mask)
        if S == 0:
            return torch.zeros_like(batch.mask)
        h = step_means(H, flat, S)
        nxt = next_step(rows)
        h_next = torch.where(nxt >= 0, h[nxt.clamp(min=0)], torch.zeros_like(h))
        a = (h - h_next).clamp(min=0.0).double()
        B = batch.batch_size
        total = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, a)
        K = torch.zeros(B, dtype=torch.float64).index_add_(0, rows, torch.ones_like(a))
        share = torch.where(total[rows] > 0, a / total[rows].clamp(min=1e-30), 1.0 / K[rows])
        w = ((1.0 - self.beta) + self.beta * K[rows] * share).float()
        return torch.where(flat >= 0, w[flat.clamp(min=0)], torch.zeros_like(batch.mask))

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``step_id`` (B, T): the steps of each response, split after each ``step_delimiter``."""
        b = ctx.batch
        return {"step_id": step_ids(ctx.require_tokenizer(self.name), b.response_ids, b.mask, self.step_delimiter)}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps)
        return A[:, None] * self.step_weights(batch)


# ============================================================================================ 2.12 CANON
@ADVANTAGES.register("canon")
@dataclass
class CANONAdvantage(AdvantageEstimator):
    """CANON, Conditional Advantage Estimation (arXiv 2509.23962; biuboomc/CANON
    ``compute_dr_entropy_per_token_group_outcome_advantage``). Per group, responses are sorted by their mean token
    entropy H̄_i and split at mid = ⌊G/2⌋ into a low-entropy half 𝓛 (the ⌊G/2⌋ lowest) and a high-entropy half 𝓗,
    with mean rewards μ_𝓛, μ_𝓗:

        i ∈ 𝓗:  A_i = μ·(r_i − α·μ_𝓛 + β) + (1 − μ)·(r_i − μ_𝓗),
        i ∈ 𝓛:  A_i = μ·(α·r_i − μ_𝓗 − β) + (1 − μ)·(r_i − μ_𝓛),

    μ = 1 pure inter-half comparison, μ = 0 pure intra-half. Dr. GRPO style: no std; the code's division by the
    constant L_max with seq-mean-token-sum is the ``seq-mean-token-sum-norm`` aggregation with norm_length = L_max
    (the catalog preset sets it; the trainer uses the generation budget). Defaults (code): α = 1, μ = 1, β = 0.
    ``mu_schedule="accuracy"``: the annealed variant, μ = the batch accuracy p̄ = mean 𝟙[r > 0].
    The data decide whether high- or low-entropy responses are favoured; there is no fixed direction.
    """

    requires = frozenset({"old_entropy"})
    alpha: float = 1.0
    """α: weight of the own reward (low half) or the other half's mean (high half) in the inter term (code 1)."""
    mu: float = 1.0
    """μ ∈ [0, 1]: 1 = pure inter-half comparison, 0 = pure intra-half (code 1)."""
    beta: float = 0.0
    """β: offset favouring the high-entropy half in the inter term, in reward units (code 0)."""
    mu_schedule: str = "constant"
    """'constant' (μ as set) or 'accuracy' (annealed: μ = the batch accuracy, mean 𝟙[r > 0])."""

    def __post_init__(self) -> None:
        check_range("canon", "mu", self.mu, lo=0.0, hi=1.0)
        _choice("canon", "mu_schedule", self.mu_schedule, ("constant", "accuracy"))

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        Hbar = seq_mean(_need_entropy(batch, self.name), batch.mask)
        r = batch.rewards.float()
        mu = float((r > 0).float().mean()) if self.mu_schedule == "accuracy" else self.mu
        inverse, n = group_index(batch.group_ids)
        adv = torch.zeros_like(r)
        for g in range(n):
            idx = torch.nonzero(inverse == g).flatten()
            G = idx.numel()
            if G < 2:
                continue
            order = idx[torch.sort(Hbar[idx], stable=True).indices]
            low, high = order[: G // 2], order[G // 2:]
            mu_l, mu_h = float(r[low].mean()), float(r[high].mean())
            adv[high] = mu * (r[high] - self.alpha * mu_l + self.beta) + (1 - mu) * (r[high] - mu_h)
            adv[low] = mu * (self.alpha * r[low] - mu_h - self.beta) + (1 - mu) * (r[low] - mu_l)
        return broadcast_to_tokens(adv, batch.mask)


# ============================================================================================ 2.13 QAE
@ADVANTAGES.register("qae")
@dataclass
class QAEAdvantage(AdvantageEstimator):
    """QAE, Quantile Advantage Estimation (arXiv 2509.22611; junkangwu/QAE, a one-line change of verl's GRPO): the
    group's K-quantile replaces the mean as the baseline,

        b_K(q) = quantile_K({R_j}),     A_i = (R_i − b_K(q)) / (std({R_j}) + ε)

    (``torch.quantile``, linear interpolation). With binary rewards b_K = 0 on hard prompts (p ≤ 1 − K: only the
    rare successes get A > 0) and 1 on easy ones (only the residual failures get A < 0), so most responses get zero
    advantage and the one-step entropy change is bounded on both sides. Default K = 0.4 (0.6 against early
    collapse).
    """

    k: float = 0.4
    """K ∈ [0, 1]: quantile of the group rewards used as the baseline (0.4; 0.6 against early collapse)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("qae", "k", self.k, lo=0.0, hi=1.0)
        check_range("qae", "eps", self.eps, lo=0.0)

    def baseline(self, rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
        """(B,) the K-quantile of each sample's group rewards."""
        inverse, n = group_index(group_ids)
        b = torch.zeros(rewards.shape[0])
        for g in range(n):
            idx = torch.nonzero(inverse == g).flatten()
            b[idx] = float(torch.quantile(rewards[idx].double(), self.k))
        return b

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        _, std, count = group_statistics(batch.rewards, batch.group_ids)
        adv = (batch.rewards.float() - self.baseline(batch.rewards, batch.group_ids)) / (std + self.eps)
        adv = torch.where(count > 1, adv, torch.zeros_like(adv))
        return broadcast_to_tokens(adv, batch.mask)


# ============================================================================================ 2.14 AdaThink-Med
def top_fraction_mean(H: torch.Tensor, mask: torch.Tensor, frac: float) -> torch.Tensor:
    """(B,) mean of the ⌈frac·L_i⌉ largest valid values of each row (0 for an empty row)."""
    out = torch.zeros(H.shape[0])
    for i in range(H.shape[0]):
        v = H[i][mask[i] > 0]
        if v.numel():
            k = max(1, math.ceil(frac * v.numel()))
            out[i] = v.topk(k).values.mean()
    return out


def repeated_ngrams(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    """(B,) number of token n-grams of each response that already occurred earlier in it."""
    out = torch.zeros(ids.shape[0])
    for i in range(ids.shape[0]):
        seq = ids[i][mask[i] > 0].tolist()
        seen: set = set()
        rep = 0
        for s in range(len(seq) - n + 1):
            gram = tuple(seq[s:s + n])
            if gram in seen:
                rep += 1
            seen.add(gram)
        out[i] = rep
    return out


@ADVANTAGES.register("adathink_med")
@dataclass
class AdaThinkMedAdvantage(AdvantageEstimator):
    """AdaThink-Med, uncertainty-guided length calibration (arXiv 2509.24560; shaohao011/AdaThinkMed
    ``length_reward_func.py::entropy_length_reward_question_level``). Per response: e_i = mean of its top-20% token
    entropies, normalised over the batch as (log1p e − min)/(max − min), confidence c_i = 1 − e_i, correctness y_i
    (``extras['correct']``), length L_i. Per question: difficulty d_q = 1 − mean_i[α·y_i·c_i + (1 − α)·y_i].
    Across steps (state): θ = EMA_0.9 of the 0.7-quantile of the batch's difficulties (easy: d < θ, else hard) and
    L_exp[bin] = EMA_0.9 of the mean length of each bin. With ρ_i = (L_i/L_exp[bin])·(0.5 + 0.5·c_i):

        len_i = max(0, 1 − ρ_i) if correct ∧ easy,   min(1, ρ_i − 1) if wrong ∧ hard,   0 otherwise,
        rep_i = −0.05 × (number of repeated 40-gram tokens),
        R_i = R_engine,i + 0.5·(len_i + rep_i)     → GRPO,

    R_engine the engine's reward (accuracy, plus its format reward where configured; the code's is acc + 0.5·format).
    Confident easy answers are pushed shorter, uncertain hard ones longer. Defaults: THETA 0.7, TOPK 0.2, ALPHA 0.5
    (code). The first batch initialises θ and L_exp. ``compute`` updates the state: call it once per rollout batch.
    The paper starts from a GRPO checkpoint (two stages); that schedule is the user's.
    """

    extras = frozenset({'correct'})
    engine_primitives = frozenset({'texts'})
    requires = frozenset({"old_entropy"})
    top_frac: float = 0.2
    """Fraction of a response's tokens, the highest-entropy ones, averaged into e_i (code TOPK 0.2)."""
    alpha: float = 0.5
    """α ∈ [0, 1]: weight of confidence in the difficulty d_q = 1 − mean[α·y·c + (1 − α)·y] (code ALPHA 0.5)."""
    theta_quantile: float = 0.7
    """Quantile of the batch's difficulties whose EMA is the easy/hard threshold θ (code THETA 0.7)."""
    ema: float = 0.9
    """EMA factor of θ and the expected lengths L_exp, new = ema·old + (1 − ema)·batch."""
    length_weight: float = 0.5
    """Weight of len_i + rep_i added to the engine's reward, R + w·(len + rep)."""
    rep_ngram: int = 40
    """n of the token n-grams counted as repetitions."""
    rep_penalty: float = 0.05
    """Penalty per repeated n-gram, rep_i = −penalty × count."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""
    _theta: Optional[float] = field(init=False, repr=False, compare=False, default=None)
    _l_exp: dict = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("adathink_med", "top_frac", self.top_frac, lo=0.0, hi=1.0, lo_open=True)
        for name in ("alpha", "theta_quantile", "ema"):
            check_range("adathink_med", name, getattr(self, name), lo=0.0, hi=1.0)
        for name in ("length_weight", "rep_penalty", "eps"):
            check_range("adathink_med", name, getattr(self, name), lo=0.0)
        check_range("adathink_med", "rep_ngram", self.rep_ngram, lo=1)
        self._l_exp = {}

    def _ema(self, old: Optional[float], new: float) -> float:
        return new if old is None else self.ema * old + (1.0 - self.ema) * new

    def length_scores(self, batch: RolloutBatch) -> torch.Tensor:
        """(B,) len_i + rep_i, updating θ and L_exp."""
        H = _need_entropy(batch, self.name)
        mask = batch.mask
        y = (_need_extra(batch, "correct", self.name).float() > 0.5).float()
        u = torch.log1p(top_fraction_mean(H, mask, self.top_frac))
        span = float(u.max() - u.min())
        e = (u - u.min()) / span if span > 1e-12 else torch.zeros_like(u)
        c = 1.0 - e
        inverse, n = group_index(batch.group_ids)
        per = self.alpha * y * c + (1.0 - self.alpha) * y
        d_group = 1.0 - torch.zeros(n).index_add_(0, inverse, per) / torch.bincount(inverse, minlength=n).float()
        self._theta = self._ema(self._theta, float(torch.quantile(d_group.double(), self.theta_quantile)))
        easy = d_group[inverse] < self._theta
        L = mask.sum(-1)
        for name, members in (("easy", easy), ("hard", ~easy)):
            if bool(members.any()):
                self._l_exp[name] = self._ema(self._l_exp.get(name), float(L[members].mean()))
        l_exp = torch.tensor([self._l_exp.get("easy" if bool(ez) else "hard", 1.0) for ez in easy])
        rho = L / l_exp.clamp(min=1e-8) * (0.5 + 0.5 * c)
        correct = y > 0.5
        length = torch.where(correct & easy, (1.0 - rho).clamp(min=0.0),
                             torch.where(~correct & ~easy, (rho - 1.0).clamp(max=1.0), torch.zeros_like(rho)))
        rep = -self.rep_penalty * repeated_ngrams(batch.response_ids, mask, self.rep_ngram)
        return length + rep

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``correct`` (B,) 0/1: the reward source's verdict."""
        return {"correct": ctx.correct_tensor()}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        r = batch.rewards.float() + self.length_weight * self.length_scores(batch)
        return broadcast_to_tokens(grpo_advantage(r, batch.group_ids, self.eps), batch.mask)

    def state_dict(self) -> dict[str, Any]:
        if self._theta is None:
            return {}
        return {"theta": self._theta, "l_exp": dict(self._l_exp)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = sorted(set(state) - {"theta", "l_exp"})
        if unknown:
            raise ConfigError(f"adathink_med state has unknown entries {unknown}")
        self._theta = None if state.get("theta") is None else float(state["theta"])
        self._l_exp = {str(k): float(v) for k, v in dict(state.get("l_exp", {})).items()}


# ============================================================================================ 2.15 LESS
def low_entropy_segments(low: list[bool], min_len: int) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of True of length ≥ ``min_len``."""
    out, start = [], None
    for t, flag in enumerate(low + [False]):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            if t - start >= min_len:
                out.append((start, t))
            start = None
    return out


def _token_bytes(seq: list[int]) -> bytes:
    return b"".join(int(t).to_bytes(8, "little", signed=True) for t in seq)


def _contains(haystack: bytes, needle: bytes) -> bool:
    """Token-aligned containment of one 8-byte-per-token sequence in another."""
    pos = haystack.find(needle)
    while pos >= 0:
        if pos % 8 == 0:
            return True
        pos = haystack.find(needle, pos + 1)
    return False


@ADVANTAGES.register("less")
@dataclass
class LESSAdvantage(AdvantageEstimator):
    """LESS, Low-Entropy Segment Shaping (arXiv 2512.00908; QWE-CXZ/LESS ``recipe/less/revise_advantage.py``).

    Per response, τ_i = the 0.8-quantile of its token entropies; tokens with H ≤ τ_i are low-entropy. Weights w:
    high-entropy tokens 1; low-entropy tokens 1/N_correct in a correct response, 1/N_wrong in a wrong one (counts in
    the group; correctness ``extras['correct']``). Low-entropy *segments* are maximal runs of ≥ μ low-entropy tokens;
    a segment is shared by every response of the group whose token sequence contains it contiguously. For a
    segment held by k_c correct and k_w wrong responses (itself included):

        k_c > 0 and k_w > 0  →  w = 0 on it (a pattern of both outcomes carries no signal);
        only correct         →  w = max(w, k_c/N_correct);     only wrong  →  w = max(w, k_w/N_wrong).

    Â_{i,t} = w_{i,t}·A_i, A_i the GRPO advantage. Defaults (code): μ = 5, quantile 0.8. High-entropy exploration
    tokens keep their full update; low-entropy patterns unique to correct answers are amplified, those unique to
    errors suppressed, shared ones neutralised.
    """

    extras = frozenset({'correct'})
    engine_primitives = frozenset({'texts'})
    requires = frozenset({"old_entropy"})
    quantile: float = 0.8
    """Per-response entropy quantile τ_i: tokens with H ≤ τ_i are low-entropy (code 0.8)."""
    min_len: int = 5
    """μ: minimum length in tokens of a low-entropy segment (code 5)."""
    eps: float = 1e-6
    """ε added to the group reward std in A = (R − mean_G R)/(std_G R + ε), against division by zero."""

    def __post_init__(self) -> None:
        check_range("less", "quantile", self.quantile, lo=0.0, hi=1.0)
        check_range("less", "min_len", self.min_len, lo=1)
        check_range("less", "eps", self.eps, lo=0.0)

    def weights(self, batch: RolloutBatch) -> torch.Tensor:
        """(B, T) the LESS weights w (0 on padding)."""
        H = _need_entropy(batch, self.name)
        mask = batch.mask
        correct = (_need_extra(batch, "correct", self.name).float() > 0.5).tolist()
        w = torch.zeros_like(mask)
        inverse, n = group_index(batch.group_ids)
        for g in range(n):
            idx = torch.nonzero(inverse == g).flatten().tolist()
            n_c = sum(correct[i] for i in idx)
            n_w = len(idx) - n_c
            seqs = {i: batch.response_ids[i][mask[i] > 0].tolist() for i in idx}
            blobs = {i: _token_bytes(seqs[i]) for i in idx}
            for i in idx:
                h = H[i][mask[i] > 0]
                if h.numel() == 0:
                    continue
                tau = torch.quantile(h.double(), self.quantile).float()
                low = (h <= tau).tolist()
                base = 1.0 / (n_c if correct[i] else n_w)
                row = torch.tensor([base if lo else 1.0 for lo in low])
                for s, e in low_entropy_segments(low, self.min_len):
                    needle = _token_bytes(seqs[i][s:e])
                    k_c = sum(1 for j in idx if correct[j] and _contains(blobs[j], needle))
                    k_w = sum(1 for j in idx if not correct[j] and _contains(blobs[j], needle))
                    if k_c > 0 and k_w > 0:
                        row[s:e] = 0.0
                    elif k_c > 0:
                        row[s:e] = row[s:e].clamp(min=k_c / n_c)
                    else:
                        row[s:e] = row[s:e].clamp(min=k_w / n_w)
                w[i, mask[i] > 0] = row
        return w

    def rollout_extras(self, ctx: RolloutContext) -> dict[str, torch.Tensor]:
        """``correct`` (B,) 0/1: the reward source's verdict."""
        return {"correct": ctx.correct_tensor()}

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        A = grpo_advantage(batch.rewards, batch.group_ids, self.eps)
        return A[:, None] * self.weights(batch)

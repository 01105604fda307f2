"""The KL knob's entropy-aware penalties: KL-Cov (arXiv 2505.22617), Archer, ProRL, APO and SENT anchors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.dynamics import centered_covariance
from ...ops.kl import kl_estimate
from ...ops.masked import masked_mean
from ...registry import check_range
from ..advantage.base import group_statistics
from ..clip.base import SCOPES
from ..token_select import check_entropy_source, high_entropy_mask, token_entropy
from .base import KLS, KLPenalty, _check_estimator


@KLS.register("kl_cov")
@dataclass
class KLCov(KLPenalty):
    """KL-Cov (Cui et al., 2505.22617 Eqs. 13–14; verl ``compute_policy_loss_kl_cov``).

    Rank the valid tokens by Cov(y_i) (Eq. 10, detached log-probs); the top ⌊k·N⌋ (at least 1) get the extra loss
    β·|log π_θ − log π_old| — an "abs" k1 estimator against the *rollout* policy π_old, not π_ref.
    Defaults k = 2e-3 (Qwen2.5-7B; 2e-4 for 32B; the code's ``k_percent`` is in percent), β = 1.
    Pair with the clip rule ``none``: the reference loss applies no PPO clip at all (ℓ = −A·r on every token).
    The penalty and its gradient vanish while π_θ = π_old, so KL-Cov acts only on off-policy updates
    (ppo_epochs > 1 or several mini-batches per rollout).
    """

    requires = frozenset({"logprobs", "advantages"})
    needs_off_policy = True
    k: float = 2e-3
    """Fraction k of valid tokens penalised, top ⌊k·N⌋ by Cov (not percent as code's k_percent; 7B 2e-3, 32B 2e-4)."""
    coef: float = 1.0
    """β: weight of the penalty β·|log π_θ − log π_old| on the chosen tokens."""
    scope: str = "micro"
    """'micro': rank per micro-batch with current log-probs; 'batch': once per rollout batch with π_old."""

    def __post_init__(self) -> None:
        check_range("kl_cov", "k", self.k, lo=0.0, hi=1.0, lo_open=True)
        check_range("kl_cov", "coef", self.coef, lo=0.0)
        if self.scope not in SCOPES:
            raise ConfigError(f"kl_cov.scope = {self.scope!r} is unknown; choose one of {', '.join(SCOPES)}")

    def select(self, logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Bool (B, T): the top ⌊k·N⌋ valid tokens by centred covariance."""
        cov = centered_covariance(logp, adv, mask)
        valid = mask > 0
        n = int(valid.sum())
        chosen = torch.zeros_like(valid)
        if n == 0:
            return chosen
        count = max(1, int(self.k * n))
        scores = torch.where(valid, cov, torch.full_like(cov, float("-inf"))).flatten()
        top = torch.topk(scores, count).indices
        chosen.view(-1)[top] = True
        return chosen

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        if self.scope != "batch":
            return batch
        batch.require("advantages", who="kl_cov (scope=batch)")
        chosen = self.select(batch.old_logprobs, batch.advantages, batch.mask)
        return batch.replace(extras={**batch.extras, "kl_cov_select": chosen})

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="KL penalty 'kl_cov'")
        if self.scope == "micro":
            chosen = self.select(batch.logprobs, batch.advantages, batch.mask)
        else:
            if "kl_cov_select" not in batch.extras:
                raise ConfigError("kl_cov with scope='batch' needs PolicyObjective.prepare() on the rollout batch")
            chosen = batch.extras["kl_cov_select"].bool() & (batch.mask > 0)
        abs_kl = (batch.logprobs - batch.old_logprobs.detach()).abs()
        pen = torch.where(chosen, self.coef * abs_kl, torch.zeros_like(abs_kl))
        n_sel = int(chosen.sum())
        metrics = {
            "kl/cov_frac": float(masked_mean(chosen.float(), batch.mask)),
            "kl/cov_abs": float(abs_kl.detach()[chosen].mean()) if n_sel else 0.0,
        }
        return pen, metrics


@KLS.register("archer_kl")
@dataclass
class ArcherKL(KLPenalty):
    """Archer's entropy-split KL loss (2507.15778; ArcherCodeR ``dp_actor.py``), also ASPO's (2510.06062).

    Tokens split per response by the 0.8 entropy quantile (``high_entropy_mask``, the same split as the
    ``archer``/``aspo`` clip rules). Low-entropy ("knowledge") tokens get β·k3(log π_θ − log π_ref) with β = 1e-3;
    high-entropy ("reasoning") tokens get β_high = 0. The reference aggregates each class's KL with token-mean over
    *its own* mask and adds β_low·KL_low + β_high·KL_high to the loss; ``per_class_mean`` reproduces that under
    token-mean aggregation by scaling each class by N/N_class (counts of the micro-batch given to the penalty).
    Semantics, not names: the reference's ``high_entropy_mask`` marks the low-entropy tokens.
    """

    requires = frozenset({"logprobs", "ref_logprobs", "entropy"})
    coef: float = 1e-3
    """β_low: weight of the k-estimated KL to π_ref on low-entropy (knowledge) tokens."""
    high_entropy_coef: float = 0.0
    """β_high: KL weight on high-entropy (reasoning) tokens (0 = not anchored)."""
    quantile: float = 0.8
    """Per-response entropy quantile splitting the two classes (0.8 = the top 20 % are high-entropy)."""
    estimator: str = "k3"
    """KL estimator against π_ref: k1, k2, k3 or abs."""
    entropy: str = "current"
    """Entropy the split reads: 'current' (π_θ, detached) or 'old' (π_old, fixed per rollout batch)."""
    per_class_mean: bool = True
    """Scale each class by N/N_class so its KL is a token-mean over its own mask, as the reference aggregates."""

    def __post_init__(self) -> None:
        check_range("archer_kl", "coef", self.coef, lo=0.0)
        check_range("archer_kl", "high_entropy_coef", self.high_entropy_coef, lo=0.0)
        check_range("archer_kl", "quantile", self.quantile, lo=0.0, hi=1.0)
        self.estimator = _check_estimator("archer_kl", self.estimator)
        check_entropy_source("archer_kl", self.entropy)
        ent_field = "entropy" if self.entropy == "current" else "old_entropy"
        self.requires = frozenset({"logprobs", "ref_logprobs", ent_field})

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", who="KL penalty 'archer_kl'")
        valid = batch.mask > 0
        high = high_entropy_mask(token_entropy(batch, self.entropy, "KL penalty 'archer_kl'"), batch.mask,
                                 self.quantile)
        low = valid & ~high
        kl = kl_estimate(batch.logprobs, batch.ref_logprobs, self.estimator)
        n, n_low, n_high = float(valid.sum()), float(low.sum()), float(high.sum())
        s_low = n / n_low if (self.per_class_mean and n_low > 0) else 1.0
        s_high = n / n_high if (self.per_class_mean and n_high > 0) else 1.0
        coef = torch.where(high, self.high_entropy_coef * s_high, torch.where(low, self.coef * s_low, 0.0))
        kd = kl.detach()
        metrics = {
            "kl/ref": float(masked_mean(kd, batch.mask)),
            "kl/ref_low_entropy": float(kd[low].mean()) if n_low else 0.0,
            "kl/ref_high_entropy": float(kd[high].mean()) if n_high else 0.0,
        }
        return coef * kl, metrics


@KLS.register("prorl_kl")
@dataclass
class ProRLKL(KLPenalty):
    """ProRL reference KL with hard resets (Liu et al., 2505.24864): ℓ_t += β·k3(log π_θ − log π_ref), and after a
    step that ends a *stage* the component requests ``reset_reference`` (π_ref ← current π_θ) and
    ``reset_optimizer`` (fresh optimizer state) through ``pop_actions``; the trainer and the toy honour both.

    A stage ends every ``reset_every`` steps (0: off) and/or when the monitored metric (``monitor``, a key of the
    step metrics; the trainer's ``reward/mean`` by default, the paper watches validation) has not improved on its
    best of the stage by more than ``min_delta`` for ``patience`` steps (0: off). The paper also resets when the KL
    term starts to dominate the loss (not modelled). β and the schedule were not found in an accessible source:
    β = 1e-3 (verl's ``kl_loss_coef``) and a stagnation patience of 50 steps are choices, not the paper's values.
    The reset keeps KL from pinning the policy to a stale anchor, which the paper credits for >2000 steps of
    sustained improvement; state (step count, stage best, pending actions) is checkpointed.
    """

    requires = frozenset({"logprobs", "ref_logprobs"})
    coef: float = 1e-3
    """β: weight of the KL to π_ref (verl's kl_loss_coef 1e-3, a choice: the paper's value was not found)."""
    estimator: str = "k3"
    """KL estimator against π_ref: k1, k2, k3 or abs."""
    reset_every: int = 0
    """End a stage (reset π_ref, and the optimizer if asked) every this many RL steps (0 = off)."""
    patience: int = 50
    """End a stage after this many steps without improving `monitor` (0 = off; 50 is a choice, not the paper's)."""
    monitor: str = "reward/mean"
    """Step-metric key watched for stagnation (the trainer's reward/mean; the paper watches validation)."""
    min_delta: float = 0.0
    """Improvement over the stage's best (in the monitored metric's units) that counts as progress."""
    reset_optimizer: bool = True
    """Also request reset_optimizer (fresh optimizer state) with each reference reset."""
    _state: dict = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        check_range("prorl_kl", "coef", self.coef, lo=0.0)
        self.estimator = _check_estimator("prorl_kl", self.estimator)
        check_range("prorl_kl", "reset_every", self.reset_every, lo=0)
        check_range("prorl_kl", "patience", self.patience, lo=0)
        check_range("prorl_kl", "min_delta", self.min_delta, lo=0.0)
        self._state = {"steps": 0, "best": None, "since_best": 0, "resets": 0, "pending": []}

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", who="KL penalty 'prorl_kl'")
        kl = kl_estimate(batch.logprobs, batch.ref_logprobs, self.estimator)
        return self.coef * kl, {"kl/ref": float(masked_mean(kl.detach(), batch.mask)),
                                "kl/resets": float(self._state["resets"])}

    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        st = self._state
        st["steps"] += 1
        reset = bool(self.reset_every) and st["steps"] % self.reset_every == 0
        if self.patience:
            if self.monitor not in metrics:
                raise ConfigError(f"prorl_kl.monitor = {self.monitor!r} is not among the step metrics "
                                  f"({', '.join(sorted(metrics))}); set it to one of them or patience = 0")
            value = float(metrics[self.monitor])
            if st["best"] is None or value > st["best"] + self.min_delta:
                st["best"], st["since_best"] = value, 0
            else:
                st["since_best"] += 1
            reset = reset or st["since_best"] >= self.patience
        if reset:
            st["pending"] = ["reset_reference"] + (["reset_optimizer"] if self.reset_optimizer else [])
            st["resets"] += 1
            st["best"], st["since_best"] = None, 0

    def pop_actions(self) -> set[str]:
        out = set(self._state["pending"])
        self._state["pending"] = []
        return out

    def state_dict(self) -> dict[str, Any]:
        return dict(self._state, pending=list(self._state["pending"]))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"steps", "best", "since_best", "resets", "pending"} - set(state)
        if missing:
            raise ConfigError(f"prorl_kl state lacks {sorted(missing)}")
        self._state = {k: state[k] for k in ("steps", "best", "since_best", "resets")}
        self._state["pending"] = list(state["pending"])


def _correct_frac(batch: RolloutBatch, threshold: float) -> torch.Tensor:
    """Per-sample fraction (B,) of correct responses (R > threshold) in its group."""
    mean, _, _ = group_statistics((batch.rewards > threshold).float(), batch.group_ids)
    return mean


@KLS.register("apo_kl")
@dataclass
class APOKL(KLPenalty):
    """APO difficulty-adaptive divergence shaping, DADS (Hong et al., 2506.21655; View-R1 code).

    Group difficulty d = 1 − (#correct)/G (correct: R > ``correct_threshold``). For *positive-advantage* responses
    the KL loss is multiplied by w(d) = 1 − exp(−e·(1 − d)) (w = 1 when d ∈ {0, 1}); negative responses keep
    w = 1: ℓ_t += β·w_i·k3(log π_θ − log π_ref). Hard prompts (low accuracy) thus get a weak anchor where the policy
    must explore; easy ones keep w → 1 − e^{−e} ≈ 0.934. Defaults β = 1e-3, k3 (``train_grpo.sh``). The code's
    per-sequence token-mean of the KL is the ``seq-mean-token-mean`` aggregation; here the penalty shares the
    policy loss's aggregation. The code also keeps a commented-out alternative w = exp(−e·d).
    """

    requires = frozenset({"logprobs", "ref_logprobs", "advantages"})
    coef: float = 1e-3
    """β: weight of the w-scaled KL to π_ref (train_grpo.sh 1e-3)."""
    estimator: str = "k3"
    """KL estimator against π_ref: k1, k2, k3 or abs (train_grpo.sh k3)."""
    correct_threshold: float = 0.5
    """A response counts as correct when its reward R > this (group difficulty d = 1 − #correct/G)."""

    def __post_init__(self) -> None:
        check_range("apo_kl", "coef", self.coef, lo=0.0)
        self.estimator = _check_estimator("apo_kl", self.estimator)

    def weights(self, batch: RolloutBatch) -> torch.Tensor:
        """w_i (B,)."""
        batch.require("advantages", who="KL penalty 'apo_kl'")
        d = 1.0 - _correct_frac(batch, self.correct_threshold)
        positive = masked_mean(batch.advantages.detach().float(), batch.mask, dim=-1) > 0
        w = 1.0 - torch.exp(-math.e * (1.0 - d))
        w = torch.where((d <= 0) | (d >= 1), torch.ones_like(w), w)
        return torch.where(positive, w, torch.ones_like(w))

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", who="KL penalty 'apo_kl'")
        w = self.weights(batch)
        kl = kl_estimate(batch.logprobs, batch.ref_logprobs, self.estimator)
        return self.coef * w[:, None] * kl, {"kl/ref": float(masked_mean(kl.detach(), batch.mask)),
                                             "kl/apo_weight_mean": float(w.mean())}


@KLS.register("sent_kl")
@dataclass
class SENTKL(KLPenalty):
    """SENT token-selective KL (Cao et al., 2512.04359), best-supported reading: the formulas were not released.

    Low-entropy tokens (H ≤ their response's 0.8-quantile, the complement of ``high_entropy_mask``) get a reference
    KL β·k3(log π_θ − log π_ref), β = 1e-3 (Archer's value for the same token class); the high-covariance subset of
    them — the top ⌊k·N⌋ (at least one) low-entropy tokens by Cov(y_i) (Eq. 10 of 2505.22617, current detached
    log-probs, N the valid tokens) — additionally gets KL-Cov's β_cov·|log π_θ − log π_old| with k = 2e-3,
    β_cov = 1 (the scripts are named ``low_entropy_kl_cov``). The KL-Cov part acts off-policy only. SENT's other
    half, a semantic-entropy curriculum that orders prompts from low to high SE, is the sampling knob's
    ``semantic_entropy_curriculum`` (the ``sent`` preset sets both).
    """

    requires = frozenset({"logprobs", "ref_logprobs", "advantages", "entropy"})
    quantile: float = 0.8
    """Per-response entropy quantile: tokens with H ≤ it are low-entropy and get the KL."""
    coef: float = 1e-3
    """β: weight of the KL to π_ref on low-entropy tokens (Archer's value for the same token class)."""
    estimator: str = "k3"
    """KL estimator against π_ref: k1, k2, k3 or abs."""
    cov_k: float = 2e-3
    """Fraction k of valid tokens N given the KL-Cov term: the top ⌊k·N⌋ low-entropy tokens by Cov (not percent)."""
    cov_coef: float = 1.0
    """β_cov: weight of |log π_θ − log π_old| on that high-covariance subset (KL-Cov's 1)."""
    entropy: str = "current"
    """Entropy the split reads: 'current' (π_θ, detached) or 'old' (π_old, fixed per rollout batch)."""

    def __post_init__(self) -> None:
        check_range("sent_kl", "quantile", self.quantile, lo=0.0, hi=1.0)
        check_range("sent_kl", "coef", self.coef, lo=0.0)
        self.estimator = _check_estimator("sent_kl", self.estimator)
        check_range("sent_kl", "cov_k", self.cov_k, lo=0.0, hi=1.0)
        check_range("sent_kl", "cov_coef", self.cov_coef, lo=0.0)
        check_entropy_source("sent_kl", self.entropy)
        ent_field = "entropy" if self.entropy == "current" else "old_entropy"
        self.requires = frozenset({"logprobs", "ref_logprobs", "advantages", ent_field})

    def select(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(low-entropy mask, its high-covariance subset), bool (B, T)."""
        valid = batch.mask > 0
        high = high_entropy_mask(token_entropy(batch, self.entropy, "KL penalty 'sent_kl'"), batch.mask,
                                 self.quantile)
        low = valid & ~high
        chosen = torch.zeros_like(low)
        n_low = int(low.sum())
        if n_low and self.cov_k > 0:
            cov = centered_covariance(batch.logprobs, batch.advantages, batch.mask)
            count = min(n_low, max(1, int(self.cov_k * int(valid.sum()))))
            scores = torch.where(low, cov, torch.full_like(cov, float("-inf"))).flatten()
            chosen.view(-1)[torch.topk(scores, count).indices] = True
        return low, chosen

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", "advantages", who="KL penalty 'sent_kl'")
        low, chosen = self.select(batch)
        kl = kl_estimate(batch.logprobs, batch.ref_logprobs, self.estimator)
        abs_old = (batch.logprobs - batch.old_logprobs.detach()).abs()
        pen = torch.where(low, self.coef * kl, torch.zeros_like(kl)) + torch.where(
            chosen, self.cov_coef * abs_old, torch.zeros_like(abs_old))
        metrics = {
            "kl/ref": float(masked_mean(kl.detach(), batch.mask)),
            "kl/low_entropy_frac": float(masked_mean(low.float(), batch.mask)),
            "kl/cov_frac": float(masked_mean(chosen.float(), batch.mask)),
        }
        return pen, metrics

"""KL knob: per-token penalties added to the policy-gradient loss before aggregation.

A penalty maps a batch (with current ``logprobs``) to a per-token matrix (B, T) that already includes its
coefficient. Estimator facts (which estimator gives which gradient) are in ``entrolab.ops.kl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ..batch import RolloutBatch
from ..ops.dynamics import centered_covariance
from ..ops.kl import canonical_kl_kind, kl_estimate
from ..ops.masked import masked_mean
from .base import Component, ConfigError, Registry, check_range
from .clip import SCOPES

KLS: Registry["KLPenalty"] = Registry("kl")


class KLPenalty(Component):
    """Base: ``penalty(batch) -> (per-token penalty (B, T) incl. coefficient, metrics)``."""

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError


@KLS.register("none")
@dataclass
class NoKL(KLPenalty):
    """No KL term (DAPO 2503.14476, ORZ 2503.24290, and the central paper's runs)."""

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        return torch.zeros_like(batch.mask), {}


@KLS.register("ref_kl")
@dataclass
class ReferenceKL(KLPenalty):
    """Reference-KL loss: ℓ_t += β·k(log π_θ − log π_ref) with an estimator k ∈ {k1, k2, k3, abs}.

    Defaults β = 1e-3 with k3 (verl's ``kl_loss_coef`` and ``low_var_kl``). As a loss, k1 has zero expected
    gradient, k2 follows the reverse KL(π_θ‖π_ref) and k3 the forward KL(π_ref‖π_θ) (see ``entrolab.ops.kl``).
    Cui et al. (2505.22617 §4.1) found β in 1e-3..1e-1 stabilises entropy but costs accuracy.
    """

    requires = frozenset({"logprobs", "ref_logprobs"})
    coef: float = 1e-3
    estimator: str = "k3"

    def __post_init__(self) -> None:
        check_range("ref_kl", "coef", self.coef, lo=0.0)
        try:
            self.estimator = canonical_kl_kind(self.estimator)
        except ValueError as e:
            raise ConfigError(f"ref_kl.estimator: {e}") from None

    def penalty(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "ref_logprobs", who="KL penalty 'ref_kl'")
        kl = kl_estimate(batch.logprobs, batch.ref_logprobs, self.estimator)
        return self.coef * kl, {"kl/ref": float(masked_mean(kl.detach(), batch.mask))}


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
    coef: float = 1.0
    scope: str = "micro"

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

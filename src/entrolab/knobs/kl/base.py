"""KL knob: per-token penalties added to the policy-gradient loss before aggregation.

A penalty maps a batch (with current ``logprobs``) to a per-token matrix (B, T) that already includes its
coefficient. Estimator facts (which estimator gives which gradient) are in ``entrolab.ops.kl``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.kl import canonical_kl_kind, kl_estimate
from ...ops.masked import masked_mean
from ...registry import Registry, check_range
from ..base import Component, component_registry

KLS: Registry["KLPenalty"] = component_registry("kl")


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
    """β: weight of the per-token KL estimate k(log π_θ − log π_ref) added to the loss (verl's kl_loss_coef 1e-3)."""
    estimator: str = "k3"
    """KL estimator k: k1, k2, k3 or abs (k3 = verl's low_var_kl; entrolab.ops.kl says which gradient each gives)."""

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


# =============================================================================================================
# Method catalog II (issue 7): KL penalties of ProRL, Archer/ASPO, APO and SENT (ORZ and RAGEN use ``none``).
# =============================================================================================================
def _check_estimator(owner: str, estimator: str) -> str:
    try:
        return canonical_kl_kind(estimator)
    except ValueError as e:
        raise ConfigError(f"{owner}.estimator: {e}") from None

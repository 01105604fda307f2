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

from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch

from ...batch import BatchError, RolloutBatch
from ...ops.masked import masked_mean
from ...registry import Registry, check_range
from ..base import Component, component_registry

TERMS: Registry["ObjectiveTerm"] = component_registry("objective")


class ObjectiveTerm(Component):
    """Base: ``apply(loss (B, T), batch) -> (loss (B, T), metrics)``.

    ``replaces_surrogate``: the term discards the policy-gradient surrogate it is given and returns its own loss
    (one-shot EM, FlowRL); ``PolicyObjective`` then hands it the surrogate alone and adds the KL knob's penalty back,
    so KL-knob methods compose with it.
    """

    replaces_surrogate: ClassVar[bool] = False

    def attach(self, objective: Any) -> None:
        """Called once by the ``PolicyObjective`` that holds the term: a term that composes another knob's rule
        (SimKO uses the clip rule's surrogate) keeps a reference to it here."""

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
    """α in ℓ_t ← ℓ_t − α·H_t, per nat of entropy (verl's former entropy_coeff default 1e-3; negative lowers H)."""

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


def _require_extra(batch: RolloutBatch, key: str, who: str, how: str) -> torch.Tensor:
    if key not in batch.extras:
        raise BatchError(f"objective term {who!r} needs batch.extras[{key!r}], which the batch does not carry: {how}")
    return batch.extras[key]


def _seq_values(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-response mean of a (B, T) tensor over its valid tokens (B,) — e.g. the sequence advantage."""
    m = mask.float()
    return (torch.where(m > 0, x, torch.zeros_like(x)) * m).sum(-1) / m.sum(-1).clamp(min=1.0)

"""Objectives that replace the policy-gradient surrogate: one-shot entropy minimisation and FlowRL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...batch import RolloutBatch
from ...errors import ConfigError
from ...ops.masked import masked_mean
from ...registry import check_range
from .base import TERMS, ObjectiveTerm, _require_extra, _seq_values, entropy_with_grad


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
    """c in ℓ_t ← c·H_t, the weight of the minimised token entropy (1 = the plain token-mean entropy)."""
    replace_pg: bool = True
    """Discard the policy-gradient surrogate (the method needs no reward); False adds c·H_t to it."""

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
    """β scaling the advantage r̂_i in the trajectory-balance residual Δ_i (compute_flowrl_objective 15)."""
    weight_clip: float = 0.2
    """ε of the sequence importance weight w_i = clip(exp(Σ log r), 1 − ε, 1 + ε) (a fraction in [0, 1])."""
    num_buckets: int = 4096
    """Size of the learned log Z table, indexed by prompt_id mod num_buckets (replaces the paper's MLP)."""
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

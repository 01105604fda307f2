"""KL divergence estimators between the current policy and a reference (or rollout) policy.

Samples come from π_θ and δ = log π_θ(y) − log π_ref(y) at each sampled token (Schulman, "Approximating KL
Divergence", 2020; verl's ``kl_penalty``). All estimate KL(π_θ ‖ π_ref) in expectation, but as *losses* on fixed
on-policy samples their expected gradients differ:

==========  ============================  ===========================================================
kind        per-token value               expected gradient when used as a loss
==========  ============================  ===========================================================
``k1``      δ                             E[∇ log π_θ] = 0: no expected gradient (a metric, not a loss)
``abs``     |δ|                           sign(δ)·∇ log π_θ (KL-Cov's penalty, with π_old for π_ref)
``k2``      ½ δ²                          ∇ KL(π_θ ‖ π_ref), the reverse-KL gradient
``k3``      e^(−δ) + δ − 1, clamped ±10   ∇ KL(π_ref ‖ π_θ), the forward-KL gradient (verl low_var_kl)
==========  ============================  ===========================================================
"""

from __future__ import annotations

import torch

KL_ESTIMATORS = ("k1", "k2", "k3", "abs")
_ALIASES = {"kl": "k1", "mse": "k2", "low_var_kl": "k3"}


def canonical_kl_kind(kind: str) -> str:
    """Map an estimator name or alias (``kl``, ``mse``, ``low_var_kl``) to one of k1, k2, k3, abs."""
    k = _ALIASES.get(kind, kind)
    if k not in KL_ESTIMATORS:
        names = ", ".join(KL_ESTIMATORS + tuple(_ALIASES))
        raise ValueError(f"KL estimator {kind!r} is unknown; choose one of {names}")
    return k


def kl_estimate(logp: torch.Tensor, logp_ref: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token KL estimate from sampled-token log-probs; see the module table for each ``kind``.

    k3 is clamped like verl's ``low_var_kl``: the log-ratio δ to [−20, 20] before the exponential (so its gradient
    stays finite) and the estimate to [−10, 10], so one extreme token cannot dominate a batch.
    """
    if logp.shape != logp_ref.shape:
        raise ValueError(f"logp_ref: expected shape {tuple(logp.shape)} like logp, got {tuple(logp_ref.shape)}")
    k = canonical_kl_kind(kind)
    delta = logp.float() - logp_ref.float()
    if k == "k1":
        return delta
    if k == "abs":
        return delta.abs()
    if k == "k2":
        return 0.5 * delta.square()
    delta = delta.clamp(min=-20.0, max=20.0)
    return (torch.exp(-delta) + delta - 1.0).clamp(min=-10.0, max=10.0)


def full_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Exact KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) over the last (vocabulary) axis, p = softmax(z_p/T)."""
    if logits_p.shape != logits_q.shape:
        raise ValueError(f"logits_q: expected shape {tuple(logits_p.shape)}, got {tuple(logits_q.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = torch.log_softmax(logits_p.float() / temperature, dim=-1)
    logq = torch.log_softmax(logits_q.float() / temperature, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)

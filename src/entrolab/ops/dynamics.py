"""Entropy dynamics of softmax policies (Cui et al., "The Entropy Mechanism of RL for Reasoning LMs", 2505.22617 §3).

Lemma 1: for a softmax policy π(a|s) ∝ exp(z_{s,a}) and a small logit change Δz,

    H(π^{k+1}|s) − H(π^k|s) ≈ −Cov_{a∼π^k(·|s)}( log π^k(a|s), Δz_{s,a} ).

Theorem 1 (vanilla policy gradient, tabular softmax): Δz_{s,a} = η·π(a|s)·A(s,a).
Theorem 2 (natural policy gradient): Δz_{s,a} = η·A(s,a).

Eq. 10, the token-level statistic of Clip-Cov / KL-Cov over the N valid tokens of a batch:

    Cov(y_i) = (log π(y_i) − (1/N) Σ_j log π(y_j)) · (A(y_i) − (1/N) Σ_j A(y_j)).
"""

from __future__ import annotations

from typing import Sequence

import torch

from .masked import _zero_masked, masked_mean

# The tails of Table 1 of 2505.22617 (top 0.02 %, 0.2 %, 2 %, 20 %).
PAPER_TAIL_FRACTIONS = (0.0002, 0.002, 0.02, 0.2)


def centered_covariance(logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token centred covariance (Eq. 10): (log π − mean log π)·(A − mean A), means over valid tokens; 0 on padding.

    Computed on detached values: it is a selection statistic, not a loss.
    """
    if not (logp.shape == adv.shape == mask.shape):
        raise ValueError(
            f"centered_covariance: logp {tuple(logp.shape)}, adv {tuple(adv.shape)} and mask {tuple(mask.shape)} "
            "must have the same (B, T) shape"
        )
    lp = logp.detach().float()
    a = adv.detach().float()
    m = mask.float()
    cov = (lp - masked_mean(lp, m)) * (a - masked_mean(a, m))
    return _zero_masked(cov, m)


def covariance_tail_means(
    cov: torch.Tensor, mask: torch.Tensor, fractions: Sequence[float] = PAPER_TAIL_FRACTIONS
) -> dict[float, float]:
    """Mean of the top-``f`` fraction (at least one token) of valid per-token covariances, for each f (Table 1)."""
    vals = cov.detach()[mask.bool()].float()
    out: dict[float, float] = {}
    if vals.numel() == 0:
        return {f: float("nan") for f in fractions}
    ordered = torch.sort(vals, descending=True).values
    for f in fractions:
        k = max(1, int(f * vals.numel()))
        out[f] = float(ordered[:k].mean())
    return out


def _log_softmax(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.log_softmax(logits.float() / temperature, dim=-1)


def predicted_entropy_change(
    logits: torch.Tensor, delta_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """First-order entropy change per state (Lemma 1): −Cov_{a∼π}(log π(a), Δz_a) over the last axis.

    Cov_π(x, y) = Σ_a π_a x_a y_a − (Σ_a π_a x_a)(Σ_a π_a y_a), with π = softmax(z/T). ``delta_logits`` is the
    change of the raw logits z; with a temperature the sampling logits change by Δz/T.
    """
    if logits.shape != delta_logits.shape:
        raise ValueError(
            f"delta_logits: expected shape {tuple(logits.shape)} like logits, got {tuple(delta_logits.shape)}"
        )
    logp = _log_softmax(logits, temperature)
    p = logp.exp()
    dz = delta_logits.float() / temperature
    cov = (p * logp * dz).sum(-1) - (p * logp).sum(-1) * (p * dz).sum(-1)
    return -cov


def pg_logit_change(logits: torch.Tensor, advantages: torch.Tensor, lr: float, temperature: float = 1.0) -> torch.Tensor:
    """Logit change of one exact tabular-softmax policy-gradient step (Theorem 1): Δz = η·π(a|s)·A(s,a)."""
    return lr * _log_softmax(logits, temperature).exp() * advantages.float()


def npg_logit_change(advantages: torch.Tensor, lr: float) -> torch.Tensor:
    """Logit change of one natural-policy-gradient step (Theorem 2): Δz = η·A(s,a)."""
    return lr * advantages.float()


def exact_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy −Σ π log π of softmax(z/T) over the last axis (small tensors; use ops.entropy for LM-sized ones)."""
    logp = _log_softmax(logits, temperature)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(-1)  # 0·log 0 = 0 for masked (−inf) logits


def entropy_change_from_hidden(
    hidden_before: torch.Tensor,
    weight_before: torch.Tensor,
    hidden_after: torch.Tensor,
    weight_after: torch.Tensor,
    temperature: float = 1.0,
    bias_before: torch.Tensor | None = None,
    bias_after: torch.Tensor | None = None,
    chunk_size: int = 128,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-state (predicted, actual) entropy change of an LM update, from final hidden states and LM-head weights
    before and after it: z = h·Wᵀ (+ b); predicted = −Cov_{π_before}(log π_before, Δz) (Lemma 1), actual =
    H(π_after) − H(π_before). Token chunks bound memory to chunk_size × V logits. Shapes: hidden (..., D) → (...).

    A small step's ΔH is of the order of float32 rounding of H itself, so the logit change is formed from the
    differences, Δz = (h_a − h_b)·W_aᵀ + h_b·(W_a − W_b)ᵀ + (b_a − b_b) — float32 matmuls whose rounding is relative
    to Δz, not to z — and both entropies are then evaluated in float64 at z_b and z_b + Δz.
    """
    if hidden_before.shape != hidden_after.shape:
        raise ValueError(
            f"hidden_after: expected shape {tuple(hidden_before.shape)}, got {tuple(hidden_after.shape)}"
        )
    lead = hidden_before.shape[:-1]
    hb = hidden_before.reshape(-1, hidden_before.shape[-1]).float()
    ha = hidden_after.reshape(-1, hidden_after.shape[-1]).float()
    wb, wa = weight_before.float(), weight_after.float()
    dw = wa - wb
    db = None
    if bias_before is not None or bias_after is not None:
        zero = torch.zeros(wb.shape[0], device=wb.device)
        db = (zero if bias_after is None else bias_after.float()) - (zero if bias_before is None else bias_before.float())
    pred = torch.empty(hb.shape[0], dtype=torch.float32, device=hb.device)
    act = torch.empty_like(pred)
    with torch.no_grad():
        for s in range(0, hb.shape[0], chunk_size):
            h0, h1 = hb[s:s + chunk_size], ha[s:s + chunk_size]
            zb = torch.nn.functional.linear(h0, wb, None if bias_before is None else bias_before.float()).double()
            dz = (torch.nn.functional.linear(h1 - h0, wa, db) + torch.nn.functional.linear(h0, dw)).double()
            # one log-softmax of z_b serves H_b and the prediction −Cov_p(log p, Δz/T)
            logp_b = torch.log_softmax(zb / temperature, dim=-1)
            plogp = logp_b.exp() * logp_b
            d = dz / temperature
            pred[s:s + chunk_size] = (-((plogp * d).sum(-1) + (-plogp.sum(-1)) * (logp_b.exp() * d).sum(-1))).float()
            act[s:s + chunk_size] = (_entropy_f64(zb + dz, temperature) + plogp.sum(-1)).float()
    return pred.view(lead), act.view(lead)


def _entropy_f64(z: torch.Tensor, temperature: float) -> torch.Tensor:
    logp = torch.log_softmax(z / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)

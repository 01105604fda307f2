"""Masked statistics over response-aligned ``(B, T)`` tensors, and the loss aggregation modes.

Conventions: ``mask`` is a bool or float ``(B, T)`` tensor, 1 on valid response tokens and 0 on padding.
Every reduction ignores masked positions entirely (a NaN there never leaks into a result).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

AGGREGATION_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-mean-local",
)


def _as_float_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask: expected shape {tuple(x.shape)} like the values, got {tuple(mask.shape)}")
    return mask.to(dtype=torch.float32 if not x.is_floating_point() else x.dtype)


def _zero_masked(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    # where() rather than multiplication, so that NaN/inf on padding never propagate.
    return torch.where(m > 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Σ x·m over ``dim`` (all dims if None)."""
    m = _as_float_mask(x, mask)
    v = _zero_masked(x, m) * m
    return v.sum() if dim is None else v.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Σ x·m / Σ m over ``dim``; 0 where a slice has no valid element."""
    m = _as_float_mask(x, mask)
    num = masked_sum(x, m, dim)
    den = m.sum() if dim is None else m.sum(dim)
    return num / den.clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over all valid elements: Σ m (x − x̄)² / (Σ m − 1) (or / Σ m if not unbiased)."""
    m = _as_float_mask(x, mask)
    mean = masked_mean(x, m)
    dev = _zero_masked(x - mean, m)  # zeroed before squaring, so a NaN on padding cannot reach the gradient
    sq = masked_sum(dev**2, m)
    n = m.sum()
    den = (n - 1.0) if unbiased else n
    return sq / den.clamp(min=1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − x̄)/√(var + eps) over valid elements (x̄ added back if ``shift_mean`` is False); 0 on padding."""
    m = _as_float_mask(x, mask)
    mean = masked_mean(x, m)
    var = masked_var(x, m)
    out = _zero_masked(x - mean, m) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return _zero_masked(out, m)


def masked_quantiles(x: torch.Tensor, mask: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Quantiles ``qs`` (each in [0, 1]) of the valid elements, linear interpolation; NaN if none are valid."""
    vals = x.detach()[mask.bool()].float()
    if vals.numel() == 0:
        return [float("nan")] * len(qs)
    q = torch.tensor(list(qs), dtype=torch.float32, device=vals.device)
    return [float(v) for v in torch.quantile(vals, q)]


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    num_tokens: Optional[float] = None,
    num_seqs: Optional[float] = None,
    norm_length: Optional[float] = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``(B, T)`` to a scalar.

    With m the mask, ℓ the loss, |o_i| = Σ_t m_it and B' the number of sequences with a valid token:

    - ``token-mean`` (DAPO 2503.14476, verl's default): Σ_it ℓ·m / Σ_it m.
    - ``seq-mean-token-mean`` (original GRPO 2402.03300): (1/B') Σ_i (Σ_t ℓ·m / |o_i|).
    - ``seq-mean-token-sum``: (1/B') Σ_i Σ_t ℓ·m.
    - ``seq-mean-token-sum-norm`` (Dr. GRPO 2503.20783): (1/B') Σ_i Σ_t ℓ·m / L with a constant L
      (``norm_length``, default the padded length T), so no response is up-weighted for being short.
    - ``token-mean-local`` (TRL's ``bnpo`` loss type): the token mean of each *micro*-batch, Σ_it ℓ·m / Σ_it m over
      the micro-batch alone, weighted by its share b'/B' of the mini-batch's sequences — so the micro-batches'
      losses average to the mini-batch loss as TRL's division by the gradient-accumulation steps does (equal when
      the micro-batches have the same size). Without micro-batching it is ``token-mean``; with it, a token's weight
      depends on how many tokens its own micro-batch has.

    Gradient accumulation: a mini-batch split into micro-batches gives exactly the mini-batch loss when each
    micro-batch passes the mini-batch's ``num_tokens`` (Σ m) and ``num_seqs`` (B') and the losses are summed.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"loss aggregation mode {mode!r} is unknown; choose one of {', '.join(AGGREGATION_MODES)}")
    m = _as_float_mask(loss_mat, mask)
    masked = _zero_masked(loss_mat, m) * m
    if mode == "token-mean":
        den = m.sum() if num_tokens is None else torch.as_tensor(float(num_tokens))
        return masked.sum() / den.clamp(min=1.0)
    seq_len = m.sum(-1)
    has_tokens = (seq_len > 0).to(m.dtype)
    n_seq = has_tokens.sum() if num_seqs is None else torch.as_tensor(float(num_seqs))
    if mode == "token-mean-local":
        return masked.sum() / m.sum().clamp(min=1.0) * (has_tokens.sum() / n_seq.clamp(min=1.0))
    if mode == "seq-mean-token-mean":
        per_seq = masked.sum(-1) / seq_len.clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        per_seq = masked.sum(-1)
    else:
        length = float(loss_mat.shape[-1] if norm_length is None else norm_length)
        if length <= 0:
            raise ValueError(f"norm_length must be > 0, got {norm_length}")
        per_seq = masked.sum(-1) / length
    return (per_seq * has_tokens).sum() / n_seq.clamp(min=1.0)

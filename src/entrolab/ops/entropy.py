"""Token log-probabilities and policy entropy, exact and memory-bounded.

Notation: ``z`` are raw logits over a vocabulary of size ``V``, ``T`` the
sampling temperature, ``z' = z / T``, ``p = softmax(z')`` and

* ``logp = z'_y - logsumexp(z')``                               (label ``y``)
* ``H    = -sum_v p_v log p_v = logsumexp(z') - sum_v p_v z'_v``   (nats)

Accumulation is in float32 and results are float32 whatever the input dtype
(bf16 / fp16 / fp32); float64 inputs stay float64 (used by gradcheck).

Two families of entry points:

* logits level (:func:`token_logprobs`, :func:`token_entropy`,
  :func:`logprobs_and_entropy`) take materialised logits ``(..., V)``.  They
  are differentiable through a custom backward that keeps only the logits and
  three floats per row, two for :func:`token_logprobs` (no softmax-sized
  activations).
* hidden level (:func:`fused_logprobs_entropy`) takes final hidden states and
  the LM-head weight and never holds more than ``chunk_size x V`` logits, in
  forward or backward (backward recomputes each chunk's logits).

Backward for one row, with upstream gradients ``a = dL/dlogp``, ``b = dL/dH``::

    dlogp/dz' = onehot(y) - p
    dH/dz'    = -p * (log p + H)
    dL/dz'    = a * (onehot(y) - p) - b * p * (log p + H)
    dL/dz     = dL/dz' / T
    dL/dh     = dL/dz @ W,  dL/dW = (dL/dz)^T @ h,  dL/dbias = sum_rows dL/dz

Both passes work on the *shifted* scaled logits ``s = z' - m`` with one per-row
shift ``m`` (the row max of ``z'``), and the backward rebuilds ``s`` with the
very same operation and the saved ``m``, so it sees the forward's numbers.
With ``S = sum_v exp(s_v)`` and ``mu = sum_v p_v s_v``::

    log p  = s - log S,   p = exp(s) / S,   log p + H = s - mu
    dL/dz' = a * onehot(y) - (exp(s) / S) * (a + b * (s - mu))

Only per-row scalars (``m``, ``S``, ``mu``) are saved.  Rebuilding ``log p`` as
``z' - lse`` instead would go through ``lse = m + log S`` rounded to float32:
at ``|z'| ~ 70`` that rounding is up to ``2**-18 ~ 3.8e-6`` (half an ulp at
64..128), i.e. a relative error of that size in every ``p`` of the row.  For
``T != 1`` the shift is one fused multiply-add, ``s = z * (1/T) - m``, rounded
once at the size of ``s`` (small near the row max, where ``p`` matters), not at
the size of ``z'``.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    "token_logprobs",
    "token_entropy",
    "logprobs_and_entropy",
    "fused_logprobs_entropy",
]

#: Default token rows per chunk of the fused kernel.  Measured on a 2-core CPU
#: (torch 2.13, MKL) at SmolLM2 sizes: smaller chunks make the GEMM much less
#: efficient (every chunk streams the whole LM head), larger ones only add
#: scratch memory (about chunk x V float32).  See docs/kernels.md.
DEFAULT_FUSED_CHUNK = 1024

#: Rows of a chunk are further processed in sub-blocks of about this many
#: elements for the exp / multiply passes, so the second scratch buffer is small
#: (cache-sized on CPU) instead of another ``chunk x V`` array.  On GPUs memory
#: bandwidth is plentiful and launches are not free, so the blocks are large.
_SUB_ELEMS_CPU = 1 << 22
_SUB_ELEMS_GPU = 1 << 27


def _sub_rows(v: int, k: int, device: torch.device) -> int:
    budget = _SUB_ELEMS_CPU if device.type == "cpu" else _SUB_ELEMS_GPU
    return max(1, min(k, budget // max(v, 1)))


# --------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------
def _check_temperature(temperature) -> float:
    if isinstance(temperature, Tensor) and temperature.numel() == 1:
        temperature = float(temperature)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
    t = float(temperature)
    if not (t > 0.0 and math.isfinite(t)):
        raise ValueError(f"temperature must be > 0 and finite, got {temperature!r}")
    return t


def _check_base(base) -> Optional[float]:
    if base is None:
        return None
    if isinstance(base, bool) or not isinstance(base, (int, float)):
        raise ValueError(f"base must be None (nats) or a number > 0 and != 1, got {base!r}")
    b = float(base)
    if not (b > 0.0 and math.isfinite(b)) or b == 1.0:
        raise ValueError(f"base must be None (nats) or a number > 0 and != 1, got {base!r}")
    return b


def _check_chunk(chunk_size) -> Optional[int]:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    return chunk_size


def _check_float(x, name: str) -> None:
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        what = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a floating-point tensor, got {what}")


def _check_labels(labels, token_shape, vocab: int) -> Tensor:
    """Validate labels (shape = token dims, values in [0, vocab)); return them as int64."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"labels must be an integer tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(token_shape):
        raise ValueError(
            f"labels shape {tuple(labels.shape)} must equal the token dims "
            f"{tuple(token_shape)} of the input"
        )
    if labels.numel() > 0:
        lo, hi = (int(t) for t in torch.aminmax(labels))
        if lo < 0 or hi >= vocab:
            raise ValueError(
                f"labels must lie in [0, {vocab}) (the vocabulary size), got values in "
                f"[{lo}, {hi}]; replace ignore_index entries by any valid id and mask "
                "the result afterwards"
            )
    return labels.long()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------
# per-chunk numerics: no autograd, in place on scratch buffers
# --------------------------------------------------------------------------
def _row_stats(s: Tensor, e: Tensor, y: Optional[Tensor], want_h: bool, safe: bool):
    """Row statistics from shifted scaled logits ``s = z' - m`` (``m`` = row max).

    With ``S = sum_v exp(s_v)`` and ``mu = sum_v exp(s_v) s_v / S`` (``= E_p[s]``):
    ``logp = s_y - log S``, ``H = log S - mu``.  ``e`` is scratch of ``r <= k``
    rows; the chunk is walked in blocks of ``r`` rows with the passes exp
    (into ``e``), sum, in-place multiply, sum.  ``s`` is left intact.
    Returns ``(logp or None, S, mu or None, H or None, masked)`` where
    ``masked`` says that some logit was -inf (only checked when ``safe``).
    """
    k = s.shape[0]
    r = e.shape[0]
    se = torch.empty(k, dtype=s.dtype, device=s.device)
    dot = torch.empty(k, dtype=s.dtype, device=s.device) if want_h else None
    for j in range(0, k, r):
        q = min(r, k - j)
        sb, eb = s[j : j + q], e[:q]
        torch.exp(sb, out=eb)
        torch.sum(eb, 1, out=se[j : j + q])
        if want_h:
            eb.mul_(sb)  # exp(s) * s ; NaN where s = -inf (0 * -inf)
            torch.sum(eb, 1, out=dot[j : j + q])
    masked = False
    if want_h and safe and bool(torch.isnan(dot).any()):
        # -inf logits (e.g. a masked vocabulary): exp(s)*s -> 0 there
        masked = True
        for j in range(0, k, r):
            q = min(r, k - j)
            sb, eb = s[j : j + q], e[:q]
            torch.exp(sb, out=eb)
            eb.mul_(sb).masked_fill_(torch.isneginf(sb), 0.0)
            torch.sum(eb, 1, out=dot[j : j + q])
    log_se = se.log()
    logp = None if y is None else s.gather(1, y.unsqueeze(1)).squeeze(1).sub_(log_se)
    mu = dot.div_(se) if want_h else None
    h = log_se.sub_(mu) if want_h else None
    return logp, se, mu, h, masked


def _shift(z: Tensor, m: Tensor, inv_t: float, out: Tensor) -> Tensor:
    """``out <- z / T - m`` (``m`` per row, (k, 1), in accumulation dtype); ``out`` may be ``z``.

    For ``T != 1`` this is ``add(-m, z, alpha=1/T)``, one fused multiply-add
    per element (rounded once, at the size of the result), so ``z / T`` is
    never rounded on its own at the size of ``z / T``.  Forward and backward
    both call this with the same ``m`` and get bitwise the same ``s``.
    """
    if inv_t == 1.0:
        return torch.sub(z, m, out=out)  # upcasts bf16/fp16 z in the same pass
    return torch.add(m.neg(), z, alpha=inv_t, out=out)


def _row_shift(z: Tensor, inv_t: float, acc: torch.dtype) -> Tensor:
    """Per-row shift ``m = max_v z_v / T`` ((k, 1), accumulation dtype)."""
    m = z.amax(1, keepdim=True).to(acc)
    return m if inv_t == 1.0 else m.mul_(inv_t)


def _grad_rows(
    s: Tensor,
    e: Optional[Tensor],
    y: Optional[Tensor],
    se: Tensor,
    mu: Optional[Tensor],
    g_lp: Optional[Tensor],
    g_h: Optional[Tensor],
    masked: bool,
) -> Tensor:
    """In place: ``s <- g_lp*(onehot(y) - p) - g_h * p * (log p + H)``.

    ``s = z' - m`` is a chunk (k, V) of shifted scaled logits, bitwise as the
    forward built it; ``se = S = sum_v exp(s_v)`` and ``mu = E_p[s]`` are the
    forward's per-row (k,) statistics.  With ``p = exp(s) / S`` and
    ``log p + H = (s - log S) + (log S - mu) = s - mu`` the result is
    ``g_lp * onehot(y) - exp(s) * [(g_lp - g_h mu) / S + (g_h / S) s]``: all of
    ``S``, ``mu``, ``g_*`` go into two per-row coefficients, and neither
    ``log p`` nor ``lse`` is ever formed (no rounding at the size of ``z'``).
    ``s`` is overwritten with ``dL/dz'`` and returned.  ``e`` is scratch of
    ``r <= k`` rows (needed only when ``g_h`` is given; the chunk is walked in
    blocks of ``r`` rows).  The ``g_*`` are per-row (k,) and may already carry
    the ``1/T`` of ``dz'/dz``.
    """
    inv_se = se.reciprocal()
    if g_h is None:
        s.exp_().mul_(g_lp.neg().mul_(inv_se).unsqueeze(1))  # -g_lp * p
    else:
        # lb <- -(c1 * s + c0) * exp(s), c1 = g_h / S, c0 = (g_lp - g_h mu) / S
        if g_lp is None:
            c0 = torch.mul(g_h, mu).neg_()
        else:
            c0 = torch.addcmul(g_lp, g_h, mu, value=-1.0)
        c0 = c0.mul_(inv_se).unsqueeze(1)
        neg_c1 = g_h.neg().mul_(inv_se).unsqueeze(1)
        k, r = s.shape[0], e.shape[0]
        for j in range(0, k, r):
            q = min(r, k - j)
            lb, eb = s[j : j + q], e[:q]
            mask = torch.isneginf(lb) if masked else None
            torch.exp(lb, out=eb)
            # (mul_ + sub_ with per-row columns measured faster on CPU than one
            # broadcast addcmul.)
            lb.mul_(neg_c1[j : j + q]).sub_(c0[j : j + q]).mul_(eb)
            if mask is not None:  # p = 0 at -inf logits: the true gradient there is 0
                lb.masked_fill_(mask, 0.0)
    if g_lp is not None and y is not None:
        s.scatter_add_(1, y.unsqueeze(1), g_lp.unsqueeze(1))
    return s


# --------------------------------------------------------------------------
# logits-level autograd function
# --------------------------------------------------------------------------
class _LogitsLogpEntropy(torch.autograd.Function):
    """(logits (N, V), labels (N,) | None) -> (logp (N,), H (N,)), lean backward."""

    @staticmethod
    def forward(ctx, logits, labels, temperature, chunk, want_h):
        n, v = logits.shape
        dev = logits.device
        acc = _acc_dtype(logits.dtype)
        inv_t = 1.0 / temperature
        c = max(1, n if chunk is None else min(chunk, n))
        lp_out = torch.zeros(n, dtype=acc, device=dev)
        h_out = torch.zeros(n, dtype=acc, device=dev)
        # per row for backward: the shift m, S and (for H) mu
        m_out = torch.empty(n, dtype=acc, device=dev)
        se_out = torch.empty(n, dtype=acc, device=dev)
        mu_out = torch.empty(n, dtype=acc, device=dev) if want_h else None
        masked = False
        if n > 0:
            s = torch.empty(c, v, dtype=acc, device=dev)
            e = torch.empty(_sub_rows(v, c, dev), v, dtype=acc, device=dev)
            for i in range(0, n, c):
                k = min(c, n - i)
                zc, sk = logits[i : i + k], s[:k]
                m = _row_shift(zc, inv_t, acc)
                _shift(zc, m, inv_t, out=sk)  # shift, scale and upcast in one pass
                y = None if labels is None else labels[i : i + k]
                lp, se, mu, h, mk = _row_stats(sk, e, y, want_h, safe=True)
                masked |= mk
                m_out[i : i + k] = m.squeeze(1)
                se_out[i : i + k] = se
                if lp is not None:
                    lp_out[i : i + k] = lp
                if h is not None:
                    h_out[i : i + k] = h
                    mu_out[i : i + k] = mu
        ctx.save_for_backward(logits, labels, m_out, se_out, mu_out)
        ctx.temperature = temperature
        ctx.chunk = c
        ctx.want_h = want_h
        ctx.masked = masked
        ctx.set_materialize_grads(False)
        return lp_out, h_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lp, g_h):
        logits, labels, m, se, mu = ctx.saved_tensors
        if labels is None:
            g_lp = None
        if not ctx.want_h:
            g_h = None
        if g_lp is None and g_h is None:
            return None, None, None, None, None
        n, v = logits.shape
        acc = se.dtype
        inv_t = 1.0 / ctx.temperature
        # fold dz'/dz = 1/T into the per-row coefficients
        g_lp = None if g_lp is None else g_lp.to(acc) * inv_t
        g_h = None if g_h is None else g_h.to(acc) * inv_t
        grad = torch.empty_like(logits, memory_format=torch.contiguous_format)
        direct = grad.dtype == acc  # fp32 logits: build dL/dz right in the output
        c = ctx.chunk
        buf = None if direct else torch.empty(c, v, dtype=acc, device=logits.device)
        p = None
        if g_h is not None:
            p = torch.empty(_sub_rows(v, c, logits.device), v, dtype=acc, device=logits.device)
        for i in range(0, n, c):
            k = min(c, n - i)
            lg = grad[i : i + k] if direct else buf[:k]
            # s = z/T - m exactly as the forward built it (one pass, accumulation dtype)
            _shift(logits[i : i + k], m[i : i + k].unsqueeze(1), inv_t, out=lg)
            _grad_rows(
                lg,
                p,
                None if labels is None else labels[i : i + k],
                se[i : i + k],
                None if mu is None else mu[i : i + k],
                None if g_lp is None else g_lp[i : i + k],
                None if g_h is None else g_h[i : i + k],
                ctx.masked,
            )
            if not direct:
                grad[i : i + k].copy_(lg)
        return grad, None, None, None, None


def _logits_level(logits, labels, temperature, chunk_size, want_lp, want_h):
    _check_float(logits, "logits")
    if logits.dim() < 1:
        raise ValueError("logits must have a trailing vocabulary dimension")
    t = _check_temperature(temperature)
    chunk = _check_chunk(chunk_size)
    v = logits.shape[-1]
    lead = logits.shape[:-1]
    y = None
    if want_lp:
        y = _check_labels(labels, lead, v).reshape(-1)
    if v == 0:
        raise ValueError("logits must have a non-empty vocabulary dimension")
    lp, h = _LogitsLogpEntropy.apply(logits.reshape(-1, v), y, t, chunk, want_h)
    return lp.view(lead), h.view(lead)


def token_logprobs(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None
) -> Tensor:
    """Per-token log-probability of ``labels`` under ``softmax(logits / T)``.

    ``logp[..] = z'[.., y] - logsumexp_v z'[.., v]`` with ``z' = logits / T``.
    ``logits`` is ``(..., V)``, ``labels`` the matching ``(...)`` integer ids;
    the result has the labels' shape and is float32 (fp32 accumulation for
    bf16/fp16 logits).  ``chunk_size`` rows (leading dims flattened) are
    processed at a time to bound scratch memory; ``None`` = all rows at once.
    Differentiable w.r.t. ``logits``: ``d logp / d z = (onehot(y) - p) / T``.
    """
    return _logits_level(logits, labels, temperature, chunk_size, True, False)[0]


def token_entropy(
    logits: Tensor,
    temperature: float = 1.0,
    base: Optional[float] = None,
    chunk_size: Optional[int] = None,
) -> Tensor:
    """Per-token entropy of ``p = softmax(logits / T)``.

    ``H = -sum_v p_v log p_v = logsumexp(z') - sum_v p_v z'_v`` with
    ``z' = logits / T``; nats for ``base=None``, else ``H / ln(base)``
    (``base=2`` gives bits).  Result shape is ``logits.shape[:-1]``, float32.
    Differentiable: ``dH/dz = -p * (log p + H) / T``.
    """
    b = _check_base(base)
    h = _logits_level(logits, None, temperature, chunk_size, False, True)[1]
    return h if b is None else h / math.log(b)


def logprobs_and_entropy(
    logits: Tensor, labels: Tensor, temperature: float = 1.0, chunk_size: Optional[int] = None
) -> Tuple[Tensor, Tensor]:
    """``(logp, H)`` from one pass over ``logits``: ``logp = z'_y - lse(z')``,
    ``H = lse(z') - sum_v softmax(z')_v z'_v`` with ``z' = logits / T`` (nats, float32).
    """
    return _logits_level(logits, labels, temperature, chunk_size, True, True)


# --------------------------------------------------------------------------
# fused hidden -> (logp, H)
# --------------------------------------------------------------------------
def _fused_chunk(
    hc: Tensor,
    wt: Tensor,
    bias: Optional[Tensor],
    inv_t: float,
    out: Tensor,
    zlow: Optional[Tensor],
    m: Optional[Tensor] = None,
) -> Tensor:
    """``out <- (hc W^T + bias) / T - m`` for one chunk; returns the shift ``m`` ((k, 1)).

    ``m`` is the row max of ``z / T`` when not given (forward), the saved one
    in backward: both passes run this same sequence (GEMM, then :func:`_shift`)
    and get bitwise the same ``s``.  The GEMM writes unscaled ``z`` (into
    ``zlow`` for bf16/fp16 inputs, else straight into ``out``); ``1/T`` is
    applied in the shift's fused multiply-add, not as the GEMM's ``alpha``
    (that would round ``z / T`` at its own size, ~4e-6 at ``|z / T| ~ 70``).
    """
    z = out if zlow is None else zlow
    if bias is None:
        torch.mm(hc, wt, out=z)
    else:
        torch.addmm(bias, hc, wt, out=z)
    if m is None:
        m = _row_shift(z, inv_t, out.dtype)
    _shift(z, m, inv_t, out=out)
    return m


class _FusedLogpEntropy(torch.autograd.Function):
    """(hidden (N, D), weight (V, D), labels (N,), bias (V,) | None) -> (logp, H)."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, bias, temperature, chunk):
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return _FusedLogpEntropy._fwd(ctx, hidden, weight, labels, bias, temperature, chunk)

    @staticmethod
    def _fwd(ctx, hidden, weight, labels, bias, temperature, chunk):
        n = hidden.shape[0]
        v = weight.shape[0]
        dev = hidden.device
        acc = _acc_dtype(hidden.dtype)
        inv_t = 1.0 / temperature
        c = max(1, min(chunk, n))
        wt = weight.t()
        low = hidden.dtype != acc  # bf16 / fp16: GEMM in input dtype, stats in fp32
        lp_out = torch.empty(n, dtype=acc, device=dev)
        h_out = torch.empty(n, dtype=acc, device=dev)
        # per row for backward: the shift m, S and mu
        m_out = torch.empty(n, dtype=acc, device=dev)
        se_out = torch.empty(n, dtype=acc, device=dev)
        mu_out = torch.empty(n, dtype=acc, device=dev)
        masked = False
        if n > 0:
            s = torch.empty(c, v, dtype=acc, device=dev)
            e = torch.empty(_sub_rows(v, c, dev), v, dtype=acc, device=dev)
            zlow = torch.empty(c, v, dtype=hidden.dtype, device=dev) if low else None
            for i in range(0, n, c):
                k = min(c, n - i)
                sk, zk = s[:k], None if zlow is None else zlow[:k]
                m = _fused_chunk(hidden[i : i + k], wt, bias, inv_t, sk, zk)
                lp, se, mu, h, mk = _row_stats(
                    sk, e, labels[i : i + k], True, safe=bias is not None
                )
                masked |= mk
                lp_out[i : i + k] = lp
                h_out[i : i + k] = h
                m_out[i : i + k] = m.squeeze(1)
                se_out[i : i + k] = se
                mu_out[i : i + k] = mu
        ctx.save_for_backward(hidden, weight, labels, bias, m_out, se_out, mu_out)
        ctx.temperature = temperature
        ctx.chunk = c
        ctx.masked = masked
        ctx.set_materialize_grads(False)
        return lp_out, h_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lp, g_h):
        hidden, weight, labels, bias, m, se, mu = ctx.saved_tensors
        need_h, need_w, _, need_b = ctx.needs_input_grad[:4]
        need_b = need_b and bias is not None
        if g_h is not None and not bool(g_h.any()):
            g_h = None  # entropy output unused: skip its (two-pass) gradient work
        if g_lp is not None and not bool(g_lp.any()):
            g_lp = None
        if (g_lp is None and g_h is None) or not (need_h or need_w or need_b):
            return None, None, None, None, None, None
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            gh, gw, gb = _FusedLogpEntropy._bwd(
                ctx, hidden, weight, labels, bias, m, se, mu, g_lp, g_h, need_h, need_w, need_b
            )
        return gh, gw, None, gb, None, None

    @staticmethod
    def _bwd(ctx, hidden, weight, labels, bias, m, se, mu, g_lp, g_h, need_h, need_w, need_b):
        n, d = hidden.shape
        v = weight.shape[0]
        dev = hidden.device
        acc = se.dtype
        inv_t = 1.0 / ctx.temperature
        low = hidden.dtype != acc
        # dL/dz = dL/dz' / T: fold 1/T into the per-row coefficients
        g_lp = None if g_lp is None else g_lp.to(acc) * inv_t
        g_h = None if g_h is None else g_h.to(acc) * inv_t
        c = ctx.chunk
        wt = weight.t()
        grad_h = torch.empty(n, d, dtype=hidden.dtype, device=dev) if need_h else None
        grad_w = torch.zeros(v, d, dtype=acc, device=dev) if need_w else None
        grad_b = torch.zeros(v, dtype=acc, device=dev) if need_b else None
        buf = torch.empty(c, v, dtype=acc, device=dev)
        p = None if g_h is None else torch.empty(_sub_rows(v, c, dev), v, dtype=acc, device=dev)
        zlow = torch.empty(c, v, dtype=hidden.dtype, device=dev) if low else None
        for i in range(0, n, c):
            k = min(c, n - i)
            hc, lg = hidden[i : i + k], buf[:k]
            # s = z' - m recomputed, bitwise as in the forward
            zk = None if zlow is None else zlow[:k]
            _fused_chunk(hc, wt, bias, inv_t, lg, zk, m[i : i + k].unsqueeze(1))
            g = _grad_rows(
                lg,
                p,
                labels[i : i + k],
                se[i : i + k],
                mu[i : i + k],
                None if g_lp is None else g_lp[i : i + k],
                None if g_h is None else g_h[i : i + k],
                ctx.masked,
            )  # = dL/dz for these rows, float32
            if need_b:
                grad_b.add_(g.sum(0))
            if low:
                g = g.to(hidden.dtype)
            if need_h:
                torch.mm(g, weight, out=grad_h[i : i + k])
            if need_w:
                if low:
                    grad_w.add_(torch.mm(g.t(), hc))
                else:
                    grad_w.addmm_(g.t(), hc)
        if grad_w is not None:
            grad_w = grad_w.to(weight.dtype)
        if grad_b is not None:
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b


def fused_logprobs_entropy(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    temperature: float = 1.0,
    chunk_size: int = DEFAULT_FUSED_CHUNK,
    bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Per-token ``(logp, H)`` straight from hidden states, never holding all N x V logits.

    ``z' = (hidden @ weight^T + bias) / T`` is built ``chunk_size`` token rows
    at a time; ``logp = z'_y - lse(z')`` and ``H = lse(z') - sum_v p_v z'_v``
    with ``p = softmax(z')`` (nats, float32 outputs with the labels' shape).

    ``hidden`` is ``(..., D)`` (e.g. ``(N, D)`` or ``(B, T, D)``), ``weight``
    the LM-head weight ``(V, D)`` (may be tied to the embeddings), ``labels``
    the token ids ``(...)`` in ``[0, V)``.  Differentiable w.r.t. ``hidden``,
    ``weight`` and ``bias`` through a custom backward that recomputes each
    chunk's logits: with ``a = dL/dlogp``, ``b = dL/dH``,
    ``dL/dz = [a (onehot(y) - p) - b p (log p + H)] / T``,
    ``dL/dh = dL/dz W``, ``dL/dW = sum_rows dL/dz^T h``.  Gradients come back
    in the input dtypes; the entropy term is skipped when ``H`` gets no
    gradient.
    """
    _check_float(hidden, "hidden")
    _check_float(weight, "weight")
    t = _check_temperature(temperature)
    c = _check_chunk(chunk_size)
    if c is None:
        c = DEFAULT_FUSED_CHUNK
    if weight.dim() != 2:
        raise ValueError(f"weight must be (V, D), got shape {tuple(weight.shape)}")
    if hidden.dim() < 1 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden last dim must equal weight's D={weight.shape[1]}, got shape "
            f"{tuple(hidden.shape)}"
        )
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) dtypes differ")
    if hidden.device != weight.device:
        raise ValueError(f"hidden ({hidden.device}) and weight ({weight.device}) devices differ")
    v = weight.shape[0]
    if v == 0:
        raise ValueError("weight must have at least one vocabulary row")
    if bias is not None:
        _check_float(bias, "bias")
        if tuple(bias.shape) != (v,) or bias.dtype != weight.dtype:
            raise ValueError(
                f"bias must be ({v},) with dtype {weight.dtype}, got "
                f"{tuple(bias.shape)} {bias.dtype}"
            )
    lead = hidden.shape[:-1]
    y = _check_labels(labels, lead, v).reshape(-1)
    h2 = hidden.reshape(-1, hidden.shape[-1])
    lp, h = _FusedLogpEntropy.apply(h2, weight, y, bias, t, c)
    return lp.view(lead), h.view(lead)

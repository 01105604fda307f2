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
  two floats per row (no softmax-sized activations).
* hidden level (:func:`fused_logprobs_entropy`) takes final hidden states and
  the LM-head weight and never holds more than ``chunk_size x V`` logits, in
  forward or backward (backward recomputes each chunk's logits).

Backward for one row, with upstream gradients ``a = dL/dlogp``, ``b = dL/dH``::

    dlogp/dz' = onehot(y) - p
    dH/dz'    = -p * (log p + H)
    dL/dz'    = a * (onehot(y) - p) - b * p * (log p + H)
    dL/dz     = dL/dz' / T
    dL/dh     = dL/dz @ W,  dL/dW = (dL/dz)^T @ h,  dL/dbias = sum_rows dL/dz
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
def _row_stats(s: Tensor, e: Tensor, m: Tensor, y: Optional[Tensor], want_h: bool, safe: bool):
    """Row statistics from shifted scaled logits ``s = z' - m`` (``m`` = row max, (k, 1)).

    With ``S = sum_v exp(s_v)``: ``lse = m + log S``, ``logp = s_y - log S``,
    ``H = log S - sum_v exp(s_v) s_v / S``.  ``e`` is scratch of ``r <= k``
    rows; the chunk is walked in blocks of ``r`` rows with the passes exp
    (into ``e``), sum, in-place multiply, sum.  ``s`` is left intact.
    Returns ``(logp or None, lse, H or None, masked)`` where ``masked`` says
    that some logit was -inf (only checked when ``safe``).
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
    lse = m.squeeze(1) + log_se
    logp = None if y is None else s.gather(1, y.unsqueeze(1)).squeeze(1).sub_(log_se)
    h = log_se.sub_(dot.div_(se)) if want_h else None
    return logp, lse, h, masked


def _grad_rows(
    logp: Tensor,
    p: Optional[Tensor],
    y: Optional[Tensor],
    h: Optional[Tensor],
    g_lp: Optional[Tensor],
    g_h: Optional[Tensor],
    masked: bool,
) -> Tensor:
    """In place: ``logp <- g_lp*(onehot(y) - p) - g_h * p * (logp + H)``, ``p = exp(logp)``.

    ``logp = z' - lse`` is a chunk (k, V); it is overwritten with ``dL/dz'``
    and returned.  ``p`` is scratch of ``r <= k`` rows (needed only when
    ``g_h`` is given; the chunk is walked in blocks of ``r`` rows).  The
    ``g_*`` are per-row (k,) and may already carry the ``1/T`` of ``dz'/dz``.
    """
    if g_h is None:
        logp.exp_().mul_(g_lp.neg().unsqueeze(1))  # -g_lp * p
    else:
        coef = g_h * h if g_lp is None else torch.addcmul(g_lp, g_h, h)
        neg_gh = g_h.neg().unsqueeze(1)
        coef = coef.unsqueeze(1)
        k, r = logp.shape[0], p.shape[0]
        for j in range(0, k, r):
            q = min(r, k - j)
            lb, pb = logp[j : j + q], p[:q]
            mask = torch.isneginf(lb) if masked else None
            torch.exp(lb, out=pb)
            # lb <- -(g_h * logp + coef) * p.  (mul_ + sub_ with per-row columns
            # measured faster on CPU than one broadcast addcmul.)
            lb.mul_(neg_gh[j : j + q]).sub_(coef[j : j + q]).mul_(pb)
            if mask is not None:  # p = 0 at -inf logits: the true gradient there is 0
                lb.masked_fill_(mask, 0.0)
    if g_lp is not None and y is not None:
        logp.scatter_add_(1, y.unsqueeze(1), g_lp.unsqueeze(1))
    return logp


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
        lse_out = torch.empty(n, dtype=acc, device=dev)
        masked = False
        if n > 0:
            s = torch.empty(c, v, dtype=acc, device=dev)
            e = torch.empty(_sub_rows(v, c, dev), v, dtype=acc, device=dev)
            for i in range(0, n, c):
                k = min(c, n - i)
                zc, sk = logits[i : i + k], s[:k]
                m = zc.amax(1, keepdim=True).to(acc)
                if inv_t == 1.0:
                    torch.sub(zc, m, out=sk)  # shift and upcast in one pass
                else:
                    m.mul_(inv_t)
                    torch.add(m.neg(), zc, alpha=inv_t, out=sk)  # z/T - max/T
                y = None if labels is None else labels[i : i + k]
                lp, lse, h, mk = _row_stats(sk, e, m, y, want_h, safe=True)
                masked |= mk
                lse_out[i : i + k] = lse
                if lp is not None:
                    lp_out[i : i + k] = lp
                if h is not None:
                    h_out[i : i + k] = h
        ctx.save_for_backward(logits, labels, lse_out, h_out)
        ctx.temperature = temperature
        ctx.chunk = c
        ctx.want_h = want_h
        ctx.masked = masked
        ctx.set_materialize_grads(False)
        return lp_out, h_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lp, g_h):
        logits, labels, lse, h = ctx.saved_tensors
        if labels is None:
            g_lp = None
        if not ctx.want_h:
            g_h = None
        if g_lp is None and g_h is None:
            return None, None, None, None, None
        n, v = logits.shape
        acc = lse.dtype
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
            # logp = z/T - lse, one pass, accumulation dtype
            torch.add(lse[i : i + k].neg().unsqueeze(1), logits[i : i + k], alpha=inv_t, out=lg)
            _grad_rows(
                lg,
                p,
                None if labels is None else labels[i : i + k],
                h[i : i + k],
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
        lse_out = torch.empty(n, dtype=acc, device=dev)
        masked = False
        if n > 0:
            s = torch.empty(c, v, dtype=acc, device=dev)
            e = torch.empty(_sub_rows(v, c, dev), v, dtype=acc, device=dev)
            zlow = torch.empty(c, v, dtype=hidden.dtype, device=dev) if low else None
            for i in range(0, n, c):
                k = min(c, n - i)
                hc, sk = hidden[i : i + k], s[:k]
                if low:
                    zk = zlow[:k]
                    if bias is None:
                        torch.mm(hc, wt, out=zk)
                    else:
                        torch.addmm(bias, hc, wt, out=zk)
                    m = zk.amax(1, keepdim=True).to(acc).mul_(inv_t)
                    torch.add(m.neg(), zk, alpha=inv_t, out=sk)
                else:
                    # z' = (h W^T + b) / T straight from the GEMM
                    if bias is None:
                        if inv_t == 1.0:
                            torch.mm(hc, wt, out=sk)
                        else:
                            torch.addmm(sk, hc, wt, beta=0.0, alpha=inv_t, out=sk)
                    else:
                        torch.addmm(bias, hc, wt, beta=inv_t, alpha=inv_t, out=sk)
                    m = sk.amax(1, keepdim=True)
                    sk.sub_(m)
                lp, lse, h, mk = _row_stats(sk, e, m, labels[i : i + k], True, safe=bias is not None)
                masked |= mk
                lp_out[i : i + k] = lp
                h_out[i : i + k] = h
                lse_out[i : i + k] = lse
        ctx.save_for_backward(hidden, weight, labels, bias, lse_out, h_out)
        ctx.temperature = temperature
        ctx.chunk = c
        ctx.masked = masked
        ctx.set_materialize_grads(False)
        return lp_out, h_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_lp, g_h):
        hidden, weight, labels, bias, lse, h = ctx.saved_tensors
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
                ctx, hidden, weight, labels, bias, lse, h, g_lp, g_h, need_h, need_w, need_b
            )
        return gh, gw, None, gb, None, None

    @staticmethod
    def _bwd(ctx, hidden, weight, labels, bias, lse, h, g_lp, g_h, need_h, need_w, need_b):
        n, d = hidden.shape
        v = weight.shape[0]
        dev = hidden.device
        acc = lse.dtype
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
            neg_lse = lse[i : i + k].neg().unsqueeze(1)
            # logp = z' - lse, recomputed
            if low:
                zk = zlow[:k]
                if bias is None:
                    torch.mm(hc, wt, out=zk)
                else:
                    torch.addmm(bias, hc, wt, out=zk)
                torch.add(neg_lse, zk, alpha=inv_t, out=lg)
            else:
                torch.addmm(neg_lse, hc, wt, alpha=inv_t, out=lg)
                if bias is not None:
                    lg.add_(bias, alpha=inv_t)
            g = _grad_rows(
                lg,
                p,
                labels[i : i + k],
                h[i : i + k],
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

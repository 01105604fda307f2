"""Tests for entrolab.ops.entropy: hand cases, chunking, dtypes, fused gradients."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.ops.entropy import (
    fused_logprobs_entropy,
    logprobs_and_entropy,
    token_entropy,
    token_logprobs,
)

LN = math.log


# ------------------------------------------------------------------ references
def ref_from_logits(z, y=None, temperature=1.0):
    """Plain-autograd reference: log_softmax, gather, -(p log p).sum."""
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    logp_all = torch.log_softmax(z.to(acc) / temperature, dim=-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    lp = None if y is None else logp_all.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return lp, ent


def ref_fused(h, w, y, temperature=1.0, bias=None):
    z = h @ w.t()
    if bias is not None:
        z = z + bias
    return ref_from_logits(z, y, temperature)


def rand_problem(n=13, d=6, v=11, dtype=torch.float32, bias=False, seed=0, lead=None):
    g = torch.Generator().manual_seed(seed)
    shape = (n,) if lead is None else lead
    h = torch.randn(*shape, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = torch.randn(v, d, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    b = torch.randn(v, generator=g, dtype=torch.float64).to(dtype).requires_grad_() if bias else None
    y = torch.randint(0, v, shape, generator=g)
    a = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    c = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    return h, w, b, y, a, c


def grads(loss, params):
    params = [p for p in params if p is not None]
    return torch.autograd.grad(loss, params)


# ------------------------------------------------------------------ hand cases
@pytest.mark.parametrize("v", [1, 2, 7, 1000])
def test_uniform_entropy_nats_and_bits(v):
    z = torch.zeros(2, 3, v)
    assert torch.allclose(token_entropy(z), torch.full((2, 3), LN(v)), atol=1e-6)
    assert torch.allclose(token_entropy(z, base=2), torch.full((2, 3), math.log2(v)), atol=1e-6)
    assert torch.allclose(token_entropy(z, base=10), torch.full((2, 3), math.log10(v)), atol=1e-6)
    # shifting all logits changes nothing
    assert torch.allclose(token_entropy(z + 123.0), torch.full((2, 3), LN(v)), atol=1e-5)


def test_two_actions_by_hand():
    # logits (ln 3, 0) -> p = (3/4, 1/4)
    z = torch.tensor([[LN(3.0), 0.0], [LN(3.0), 0.0]])
    y = torch.tensor([0, 1])
    h_hand = -(0.75 * LN(0.75) + 0.25 * LN(0.25))  # 0.5623351446...
    assert abs(h_hand - 0.5623351446188083) < 1e-12
    lp, ent = logprobs_and_entropy(z, y)
    assert torch.allclose(ent, torch.tensor([h_hand, h_hand]), atol=1e-6)
    assert torch.allclose(lp, torch.tensor([LN(0.75), LN(0.25)]), atol=1e-6)
    assert torch.allclose(token_logprobs(z, y), lp)
    bits = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))  # 0.8112781245
    assert torch.allclose(token_entropy(z, base=2), torch.tensor([bits, bits]), atol=1e-6)


def test_temperature_on_hand_case():
    # logits (2 ln 3, 0) at T=2 is the (3/4, 1/4) case again
    z = torch.tensor([[2 * LN(3.0), 0.0]])
    h_hand = -(0.75 * LN(0.75) + 0.25 * LN(0.25))
    assert torch.allclose(token_entropy(z, temperature=2.0), torch.tensor([h_hand]), atol=1e-6)
    assert torch.allclose(
        token_logprobs(z, torch.tensor([1]), temperature=2.0), torch.tensor([LN(0.25)]), atol=1e-6
    )
    # T=1: p = (9/10, 1/10)
    h1 = -(0.9 * LN(0.9) + 0.1 * LN(0.1))
    assert torch.allclose(token_entropy(z), torch.tensor([h1]), atol=1e-6)
    # very high temperature -> uniform
    assert torch.allclose(token_entropy(z, temperature=1e6), torch.tensor([LN(2.0)]), atol=1e-5)


def test_one_hot_logits_give_zero_entropy():
    z = torch.full((4, 50), -0.0)
    z[:, 7] = 200.0
    ent = token_entropy(z)
    assert ent.abs().max() < 1e-6
    lp = token_logprobs(z, torch.full((4,), 7))
    assert lp.abs().max() < 1e-6


def test_masked_neg_inf_logits():
    z = torch.randn(5, 9, dtype=torch.float64)
    z[:, 6:] = float("-inf")
    z.requires_grad_()
    y = torch.randint(0, 6, (5,))
    lp, ent = logprobs_and_entropy(z, y, temperature=0.7)
    zz = z.detach()[:, :6].clone().requires_grad_()
    rlp, rent = ref_from_logits(zz, y, 0.7)
    assert torch.allclose(ent, rent) and torch.allclose(lp, rlp)
    (lp.sum() + 2 * ent.sum()).backward()
    (rlp.sum() + 2 * rent.sum()).backward()
    assert torch.isfinite(z.grad).all()
    assert torch.allclose(z.grad[:, :6], zz.grad)
    assert (z.grad[:, 6:] == 0).all()


# ------------------------------------------------------------------ logits level
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logits_level_matches_reference_values_and_grads(temperature):
    g = torch.Generator().manual_seed(1)
    z = (3 * torch.randn(2, 5, 17, generator=g)).requires_grad_()
    y = torch.randint(0, 17, (2, 5), generator=g)
    a, b = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    lp, ent = logprobs_and_entropy(z, y, temperature, chunk_size=3)
    rlp, rent = ref_from_logits(z, y, temperature)
    assert lp.shape == (2, 5) and ent.shape == (2, 5)
    assert torch.allclose(lp, rlp, atol=1e-5) and torch.allclose(ent, rent, atol=1e-5)
    (g1,) = grads((lp * a).sum() + (ent * b).sum(), [z])
    (g2,) = grads((rlp * a).sum() + (rent * b).sum(), [z])
    assert torch.allclose(g1, g2, atol=1e-5)
    # single-output paths
    rlp, rent = ref_from_logits(z, y, temperature)
    (g1,) = grads(token_entropy(z, temperature, base=2).mul(b).sum(), [z])
    (g2,) = grads((rent * b).sum() / LN(2), [z])
    assert torch.allclose(g1, g2, atol=1e-5)
    rlp, rent = ref_from_logits(z, y, temperature)
    (g1,) = grads(token_logprobs(z, y, temperature, chunk_size=4).mul(a).sum(), [z])
    (g2,) = grads((rlp * a).sum(), [z])
    assert torch.allclose(g1, g2, atol=1e-5)


def test_logits_level_gradcheck():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,), generator=g)
    for chunk in (None, 2, 3):
        assert torch.autograd.gradcheck(
            lambda t: logprobs_and_entropy(t, y, 0.8, chunk_size=chunk), (z,)
        )
    assert torch.autograd.gradcheck(lambda t: token_entropy(t, 1.3, base=2), (z,))


def test_chunked_equals_unchunked_logits():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(3, 7, 29, generator=g)
    y = torch.randint(0, 29, (3, 7), generator=g)
    lp0, h0 = logprobs_and_entropy(z, y, 0.9)
    for c in (1, 2, 5, 20, 21, 1000):
        lp, h = logprobs_and_entropy(z, y, 0.9, chunk_size=c)
        assert torch.allclose(lp, lp0, atol=1e-6) and torch.allclose(h, h0, atol=1e-6)
        assert torch.allclose(token_entropy(z, 0.9, chunk_size=c), h0, atol=1e-6)
        assert torch.allclose(token_logprobs(z, y, 0.9, chunk_size=c), lp0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_give_fp32(dtype):
    g = torch.Generator().manual_seed(4)
    z = (4 * torch.randn(6, 300, generator=g)).to(dtype)
    y = torch.randint(0, 300, (6,), generator=g)
    lp, ent = logprobs_and_entropy(z, y, chunk_size=4)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    rlp, rent = ref_from_logits(z.float(), y)  # same values, fp32 math
    assert torch.allclose(lp, rlp, atol=1e-5) and torch.allclose(ent, rent, atol=1e-5)
    zg = z.clone().requires_grad_()
    token_entropy(zg).sum().backward()
    assert zg.grad.dtype == dtype and torch.isfinite(zg.grad.float()).all()


def test_no_grad_and_non_contiguous_input():
    g = torch.Generator().manual_seed(5)
    big = torch.randn(2, 9, 13, generator=g)
    z = big[:, :-1]  # typical "shift" slice, non-contiguous
    y = torch.randint(0, 13, (2, 8), generator=g)
    with torch.no_grad():
        lp, ent = logprobs_and_entropy(z, y)
    rlp, rent = ref_from_logits(z, y)
    assert torch.allclose(lp, rlp, atol=1e-6) and torch.allclose(ent, rent, atol=1e-6)


# ------------------------------------------------------------------ fused
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [4, 1024])
def test_fused_matches_naive_values_and_grads(bias, temperature, chunk):
    h, w, b, y, a, c = rand_problem(n=13, d=6, v=11, bias=bias, seed=7)
    lp, ent = fused_logprobs_entropy(h, w, y, temperature, chunk, bias=b)
    rlp, rent = ref_fused(h, w, y, temperature, b)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    assert torch.allclose(lp, rlp, atol=1e-5) and torch.allclose(ent, rent, atol=1e-5)
    g1 = grads((lp * a).sum() + (ent * c).sum(), [h, w, b])
    g2 = grads((rlp * a).sum() + (rent * c).sum(), [h, w, b])
    for x, r in zip(g1, g2):
        assert x.dtype == r.dtype
        assert torch.allclose(x, r, atol=1e-5, rtol=1e-4)


def test_fused_3d_input():
    h, w, b, y, a, c = rand_problem(d=5, v=9, bias=True, seed=8, lead=(2, 7))
    lp, ent = fused_logprobs_entropy(h, w, y, 1.3, chunk_size=3, bias=b)
    assert lp.shape == (2, 7) and ent.shape == (2, 7)
    rlp, rent = ref_fused(h, w, y, 1.3, b)
    assert torch.allclose(lp, rlp, atol=1e-5) and torch.allclose(ent, rent, atol=1e-5)
    g1 = grads((lp * a).sum() + (ent * c).sum(), [h, w, b])
    g2 = grads((rlp * a).sum() + (rent * c).sum(), [h, w, b])
    assert g1[0].shape == (2, 7, 5)
    for x, r in zip(g1, g2):
        assert torch.allclose(x, r, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["entropy", "logprob"])
def test_fused_single_output_gradient_paths(which):
    h, w, b, y, a, c = rand_problem(n=10, d=4, v=8, bias=True, seed=9)
    lp, ent = fused_logprobs_entropy(h, w, y, 0.9, chunk_size=3, bias=b)
    rlp, rent = ref_fused(h, w, y, 0.9, b)
    if which == "entropy":
        g1, g2 = grads((ent * c).sum(), [h, w, b]), grads((rent * c).sum(), [h, w, b])
    else:
        g1, g2 = grads((lp * a).sum(), [h, w, b]), grads((rlp * a).sum(), [h, w, b])
    for x, r in zip(g1, g2):
        assert torch.allclose(x, r, atol=1e-5, rtol=1e-4)
    # a zero upstream gradient on the other output is the same as none
    lp, ent = fused_logprobs_entropy(h, w, y, 0.9, chunk_size=3, bias=b)
    other = lp if which == "entropy" else ent
    mine = ent * c if which == "entropy" else lp * a
    g3 = grads(mine.sum() + (other * 0).sum(), [h, w, b])
    for x, r in zip(g3, g2):
        assert torch.allclose(x, r, atol=1e-5, rtol=1e-4)


def test_fused_gradcheck_float64():
    g = torch.Generator().manual_seed(10)
    h = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 7, (5,), generator=g)
    for chunk in (2, 3):
        assert torch.autograd.gradcheck(
            lambda hh, ww: fused_logprobs_entropy(hh, ww, y, 0.8, chunk_size=chunk), (h, w)
        )
        assert torch.autograd.gradcheck(
            lambda hh, ww, bb: fused_logprobs_entropy(hh, ww, y, 1.2, chunk_size=chunk, bias=bb),
            (h, w, b),
        )


def test_fused_frozen_weight_and_tied_embedding():
    g = torch.Generator().manual_seed(11)
    v, d, n = 12, 5, 9
    # frozen head (e.g. LoRA): only hidden gets a gradient
    h = torch.randn(n, d, generator=g, requires_grad=True)
    w = torch.randn(v, d, generator=g)
    y = torch.randint(0, v, (n,), generator=g)
    lp, ent = fused_logprobs_entropy(h, w, y, chunk_size=4)
    (gh,) = grads(lp.sum() + ent.sum(), [h])
    rlp, rent = ref_fused(h, w, y)
    (rh,) = grads(rlp.sum() + rent.sum(), [h])
    assert torch.allclose(gh, rh, atol=1e-5)
    # tied: the head is also the embedding that produced the hidden states
    emb = torch.randn(v, d, generator=g, requires_grad=True)
    ids = torch.randint(0, v, (n,), generator=g)
    lp, ent = fused_logprobs_entropy(torch.tanh(emb[ids]), emb, y, chunk_size=4)
    (ge,) = grads(lp.sum() - 0.5 * ent.sum(), [emb])
    rlp, rent = ref_fused(torch.tanh(emb[ids]), emb, y)
    (re,) = grads(rlp.sum() - 0.5 * rent.sum(), [emb])
    assert torch.allclose(ge, re, atol=1e-5)


def test_fused_chunked_equals_unchunked():
    h, w, b, y, a, c = rand_problem(n=23, d=6, v=31, bias=True, seed=12)
    with torch.no_grad():
        lp0, h0 = fused_logprobs_entropy(h, w, y, 0.8, chunk_size=10_000, bias=b)
        for chunk in (1, 5, 22, 23):
            lp, ent = fused_logprobs_entropy(h, w, y, 0.8, chunk_size=chunk, bias=b)
            assert torch.allclose(lp, lp0, atol=1e-6) and torch.allclose(ent, h0, atol=1e-6)


def test_fused_bf16():
    h, w, _, y, a, c = rand_problem(n=17, d=16, v=40, seed=13)
    hb = h.detach().to(torch.bfloat16).requires_grad_()
    wb = w.detach().to(torch.bfloat16).requires_grad_()
    lp, ent = fused_logprobs_entropy(hb, wb, y, chunk_size=5)
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32
    # reference on the same (bf16-rounded) inputs in fp32; the head GEMM runs in
    # bf16, so logits carry bf16 rounding (~4e-3 relative)
    hr = hb.detach().float().requires_grad_()
    wr = wb.detach().float().requires_grad_()
    rlp, rent = ref_fused(hr, wr, y)
    assert torch.allclose(lp, rlp, atol=0.1) and torch.allclose(ent, rent, atol=0.05)
    g1 = grads((lp * a).sum() + (ent * c).sum(), [hb, wb])
    g2 = grads((rlp * a).sum() + (rent * c).sum(), [hr, wr])
    assert g1[0].dtype == torch.bfloat16 and g1[1].dtype == torch.bfloat16
    for x, r in zip(g1, g2):
        assert torch.allclose(x.float(), r, atol=0.1, rtol=0.05)


# ------------------------------------------------------------------ precision on peaked logits
PEAK = 70.0  # max |z / T|: float32 spacing there is 2**-17 ~ 7.6e-6


def peaked_logits(n, v, temperature, seed):
    """float32 logits ``z`` whose scaled values ``z / T`` span [-70, 70], rows of 3 kinds.

    Row ``i % 3 == 0``: ``z / T`` uniform in [-70, 70] (mass on the top few tokens);
    ``1``: very peaked, one token at 70 and the rest in [-70, 40] (``1 - p_top < 1e-10``);
    ``2``: one token at 70, a crowd of 8 within 3 of it, the rest in [-70, 0].
    ``z = float32(z_scaled * T)``; the reference uses exactly these float32 values.
    """
    g = torch.Generator().manual_seed(seed)
    zs = torch.rand(n, v, generator=g, dtype=torch.float64) * (2 * PEAK) - PEAK
    for i in range(n):
        top = int(torch.randint(0, v, (1,), generator=g))
        if i % 3 == 1:
            zs[i] = zs[i] * (110 / 140) - 15  # [-70, 40]
            zs[i, top] = PEAK
        elif i % 3 == 2:
            zs[i] = zs[i] / 2 - 35  # [-70, 0]
            crowd = torch.randint(0, v, (8,), generator=g)
            zs[i, crowd] = PEAK - 3 * torch.rand(8, generator=g, dtype=torch.float64)
            zs[i, top] = PEAK
    return (zs * temperature).float()


def peaked_problem(n, v, temperature, seed):
    z = peaked_logits(n, v, temperature, seed)
    g = torch.Generator().manual_seed(seed + 1)
    y = torch.randint(0, v, (n,), generator=g)
    y[::2] = z[::2].argmax(-1)  # half the labels on the row max, half random
    a, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    return z, y, a, b


def ref64_logit_grads(z, y, temperature, a, b):
    """float64 autograd reference ``dL/dz`` for L = sum a logp, sum b H, and their sum ("mix")."""
    z64 = z.detach().double().requires_grad_()
    logp_all = torch.log_softmax(z64 / temperature, dim=-1)
    lp = logp_all.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    la, lb = (lp * a.double()).sum(), (ent * b.double()).sum()
    losses = {"logp": la, "H": lb, "mix": la + lb}
    return {k: torch.autograd.grad(x, z64, retain_graph=True)[0] for k, x in losses.items()}


def rel_err(g, ref):
    """Relative error of a gradient: ``max |g - g_ref| / max |g_ref|`` over the whole tensor."""
    return ((g.double() - ref).abs().max() / ref.abs().max()).item()


@pytest.mark.parametrize("v", [1000, 49152])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logits_level_backward_precision_on_peaked_logits(v, temperature):
    """float32 gradients w.r.t. logits on peaked logits (|z/T| up to 70) match a float64
    autograd reference (``torch.log_softmax`` on the same float32 values upcast) to
    ``rel_err <= 1e-6``, where ``rel_err(g) = max_ij |g - g_ref| / max_ij |g_ref|`` over the
    whole gradient tensor, for L = sum a*logp (``token_logprobs``), L = sum b*H
    (``token_entropy``) and their sum (``logprobs_and_entropy``), random upstream ``a``, ``b``.

    (Rebuilding log p as ``z/T - lse``, ``lse`` rounded to float32 at ~70, gave up to 7.4e-6.)
    """
    n = 12
    z, y, a, b = peaked_problem(n, v, temperature, seed=20 + v)
    assert z.dtype == torch.float32 and (z / temperature).abs().max() >= PEAK - 1e-3
    ref = ref64_logit_grads(z, y, temperature, a, b)
    for chunk in (None, 5):
        zz = z.clone().requires_grad_()
        got = {
            "logp": grads((token_logprobs(zz, y, temperature, chunk) * a).sum(), [zz])[0],
            "H": grads((token_entropy(zz, temperature, chunk_size=chunk) * b).sum(), [zz])[0],
        }
        lp, ent = logprobs_and_entropy(zz, y, temperature, chunk)
        got["mix"] = grads((lp * a).sum() + (ent * b).sum(), [zz])[0]
        for k in ("logp", "H", "mix"):
            assert got[k].dtype == torch.float32
            err = rel_err(got[k], ref[k])
            assert err <= 1e-6, (k, chunk, err)


@pytest.mark.parametrize("v", [1000, 49152])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_backward_precision_on_peaked_logits(v, temperature, bias):
    """The fused backward's ``dL/dz`` matches the float64 reference to ``rel_err <= 1e-6``
    (``rel_err`` as in the logits-level test) on the same peaked logits.

    ``hidden`` is the identity (N = D = n) and ``weight = z^T``, so the head GEMM gives
    exactly ``z`` and ``dL/dW = (dL/dz)^T @ I`` is exactly ``(dL/dz)^T``: the check sees the
    kernel's own numerics, not GEMM rounding.  (``dL/dh = dL/dz @ W`` is a float32 GEMM
    over the V-long rows; its own rounding, not checked here, depends on the BLAS.)
    With a bias it is zero (the ``addmm`` path; exact) and ``dL/dbias = sum_rows dL/dz``.
    (The old backward, ``log p = z' - lse`` from one ``addmm``, gave up to 7.9e-6.)
    """
    n = 12
    z, y, a, b = peaked_problem(n, v, temperature, seed=40 + v)
    ref = ref64_logit_grads(z, y, temperature, a, b)
    hid = torch.eye(n, requires_grad=True)
    w = z.t().contiguous().requires_grad_()
    bb = torch.zeros(v, requires_grad=True) if bias else None
    for k in ("logp", "H", "mix"):
        lp, ent = fused_logprobs_entropy(hid, w, y, temperature, chunk_size=5, bias=bb)
        la, lb = (lp * a).sum(), (ent * b).sum()
        loss = {"logp": la, "H": lb, "mix": la + lb}[k]
        out = grads(loss, [w, bb] if bias else [w])
        assert out[0].dtype == torch.float32
        err = rel_err(out[0].t(), ref[k])
        assert err <= 1e-6, (k, err)
        if bias:
            err_b = rel_err(out[1], ref[k].sum(0))
            assert err_b <= 1e-6, (k, err_b)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("t", [0, 0.0, -1.0, float("nan"), float("inf"), "1", True])
def test_bad_temperature(t):
    z = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="temperature"):
        token_entropy(z, temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(z, torch.zeros(2, dtype=torch.long), temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        fused_logprobs_entropy(torch.zeros(2, 3), torch.zeros(4, 3), torch.zeros(2, dtype=torch.long), t)


@pytest.mark.parametrize("base", [0, -2.0, 1, 1.0, float("nan"), "2"])
def test_bad_base(base):
    with pytest.raises(ValueError, match="base"):
        token_entropy(torch.zeros(2, 3), base=base)


def test_bad_labels():
    z = torch.zeros(2, 5)
    for bad in (torch.tensor([0, 5]), torch.tensor([-100, 1]), torch.tensor([-1, 0])):
        with pytest.raises(ValueError, match="labels"):
            token_logprobs(z, bad)
        with pytest.raises(ValueError, match="labels"):
            fused_logprobs_entropy(torch.zeros(2, 3), torch.zeros(5, 3), bad)
    with pytest.raises(ValueError, match="labels"):
        token_logprobs(z, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        logprobs_and_entropy(z, torch.tensor([0, 1, 2]))


def test_bad_shapes_and_chunk():
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="hidden"):
        fused_logprobs_entropy(torch.zeros(2, 4), torch.zeros(5, 3), y)
    with pytest.raises(ValueError, match="bias"):
        fused_logprobs_entropy(torch.zeros(2, 3), torch.zeros(5, 3), y, bias=torch.zeros(4))
    with pytest.raises(ValueError, match="chunk_size"):
        token_entropy(torch.zeros(2, 3), chunk_size=0)
    with pytest.raises(ValueError, match="logits"):
        token_entropy(torch.zeros(2, 3, dtype=torch.long))


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    v=st.integers(1, 40),
    chunk=st.integers(1, 13),
    scale=st.floats(0.01, 30.0),
    temperature=st.floats(0.2, 5.0),
    seed=st.integers(0, 2**16),
)
def test_property_bounds_and_chunking(n, v, chunk, scale, temperature, seed):
    g = torch.Generator().manual_seed(seed)
    z = scale * torch.randn(n, v, generator=g, dtype=torch.float64)
    y = torch.randint(0, v, (n,), generator=g)
    lp, ent = logprobs_and_entropy(z, y, temperature)
    assert (ent >= -1e-9).all() and (ent <= LN(v) + 1e-9).all()
    assert (lp <= 1e-12).all()
    lpc, entc = logprobs_and_entropy(z, y, temperature, chunk_size=chunk)
    assert torch.allclose(lpc, lp, atol=1e-10) and torch.allclose(entc, ent, atol=1e-10)
    rlp, rent = ref_from_logits(z, y, temperature)
    assert torch.allclose(lp, rlp, atol=1e-9) and torch.allclose(ent, rent, atol=1e-9)
    # the fused path with an identity head is the same computation
    flp, fent = fused_logprobs_entropy(z, torch.eye(v, dtype=torch.float64), y, temperature, chunk)
    assert torch.allclose(flp, lp, atol=1e-10) and torch.allclose(fent, ent, atol=1e-10)


def test_sub_blocked_passes_match(monkeypatch):
    """Force the exp/multiply passes to walk chunks in blocks of 1-2 rows."""
    from entrolab.ops import entropy as ent

    h, w, b, y, a, c = rand_problem(n=11, d=5, v=9, bias=True, seed=14)
    rlp, rent = ref_fused(h, w, y, 0.8, b)
    r1 = grads((rlp * a).sum() + (rent * c).sum(), [h, w, b])
    z = (h @ w.t() + b).detach()
    z[0, 3] = float("-inf")  # also walk the masked path block by block
    z.requires_grad_()
    zr = z.detach().clone()
    zr[0, 3] = -1e4  # same distribution in fp32 (exp underflows to 0), finite reference
    zr.requires_grad_()
    monkeypatch.setattr(ent, "_SUB_ELEMS_CPU", 2 * 9 - 1)  # 1 row per block
    lp, e = fused_logprobs_entropy(h, w, y, 0.8, chunk_size=4, bias=b)
    assert torch.allclose(lp, rlp, atol=1e-5) and torch.allclose(e, rent, atol=1e-5)
    g1 = grads((lp * a).sum() + (e * c).sum(), [h, w, b])
    for x, r in zip(g1, r1):
        assert torch.allclose(x, r, atol=1e-5, rtol=1e-4)
    monkeypatch.setattr(ent, "_SUB_ELEMS_CPU", 2 * 9)  # 2 rows per block, odd tails
    lp, e = logprobs_and_entropy(z, y, 0.8, chunk_size=5)
    rl, re_ = ref_from_logits(zr, y, 0.8)
    assert torch.allclose(lp, rl, atol=1e-5) and torch.allclose(e, re_, atol=1e-5)
    (gz,) = grads((lp * a).sum() + (e * c).sum(), [z])
    (gr,) = grads((rl * a).sum() + (re_ * c).sum(), [zr])
    assert torch.isfinite(gz).all() and gz[0, 3] == 0
    assert torch.allclose(gz, gr, atol=1e-5)

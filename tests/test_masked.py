"""entrolab.ops.masked: masked statistics and the four loss aggregation modes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.ops.masked import (
    AGGREGATION_MODES,
    aggregate_loss,
    masked_mean,
    masked_quantiles,
    masked_sum,
    masked_var,
    masked_whiten,
)

NAN = float("nan")

# Hand case, B = 2, T = 3, unequal lengths (|o_1| = 3, |o_2| = 1); padding holds NaN to prove it is ignored.
#   loss = [[1, 2, 3],
#           [4, •, •]]
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, NAN]])
MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "mode, kwargs, expected",
    [
        # token-mean: (1 + 2 + 3 + 4) / 4 tokens = 10/4
        ("token-mean", {}, 2.5),
        # seq-mean-token-mean: ((1+2+3)/3 + 4/1) / 2 seqs = (2 + 4)/2
        ("seq-mean-token-mean", {}, 3.0),
        # seq-mean-token-sum: ((1+2+3) + 4) / 2 seqs = 10/2
        ("seq-mean-token-sum", {}, 5.0),
        # seq-mean-token-sum-norm, L = T = 3: (6/3 + 4/3) / 2 = 10/6
        ("seq-mean-token-sum-norm", {}, 10.0 / 6.0),
        # ... with a constant L = 4: (6/4 + 4/4) / 2 = 1.25
        ("seq-mean-token-sum-norm", {"norm_length": 4}, 1.25),
        # token-mean with the whole mini-batch's token count 8: 10/8
        ("token-mean", {"num_tokens": 8}, 1.25),
        # seq-mean-token-mean with num_seqs = 4: (2 + 4)/4
        ("seq-mean-token-mean", {"num_seqs": 4}, 1.5),
    ],
)
def test_aggregation_hand_case(mode, kwargs, expected):
    out = aggregate_loss(LOSS, MASK, mode, **kwargs)
    assert out.shape == ()
    assert out.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode, expected", [
    # A third, empty response does not count as a sequence (B' = 2) nor add tokens: same values as above.
    ("token-mean", 2.5),
    ("seq-mean-token-mean", 3.0),
    ("seq-mean-token-sum", 5.0),
    ("seq-mean-token-sum-norm", 10.0 / 6.0),
])
def test_aggregation_ignores_empty_sequences(mode, expected):
    loss = torch.cat([LOSS, torch.tensor([[7.0, 7.0, 7.0]])])
    mask = torch.cat([MASK, torch.zeros(1, 3)])
    assert aggregate_loss(loss, mask, mode).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregation_all_padding_is_zero(mode):
    out = aggregate_loss(torch.full((2, 3), NAN), torch.zeros(2, 3), mode)
    assert out.item() == 0.0


@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_aggregation_accepts_bool_mask(mode):
    assert aggregate_loss(LOSS, MASK.bool(), mode).item() == pytest.approx(aggregate_loss(LOSS, MASK, mode).item())


def test_bad_mode_error_lists_modes():
    with pytest.raises(ValueError) as e:
        aggregate_loss(LOSS, MASK, "token-sum")
    msg = str(e.value)
    assert "'token-sum'" in msg
    for mode in AGGREGATION_MODES:
        assert mode in msg


def test_bad_norm_length_and_mask_shape():
    with pytest.raises(ValueError, match="norm_length"):
        aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", norm_length=0)
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\)"):
        aggregate_loss(LOSS, MASK[:, :2], "token-mean")


# ------------------------------------------------------------------ gradient accumulation property
@st.composite
def _batches_and_splits(draw):
    B = draw(st.integers(1, 7))
    T = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(B, T, generator=g, dtype=torch.float64)
    mask = (torch.rand(B, T, generator=g) < draw(st.floats(0.0, 1.0))).double()
    # contiguous micro-batches: sorted cut points in 1..B-1
    cuts = sorted(draw(st.sets(st.integers(1, max(1, B - 1)), max_size=B - 1))) if B > 1 else []
    return loss, mask, [0, *cuts, B]


# Every mode but token-mean-local (TRL's bnpo), which is by definition each micro-batch's own token mean.
SPLIT_INVARIANT_MODES = [m for m in AGGREGATION_MODES if m != "token-mean-local"]


@settings(max_examples=60, deadline=None)
@given(data=_batches_and_splits(), mode=st.sampled_from(SPLIT_INVARIANT_MODES))
def test_gradient_accumulation_sums_to_whole_batch(data, mode):
    loss, mask, bounds = data
    whole = aggregate_loss(loss, mask, mode)
    num_tokens = float(mask.sum())
    num_seqs = float((mask.sum(-1) > 0).sum())
    parts = sum(
        aggregate_loss(loss[a:b], mask[a:b], mode, num_tokens=num_tokens, num_seqs=num_seqs)
        for a, b in zip(bounds[:-1], bounds[1:])
    )
    assert float(parts) == pytest.approx(float(whole), rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(data=_batches_and_splits(), mode=st.sampled_from(SPLIT_INVARIANT_MODES))
def test_gradient_accumulation_gradients_match(data, mode):
    loss, mask, bounds = data
    x = loss.clone().requires_grad_(True)
    aggregate_loss(x, mask, mode).backward()
    g_whole = x.grad.clone()
    x.grad = None
    n_tok, n_seq = float(mask.sum()), float((mask.sum(-1) > 0).sum())
    for a, b in zip(bounds[:-1], bounds[1:]):
        aggregate_loss(x[a:b], mask[a:b], mode, num_tokens=n_tok, num_seqs=n_seq).backward()
    torch.testing.assert_close(x.grad, g_whole)


# ------------------------------------------------------------------ masked statistics
# x = [[1, 2, •],      valid values {1, 2, 4}
#      [4, •, •]]
X = torch.tensor([[1.0, 2.0, NAN], [4.0, NAN, NAN]])
XM = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_masked_sum_and_mean_hand_case():
    assert masked_sum(X, XM).item() == pytest.approx(7.0)                 # 1 + 2 + 4
    assert masked_mean(X, XM).item() == pytest.approx(7.0 / 3.0)          # 7 / 3 valid
    torch.testing.assert_close(masked_sum(X, XM, dim=-1), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(masked_mean(X, XM, dim=-1), torch.tensor([1.5, 4.0]))   # 3/2, 4/1
    torch.testing.assert_close(masked_mean(X, XM, dim=0), torch.tensor([2.5, 2.0, 0.0]))  # empty column → 0


def test_masked_var_hand_case():
    # mean 7/3; deviations -4/3, -1/3, 5/3; squares 16/9 + 1/9 + 25/9 = 42/9 = 14/3
    assert masked_var(X, XM).item() == pytest.approx(14.0 / 3.0 / 2.0)            # unbiased: / (3 - 1) = 7/3
    assert masked_var(X, XM, unbiased=False).item() == pytest.approx(14.0 / 9.0)  # biased: / 3


def test_masked_whiten_hand_case():
    std = math.sqrt(7.0 / 3.0)
    expected = torch.tensor([[(1 - 7 / 3) / std, (2 - 7 / 3) / std, 0.0], [(4 - 7 / 3) / std, 0.0, 0.0]])
    torch.testing.assert_close(masked_whiten(X, XM, eps=0.0), expected)
    # shift_mean=False adds the mean back on valid tokens; padding stays 0
    expected_shift = torch.where(XM > 0, expected + 7.0 / 3.0, torch.zeros(()))
    torch.testing.assert_close(masked_whiten(X, XM, shift_mean=False, eps=0.0), expected_shift)
    w = masked_whiten(X, XM)
    assert masked_mean(w, XM).abs().item() < 1e-6
    assert masked_var(w, XM).item() == pytest.approx(1.0, rel=1e-5)


def test_masked_quantiles_hand_case():
    # sorted valid values [1, 2, 4]; linear interpolation at positions q·(n−1) = q·2
    qs = masked_quantiles(X, XM, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert qs == pytest.approx([1.0, 1.5, 2.0, 3.0, 4.0])
    out = masked_quantiles(X, torch.zeros_like(XM), [0.1, 0.9])
    assert len(out) == 2 and all(math.isnan(v) for v in out)


# ------------------------------------------------------------------ NaN on padding never leaks
def _nan_padded(requires_grad=True):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    x = torch.where(mask > 0, x, torch.full_like(x, NAN))
    return x.requires_grad_(requires_grad), mask


@pytest.mark.parametrize("fn", [
    lambda x, m: masked_sum(x, m),
    lambda x, m: masked_mean(x, m),
    lambda x, m: masked_mean(x, m, dim=-1).sum(),
    lambda x, m: masked_var(x, m),
    lambda x, m: masked_var(x, m, unbiased=False),
    lambda x, m: (masked_whiten(x, m) * torch.arange(15.0).view(3, 5)).sum(),
    lambda x, m: (masked_whiten(x, m, shift_mean=False) * torch.arange(15.0).view(3, 5)).sum(),
    *[(lambda mode: (lambda x, m: aggregate_loss(x, m, mode)))(mode) for mode in AGGREGATION_MODES],
], ids=["sum", "mean", "mean_dim", "var", "var_biased", "whiten", "whiten_noshift", *AGGREGATION_MODES])
def test_nan_on_padding_never_leaks(fn):
    x, mask = _nan_padded()
    out = fn(x, mask)
    assert torch.isfinite(out).all()
    out.backward()
    assert torch.isfinite(x.grad).all(), f"NaN gradient: {x.grad}"
    assert (x.grad[mask == 0] == 0).all()
    # and the valid-token gradient equals the one computed with 0 on padding
    x0 = torch.where(mask > 0, x.detach(), torch.zeros(())).requires_grad_(True)
    fn(x0, mask).backward()
    torch.testing.assert_close(x.grad, x0.grad)


def test_whiten_values_nan_padding_zero():
    x, mask = _nan_padded(requires_grad=False)
    w = masked_whiten(x, mask)
    assert torch.isfinite(w).all() and (w[mask == 0] == 0).all()

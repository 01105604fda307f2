"""entrolab.ops.kl: sampled-token KL estimators, full-vocabulary KL, and their expected gradients as losses."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from entrolab.ops.kl import KL_ESTIMATORS, canonical_kl_kind, full_kl, kl_estimate

# δ = log π_θ − log π_ref = [1, −1, 0, 2]
LOGP = torch.tensor([-1.0, -2.0, -0.5, -0.25])
LOGREF = torch.tensor([-2.0, -1.0, -0.5, -2.25])


@pytest.mark.parametrize("kind, expected", [
    ("k1", [1.0, -1.0, 0.0, 2.0]),                                        # δ
    ("abs", [1.0, 1.0, 0.0, 2.0]),                                       # |δ|
    ("k2", [0.5, 0.5, 0.0, 2.0]),                                        # ½ δ²
    # e^(−δ) + δ − 1:  e^-1 + 0 = 0.3679;  e^1 − 2 = 0.7183;  0;  e^-2 + 1 = 1.1353
    ("k3", [math.exp(-1.0), math.e - 2.0, 0.0, math.exp(-2.0) + 1.0]),
])
def test_estimators_hand_values(kind, expected):
    torch.testing.assert_close(kl_estimate(LOGP, LOGREF, kind), torch.tensor(expected))


def test_k3_clamped_at_10_both_sides():
    # δ = 12: e^-12 + 11 ≈ 11 → 10;  δ = −3: e^3 − 4 ≈ 16.1 → 10;  δ = −2: e^2 − 3 ≈ 4.39 (not clamped)
    delta = torch.tensor([12.0, -3.0, -2.0, 30.0, -30.0])
    out = kl_estimate(delta - 40.0, torch.full_like(delta, -40.0), "k3")
    torch.testing.assert_close(out, torch.tensor([10.0, 10.0, math.e**2 - 3.0, 10.0, 10.0]))
    assert torch.isfinite(out).all()
    # k3 ≥ 0 everywhere (the −10 bound can never bind), and it is ≤ 10
    d = torch.linspace(-40, 40, 801)
    k3 = kl_estimate(d - 50.0, torch.full_like(d, -50.0), "k3")
    assert (k3 >= 0).all() and (k3 <= 10).all()


@pytest.mark.parametrize("alias, kind", [("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3"),
                                          ("k1", "k1"), ("k2", "k2"), ("k3", "k3"), ("abs", "abs")])
def test_aliases(alias, kind):
    assert canonical_kl_kind(alias) == kind
    torch.testing.assert_close(kl_estimate(LOGP, LOGREF, alias), kl_estimate(LOGP, LOGREF, kind))


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError) as e:
        kl_estimate(LOGP, LOGREF, "k4")
    msg = str(e.value)
    assert "'k4'" in msg
    for name in (*KL_ESTIMATORS, "kl", "mse", "low_var_kl"):
        assert name in msg


def test_shape_mismatch():
    with pytest.raises(ValueError, match="logp_ref"):
        kl_estimate(LOGP, LOGREF[:2])


def test_full_kl_hand_case():
    # p = softmax([0, 0]) = [½, ½], q = softmax([0, ln 3]) = [¼, ¾]
    # KL(p‖q) = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3) ≈ 0.14384
    zp = torch.tensor([0.0, 0.0])
    zq = torch.tensor([0.0, math.log(3.0)])
    assert full_kl(zp, zq).item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-6)
    # temperature divides the logits: T = 2 on [0, 2 ln 3] gives the same q
    assert full_kl(zp, 2 * zq, temperature=2.0).item() == pytest.approx(0.5 * math.log(4.0 / 3.0), rel=1e-6)
    # reverse direction: ¼ ln(¼/½) + ¾ ln(¾/½) = ¼ ln ½ + ¾ ln 1.5
    assert full_kl(zq, zp).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), rel=1e-6)


def test_full_kl_zero_for_equal_logits_and_errors():
    z = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(full_kl(z, z), torch.zeros(4))
    torch.testing.assert_close(full_kl(z, z + 3.0), torch.zeros(4), atol=1e-6, rtol=0)  # shift invariance
    with pytest.raises(ValueError, match="temperature"):
        full_kl(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="logits_q"):
        full_kl(z, z[:, :3])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), V=st.integers(2, 12), scale=st.floats(0.1, 8.0),
       temperature=st.floats(0.3, 3.0))
def test_full_kl_nonnegative(seed, V, scale, temperature):
    g = torch.Generator().manual_seed(seed)
    zp, zq = scale * torch.randn(2, 3, V, generator=g)
    assert (full_kl(zp, zq, temperature) >= -1e-6).all()


# ------------------------------------------------------------------ expected gradients as losses
def _exact_expected_grad(theta: torch.Tensor, ref_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """∇_θ E_{a∼π_θ}[k(log π_θ(a) − log π_ref(a))] with the sampling weights held fixed (samples are data):
    the expectation is taken exactly by enumerating all actions weighted by sg(π_θ)."""
    th = theta.clone().requires_grad_(True)
    logp = torch.log_softmax(th, -1)
    logref = torch.log_softmax(ref_logits, -1)
    weights = logp.detach().exp()
    loss = (weights * kl_estimate(logp, logref, kind)).sum()
    (grad,) = torch.autograd.grad(loss, th)
    return grad


def _grad_of(fn, theta):
    th = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(th), th)
    return grad


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_expected_gradients_of_estimators(seed):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(6, generator=g)
    ref = theta + 0.8 * torch.randn(6, generator=g)  # a nearby reference, |δ| well inside the k3 clamp

    # k1: E[∇ log π_θ] = Σ_a ∇π_θ(a) = 0
    torch.testing.assert_close(_exact_expected_grad(theta, ref, "k1"), torch.zeros(6), atol=1e-6, rtol=0)

    # k2: ∇ KL(π_θ ‖ π_ref), the reverse KL
    g_rev = _grad_of(lambda th: full_kl(th, ref), theta)
    torch.testing.assert_close(_exact_expected_grad(theta, ref, "k2"), g_rev, atol=1e-6, rtol=1e-5)

    # k3: ∇ KL(π_ref ‖ π_θ), the forward KL
    g_fwd = _grad_of(lambda th: full_kl(ref, th), theta)
    torch.testing.assert_close(_exact_expected_grad(theta, ref, "k3"), g_fwd, atol=1e-6, rtol=1e-5)

    # the two KL gradients really differ here, so the two checks above are not the same check
    assert (g_rev - g_fwd).abs().max() > 1e-3

    # abs: E[sign(δ) ∇ log π_θ] = Σ_a π_a sign(δ_a) (e_a − π)
    p = torch.softmax(theta, -1)
    sign = torch.sign(torch.log_softmax(theta, -1) - torch.log_softmax(ref, -1))
    expected_abs = p * sign - p * (p * sign).sum()
    torch.testing.assert_close(_exact_expected_grad(theta, ref, "abs"), expected_abs, atol=1e-6, rtol=1e-5)


def test_k3_clamps_the_log_ratio_so_extreme_tokens_keep_finite_gradients():
    """verl's low_var_kl clamps δ to [−20, 20] before exp: δ = −100 gives the capped value 10 and a finite (zero)
    gradient instead of NaN."""
    logp = torch.tensor([-100.0, -0.5], requires_grad=True)
    ref = torch.tensor([0.0, -0.4])
    k3 = kl_estimate(logp, ref, "k3")
    assert float(k3[0].detach()) == 10.0
    d = -0.1  # δ = logp − logp_ref for the second token: e^{0.1} − 0.1 − 1
    assert abs(float(k3[1].detach()) - (math.exp(-d) + d - 1)) < 1e-6
    k3.sum().backward()
    assert bool(torch.isfinite(logp.grad).all())
    assert abs(float(logp.grad[1]) - (1 - math.exp(-d))) < 1e-5

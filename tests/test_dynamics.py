"""entrolab.ops.dynamics: Eq. 10 covariance, Table 1 tails, and Lemma 1 / Theorems 1–2 of 2505.22617."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.ops.dynamics import (
    PAPER_TAIL_FRACTIONS,
    centered_covariance,
    covariance_tail_means,
    entropy_change_from_hidden,
    exact_entropy,
    npg_logit_change,
    pg_logit_change,
    predicted_entropy_change,
)

NAN = float("nan")


def test_centered_covariance_hand_case_with_padding():
    # valid log π: −1, −2 (row 0), −3 (row 1)  → mean −2
    # valid A:      1,  1 (row 0), −2 (row 1)  → mean 0
    # Cov = (lp + 2)(A − 0):  (1)(1) = 1,  (0)(1) = 0,  (−1)(−2) = 2;  0 on padding
    logp = torch.tensor([[-1.0, -2.0, NAN], [-3.0, NAN, NAN]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, 99.0], [-2.0, 99.0, 99.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    cov = centered_covariance(logp, adv, mask)
    torch.testing.assert_close(cov, torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]))
    assert not cov.requires_grad  # a selection statistic, computed on detached values


def test_centered_covariance_shape_error():
    with pytest.raises(ValueError, match="same"):
        centered_covariance(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2))


def test_covariance_tail_means_hand_case():
    # valid values 5, 4, ..., −4 (N = 10); padding holds 100 (must be ignored)
    vals = torch.arange(5.0, -5.0, -1.0)
    cov = torch.cat([vals, torch.full((2,), 100.0)]).view(3, 4)
    mask = torch.cat([torch.ones(10), torch.zeros(2)]).view(3, 4)
    out = covariance_tail_means(cov, mask, fractions=(0.1, 0.2, 0.5, 1.0, 0.01))
    # top 1 → 5;  top 2 → (5+4)/2;  top 5 → (5+4+3+2+1)/5 = 3;  all → 0.5;  0.01·10 < 1 → at least one token → 5
    assert out == {0.1: 5.0, 0.2: 4.5, 0.5: 3.0, 1.0: 0.5, 0.01: 5.0}
    assert set(covariance_tail_means(cov, mask)) == set(PAPER_TAIL_FRACTIONS)
    empty = covariance_tail_means(cov, torch.zeros_like(mask), fractions=(0.2,))
    assert math.isnan(empty[0.2])


# ------------------------------------------------------------------ Lemma 1: first-order entropy change
def _policy(seed, S=32, A=6, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(S, A, generator=g), torch.randn(S, A, generator=g), torch.randn(S, A, generator=g)


def _total_error(z, dz, T):
    exact = exact_entropy(z + dz, T) - exact_entropy(z, T)
    pred = predicted_entropy_change(z, dz, T)
    return float((exact - pred).abs().sum()), float(exact.abs().sum())


STEPS = {
    "arbitrary": lambda z, d, A, eta, T: eta * d,
    "pg": lambda z, d, A, eta, T: pg_logit_change(z, A, eta, T),     # Theorem 1: Δz = η·π·A
    "npg": lambda z, d, A, eta, T: npg_logit_change(A, eta),         # Theorem 2: Δz = η·A
}


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("seed", [0, 1])
def test_prediction_error_is_second_order(step, temperature, seed):
    z, d, A = _policy(seed)
    make = STEPS[step]
    err_big, _ = _total_error(z, make(z, d, A, 0.04, temperature), temperature)
    err_half, _ = _total_error(z, make(z, d, A, 0.02, temperature), temperature)
    # O(η²): halving η quarters the error (a first-order mistake, e.g. a missing 1/T, would give ≈ 2)
    assert 3.5 < err_big / err_half < 4.5
    err_small, size = _total_error(z, make(z, d, A, 0.004, temperature), temperature)
    assert err_small / size < 0.01


def test_pg_and_npg_logit_changes():
    z = torch.tensor([[0.0, math.log(3.0)]])  # π = [¼, ¾]
    A = torch.tensor([[2.0, -1.0]])
    torch.testing.assert_close(pg_logit_change(z, A, 0.1), torch.tensor([[0.1 * 0.25 * 2.0, 0.1 * 0.75 * -1.0]]))
    torch.testing.assert_close(npg_logit_change(A, 0.1), torch.tensor([[0.2, -0.1]]))
    # temperature: π = softmax(z / 2) = softmax([0, ln √3]) = [1/(1+√3), √3/(1+√3)]
    p1 = 1.0 / (1.0 + math.sqrt(3.0))
    torch.testing.assert_close(pg_logit_change(z, A, 1.0, temperature=2.0),
                               torch.tensor([[p1 * 2.0, (1 - p1) * -1.0]]))


def test_prediction_hand_case():
    # π = [½, ½], log π = [ln ½, ln ½]: constant log π → Cov = 0 → no first-order change for any Δz
    z = torch.zeros(1, 2)
    assert predicted_entropy_change(z, torch.tensor([[0.3, -0.2]])).abs().item() < 1e-7
    # π = [¼, ¾], Δz = [0, 1]: Cov_π(log π, Δz) = E[logπ·Δz] − E[logπ]E[Δz]
    #   = ¾ ln ¾ − (¼ ln ¼ + ¾ ln ¾)·¾ = (3/16)(ln ¾ − ln ¼) = (3/16) ln 3;  ΔH ≈ −(3/16) ln 3
    z = torch.tensor([[0.0, math.log(3.0)]])
    pred = predicted_entropy_change(z, torch.tensor([[0.0, 1.0]]))
    assert pred.item() == pytest.approx(-(3.0 / 16.0) * math.log(3.0), rel=1e-5)


def test_shape_and_temperature_errors():
    with pytest.raises(ValueError, match="delta_logits"):
        predicted_entropy_change(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="temperature"):
        exact_entropy(torch.zeros(2, 3), temperature=0.0)


# ------------------------------------------------------------------ the paper's interpretation (signs)
# One state, logits making action 0 likely (π ≈ 0.84) and action 3 rare (π ≈ 0.02).
Z = torch.tensor([[3.0, 1.0, 0.5, -0.5]])


def _onehot(i, value):
    a = torch.zeros(1, 4)
    a[0, i] = value
    return a


@pytest.mark.parametrize("step", ["pg", "npg"])
@pytest.mark.parametrize("action, adv, sign", [
    (0, +1.0, -1),  # likely action, high advantage → entropy falls
    (3, -1.0, -1),  # rare action, negative advantage → entropy falls
    (3, +1.0, +1),  # rare action, high advantage → entropy rises
    (0, -1.0, +1),  # likely action, negative advantage → entropy rises
])
def test_sign_of_entropy_change(step, action, adv, sign):
    A = _onehot(action, adv)
    dz = pg_logit_change(Z, A, 0.05) if step == "pg" else npg_logit_change(A, 0.05)
    pred = float(predicted_entropy_change(Z, dz))
    exact = float(exact_entropy(Z + dz) - exact_entropy(Z))
    assert math.copysign(1, pred) == sign and math.copysign(1, exact) == sign
    assert abs(pred) > 1e-5


def test_entropy_change_from_hidden_matches_a_float64_reference():
    """The difference-based evaluation (float32 matmuls on h_a − h_b and W_a − W_b) agrees with the direct float64
    computation of H(z_a) − H(z_b), including a bias, to well below the size of the change itself."""
    g = torch.Generator().manual_seed(3)
    N, D, V = 40, 16, 300
    hb = torch.randn(N, D, generator=g)
    wb = torch.randn(V, D, generator=g) * 0.5
    bb = torch.randn(V, generator=g) * 0.1
    ha = hb + 1e-3 * torch.randn(N, D, generator=g)
    wa = wb + 1e-3 * torch.randn(V, D, generator=g)
    ba = bb + 1e-3 * torch.randn(V, generator=g)
    pred, act = entropy_change_from_hidden(hb, wb, ha, wa, 0.7, bb, ba, chunk_size=16)

    def ent(h, w, b):
        logp = torch.log_softmax((h.double() @ w.double().T + b.double()) / 0.7, -1)
        return -(logp.exp() * logp).sum(-1)

    exact = ent(ha, wa, ba) - ent(hb, wb, bb)
    assert float(exact.abs().mean()) > 1e-4  # a real change, not rounding
    torch.testing.assert_close(act.double(), exact, atol=2e-6, rtol=1e-3)
    # first order: the prediction is close to the exact change, relative to its size
    assert float((pred.double() - exact).abs().sum() / exact.abs().sum()) < 0.05

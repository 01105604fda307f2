"""The entropy–performance law: fit, standard errors, refusals, forecast, and fitting from a run directory."""

import math

import numpy as np
import pytest
from analysis_fixtures import make_run

from entrolab.analysis.law import fit_law, forecast, law_from_run
from entrolab.analysis.stats import pearson, rankdata, spearman


def _law(H, a, b):
    return -a * np.exp(H) + b


def test_fit_recovers_known_law_within_standard_errors():
    rng = np.random.default_rng(0)
    H = np.linspace(0.1, 1.6, 120)
    a, b, sigma = 0.12, 0.85, 0.01
    fit = fit_law(H, _law(H, a, b) + sigma * rng.standard_normal(H.size))
    assert abs(fit.a - a) < 3 * fit.a_se
    assert abs(fit.b - b) < 3 * fit.b_se
    assert abs(fit.ceiling - (b - a)) < 3 * fit.ceiling_se
    assert fit.r2 > 0.95 and fit.n == 120 and fit.residuals.shape == (120,)
    assert fit.rmse == pytest.approx(sigma, rel=0.2)


def test_standard_errors_are_calibrated():
    """Over many noisy replicates, the true a lies within ±1.96 se about 95 % of the time."""
    rng = np.random.default_rng(1)
    H = np.linspace(0.2, 2.0, 30)
    a, b = 0.3, 1.2
    hits_a = hits_b = 0
    n_rep = 400
    for _ in range(n_rep):
        fit = fit_law(H, _law(H, a, b) + 0.02 * rng.standard_normal(H.size))
        hits_a += abs(fit.a - a) <= 1.96 * fit.a_se
        hits_b += abs(fit.b - b) <= 1.96 * fit.b_se
    assert 0.90 <= hits_a / n_rep <= 0.99
    assert 0.90 <= hits_b / n_rep <= 0.99


def test_noise_free_fit_is_exact_and_matches_polyfit():
    H = np.array([0.3, 0.9, 1.4, 2.2, 0.05])
    R = _law(H, 0.07, 0.6)
    fit = fit_law(H, R)
    assert fit.a == pytest.approx(0.07, abs=1e-12) and fit.b == pytest.approx(0.6, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0) and np.abs(fit.residuals).max() < 1e-12
    assert fit.ceiling == pytest.approx(0.53, abs=1e-12)
    slope, intercept = np.polyfit(np.exp(H), R + np.array([0.01, -0.02, 0.0, 0.015, -0.005]), 1)
    fit2 = fit_law(H, R + np.array([0.01, -0.02, 0.0, 0.015, -0.005]))
    assert fit2.a == pytest.approx(-slope, rel=1e-9) and fit2.b == pytest.approx(intercept, rel=1e-9)
    np.testing.assert_allclose(fit.predict([0.0, 1.0]), [0.53, -0.07 * math.e + 0.6])


@pytest.mark.parametrize(
    "H, R, match",
    [
        ([0.1, 0.2], [0.5, 0.4], "at least 3"),
        ([], [], "at least 3"),
        ([0.1, float("nan"), 0.3], [0.5, 0.4, 0.3], "finite"),
        ([0.1, 0.2, 0.3], [0.5, float("inf"), 0.3], "finite"),
        ([0.7, 0.7, 0.7, 0.7], [0.5, 0.4, 0.3, 0.2], "constant"),
        ([0.1, 0.2, 0.3], [0.5, 0.4], "same length"),
        ([[0.1, 0.2, 0.3]], [[0.5, 0.4, 0.3]], "1-D"),
    ],
)
def test_fit_refuses_bad_input(H, R, match):
    with pytest.raises(ValueError, match=match):
        fit_law(H, R)


def test_constant_reward_gives_zero_slope_and_nan_r2():
    fit = fit_law([0.1, 0.5, 1.0], [0.4, 0.4, 0.4])
    assert fit.a == pytest.approx(0.0, abs=1e-12) and fit.b == pytest.approx(0.4)
    assert math.isnan(fit.r2)


def test_forecast_hand_checked_rmse():
    """Fit window exact on the law (a=0.1, b=0.9); the two held-out points sit +0.03 and −0.04 off it."""
    H = np.array([1.0, 0.5, 0.0, 0.2, 0.1])
    R = _law(H, 0.1, 0.9) + np.array([0.0, 0.0, 0.0, 0.03, -0.04])
    fc = forecast(H, R, fit_fraction=0.6)  # floor(0.6·5) = 3 points in the fit window
    assert fc.n_fit == 3
    assert fc.fit.a == pytest.approx(0.1) and fc.fit.b == pytest.approx(0.9)
    np.testing.assert_allclose(fc.predicted, _law(H[3:], 0.1, 0.9))
    assert fc.rmse == pytest.approx(math.sqrt((0.03 ** 2 + 0.04 ** 2) / 2))  # 0.035355...
    assert fc.final_error == pytest.approx(0.04)
    assert fc.final_signed_error == pytest.approx(0.04)  # predicted − actual, the actual is 0.04 below the law
    np.testing.assert_array_equal(fc.forecast_steps, [3.0, 4.0])
    d = fc.to_dict()
    assert d["n_forecast"] == 2 and d["rmse"] == pytest.approx(fc.rmse)


def test_forecast_window_size_follows_the_paper():
    H = np.linspace(1.5, 0.2, 240)
    R = _law(H, 0.1, 0.8)
    assert forecast(H, R).n_fit == 36  # 15 % of 240: the paper's first 36 steps
    assert forecast(H[:10], R[:10]).n_fit == 3  # never fewer than 3
    with pytest.raises(ValueError, match="more points"):
        forecast(H[:3], R[:3])
    with pytest.raises(ValueError, match="fit_fraction"):
        forecast(H, R, fit_fraction=1.5)


def test_forecast_on_synthetic_run_is_accurate(tmp_path):
    run = make_run(tmp_path / "r", steps=200, eval_every=2, noise=0.005, tau=60.0)
    law = law_from_run(run)
    fc = law.forecast()
    assert law.r_key == "eval/accuracy"
    assert fc.n_fit == int(0.15 * law.H.size)
    assert fc.rmse < 0.02 and fc.final_error < 0.03


def test_law_from_run_prefers_eval_accuracy_at_the_same_steps(tmp_path):
    import json

    run = make_run(tmp_path / "r", steps=40, eval_every=5, a=0.2, b=0.9, noise=0.002)
    law = law_from_run(run)
    assert law.r_key == "eval/accuracy" and law.note == ""
    recs = {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    expected_steps = [s for s, r in recs.items() if "eval/accuracy" in r]
    np.testing.assert_array_equal(law.steps, expected_steps)
    np.testing.assert_allclose(law.H, [recs[s]["entropy/mean"] for s in expected_steps])
    np.testing.assert_allclose(law.R, [recs[s]["eval/accuracy"] for s in expected_steps])
    assert law.fit.a == pytest.approx(0.2, abs=4 * law.fit.a_se + 1e-3)


def test_law_from_run_falls_back_to_training_accuracy(tmp_path):
    run = make_run(tmp_path / "r", steps=30, drop=("eval/",))
    law = law_from_run(run)
    assert law.r_key == "reward/accuracy" and law.H.size == 30
    assert "only 0 step" in law.note
    with pytest.raises(ValueError, match="fewer than 3 steps"):
        law_from_run(make_run(tmp_path / "r2", steps=30, drop=("eval/", "reward/")))


def test_stats_helpers():
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2.0, 3.5, 3.5, 1.0])
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    x = np.array([1.0, 2.0, 3.0, 5.0])
    y = np.array([2.0, 1.0, 4.0, 3.0])
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))

"""The entropy–performance law of Cui et al., "The Entropy Mechanism of RL for Reasoning LMs" (arXiv 2505.22617, §2).

    R = −a·exp(H) + b                                   (Eq. 6)

R is validation performance (accuracy), H the policy entropy (token mean over the sampled training batch, Eq. 5).
dR/dH = −a·e^H, so ``a`` is the rate at which entropy is converted into performance, and R(H = 0) = −a + b is the
predicted **ceiling** once entropy is exhausted.

Fitting. Given x = exp(H) the model R = −a·x + b is linear in (a, b), so the fit is an exact ordinary least-squares
solve (no iterative optimiser, no starting point). Standard errors are the usual OLS ones,
σ̂²·diag((XᵀX)⁻¹) with σ̂² = SSR / (n − 2).

Forecast (§2.4, Fig. 5). The paper fits the law on the first 15 % of training (the first 36 steps of Qwen2.5 runs)
and predicts the following 200 steps from their entropy alone: RMSE 0.9 % (math) and 1.2 % (code); the error at the
final step is 0.5 % (math) and 1.9 % (code). :func:`forecast` repeats that protocol on any (H, R) series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..ops.law import MIN_POINTS, LawFit, _as_1d, fit_law  # noqa: F401  (re-exported)
from .stats import rmse

# The paper's forecast protocol and its reported accuracy (2505.22617 §2.4), used in docs and reports.
PAPER_FIT_FRACTION = 0.15
PAPER_FORECAST_RMSE = {"math": 0.009, "code": 0.012}
PAPER_FORECAST_FINAL_ERROR = {"math": 0.005, "code": 0.019}

# The fewest (H, R) points a fit accepts: two parameters plus one degree of freedom for the standard errors.


@dataclass(frozen=True)
class Forecast:
    """The law fitted on the first points of a run, and its predictions for the rest (2505.22617 §2.4)."""

    fit: LawFit
    n_fit: int
    fit_fraction: float
    steps: np.ndarray = field(repr=False)  # (n,) all steps (indices if none were given)
    H: np.ndarray = field(repr=False)  # (n,)
    R: np.ndarray = field(repr=False)  # (n,) actual
    predicted: np.ndarray = field(repr=False)  # (n − n_fit,) predicted R for the held-out points

    @property
    def actual(self) -> np.ndarray:
        """Actual R of the held-out points."""
        return self.R[self.n_fit:]

    @property
    def forecast_steps(self) -> np.ndarray:
        return self.steps[self.n_fit:]

    @property
    def rmse(self) -> float:
        """RMSE of the predictions over the held-out points (the paper: 0.9 % math, 1.2 % code)."""
        return rmse(self.predicted, self.actual)

    @property
    def final_error(self) -> float:
        """|predicted − actual| at the last point (the paper: 0.5 % math, 1.9 % code)."""
        return float(abs(self.predicted[-1] - self.actual[-1]))

    @property
    def final_signed_error(self) -> float:
        """predicted − actual at the last point."""
        return float(self.predicted[-1] - self.actual[-1])

    def to_dict(self) -> dict[str, Any]:
        return {"fit": self.fit.to_dict(), "n_fit": self.n_fit, "n_forecast": int(self.predicted.size),
                "fit_fraction": self.fit_fraction, "rmse": self.rmse, "final_error": self.final_error,
                "final_signed_error": self.final_signed_error}


def forecast(H: Sequence[float], R: Sequence[float], fit_fraction: float = PAPER_FIT_FRACTION,
             steps: Optional[Sequence[float]] = None) -> Forecast:
    """Fit the law on the first ``fit_fraction`` of the points (at least 3) and predict R of the rest from their H.

    This is the protocol of 2505.22617 §2.4 / Fig. 5: fitted on the first 15 % of training (36 steps of Qwen2.5
    runs), the law predicted the next 200 steps with RMSE 0.9 % (math) / 1.2 % (code) and an error at the final step
    of 0.5 % (math) / 1.9 % (code). The fit window is ``max(3, floor(fit_fraction · n))`` points; at least one point
    must remain to forecast.
    """
    if not (0.0 < fit_fraction < 1.0):
        raise ValueError(f"fit_fraction must be in (0, 1), got {fit_fraction}")
    h, r = _as_1d("H", H), _as_1d("R", R)
    if h.size != r.size:
        raise ValueError(f"H and R must have the same length, got {h.size} and {r.size}")
    n_fit = max(MIN_POINTS, int(math.floor(fit_fraction * h.size + 1e-9)))
    if n_fit >= h.size:
        raise ValueError(
            f"forecast needs more points than the fit window: {h.size} points, fit window {n_fit} "
            f"(max({MIN_POINTS}, floor({fit_fraction} × {h.size}))); log more evaluation steps"
        )
    s = np.arange(h.size, dtype=np.float64) if steps is None else _as_1d("steps", steps)
    if s.size != h.size:
        raise ValueError(f"steps must have the same length as H, got {s.size} and {h.size}")
    fit = fit_law(h[:n_fit], r[:n_fit])
    rest = h[n_fit:]
    if not np.isfinite(rest).all() or not np.isfinite(r[n_fit:]).all():
        raise ValueError("H and R must be finite over the forecast window; drop non-finite points first")
    return Forecast(fit=fit, n_fit=n_fit, fit_fraction=fit_fraction, steps=s, H=h, R=r, predicted=fit.predict(rest))


# ---------------------------------------------------------------------------------------------------------------------
# From a run directory

ENTROPY_KEY = "entropy/mean"
R_KEYS = ("eval/accuracy", "reward/accuracy")


@dataclass(frozen=True)
class RunLaw:
    """The law fitted on a run: which metric served as R, and the (step, H, R) points it was fitted on."""

    fit: LawFit
    r_key: str
    steps: np.ndarray = field(repr=False)
    H: np.ndarray = field(repr=False)
    R: np.ndarray = field(repr=False)
    note: str = ""

    def forecast(self, fit_fraction: float = PAPER_FIT_FRACTION) -> Forecast:
        return forecast(self.H, self.R, fit_fraction=fit_fraction, steps=self.steps)


def law_points(run) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, str]:
    """``(r_key, steps, H, R, note)`` for a loaded :class:`~entrolab.analysis.run.Run`.

    R is ``eval/accuracy`` (validation accuracy, as in the paper) when at least 3 steps log it together with
    ``entropy/mean`` — H is the training-batch entropy logged at the same step — else the training-batch
    ``reward/accuracy``. Steps without both values are dropped.
    """
    note = ""
    for key in R_KEYS:
        steps, h, r = run.paired(ENTROPY_KEY, key)
        if steps.size >= MIN_POINTS:
            if key != R_KEYS[0]:
                n_eval = run.paired(ENTROPY_KEY, R_KEYS[0])[0].size
                note = (f"R is the training-batch {key}: only {n_eval} step(s) log both {R_KEYS[0]} and "
                        f"{ENTROPY_KEY}")
            return key, steps, h, r, note
    raise ValueError(f"the run logs fewer than {MIN_POINTS} steps with both {ENTROPY_KEY} and one of "
                     f"{', '.join(R_KEYS)}; the law cannot be fitted")


def law_from_run(run_dir) -> RunLaw:
    """Fit the law on a run directory (or a loaded ``Run``): R = eval/accuracy where logged, else reward/accuracy."""
    from .run import Run, load_run

    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    key, steps, h, r, note = law_points(run)
    return RunLaw(fit=fit_law(h, r), r_key=key, steps=steps, H=h, R=r, note=note)

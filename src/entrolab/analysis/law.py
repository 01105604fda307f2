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

from .stats import rmse

# The paper's forecast protocol and its reported accuracy (2505.22617 §2.4), used in docs and reports.
PAPER_FIT_FRACTION = 0.15
PAPER_FORECAST_RMSE = {"math": 0.009, "code": 0.012}
PAPER_FORECAST_FINAL_ERROR = {"math": 0.005, "code": 0.019}

# The fewest (H, R) points a fit accepts: two parameters plus one degree of freedom for the standard errors.
MIN_POINTS = 3


def _as_1d(name: str, v: Sequence[float]) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    return arr


def _validate(H: Sequence[float], R: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    h, r = _as_1d("H", H), _as_1d("R", R)
    if h.size != r.size:
        raise ValueError(f"H and R must have the same length, got {h.size} entropies and {r.size} rewards")
    if h.size < MIN_POINTS:
        raise ValueError(
            f"fitting R = -a*exp(H) + b needs at least {MIN_POINTS} (H, R) points (2 parameters + 1 degree of "
            f"freedom), got {h.size}"
        )
    bad = ~(np.isfinite(h) & np.isfinite(r))
    if bad.any():
        idx = np.flatnonzero(bad)[:5].tolist()
        raise ValueError(f"H and R must be finite; non-finite values at positions {idx} "
                         f"({int(bad.sum())} in all); drop those points first")
    if np.ptp(h) <= 1e-12 * max(1.0, float(np.abs(h).max())):
        raise ValueError(f"H is constant ({h[0]:.6g} at all {h.size} points): the law's slope a cannot be identified; "
                         "fit over a stretch of training where the entropy changes")
    return h, r


@dataclass(frozen=True)
class LawFit:
    """Least-squares fit of R = −a·exp(H) + b (2505.22617 Eq. 6)."""

    a: float
    b: float
    a_se: float
    b_se: float
    ceiling_se: float  # standard error of −a + b (includes the covariance of a and b)
    r2: float
    n: int
    residuals: np.ndarray = field(repr=False)

    @property
    def ceiling(self) -> float:
        """R(H = 0) = −a + b: the performance the law predicts once entropy is exhausted."""
        return -self.a + self.b

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))

    def predict(self, H: Sequence[float] | float) -> np.ndarray:
        """−a·exp(H) + b."""
        return -self.a * np.exp(np.asarray(H, dtype=np.float64)) + self.b

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "a_se": self.a_se, "b_se": self.b_se, "ceiling": self.ceiling,
                "ceiling_se": self.ceiling_se, "r2": self.r2, "n": self.n, "rmse": self.rmse}

    def describe(self) -> str:
        return (f"R = -{self.a:.4g}·exp(H) + {self.b:.4g}  (a ± {self.a_se:.2g}, b ± {self.b_se:.2g}; "
                f"R² = {self.r2:.3f}, n = {self.n}); ceiling -a+b = {self.ceiling:.4g}")


def fit_law(H: Sequence[float], R: Sequence[float]) -> LawFit:
    """Fit R = −a·exp(H) + b by exact linear least squares in x = exp(H) (2505.22617 Eq. 6).

    The paper fits this two-parameter curve to the (entropy, validation accuracy) pairs of a run, over 200+ points,
    and reads the ceiling R(H=0) = −a + b from it. Standard errors assume independent homoscedastic noise on R.
    ``ValueError`` for fewer than 3 points, non-finite values, or a constant H (then a is unidentifiable).
    R² is NaN when R itself is constant.
    """
    h, r = _validate(H, R)
    x = np.exp(h)
    X = np.stack([-x, np.ones_like(x)], axis=1)  # (n, 2): columns multiply a and b
    # Centre x for a well-conditioned solve; the solution is mapped back exactly.
    xm = x.mean()
    Xc = np.stack([-(x - xm), np.ones_like(x)], axis=1)
    coef_c, *_ = np.linalg.lstsq(Xc, r, rcond=None)
    a = float(coef_c[0])
    b = float(coef_c[1] + a * xm)  # −a(x − x̄) + c = −a·x + b with b = c + a·x̄
    pred = -a * x + b
    resid = r - pred
    n = h.size
    ssr = float(resid @ resid)
    sst = float(((r - r.mean()) ** 2).sum())
    r2 = 1.0 - ssr / sst if np.ptp(r) > 0 and sst > 0 else float("nan")
    dof = n - 2
    sigma2 = ssr / dof
    cov = sigma2 * np.linalg.inv(X.T @ X)
    a_se = float(math.sqrt(max(cov[0, 0], 0.0)))
    b_se = float(math.sqrt(max(cov[1, 1], 0.0)))
    # Var(−a + b) = Var a + Var b − 2 Cov(a, b).
    ceil_var = cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]
    return LawFit(a=a, b=b, a_se=a_se, b_se=b_se, ceiling_se=float(math.sqrt(max(ceil_var, 0.0))), r2=r2, n=n,
                  residuals=resid)


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

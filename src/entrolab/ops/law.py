"""The entropy–performance law R = −a·exp(H) + b of Cui et al. (arXiv 2505.22617, Eq. 6), fitted by exact least
squares: the math the trainer's live fit and the analysis reports share (``analysis/law.py`` adds forecasts and
run-level readings). R(H = 0) = −a + b is the predicted ceiling once entropy is exhausted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

__all__ = ["LawFit", "MIN_POINTS", "fit_law"]

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

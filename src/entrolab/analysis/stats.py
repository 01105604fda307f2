"""Small numpy statistics used by the analysis layer (no scipy): Pearson and Spearman correlation, ranks, RMSE."""

from __future__ import annotations

import numpy as np


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def rankdata(x) -> np.ndarray:
    """Ranks 1..n of ``x``, ties given their average rank (like ``scipy.stats.rankdata(method="average")``)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Boundaries of runs of equal values in the sorted array.
    new_run = np.concatenate(([True], xs[1:] != xs[:-1]))
    run_id = np.cumsum(new_run) - 1
    starts = np.flatnonzero(new_run)
    ends = np.concatenate((starts[1:], [x.size]))
    avg = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 .. end
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def pearson(x, y) -> float:
    """Pearson correlation Σ(x−x̄)(y−ȳ) / √(Σ(x−x̄)² Σ(y−ȳ)²); NaN when either side is constant or n < 2."""
    x, y = _pair(x, y)
    if x.size < 2:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation: the Pearson correlation of the (tie-averaged) ranks."""
    x, y = _pair(x, y)
    return pearson(rankdata(x), rankdata(y))


def rmse(pred, actual) -> float:
    """√(mean (pred − actual)²)."""
    p, a = _pair(pred, actual)
    if p.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((p - a) ** 2)))

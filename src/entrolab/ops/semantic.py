"""Semantic entropy (Kuhn, Gal, Farquhar, arXiv 2302.09664): the entropy of the distribution of a question's answers
over meaning clusters, SE = −Σ_C p(C) log p(C), in its likelihood and count forms. The clusters come from
``env/equivalence.py``; inference (votes, SEAT, uncertainty) and training (SENT's curriculum) both read it here.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["cluster_distribution", "semantic_entropy"]


def cluster_distribution(
    cluster_ids: Sequence[int],
    logprobs: Optional[Sequence[float]] = None,
    lengths: Optional[Sequence[int]] = None,
    *,
    form: str = "likelihood",
    length_normalize: bool = True,
) -> dict[int, float]:
    """p(C) per cluster: likelihood form p(C) = Σ_{s∈C} p̃(s) / Σ_s p̃(s) with p̃(s) = exp(logprob_s / |s|) (or
    exp(logprob_s) without length normalisation); count form p(C) = |C| / M. ``logprobs[i]`` is the summed token
    log-probability of response i and ``lengths[i]`` its token count."""
    ids = [int(c) for c in cluster_ids]
    if not ids:
        raise ValueError("semantic entropy needs at least one response")
    if form == "count":
        out: dict[int, float] = {}
        for c in ids:
            out[c] = out.get(c, 0.0) + 1.0 / len(ids)
        return out
    if form != "likelihood":
        raise ValueError(f"unknown semantic-entropy form {form!r}; valid forms: likelihood, count")
    if logprobs is None or len(logprobs) != len(ids):
        raise ValueError("the likelihood form needs one summed log-probability per response")
    if length_normalize:
        if lengths is None or len(lengths) != len(ids):
            raise ValueError("length_normalize needs one length per response")
        scores = [lp / max(int(n), 1) for lp, n in zip(logprobs, lengths)]
    else:
        scores = [float(lp) for lp in logprobs]
    top = max(scores)
    w = [math.exp(s - top) for s in scores]  # p̃(s) up to a common factor, which the normalisation removes
    total = sum(w)
    out = {}
    for c, wi in zip(ids, w):
        out[c] = out.get(c, 0.0) + wi / total
    return out


def semantic_entropy(
    cluster_ids: Sequence[int],
    logprobs: Optional[Sequence[float]] = None,
    lengths: Optional[Sequence[int]] = None,
    *,
    form: str = "likelihood",
    length_normalize: bool = True,
    base: Optional[float] = None,
) -> float:
    """SE = −Σ_C p(C) log p(C) (arXiv 2302.09664) in nats (``base=2``: bits); see :func:`cluster_distribution`."""
    dist = cluster_distribution(cluster_ids, logprobs, lengths, form=form, length_normalize=length_normalize)
    se = -sum(p * math.log(p) for p in dist.values() if p > 0)
    se = se if se > 0 else 0.0
    return se if base is None else se / math.log(base)

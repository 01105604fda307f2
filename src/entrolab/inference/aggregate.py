"""Answer aggregation over several sampled responses, and semantic entropy.

Answers are strings (``None`` = the response gave no answer). They are grouped into clusters of equivalent answers by
:func:`entrolab.env.equivalence.cluster_answers` (``equivalence="math"`` by default; ``"exact"``, ``"embedding"``, or a
judge callable), unless the caller passes ``cluster_ids`` directly. Votes ignore missing answers; ties go to the
cluster that appeared first.

- Majority vote (self-consistency):       â = argmax_C Σ_i 𝟙[a_i ∈ C]
- Inverse-entropy weighted vote (Sharma & Chopra, "The Sequential Edge", arXiv 2511.02309):
                                           â = argmax_C Σ_i w_i 𝟙[a_i ∈ C],  w_i = 1 / (H̄_i + ε)
  with H̄_i the mean token entropy of response i (the paper's exact H_i and ε were not recovered; this is the card's
  reading, evidence `[secondary]`).
- Min-entropy path selection (STaR-style rationale filtering; closest published match ST-CoT, arXiv 2412.10827):
                                           k* = argmin_k H̄_k, optionally among responses carrying the majority answer.
- Semantic entropy (Kuhn, Gal, Farquhar, arXiv 2302.09664):  SE = −Σ_C p(C) log p(C), with either
  * likelihood form: p(C) = Σ_{s∈C} p̃(s) / Σ_s p̃(s),  p̃(s) = exp((1/|s|) Σ_t log π(s_t | ·))  (length-normalised
    sequence probability; ``length_normalize=False`` uses exp(Σ_t log π)), or
  * count form (discrete SE, no log-probs):  p(C) = |C| / M.
- SEAT (Semantic-Entropy Adaptive Termination, arXiv 2507.06829): run rounds of N parallel responses and stop at the
  first round whose semantic entropy falls below a threshold (:func:`seat_loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

from ..env.equivalence import Judge, cluster_answers
from ..ops.semantic import cluster_distribution, semantic_entropy  # noqa: F401  (re-exported)

__all__ = [
    "SEATRound",
    "Vote",
    "cluster_distribution",
    "inverse_entropy_vote",
    "majority_vote",
    "min_entropy_path",
    "seat_loop",
    "semantic_entropy",
    "weighted_vote",
]

Equivalence = Union[str, Judge]


def _clusters(answers: Sequence[Optional[str]], cluster_ids: Optional[Sequence[int]],
              equivalence: Equivalence) -> list[int]:
    if cluster_ids is not None:
        if len(cluster_ids) != len(answers):
            raise ValueError(f"cluster_ids has {len(cluster_ids)} entries for {len(answers)} answers")
        return [int(c) for c in cluster_ids]
    if callable(equivalence):
        return cluster_answers(answers, mode="judge", judge=equivalence)
    return cluster_answers(answers, mode=equivalence)


@dataclass
class Vote:
    """Outcome of a vote: the winning answer (first member of the winning cluster; None if no response answered),
    its cluster id and index, each cluster's total weight, and the winner's share of the total weight."""

    answer: Optional[str]
    cluster: Optional[int]
    index: Optional[int]
    scores: dict[int, float] = field(default_factory=dict)
    share: float = 0.0
    cluster_ids: list[int] = field(default_factory=list)


def weighted_vote(
    answers: Sequence[Optional[str]],
    weights: Sequence[float],
    *,
    cluster_ids: Optional[Sequence[int]] = None,
    equivalence: Equivalence = "math",
) -> Vote:
    """â = argmax_C Σ_i w_i 𝟙[a_i ∈ C] over answered responses (ties: the cluster that appeared first)."""
    if len(weights) != len(answers):
        raise ValueError(f"{len(weights)} weights for {len(answers)} answers")
    if any(not math.isfinite(w) or w < 0 for w in weights):
        raise ValueError(f"weights must be finite and ≥ 0, got {list(weights)}")
    ids = _clusters(answers, cluster_ids, equivalence)
    scores: dict[int, float] = {}
    first: dict[int, int] = {}
    for i, (a, w, c) in enumerate(zip(answers, weights, ids)):
        if a is None or not str(a).strip():
            continue
        scores[c] = scores.get(c, 0.0) + float(w)
        first.setdefault(c, i)
    if not scores:
        return Vote(answer=None, cluster=None, index=None, scores={}, share=0.0, cluster_ids=ids)
    best = max(scores, key=lambda c: (scores[c], -first[c]))
    total = sum(scores.values())
    share = scores[best] / total if total > 0 else 0.0
    return Vote(answer=answers[first[best]], cluster=best, index=first[best], scores=scores, share=share,
                cluster_ids=ids)


def majority_vote(answers: Sequence[Optional[str]], *, cluster_ids: Optional[Sequence[int]] = None,
                  equivalence: Equivalence = "math") -> Vote:
    """Self-consistency: the most frequent answer cluster."""
    return weighted_vote(answers, [1.0] * len(answers), cluster_ids=cluster_ids, equivalence=equivalence)


def inverse_entropy_vote(
    answers: Sequence[Optional[str]],
    entropies: Sequence[float],
    *,
    eps: float = 1e-6,
    cluster_ids: Optional[Sequence[int]] = None,
    equivalence: Equivalence = "math",
) -> Vote:
    """Inverse-entropy weighted vote (arXiv 2511.02309): w_i = 1 / (H̄_i + ε), H̄_i the mean token entropy of
    response i. Responses with NaN entropy (no tokens) get weight 0."""
    if len(entropies) != len(answers):
        raise ValueError(f"{len(entropies)} entropies for {len(answers)} answers")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    weights = [0.0 if not math.isfinite(h) else 1.0 / (max(h, 0.0) + eps) for h in entropies]
    return weighted_vote(answers, weights, cluster_ids=cluster_ids, equivalence=equivalence)


def min_entropy_path(
    entropies: Sequence[float],
    answers: Optional[Sequence[Optional[str]]] = None,
    *,
    restrict_to_majority: bool = False,
    cluster_ids: Optional[Sequence[int]] = None,
    equivalence: Equivalence = "math",
) -> int:
    """k* = argmin_k H̄_k (STaR-style min-entropy path selection; ST-CoT, arXiv 2412.10827 is the closest published
    match). With ``restrict_to_majority`` the argmin runs only over responses whose answer is in the majority
    cluster. Ties go to the earliest response; NaN entropies are never chosen unless all are NaN."""
    if not entropies:
        raise ValueError("min_entropy_path needs at least one response")
    candidates = list(range(len(entropies)))
    if restrict_to_majority:
        if answers is None:
            raise ValueError("restrict_to_majority needs answers")
        vote = majority_vote(answers, cluster_ids=cluster_ids, equivalence=equivalence)
        if vote.cluster is not None:
            candidates = [i for i in candidates if vote.cluster_ids[i] == vote.cluster and answers[i] is not None]
    finite = [i for i in candidates if math.isfinite(entropies[i])]
    pool = finite or candidates
    return min(pool, key=lambda i: (entropies[i] if math.isfinite(entropies[i]) else math.inf, i))


@dataclass
class SEATRound:
    """One SEAT round: its answers, their clusters and semantic entropy (NaN if fewer than 2 answered)."""

    round: int
    answers: list[Optional[str]]
    cluster_ids: list[int]
    entropy: float


def seat_loop(
    sample_round: Callable[[int, list[SEATRound]], Sequence[Optional[str]]],
    *,
    threshold: float,
    max_rounds: int,
    equivalence: Equivalence = "math",
    min_answers: int = 2,
) -> list[SEATRound]:
    """SEAT (arXiv 2507.06829): for r = 0, 1, ...: answers_r = sample_round(r, history); SE_r = count-form semantic
    entropy over the answered responses of round r; stop at the first r with SE_r < ``threshold`` (rounds with fewer
    than ``min_answers`` answers never stop), or after ``max_rounds``. Returns the rounds run."""
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be ≥ 1, got {max_rounds}")
    history: list[SEATRound] = []
    for r in range(max_rounds):
        answers = list(sample_round(r, history))
        ids = _clusters(answers, None, equivalence)
        answered = [c for a, c in zip(answers, ids) if a is not None and str(a).strip()]
        se = semantic_entropy(answered, form="count") if len(answered) >= max(min_answers, 1) else float("nan")
        history.append(SEATRound(round=r, answers=answers, cluster_ids=ids, entropy=se))
        if math.isfinite(se) and se < threshold:
            break
    return history

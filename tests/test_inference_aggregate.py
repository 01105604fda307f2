"""Aggregation on hand-made answer sets: votes, min-entropy path, semantic entropy in both forms, the SEAT loop."""

from __future__ import annotations

import math

import pytest

from entrolab.inference.aggregate import (
    cluster_distribution,
    inverse_entropy_vote,
    majority_vote,
    min_entropy_path,
    seat_loop,
    semantic_entropy,
    weighted_vote,
)


def test_majority_vote_clusters_equivalent_math_answers():
    answers = ["1/2", "0.5", "3", None, "\\frac{1}{2}", "3", "3"]
    v = majority_vote(answers)
    # clusters: {1/2, 0.5, \frac12} (3 votes) vs {3} (3 votes): tie → the cluster seen first
    assert v.answer == "1/2" and v.index == 0 and v.cluster_ids == [0, 0, 1, 2, 0, 1, 1]
    assert v.scores == {0: 3.0, 1: 3.0} and v.share == pytest.approx(0.5)
    v = majority_vote(["3", "1/2", "0.5", "\\frac{1}{2}", "3"])
    assert v.answer == "1/2" and v.share == pytest.approx(3 / 5)
    assert majority_vote([None, None]).answer is None
    assert majority_vote(["a", "b", "b"], equivalence="exact").answer == "b"


def test_weighted_and_inverse_entropy_votes_by_hand():
    answers = ["A", "B", "B", "C"]
    ents = [0.1, 0.5, 0.5, 2.0]
    # weights 1/(H + ε): A 10, B 2 + 2 = 4, C 0.5 → A wins although B is the majority
    v = inverse_entropy_vote(answers, ents, eps=1e-9, equivalence="exact")
    assert v.answer == "A"
    assert v.scores[0] == pytest.approx(10.0, rel=1e-6) and v.scores[1] == pytest.approx(4.0, rel=1e-6)
    assert v.share == pytest.approx(10 / 14.5, rel=1e-6)
    assert majority_vote(answers, equivalence="exact").answer == "B"
    v = inverse_entropy_vote(answers, [0.1, 0.05, 0.05, 2.0], eps=1e-9, equivalence="exact")
    assert v.answer == "B"  # 20 + 20 > 10
    # NaN entropy (empty response) carries no weight
    assert inverse_entropy_vote(["A", "B"], [float("nan"), 1.0], equivalence="exact").answer == "B"
    w = weighted_vote(["x", "y", "x"], [1.0, 3.0, 1.0], equivalence="exact")
    assert w.answer == "y" and w.scores == {0: 2.0, 1: 3.0}
    with pytest.raises(ValueError):
        weighted_vote(["x"], [-1.0], equivalence="exact")
    with pytest.raises(ValueError):
        inverse_entropy_vote(["x", "y"], [1.0], equivalence="exact")


def test_given_cluster_ids_and_judge_callable():
    v = majority_vote(["p", "q", "r"], cluster_ids=[0, 1, 1])
    assert v.answer == "q"
    same_len = lambda a, b: len(a) == len(b)  # noqa: E731
    v = majority_vote(["aa", "b", "cc", "dd"], equivalence=same_len)
    assert v.answer == "aa" and v.cluster_ids == [0, 1, 0, 0]


def test_min_entropy_path():
    ents = [0.9, 0.2, 0.4, float("nan"), 0.2]
    assert min_entropy_path(ents) == 1  # ties → earliest
    answers = ["x", "y", "x", "x", "y"]
    # majority is 'x' (3 of 5): among its responses (0, 2, 3) the lowest finite entropy is response 2
    assert min_entropy_path(ents, answers, restrict_to_majority=True, equivalence="exact") == 2
    assert min_entropy_path([float("nan")]) == 0
    with pytest.raises(ValueError):
        min_entropy_path([])


def test_semantic_entropy_count_form_by_hand():
    ids = [0, 0, 1, 2]
    # p = (1/2, 1/4, 1/4): SE = 1/2 ln 2 + 2 · 1/4 ln 4 = 1.5 ln 2
    assert semantic_entropy(ids, form="count") == pytest.approx(1.5 * math.log(2))
    assert semantic_entropy(ids, form="count", base=2) == pytest.approx(1.5)
    assert semantic_entropy([3, 3, 3], form="count") == 0.0
    assert cluster_distribution(ids, form="count") == {0: 0.5, 1: 0.25, 2: 0.25}


def test_semantic_entropy_likelihood_form_by_hand():
    ids = [0, 0, 1]
    logprobs = [-2.0, -4.0, -2.0]
    lengths = [2, 2, 1]
    # length-normalised p̃ = e^{-1}, e^{-2}, e^{-2};  p(C0) = (e^-1 + e^-2) / (e^-1 + 2 e^-2)
    a, b = math.exp(-1), math.exp(-2)
    p0 = (a + b) / (a + 2 * b)
    p1 = 1 - p0
    expected = -(p0 * math.log(p0) + p1 * math.log(p1))
    assert semantic_entropy(ids, logprobs, lengths) == pytest.approx(expected)
    dist = cluster_distribution(ids, logprobs, lengths)
    assert dist[0] == pytest.approx(p0) and dist[1] == pytest.approx(p1)
    # without length normalisation p̃ = e^-2, e^-4, e^-2 → p(C0) = (e^-2 + e^-4) / (2 e^-2 + e^-4)
    c, d = math.exp(-2), math.exp(-4)
    q0 = (c + d) / (2 * c + d)
    assert semantic_entropy(ids, logprobs, length_normalize=False) == pytest.approx(
        -(q0 * math.log(q0) + (1 - q0) * math.log(1 - q0)))
    # the two forms differ on the same answers: count form gives (2/3, 1/3)
    assert semantic_entropy(ids, form="count") == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    # huge negative log-probs stay finite (normalisation in log space)
    assert math.isfinite(semantic_entropy([0, 1], [-5000.0, -5001.0], [1, 1]))
    with pytest.raises(ValueError):
        semantic_entropy(ids, logprobs)  # lengths missing
    with pytest.raises(ValueError):
        semantic_entropy(ids, form="bogus")


def test_seat_loop_stops_below_threshold():
    rounds = [["1", "2", "3", "4"], ["1", "1", "2", "3"], ["1", "1", "1", "2"], ["1", "1", "1", "1"]]
    calls = []

    def sample(r, history):
        calls.append((r, len(history)))
        return rounds[r]

    hist = seat_loop(sample, threshold=0.6, max_rounds=4, equivalence="exact")
    # SE: ln 4 = 1.386, 1.040, 0.562 < 0.6 → stops after the third round
    assert [h.round for h in hist] == [0, 1, 2] and calls == [(0, 0), (1, 1), (2, 2)]
    assert hist[0].entropy == pytest.approx(math.log(4))
    assert hist[1].entropy == pytest.approx(-(0.5 * math.log(0.5) + 0.5 * math.log(0.25)))
    assert hist[2].entropy == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert len(seat_loop(sample, threshold=0.5, max_rounds=2, equivalence="exact")) == 2
    # rounds with fewer than two answers never stop the loop
    hist = seat_loop(lambda r, h: [None, "1", None], threshold=0.6, max_rounds=3, equivalence="exact")
    assert len(hist) == 3 and all(math.isnan(h.entropy) for h in hist)

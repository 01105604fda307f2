"""Uncertainty measures on hand-computed cases, AUROC / PRR / bootstrap against direct computations, the self-certainty
the decoder records, and the uncertainty output of ``entrolab infer`` / ``entrolab evaluate``."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from entrolab.errors import ConfigError
from entrolab.generation.decoder import Trace, generate
from entrolab.inference.base import StrategyResult
from entrolab.inference.uncertainty import (MEASURES, Evidence, auroc, bootstrap_ci, build_measures, measure_names,
                                            measure_values, prediction_rejection_area, prr, rejection_curve,
                                            score_measures, uncertainty_block)
from inference_fakes import CharTokenizer, ScriptedLM, after_sep, from_probs, peaked

ROOT = Path(__file__).resolve().parents[1]


def _trace(tid, entropies, logprobs, certainties=None, forced=None):
    n = len(entropies)
    return Trace(id=tid, group=0, prompt_ids=[0], token_ids=list(range(n)), entropies=list(entropies),
                 varentropies=[0.0] * n, logprobs=list(logprobs),
                 self_certainties=list(certainties if certainties is not None else [0.0] * n),
                 forced=list(forced if forced is not None else [False] * n))


def _result(answer, samples, answers, chosen=0):
    return StrategyResult("q", answer, "", sum(t.num_tokens for t in samples), list(samples), samples[chosen], {},
                          samples=list(samples), sample_answers=list(answers))


# --- each measure on a hand-computed case -----------------------------------------------------------------------------


def test_response_measures_by_hand():
    # four tokens, the last forced (left out unless include_forced)
    t = _trace(0, [0.5, 1.0, 1.5, 9.0], [-1.0, -1.0, -1.0, -1.0], certainties=[2.0, 4.0, 6.0, 100.0],
               forced=[False, False, False, True])
    ev = Evidence(answer="1", chosen=t, samples=[t], answers=["1"])
    values, missing = measure_values(ev)
    assert values["mean_token_entropy"] == pytest.approx((0.5 + 1.0 + 1.5) / 3)
    assert values["max_token_entropy"] == 1.5
    assert values["trace_length"] == 4.0  # every generated token, forced ones included: the cost of the answer
    assert values["self_certainty"] == pytest.approx(-(2.0 + 4.0 + 6.0) / 3)  # U = −C̄
    assert MEASURES.build("mean_token_entropy", {"include_forced": True})(ev) == pytest.approx(12.0 / 4)
    assert MEASURES.build("max_token_entropy", {"include_forced": True})(ev) == 9.0
    assert MEASURES.build("self_certainty", {"include_forced": True})(ev) == pytest.approx(-112.0 / 4)
    # one response: the answer-distribution measures say why they are missing
    assert set(missing) == {"semantic_entropy", "semantic_entropy_count", "num_clusters", "inverse_entropy_confidence",
                            "disagreement"}
    assert all("needs ≥ 2 sampled answers" in why for why in missing.values())


def _three_samples():
    """Answers "1", "1.0", "2"; mean log-probs −1, −2, −0.5; mean entropies 0.5, 1.0, 0.25."""
    a = _trace(0, [0.5, 0.5], [-1.0, -1.0])
    b = _trace(1, [1.0, 1.0, 1.0], [-2.0, -2.0, -2.0])
    c = _trace(2, [0.25], [-0.5])
    return [a, b, c], ["1", "1.0", "2"]


def test_sample_measures_by_hand():
    samples, answers = _three_samples()
    ev = Evidence.from_result(_result("1", samples, answers), clustering="math")  # "1" ≡ "1.0"
    assert ev.cluster_ids == [0, 0, 1]
    values, missing = measure_values(ev)
    assert not missing
    # likelihood form: p̃ = e^−1, e^−2, e^−0.5 → p(C0) = (e^−1 + e^−2) / Z, p(C1) = e^−0.5 / Z
    z = math.exp(-1) + math.exp(-2) + math.exp(-0.5)
    p0, p1 = (math.exp(-1) + math.exp(-2)) / z, math.exp(-0.5) / z
    assert values["semantic_entropy"] == pytest.approx(-(p0 * math.log(p0) + p1 * math.log(p1)))
    assert values["semantic_entropy_count"] == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)))
    assert values["num_clusters"] == 2.0
    # inverse-entropy weights 1/0.5, 1/1, 1/0.25 = 2, 1, 4: clusters 3 vs 4 → the winner "2" holds 4/7
    assert values["inverse_entropy_confidence"] == pytest.approx(1 - 4 / 7, abs=1e-5)
    assert values["disagreement"] == pytest.approx(1 - 2 / 3)  # the answer "1" is in the 2-sample cluster
    # without length normalisation p̃ = exp(Σ log π): e^−2, e^−6, e^−0.5
    z2 = math.exp(-2) + math.exp(-6) + math.exp(-0.5)
    q0, q1 = (math.exp(-2) + math.exp(-6)) / z2, math.exp(-0.5) / z2
    assert MEASURES.build("semantic_entropy", {"length_normalize": False})(ev) == pytest.approx(
        -(q0 * math.log(q0) + q1 * math.log(q1)))
    # exact clustering keeps "1" and "1.0" apart: three singletons
    ex = Evidence.from_result(_result("1", samples, answers), clustering="exact")
    assert ex.cluster_ids == [0, 1, 2]
    vals, _ = measure_values(ex)
    assert vals["num_clusters"] == 3.0 and vals["semantic_entropy_count"] == pytest.approx(math.log(3))
    assert vals["disagreement"] == pytest.approx(2 / 3)
    # a judge callable clusters too (here: same first character)
    ju = Evidence.from_result(_result("1", samples, answers), clustering=lambda x, y: x[0] == y[0])
    assert ju.cluster_ids == [0, 0, 1]


def test_missing_answers_form_one_cluster_and_no_answer_is_maximal_disagreement():
    samples, _ = _three_samples()
    ev = Evidence.from_result(_result(None, samples, [None, None, "7"]), clustering="math")
    vals, _ = measure_values(ev)
    assert ev.cluster_ids == [0, 0, 1] and vals["num_clusters"] == 2.0
    assert vals["disagreement"] == 1.0  # no answer given
    ev = Evidence.from_result(_result("7", samples, [None, None, "7"]), clustering="math")
    vals, _ = measure_values(ev)
    assert vals["disagreement"] == pytest.approx(2 / 3)
    assert ev.winner_share(answered_only=True) == 1.0
    assert vals["inverse_entropy_confidence"] == pytest.approx(0.0)  # the only answered cluster holds all weight
    with pytest.raises(ConfigError, match="not an equivalence mode"):
        Evidence.from_result(_result("7", samples, ["1", "2", "7"]), clustering="fuzzy")


def test_registry_is_the_project_registry_and_every_measure_documents_formula_and_paper():
    from entrolab.registry import Registry

    assert isinstance(MEASURES, Registry)
    assert measure_names() == ["max_token_entropy", "mean_token_entropy", "self_certainty", "trace_length",
                               "disagreement", "inverse_entropy_confidence", "num_clusters", "semantic_entropy",
                               "semantic_entropy_count"]
    for name in measure_names():
        cls = MEASURES.get(name)
        doc = cls.__doc__ or ""
        assert cls.name == name and re.fullmatch(r"\d{4}\.\d{4,5}", cls.arxiv), name
        assert f"arXiv {cls.arxiv}" in doc and "=" in doc, name  # the paper and the formula
        assert all(MEASURES.docs(name).values()), name  # every parameter documented
    with pytest.raises(ConfigError, match="already registered"):
        MEASURES.add("trace_length", MEASURES.get("trace_length"))
    with pytest.raises(ConfigError, match="parameters are"):
        MEASURES.build("semantic_entropy", {"temperature": 1.0})
    with pytest.raises(ConfigError, match="InverseEntropyConfidence.eps"):
        MEASURES.build("inverse_entropy_confidence", {"eps": 0.0})
    assert [m.name for m in build_measures(["num_clusters"])] == ["num_clusters"]


def test_a_new_measure_is_one_component_and_one_registry_line():
    from dataclasses import dataclass

    from entrolab.inference.uncertainty import Measure

    @dataclass
    class FirstEntropy(Measure):
        """U = H_1 (test only, arXiv 0000.00000)."""

        def __call__(self, ev):
            return ev.chosen.entropies[0]

    MEASURES.add("first_entropy", FirstEntropy)
    try:
        t = _trace(0, [0.7, 0.1], [-1.0, -1.0])
        vals, _ = measure_values(Evidence(answer="1", chosen=t, samples=[t], answers=["1"]))
        assert vals["first_entropy"] == 0.7
    finally:
        MEASURES.remove("first_entropy")


# --- the decoder records self-certainty -------------------------------------------------------------------------------


def test_decoder_records_self_certainty_kl_uniform_to_pi():
    tok = CharTokenizer()
    V = len(tok)
    sep, b = tok.tok("<sep>"), tok.tok("b")
    margin = 3.0

    def script(hist):
        g = after_sep(hist, sep)
        if not g:
            return torch.zeros(V)  # uniform over the whole vocabulary: KL(U ‖ π) = 0
        if len(g) == 1:
            z = torch.zeros(V)
            z[b] = margin  # one logit raised by `margin`
            return z
        return peaked(V, tok.eos_token_id)

    model = ScriptedLM(script, V, tok.eos_token_id)
    for temp in (1.0, 0.5):
        t = generate(model, tok, [tok.encode("q<sep>")], max_new_tokens=5, greedy=True, temperature=temp).traces[0]
        assert t.token_ids[1] == b and len(t.self_certainties) == t.num_tokens == 3
        assert t.self_certainties[0] == pytest.approx(0.0, abs=1e-5)
        # π = softmax(z/T) with one logit at m = margin/T: (1/V) Σ log π = m/V − log(e^m + V − 1)
        m = margin / temp
        expected = -math.log(V) - m / V + math.log(math.exp(m) + V - 1)
        assert t.self_certainties[1] == pytest.approx(expected, rel=1e-5)
        assert t.mean_self_certainty() == pytest.approx(sum(t.self_certainties) / 3)


# --- AUROC, PRR, rejection curve, bootstrap against direct computations -----------------------------------------------


def _direct_auroc(u, c):
    wrong = [x for x, ok in zip(u, c) if not ok]
    right = [x for x, ok in zip(u, c) if ok]
    return sum(1.0 if w > r else 0.5 if w == r else 0.0 for w in wrong for r in right) / (len(wrong) * len(right))


def _direct_pra(u, q):
    """(1/n) Σ_k mean quality of the k least uncertain (u without ties)."""
    order = sorted(range(len(u)), key=lambda i: u[i])
    return sum(sum(q[i] for i in order[:k]) / k for k in range(1, len(u) + 1)) / len(u)


def _direct_prr(u, c):
    q = [float(x) for x in c]
    n, cnt = len(q), sum(q)
    oracle = sum(min(k, cnt) / k for k in range(1, n + 1)) / n
    rand = cnt / n
    return (_direct_pra(u, q) - rand) / (oracle - rand)


def _lm_polygraph_pra(estimator, target):
    """LM-Polygraph's PredictionRejectionArea (max_rejection = 1), as its definition reads, for untied estimators."""
    ue = np.array(estimator)
    num_obs = len(ue)
    sorted_metrics = np.array(target, dtype=float)[np.argsort(ue)]
    cumsum = np.cumsum(sorted_metrics)[-num_obs:]
    scores = (cumsum / np.arange(1, num_obs + 1))[::-1]
    return np.sum(scores) / num_obs


def test_auroc_and_prr_by_hand():
    assert auroc([0.1, 0.4, 0.35, 0.8], [1, 0, 1, 0]) == 1.0
    assert prr([0.1, 0.4, 0.35, 0.8], [1, 0, 1, 0]) == pytest.approx(1.0)  # the oracle ranking
    # reversed: Q = 0, 0, 1/3, 1/2 → PRA 5/24; random 1/2; oracle (1 + 1 + 2/3 + 1/2)/4 = 19/24 → PRR = −1
    assert prr([0.9, 0.4, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx((5 / 24 - 1 / 2) / (19 / 24 - 1 / 2))
    assert prr([0.9, 0.4, 0.5, 0.1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    assert auroc([0.9, 0.4, 0.5, 0.1], [1, 0, 1, 0]) == 0.0
    # ties: u = 1, 1, 2 with q = 1, 0, 1 → the tied pair retained as its mean 0.5: Q = .5, .5, 2/3
    assert prediction_rejection_area([1, 1, 2], [1, 0, 1]) == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    # … the average over both tie-breaks
    both = (_direct_pra([1, 1.1, 2], [1, 0, 1]) + _direct_pra([1.1, 1, 2], [1, 0, 1])) / 2
    assert prediction_rejection_area([1, 1, 2], [1, 0, 1]) == pytest.approx(both)
    assert prr([1, 1, 2], [1, 0, 1]) == pytest.approx(((0.5 + 0.5 + 2 / 3) / 3 - 2 / 3) / (8 / 9 - 2 / 3))
    assert auroc([1, 1, 2], [1, 0, 1]) == 0.25  # the wrong one ties one right (½) and loses to the other
    for c in ([1, 1, 1], [0, 0, 0]):
        assert math.isnan(prr([1, 2, 3], c)) and math.isnan(auroc([1, 2, 3], c))


def _fake_set(n=40, seed=3):
    rng = np.random.default_rng(seed)
    correct = (rng.random(n) < 0.4).astype(int)
    u = rng.normal(size=n) - 0.8 * correct  # wrong answers somewhat more uncertain
    return u.tolist(), correct.tolist()


def test_auroc_and_prr_match_direct_computation_on_a_fixed_fake_result_set():
    u, c = _fake_set()
    assert 0 < sum(c) < len(c)
    assert auroc(u, c) == pytest.approx(_direct_auroc(u, c))
    assert prr(u, c) == pytest.approx(_direct_prr(u, c))
    assert prediction_rejection_area(u, c) == pytest.approx(_lm_polygraph_pra(u, c))
    # PRA(random) = mean quality: the expectation LM-Polygraph estimates by averaging random permutations
    rng = np.random.default_rng(0)
    mc = np.mean([_lm_polygraph_pra(rng.permutation(len(u)), c) for _ in range(4000)])
    assert mc == pytest.approx(np.mean(c), abs=0.01)
    oracle = _lm_polygraph_pra(-np.array(c, dtype=float) + 1e-9 * np.arange(len(c)), c)
    lmp_prr = (_lm_polygraph_pra(u, c) - np.mean(c)) / (oracle - np.mean(c))
    assert prr(u, c) == pytest.approx(lmp_prr)
    # discretising u into ties: still the average over tie-breaks (checked by brute force on a small set)
    import itertools

    uu, cc = [0, 0, 1, 1, 1, 2], [1, 0, 1, 1, 0, 0]
    pras = [_direct_pra([x + 1e-6 * p[i] for i, x in enumerate(uu)], cc) for p in itertools.permutations(range(6))]
    assert prediction_rejection_area(uu, cc) == pytest.approx(sum(pras) / len(pras))


def test_rejection_curve():
    u, c = _fake_set(10, seed=5)
    curve = rejection_curve(u, c)
    assert curve[0] == (0.0, pytest.approx(sum(c) / 10)) and curve[-1][0] == pytest.approx(0.9)
    order = sorted(range(10), key=lambda i: u[i])
    for r, acc in curve:
        k = round(10 * (1 - r))
        assert acc == pytest.approx(sum(c[i] for i in order[:k]) / k)
    # PRA is the mean height of the curve
    assert np.mean([a for _, a in curve]) == pytest.approx(prediction_rejection_area(u, c))


def test_bootstrap_ci_is_the_percentile_interval_of_seeded_resamples():
    u, c = _fake_set(30, seed=1)
    lo, hi, used = bootstrap_ci(auroc, u, c, resamples=500, seed=7)
    rng = np.random.default_rng(7)  # direct: the same draws, by hand
    vals = []
    for _ in range(500):
        idx = rng.integers(0, 30, 30)
        v = _direct_auroc([u[i] for i in idx], [c[i] for i in idx]) if 0 < sum(c[i] for i in idx) < 30 else None
        if v is not None:
            vals.append(v)
    assert used == len(vals)
    assert (lo, hi) == pytest.approx(tuple(np.percentile(vals, [2.5, 97.5])))
    assert lo <= auroc(u, c) <= hi
    assert bootstrap_ci(auroc, u, c, resamples=500, seed=7) == (lo, hi, used)  # fixed seed: reproducible
    assert bootstrap_ci(auroc, u, c, resamples=500, seed=8)[:2] != (lo, hi)
    # two questions, one right: resamples holding only one of them are undefined and dropped
    lo2, hi2, used2 = bootstrap_ci(prr, [0.0, 1.0], [1, 0], resamples=200, seed=0)
    assert 60 < used2 < 140 and lo2 == hi2 == 1.0


def test_score_measures_drops_nan_and_reports_means():
    u, c = _fake_set(20, seed=2)
    vals = {"m": u, "partial": [float("nan")] * 5 + u[5:]}
    out = score_measures(vals, c, resamples=200, seed=0)
    assert out["m"]["auroc"] == pytest.approx(_direct_auroc(u, c)) and out["m"]["questions"] == 20
    assert out["m"]["prr"] == pytest.approx(_direct_prr(u, c))
    assert out["m"]["mean_right"] == pytest.approx(np.mean([x for x, ok in zip(u, c) if ok]))
    assert out["partial"]["questions"] == 15
    assert out["partial"]["auroc"] == pytest.approx(_direct_auroc(u[5:], c[5:]))
    lo, hi = out["m"]["auroc_ci"]
    assert lo <= out["m"]["auroc"] <= hi and out["m"]["auroc_resamples"] == 200
    assert "auroc_ci" not in score_measures(vals, c, resamples=0)["m"]


def test_uncertainty_metrics_of_a_fixed_fake_result_set():
    """evaluate's scoring on fake results: each measure's AUROC / PRR equal the direct computation on its values."""
    from entrolab.inference.cli import format_uncertainty_scores, uncertainty_metrics

    rng = np.random.default_rng(11)
    results, flags = [], []
    for i in range(16):
        ok = i % 3 != 0
        k = 2 if ok else 3  # wrong answers: more clusters, more entropy
        answers = [str(j % k) for j in range(6)]
        samples = [_trace(j, list(rng.random(4) + (0 if ok else 0.4)), list(-rng.random(4)),
                          certainties=list(rng.random(4) + 1)) for j in range(6)]
        results.append(_result(answers[0], samples, answers))
        flags.append(ok)
    unc, per_q = uncertainty_metrics(results, flags, "exact", resamples=100, seed=0)
    assert unc["questions"] == 16 and unc["right"] == sum(flags) and not unc["unavailable"]
    assert set(unc["measures"]) == set(measure_names())
    for name, row in unc["measures"].items():
        vals = [q[name] for q in per_q]
        assert row["auroc"] == pytest.approx(_direct_auroc(vals, flags)), name
        assert row["arxiv"] == MEASURES.get(name).arxiv
        assert len(row["curve"]) == 16 and row["curve"][0][0] == 0.0
    assert unc["measures"]["num_clusters"]["auroc"] == 1.0  # 3 clusters on every wrong answer, 2 on every right one
    lines = format_uncertainty_scores(unc)
    assert lines[0].startswith("uncertainty vs errors on 16 questions (10 right")
    assert any(line.split()[0] == "semantic_entropy" for line in lines[2:])
    # a one-response strategy: the sample measures are listed as unavailable, with the reason
    single = [StrategyResult("q", r.answer, "", 1, [r.chosen], r.chosen, {}) for r in results]
    unc1, _ = uncertainty_metrics(single, flags, "math", resamples=0, seed=0)
    assert set(unc1["unavailable"]) == {"semantic_entropy", "semantic_entropy_count", "num_clusters",
                                        "inverse_entropy_confidence", "disagreement"}
    assert any(line.startswith("  not available from this strategy: ") for line in format_uncertainty_scores(unc1))


def test_rejection_plot_draws_every_measure_oracle_and_random(tmp_path):
    from entrolab.inference.cli import _plot_rejection, uncertainty_metrics

    u, c = _fake_set(8, seed=4)
    results = [StrategyResult("q", "1", "", 1, [t], t, {}) for t in
               (_trace(i, [x + 1.0], [-1.0]) for i, x in enumerate(u))]
    unc, _ = uncertainty_metrics(results, [bool(x) for x in c], "math", resamples=0, seed=0)
    series = _plot_rejection(unc, str(tmp_path / "r.png"), "fake")
    assert set(series) == {"max_token_entropy", "mean_token_entropy", "self_certainty", "trace_length", "oracle",
                           "random"}
    assert series["mean_token_entropy"][1] == [a for _, a in rejection_curve(u, c)]
    assert series["random"][1] == [sum(c) / 8] * 2
    assert (tmp_path / "r.png").stat().st_size > 1000


# --- infer's uncertainty block ----------------------------------------------------------------------------------------


def test_uncertainty_block_fields():
    samples, answers = _three_samples()
    block = uncertainty_block(_result("1", samples, answers, chosen=1), clustering="math")
    assert block["samples"] == 3 and block["num_clusters"] == 2 and block["clustering"] == "math"
    assert block["clusters"][0]["answer"] == "1" and block["clusters"][0]["count"] == 2
    assert sum(c["probability"] for c in block["clusters"]) == pytest.approx(1.0)
    assert block["semantic_entropy"] == block["measures"]["semantic_entropy"]
    assert block["winner_share"] == pytest.approx(2 / 3) and block["answered"] == 3
    assert block["inverse_entropy_confidence"] == pytest.approx(4 / 7, abs=1e-5)
    assert block["mean_token_entropy"] == 1.0 and block["trace_length"] == 3  # the chosen response (sample 1)
    one = uncertainty_block(StrategyResult("q", "1", "", 2, [samples[0]], samples[0], {}))
    assert one["samples"] == 1 and "semantic_entropy" not in one and "semantic_entropy" in one["unavailable"]
    assert one["self_certainty"] == 0.0


def test_infer_prints_semantic_entropy_and_cluster_summary(capsys):
    from entrolab.cli import main

    rc = main(["infer", "--model", "tiny", "--strategy", "vote:majority", "--budget", "8", "--max-new-tokens", "6",
               "--answer", "boxed_or_last_number", "--clustering", "exact", "What is 2+3?"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "uncertainty (8 sampled answers; clusters by exact answer" in out
    assert re.search(r"semantic entropy: \d\.\d{3} nats \(likelihood form\), \d\.\d{3} nats \(count form\)", out)
    assert re.search(r"answer clusters: \d+: ", out) and "winner's share: " in out
    assert "chosen response: mean token entropy" in out and "self-certainty" in out
    rc = main(["infer", "--model", "tiny", "--strategy", "vote:majority", "--budget", "8", "--max-new-tokens", "6",
               "--answer", "boxed_or_last_number", "--json", "What is 2+3?"])
    obj = json.loads(capsys.readouterr().out)
    unc = obj["uncertainty"]
    assert unc["samples"] == 8 and unc["clustering"] == "math"  # the strategy's own equivalence
    assert unc["num_clusters"] == len(unc["clusters"]) and sum(c["count"] for c in unc["clusters"]) == 8
    for key in ("semantic_entropy", "semantic_entropy_count", "winner_share", "mean_token_entropy", "trace_length",
                "self_certainty", "inverse_entropy_confidence"):
        assert key in unc
    assert unc["semantic_entropy"] == unc["measures"]["semantic_entropy"]


def test_infer_with_one_sample_says_which_measures_it_gives(capsys):
    from entrolab.cli import main

    assert main(["infer", "--model", "tiny", "--max-new-tokens", "5", "q"]) == 0
    out = capsys.readouterr().out
    assert "uncertainty (1 response):" in out and "semantic entropy:" not in out
    assert "not available from this strategy: disagreement, inverse_entropy_confidence, num_clusters, " \
           "semantic_entropy, semantic_entropy_count (needs ≥ 2 sampled answers per question" in out


# --- evaluate on a scripted model: AUROC / PRR written for each measure -----------------------------------------------


def _scripted(tok):
    """Answers the plain-layout prompt's last question: "a" → always 1 (right), "b" → always 2 (wrong), "c" → 1, 2,
    3 or 4 uniformly, "d" → 1 or 2. One answer digit, then <eos>."""
    V = len(tok)
    digits = [tok.tok(d) for d in "1234"]

    def script(hist):
        text = tok.decode(hist)
        head, _, gen = text.rpartition("Assistant:")
        if gen:
            return peaked(V, tok.eos_token_id)
        q = head.rsplit("User: ", 1)[-1].strip()
        probs = {"a": {digits[0]: 1.0}, "b": {digits[1]: 1.0}, "c": {d: 0.25 for d in digits},
                 "d": {digits[0]: 0.5, digits[1]: 0.5}}.get(q)
        if probs is None:  # inside the few-shot turns of the prompt
            return peaked(V, tok.eos_token_id)
        return from_probs(V, probs) if len(probs) > 1 else peaked(V, next(iter(probs)))

    return ScriptedLM(script, V, tok.eos_token_id)


def test_evaluate_writes_auroc_prr_with_cis_and_the_rejection_curve(tmp_path, capsys, monkeypatch):
    import entrolab.inference.cli as icli
    from entrolab.cli import main

    tok = CharTokenizer()
    monkeypatch.setattr(icli, "_load_model", lambda spec: (_scripted(tok), tok))
    data = tmp_path / "d.jsonl"
    qs = ["a", "b", "c", "d", "a", "b", "c", "d"]
    data.write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in qs))
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(data), "--model", "fake", "--strategy", "vote:majority", "--budget", "4",
               "--max-new-tokens", "4", "--sweep", "none", "--baseline-max-samples", "1", "--answer",
               "boxed_or_last_number", "--bootstrap", "200", "--out", str(out), "--param", "temperature=1.0",
               "--param", "top_p=1.0"])
    assert rc == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    unc = metrics["uncertainty"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    flags = [r["correct"] for r in rows]
    assert [r["prediction"] for r in rows][:2] == ["1", "2"] and 0 < sum(flags) < 8
    assert unc["questions"] == 8 and unc["bootstrap"] == {"method": "percentile, over questions", "resamples": 200,
                                                          "seed": 0, "level": 0.95}
    assert set(unc["measures"]) == set(measure_names())
    for name, row in unc["measures"].items():
        vals = [r["uncertainty"][name] for r in rows]
        assert row["auroc"] == pytest.approx(_direct_auroc(vals, flags), abs=1e-6), name
        if len(set(vals)) == len(vals):
            assert row["prr"] == pytest.approx(_direct_prr(vals, flags), abs=1e-6), name
        else:
            assert row["prr"] == pytest.approx(prr(vals, flags), abs=1e-6), name
        assert len(row["auroc_ci"]) == 2 and len(row["prr_ci"]) == 2
        assert f"  {name} " in printed
    assert (out / "accuracy_vs_rejection.png").stat().st_size > 1000
    assert "accuracy_vs_rejection.png" in printed and "uncertainty vs errors on 8 questions" in printed


# --- the packaged evaluation set ----------------------------------------------------------------------------------------


def test_packaged_arithmetic_set_is_the_tasks_heldout_split():
    from entrolab.env.tasks import build_task
    from entrolab.inference.cli import _load_rows, packaged_data

    path = Path(packaged_data("arithmetic"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    expected = build_task("arithmetic").heldout(64)
    assert [(r["question"], r["answer"]) for r in rows] == [(e.prompt, e.answer) for e in expected]
    assert _load_rows("arithmetic", 3) == [{"question": r["question"], "answer": r["answer"]} for r in rows[:3]]
    assert '"entrolab.inference" = ["data/*.jsonl"]' in (ROOT / "pyproject.toml").read_text()
    with pytest.raises(ConfigError, match="no packaged data set"):
        packaged_data("gsm8k")


def test_docs_list_every_measure_with_its_paper():
    doc = (ROOT / "docs" / "inference.md").read_text(encoding="utf-8")
    for name in measure_names():
        assert f"`{name}`" in doc and MEASURES.get(name).arxiv in doc, name

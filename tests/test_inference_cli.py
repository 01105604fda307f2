"""``entrolab infer`` / ``entrolab evaluate`` on the tiny random model (fast), and their user errors."""

from __future__ import annotations

import json

import pytest

from entrolab.cli import main
from entrolab.inference.cli import (
    baseline_curve,
    capped_note,
    majority_curve,
    matched_point,
    sample_baseline,
    sparkline,
)


def test_infer_prints_answer_tokens_and_entropy_trace(capsys):
    rc = main(["infer", "--model", "tiny", "--strategy", "dts", "--budget", "4", "--max-new-tokens", "8",
               "--param", "entropy_threshold=9", "--param", "varentropy_threshold=0", "What is 1+1?"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "strategy: dts (arXiv 2511.00640)" in out and "answer:" in out and "tokens spent:" in out
    assert "entropy trace" in out and "--- response ---" in out


def test_infer_json(capsys):
    rc = main(["infer", "--model", "tiny", "--strategy", "eat", "--max-new-tokens", "16", "--param",
               "answer_tokens=4", "--param", "min_distance=0", "--json", "2+2?"])
    assert rc == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["strategy"]["name"] == "eat" and obj["strategy"]["min_distance"] == 0
    assert obj["tokens_spent"] >= len(obj["entropy_trace"]) > 0


def _data(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question": "1+1?", "answer": "2"},
        {"problem": "2+2?", "solution": "so \\boxed{4}"},
        {"question": "3+3?", "answer": "6"},
    ]) + "\n")
    return data


def test_evaluate_writes_metrics_results_and_plot(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(_data(tmp_path)), "--model", "tiny", "--strategy", "vote:majority",
               "--budget", "2", "--max-new-tokens", "6", "--limit", "2", "--out", str(out), "--sweep", "none"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
    base = metrics["baseline"]
    assert base["matched"] is True and base["capped_questions"] == 0 and "note" not in base
    assert base["name"] == "sample + vote:majority at matched compute"
    assert base["tokens"] >= metrics["tokens_per_question"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["2", "4"]
    for r in rows:  # per question, the baseline reached the strategy's tokens
        assert r["baseline_reached_tokens"] and sum(r["baseline_tokens"]) >= r["tokens_spent"]
        assert len(r["baseline_tokens"]) == base["samples_per_question"]  # the same K for every question
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "baseline sample + majority vote at matched compute" in printed


def test_evaluate_reports_a_capped_baseline_instead_of_matched_compute(tmp_path, capsys):
    """4 votes of ≤ 6 tokens against a baseline capped at 2 samples of ≤ 6 tokens: compute cannot match."""
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(_data(tmp_path)), "--model", "tiny", "--strategy", "vote:majority",
               "--budget", "4", "--max-new-tokens", "6", "--limit", "2", "--out", str(out), "--sweep", "none",
               "--baseline-max-samples", "2"])
    assert rc == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    base = metrics["baseline"]
    assert base["matched"] is False and base["capped_questions"] == 2 and base["samples_per_question"] == 2
    note = f"baseline capped at 2 samples: {base['tokens']:.1f} tokens vs {metrics['tokens_per_question']:.1f}"
    assert base["note"] == note and note in base["name"] and note in printed
    assert base["tokens"] < metrics["tokens_per_question"]
    assert "at matched compute" not in printed and "at matched compute" not in base["name"]
    assert "compute NOT matched" in printed and "2 of 2 questions capped" in printed


def test_evaluate_sweeps_the_budget_knob_and_plots_both_curves(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(_data(tmp_path)), "--model", "tiny", "--strategy", "vote:majority",
               "--budget", "2", "--max-new-tokens", "4", "--out", str(out), "--sweep", "1,3"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    sweep = metrics["sweep"]
    assert sweep["field"] == "n" and sorted(p["value"] for p in sweep["points"]) == [1, 2, 3]
    by_n = {p["value"]: p for p in sweep["points"]}
    assert by_n[2]["accuracy"] == metrics["accuracy"]  # the configured setting is a point of the sweep
    assert by_n[2]["tokens_per_question"] == metrics["tokens_per_question"]
    for n, p in by_n.items():  # n samples of 1…4 tokens each
        assert n <= p["tokens_per_question"] <= 4 * n
        assert p["baseline"]["matched"] and p["baseline"]["tokens"] >= p["tokens_per_question"]
    toks = [p["tokens_per_question"] for p in sweep["points"]]
    assert toks == sorted(toks)
    # the baseline drew enough samples to match the largest setting, the same number for every question
    curve = metrics["baseline"]["curve"]
    assert [c["k"] for c in curve] == list(range(1, metrics["baseline"]["samples_per_question"] + 1))
    assert curve[-1]["tokens"] >= by_n[3]["tokens_per_question"]
    printed = capsys.readouterr().out
    assert "sweep of n" in printed and "n=1:" in printed and "n=3:" in printed


def test_evaluate_sweep_errors_and_skipped_settings(tmp_path, capsys):
    data = str(_data(tmp_path))
    assert main(["evaluate", "--data", data, "--model", "tiny", "--sweep-field", "bogus", "--sweep", "1"]) == 2
    assert "not a parameter of sample" in capsys.readouterr().err
    assert main(["evaluate", "--data", data, "--model", "tiny", "--sweep-field", "temperature"]) == 2
    assert "needs explicit --sweep values" in capsys.readouterr().err
    # an EAT length that leaves no room to reason is skipped with a note; the other settings still run
    out = tmp_path / "out"
    # (the tiny tokenizer spells the 10-character answer suffix "</think>\n\n" in 10 tokens: 4 + 10 ≥ 8)
    rc = main(["evaluate", "--data", data, "--model", "tiny", "--strategy", "eat", "--limit", "1", "--max-new-tokens",
               "20", "--param", "answer_tokens=4", "--sweep-field", "max_new_tokens", "--sweep", "8,16",
               "--out", str(out)])
    assert rc == 0
    sweep = json.loads((out / "metrics.json").read_text())["sweep"]
    assert sweep["field"] == "max_new_tokens" and sorted(p["value"] for p in sweep["points"]) == [16, 20]
    assert len(sweep["notes"]) == 1 and sweep["notes"][0].startswith("max_new_tokens=8 skipped")
    assert "note: max_new_tokens=8 skipped" in capsys.readouterr().out


def test_plot_draws_both_curves(tmp_path):
    from entrolab.inference.cli import _plot

    base = {"matched": True, "tokens": 12.0, "accuracy": 0.5, "strategy_tokens": 10.0, "mean_samples": 2.0}
    metrics = {"strategy": {"name": "dts", "max_active": 4}, "rows": 2, "model": "tiny",
               "baseline": {"max_samples": 8, "curve": [{"k": 1, "tokens": 6.0, "accuracy": 0.0},
                                                         {"k": 2, "tokens": 12.0, "accuracy": 0.5}]},
               "sweep": {"field": "max_active", "points": [
                   {"value": 1, "tokens_per_question": 5.0, "accuracy": 0.0, "baseline": {**base, "tokens": 6.0}},
                   {"value": 4, "tokens_per_question": 10.0, "accuracy": 1.0, "baseline": base},
                   {"value": 8, "tokens_per_question": 20.0, "accuracy": 1.0,
                    "baseline": {**base, "matched": False, "tokens": 12.0}}]}}
    series = _plot(metrics, str(tmp_path / "p.png"))
    assert series["strategy"] == ([5.0, 10.0, 20.0], [0.0, 1.0, 1.0])
    assert series["baseline"] == ([6.0, 12.0], [0.0, 0.5])
    assert series["matched"] == ([6.0, 12.0], [0.5, 0.5]) and series["capped"] == ([12.0], [0.5])
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_every_strategy_has_a_valid_default_sweep():
    from entrolab.inference import STRATEGIES, build_strategy, strategy_names

    expected = {"sample": "max_new_tokens", "egl": "max_new_tokens", "eat": "delta", "dts": "max_active",
                "eager": "max_sequences", "seat": "max_rounds", "vote:majority": "n", "vote:inverse_entropy": "n",
                "vote:min_entropy": "n"}
    for name in strategy_names():
        s = build_strategy(name)
        knob = s.sweep_knob()
        assert knob == expected[name] == (STRATEGIES.get(name).sweep_field or STRATEGIES.get(name).budget_field)
        values = s.default_sweep()
        assert 2 <= len(values) <= 4 and getattr(s, knob) in values and values == sorted(set(values))
        for v in values:  # every setting builds
            build_strategy(name, **{knob: v})
    assert build_strategy("dts").default_sweep() == [3, 6, 12]
    assert build_strategy("seat").default_sweep() == [1, 2, 3]
    assert build_strategy("eat", delta=0.5).default_sweep() == [0.125, 0.5, 2.0]


def test_sample_baseline_raises_samples_until_tokens_match():
    class Fixed:
        """Each sample of question i spends lengths[i] tokens and answers "a"."""

        def __init__(self, lengths):
            self.lengths, self.calls = lengths, []

        def run(self, model, tok, qs, generator=None, answer_fn=None):
            from types import SimpleNamespace

            self.calls.append(len(qs))
            return [SimpleNamespace(answer="a", tokens_spent=self.lengths[int(q)]) for q in qs]

    s = Fixed([3, 10])
    out = sample_baseline(s, None, None, ["0", "1"], [20, 25], max_samples=64, chunk=5, generator=None,
                          answer_fn=None)
    # question 0 needs 7 samples of 3 tokens (21 ≥ 20); question 1 only 3 — both get the same K = 7
    assert [len(x) for x in out] == [7, 7] and max(s.calls) <= 5  # 2 rounds (K = 2, then 7), ≤ chunk each
    capped = sample_baseline(Fixed([3, 10]), None, None, ["0", "1"], [20, 25], max_samples=4, chunk=5,
                             generator=None, answer_fn=None)
    assert [len(x) for x in capped] == [4, 4]
    m = matched_point(capped, ["a", "b"], [20, 25], lambda p, g: p == g)
    assert m["capped_questions"] == 1 and not m["matched"] and m["tokens"] == (12 + 30) / 2
    assert capped_note(m, 4) == "baseline capped at 4 samples: 21.0 tokens vs 22.5"


@pytest.mark.parametrize("argv, message", [
    (["infer", "--model", "tiny", "--strategy", "nope", "q"], "valid strategies"),
    (["infer", "--model", "tiny", "--param", "delta", "q"], "KEY=VALUE"),
    (["infer", "--model", "tiny", "--strategy", "eat", "--param", "bogus=1", "q"], "parameters are"),
    (["infer", "--model", "/no/such/dir", "q"], "local model directory"),
    (["evaluate", "--data", "/no/such.jsonl", "--model", "tiny"], "no such file"),
])
def test_user_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_evaluate_rejects_rows_without_answers(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"question": "q"}) + "\n")
    assert main(["evaluate", "--data", str(data), "--model", "tiny"]) == 2
    assert "needs 'question'" in capsys.readouterr().err


def test_help_lists_every_registered_strategy(capsys):
    from entrolab.inference import STRATEGIES, strategy_names

    with pytest.raises(SystemExit):
        main(["infer", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in strategy_names():
        assert name in out and f"{name}: {STRATEGIES.get(name).budget_field}" in out


def test_baseline_curve_and_sparkline():
    samples = [[("2", 5), ("3", 5), ("2", 5)], [("1", 10), ("4", 10)]]
    res = baseline_curve(samples, ["2", "4"], [8, 10], lambda p, g: p == g)
    # every curve point is exactly k samples per question: k = 1, 2 (question 2 has only 2)
    assert [c["k"] for c in res["curve"]] == [1, 2]
    assert [c["accuracy"] for c in res["curve"]] == [0.5, 0.5]  # k=2: q2 tie → first ("1")
    assert res["curve"][0]["tokens"] == 7.5 and res["curve"][1]["tokens"] == 15.0
    # matched: q1 needs 2 samples (10 ≥ 8) → vote ("2","3") tie → "2" ✓; q2 needs 1 sample → "1" ✗
    assert res["matched"] == {"accuracy": 0.5, "tokens": 10.0, "strategy_tokens": 9.0, "mean_samples": 1.5,
                              "capped_questions": 0, "matched": True}
    assert majority_curve(samples, ["2", "4"], lambda p, g: p == g) == res["curve"]
    # a target beyond every sample: that question uses all of its samples and counts as capped
    m = matched_point(samples, ["2", "4"], [8, 100], lambda p, g: p == g)
    assert m["capped_questions"] == 1 and m["matched"] is False and m["tokens"] == (10 + 20) / 2
    assert sparkline([0.0, 1.0, 2.0]) == "▁▅█"
    assert len(sparkline([float(i) for i in range(500)], width=40)) == 40

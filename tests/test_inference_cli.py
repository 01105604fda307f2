"""``entrolab infer`` / ``entrolab evaluate`` on the tiny random model (fast), and their user errors."""

from __future__ import annotations

import json

import pytest

from entrolab.cli import main
from entrolab.inference.cli import baseline_curve, sparkline


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


def test_evaluate_writes_metrics_results_and_plot(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        {"question": "1+1?", "answer": "2"},
        {"problem": "2+2?", "solution": "so \\boxed{4}"},
        {"question": "3+3?", "answer": "6"},
    ]) + "\n")
    out = tmp_path / "out"
    rc = main(["evaluate", "--data", str(data), "--model", "tiny", "--strategy", "vote:majority", "--budget", "2",
               "--max-new-tokens", "6", "--limit", "2", "--out", str(out), "--baseline-max-samples", "4"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rows"] == 2 and 0.0 <= metrics["accuracy"] <= 1.0
    assert metrics["baseline"]["tokens"] >= metrics["tokens_per_question"] or metrics["baseline"]["mean_samples"] == 4
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["answer"] for r in rows] == ["2", "4"]
    assert (out / "accuracy_vs_tokens.png").stat().st_size > 1000
    assert "matched compute" in capsys.readouterr().out


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
    assert [c["accuracy"] for c in res["curve"]] == [0.5, 0.5, 0.5]  # k=2: q2 tie → first ("1")
    assert res["curve"][0]["tokens"] == 7.5
    # matched: q1 needs 2 samples (10 ≥ 8) → vote ("2","3") tie → "2" ✓; q2 needs 1 sample → "1" ✗
    assert res["matched"] == {"accuracy": 0.5, "tokens": 10.0, "mean_samples": 1.5}
    assert sparkline([0.0, 1.0, 2.0]) == "▁▅█"
    assert len(sparkline([float(i) for i in range(500)], width=40)) == 40

"""Run reports and comparisons: files, figures, self-containment, missing metrics, errors, and the CLI."""

import base64
import json
import re

import numpy as np
import pytest
from analysis_fixtures import make_run

from entrolab.analysis.dynamics_check import DynamicsReport
from entrolab.analysis.report import (
    _layout_tokens,
    analyze_run,
    compare_runs,
    sample_html,
    sample_tokens_figure,
)
from entrolab.analysis.run import RunDirError, load_run
from entrolab.cli import main
from entrolab.errors import ConfigError

FULL_FIGURES = {"entropy_reward.png", "law.png", "forecast.png", "dynamics.png", "cov_tails.png",
                "entropy_hist.png", "health.png", "sample_tokens.png"}


def _check_png(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    with Image.open(path) as im:
        im.load()
        assert im.width > 200 and im.height > 150
        arr = np.asarray(im.convert("L"))
    assert arr.std() > 5, f"{path.name} looks blank"


def _check_html(html_path, figures):
    text = html_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for name in figures:
        m = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)" alt="[^"]*" data-file="'
                      + re.escape(name) + '"', text)
        assert m, f"{name} is not inlined in {html_path.name}"
        assert base64.b64decode(m.group(1)) == (html_path.parent / name).read_bytes()
    # Self-contained: no external URL, and every <img> is an inline data URI.
    assert not re.search(r"(?:src|href)\s*=\s*[\"'](?!data:)", text)
    assert "http://" not in text and "https://" not in text
    assert text.count("<img ") == len(figures)
    return text


def test_report_has_every_figure(tmp_path):
    run = make_run(tmp_path / "run")
    rep = analyze_run(run)
    assert rep.out_dir == run / "analysis" and rep.html == run / "analysis" / "report.html"
    assert set(rep.figures) == FULL_FIGURES and rep.notes == []
    for p in rep.figures.values():
        _check_png(p)
    text = _check_html(rep.html, rep.figures)
    assert "tokens coloured by entropy" in text and 'title="H = ' in text
    assert "&lt;tag&gt;" in text and "<tag>" not in text  # token strings are escaped
    assert "&lt;b&gt;bold?&lt;/b&gt;" in text  # so are prompts
    summary = json.loads((rep.out_dir / "summary.json").read_text())
    assert summary["law"]["r_key"] == "eval/accuracy"
    assert summary["law"]["a"] == pytest.approx(0.12, abs=0.02)
    assert summary["dynamics"]["mode"] == "measured" and summary["dynamics"]["pearson"] > 0.95
    assert summary["method"] == "grpo" and summary["n_steps"] == 80


def test_report_with_missing_optional_metrics(tmp_path):
    run = make_run(tmp_path / "bare", steps=30, with_samples=False,
                   drop=("dynamics/", "eval/", "clip/", "kl/", "update/", "response/", "entropy/p",
                         "entropy/high"))
    rep = analyze_run(run, tmp_path / "out")
    assert set(rep.figures) == {"entropy_reward.png", "law.png", "forecast.png"}
    text = _check_html(rep.html, rep.figures)
    for phrase in ("ΔH dynamics skipped", "covariance tails skipped", "entropy histograms skipped",
                   "sample responses skipped", "training-health panels skipped"):
        assert any(phrase in n for n in rep.notes), phrase
        assert phrase in text
    assert rep.summary["law"]["r_key"] == "reward/accuracy"


def test_report_falls_back_to_the_covariance_proxy(tmp_path):
    rep = analyze_run(make_run(tmp_path / "r", measure_delta_h=False), tmp_path / "out")
    assert "dynamics.png" in rep.figures
    assert rep.summary["dynamics"]["mode"] == "proxy"
    assert rep.summary["dynamics"]["pearson"] > 0.5  # cov_mean ∝ −ΔH up to 10 % noise in the fixture
    assert "actual ΔH was not measured" in rep.html.read_text()


def test_report_of_a_minimal_run(tmp_path):
    d = tmp_path / "min"
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "reward/mean": 0.1 * s}) + "\n"
                                             for s in range(3)) + '{"step": 3, "rew')  # truncated last line
    rep = analyze_run(d)
    assert set(rep.figures) == {"entropy_reward.png"}
    assert any("law" in n for n in rep.notes)
    _check_html(rep.html, rep.figures)


def test_report_includes_a_dynamics_check(tmp_path):
    rng = np.random.default_rng(0)
    pred = rng.normal(size=50)
    dyn = DynamicsReport(n_states=50, n_responses=8, n_prompts=2, lr=1e-3, temperature=1.0,
                         advantage_mode="random±1", pearson=0.99, spearman=0.98, predicted_sum=float(pred.sum()),
                         actual_sum=float(pred.sum()), rel_error_sum=0.0, rel_error_states=0.01, sign_agreement=1.0,
                         mean_abs_delta_logit=1e-3, max_abs_delta_logit=1e-2, grad_norm=1.0, loss=0.1,
                         mean_entropy_before=2.0, elapsed_s=1.0, predicted=pred, actual=pred * 1.01)
    rep = analyze_run(make_run(tmp_path / "r", steps=20), tmp_path / "out", dynamics_report=dyn)
    assert "dynamics_check.png" in rep.figures
    _check_html(rep.html, rep.figures)
    assert json.loads((rep.out_dir / "summary.json").read_text())["dynamics_check"]["n_states"] == 50


def test_run_dir_errors(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        analyze_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no metrics.jsonl"):
        analyze_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text("\n")
    with pytest.raises(RunDirError, match="no metrics records"):
        load_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ConfigError, match="metrics.jsonl line 2: not valid JSON"):
        load_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"loss": 1}\n')
    with pytest.raises(RunDirError, match="no numeric 'step'"):
        load_run(tmp_path / "empty")
    assert issubclass(RunDirError, ConfigError)


def test_records_merge_by_step_and_ignore_non_finite(tmp_path):
    d = tmp_path / "r"
    d.mkdir()
    (d / "metrics.jsonl").write_text('{"step": 0, "entropy/mean": 1.0}\n{"step": 1, "entropy/mean": NaN}\n'
                                     '{"step": 0, "eval/accuracy": 0.5}\n')
    run = load_run(d)
    assert [r["step"] for r in run.records] == [0, 1]
    assert run.records[0] == {"step": 0, "entropy/mean": 1.0, "eval/accuracy": 0.5}
    s, v = run.series("entropy/mean")
    assert s.tolist() == [0.0] and v.tolist() == [1.0]


def test_compare_three_runs(tmp_path):
    runs = [make_run(tmp_path / "grpo", a=0.12, b=0.85, seed=0),
            make_run(tmp_path / "clip_cov", a=0.12, b=0.85, tau=40.0, seed=1, method="clip_cov"),
            make_run(tmp_path / "no_eval", a=0.2, b=0.9, steps=50, seed=2, drop=("eval/",))]
    rep = compare_runs(runs, tmp_path / "cmp")
    assert rep.html == tmp_path / "cmp" / "compare.html"
    assert set(rep.figures) == {"compare_entropy.png", "compare_reward.png", "compare_law.png"}
    for p in rep.figures.values():
        _check_png(p)
    text = _check_html(rep.html, rep.figures)
    for name in ("grpo", "clip_cov", "no_eval"):
        assert f"<td>{name}</td>" in text
    rows = {r["run"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]}
    assert rows["grpo"]["accuracy_source"] == "eval" and rows["no_eval"]["accuracy_source"] == "train"
    assert rows["no_eval"]["pass_at_k"] is None and rows["clip_cov"]["method"] == "clip_cov"
    assert rows["grpo"]["law_ceiling"] == pytest.approx(0.85 - 0.12, abs=0.02)
    # entropy area = trapezoid of entropy/mean over steps, computed independently here.
    run = load_run(runs[1])
    s, h = run.series("entropy/mean")
    assert rows["clip_cov"]["entropy_area"] == pytest.approx(float(np.sum(np.diff(s) * (h[1:] + h[:-1]) / 2)))
    assert rows["clip_cov"]["entropy_area"] > rows["grpo"]["entropy_area"]  # slower decay, more entropy kept
    with pytest.raises(ValueError, match="labels"):
        compare_runs(runs, tmp_path / "cmp2", labels=["x"])


def test_compare_labels_are_unique(tmp_path):
    a = make_run(tmp_path / "x" / "run", steps=10)
    b = make_run(tmp_path / "y" / "run", steps=10)
    rep = compare_runs([a, b], tmp_path / "cmp")
    assert [r["run"] for r in rep.summary["runs"]] == ["run", "run (2)"]


def test_sample_html_colours_and_escapes():
    out = sample_html({"step": 3, "tokens": ["Ġ<", "b", ">Ċ"], "entropy": [0.0, 1.0, 2.0], "reward": 1.0,
                       "correct": True, "prompt": "p"}, scale=2.0)
    assert out.count("<span style=") == 3
    assert "rgb(255,255,255)" in out and "rgb(220,40,30)" in out  # 0 → white, max → red
    assert " &lt;" in out and "&gt;\n" in out


def test_cli_exit_codes(tmp_path, capsys):
    run = make_run(tmp_path / "run", steps=30)
    assert main(["analyze", str(run), "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "law (eval/accuracy)" in out
    assert (tmp_path / "a" / "report.html").is_file()

    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["analyze", str(run), "--fit-fraction", "1.5"]) == 2
    assert "--fit-fraction" in capsys.readouterr().err

    other = make_run(tmp_path / "other", steps=30, seed=3)
    assert main(["compare", str(run), str(other), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "compare.html").is_file()
    assert main(["compare", str(run), str(other)]) == 0  # default: 'compare' beside the first run
    assert (tmp_path / "compare" / "compare.html").is_file()
    capsys.readouterr()
    assert main(["compare", str(run)]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["compare", str(run), str(tmp_path / "missing")]) == 2
    assert main(["analyze", str(run), "--verify-dynamics", "--model", str(tmp_path / "no-model")]) == 2
    assert "--model" in capsys.readouterr().err


# --- the covariance theorem's second claim: the covariance stays positive ------------------------------------------


def _cov_values(run_dir):
    vals = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        v = json.loads(line).get("dynamics/cov_mean")
        if isinstance(v, float) and np.isfinite(v):
            vals.append(v)
    return np.asarray(vals)


def test_report_states_how_often_the_covariance_is_positive(tmp_path):
    run = make_run(tmp_path / "r", steps=20, cov_negative_steps=(3, 7, 11), cov_missing_steps=(5, 9))
    rep = analyze_run(run, tmp_path / "out")
    cp = json.loads((rep.out_dir / "summary.json").read_text())["cov_positive"]
    vals = _cov_values(run)
    assert vals.size == 18  # the two NaN steps are not measurements
    assert cp["key"] == "dynamics/cov_mean" and cp["n"] == 18
    assert cp["fraction_positive"] == pytest.approx(15 / 18)  # 3 negated of 18 measured
    assert cp["mean"] == pytest.approx(float(vals.mean()))
    text = rep.html.read_text()
    assert "<td>steps with dynamics/cov_mean &gt; 0 (of 18)</td><td>83.3%</td>" in text
    assert f"<td>mean dynamics/cov_mean</td><td>{cp['mean']:.4g}</td>" in text
    # an all-positive run (the fixture's default) is 100 %; a run without the metric says so
    assert analyze_run(make_run(tmp_path / "p", steps=10), tmp_path / "o2").summary["cov_positive"][
        "fraction_positive"] == 1.0
    bare = analyze_run(make_run(tmp_path / "b", steps=10, drop=("dynamics/",)), tmp_path / "o3")
    assert bare.summary["cov_positive"] is None and "– (not logged)" in bare.html.read_text()


def test_compare_tabulates_the_covariance_sign(tmp_path):
    runs = [make_run(tmp_path / "pos", steps=20, seed=0),
            make_run(tmp_path / "mixed", steps=20, seed=1, cov_negative_steps=range(0, 20, 4)),
            make_run(tmp_path / "none", steps=20, seed=2, drop=("dynamics/",))]
    rep = compare_runs(runs, tmp_path / "cmp")
    rows = {r["run"]: r for r in json.loads((tmp_path / "cmp" / "compare.json").read_text())["runs"]}
    assert rows["pos"]["cov_positive_frac"] == 1.0
    assert rows["mixed"]["cov_positive_frac"] == pytest.approx(15 / 20)
    assert rows["mixed"]["cov_mean"] == pytest.approx(float(_cov_values(runs[1]).mean()))
    assert rows["none"]["cov_positive_frac"] is None and rows["none"]["cov_mean"] is None
    text = rep.html.read_text()
    assert "<th>steps with cov &gt; 0</th><th>mean cov</th>" in text
    assert "<td>100.0%</td>" in text and "<td>75.0%</td>" in text


# --- the sample response as a PNG, tokens coloured by entropy --------------------------------------------------------

RED = np.array([220, 40, 30])


def _red_pixels(path, crop_bottom=60):
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    rgb = rgb[:-crop_bottom]  # leave out the colour bar at the bottom
    return int((np.abs(rgb - RED).sum(-1) < 30).sum())


def test_sample_png_colours_the_forking_tokens(tmp_path):
    toks = ["The", "Ġanswer", "Ġis", "Ġ4", "2", ".", "Ċ", "\\boxed{", "42", "}"]
    calm = {"step": 0, "tokens": toks, "entropy": [0.0] * len(toks), "reward": 1.0, "correct": True}
    fork = {**calm, "step": 5, "entropy": [0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}  # "Ġ4" forks
    f_calm = sample_tokens_figure([calm], tmp_path, scale=2.0, name="calm.png")
    f_fork = sample_tokens_figure([fork], tmp_path, scale=2.0, name="fork.png")
    _check_png(f_fork.path)
    assert f_fork.name == "fork.png" and f_fork.title == "Sample responses, tokens coloured by entropy"
    assert _red_pixels(f_calm.path) == 0  # entropy 0 everywhere: white backgrounds, no red
    assert _red_pixels(f_fork.path) > 60  # the one token at the top of the scale is drawn on red


def test_token_layout_wraps_and_breaks_lines():
    cells, n_lines = _layout_tokens(["ab", "c\nd", "x" * 12, "\ty"], cols=5)
    assert cells == [(0, 0, "ab", 0), (0, 2, "c↵", 1), (1, 0, "d", 1), (2, 0, "xxxxx", 2), (3, 0, "xxxxx", 2),
                     (4, 0, "xx", 2), (4, 2, " y", 3)]
    assert n_lines == 5


def test_report_includes_the_sample_png(tmp_path):
    rep = analyze_run(make_run(tmp_path / "r", steps=30), tmp_path / "out")
    assert "sample_tokens.png" in rep.figures
    _check_png(rep.figures["sample_tokens.png"])
    assert _red_pixels(rep.figures["sample_tokens.png"]) > 0  # the fixture's samples have high-entropy tokens
    text = _check_html(rep.html, rep.figures)
    assert '<figure id="fig-sample_tokens">' in text and "forking" in text
    assert "sample_tokens.png" in json.loads((rep.out_dir / "summary.json").read_text())["figures"]

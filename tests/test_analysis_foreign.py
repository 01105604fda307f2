"""`entrolab analyze` reads verl and TRL runs (analysis/foreign.py): TensorBoard event directories written here the
way each trainer writes them, verl's JSONL file logger and TRL's trainer_state.json, fitted with the same law."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from entrolab.analysis.law import law_from_run
from entrolab.analysis.run import RunDirError, load_run

pytest.importorskip("tensorboard")

A, B = 0.6, 1.1  # R = −a·exp(H) + b, the law the synthetic runs follow


def _series(n=12):
    H = np.linspace(1.2, 0.2, n)
    return H, -A * np.exp(H) + B


def _write_tb(d, scalars: dict[str, list[float]]):
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(str(d))
    for tag, vals in scalars.items():
        for step, v in enumerate(vals, start=1):
            w.add_scalar(tag, float(v), step)
    w.close()


def test_a_verl_tensorboard_run_is_fitted_like_an_entrolab_run(tmp_path):
    H, R = _series()
    run_dir = tmp_path / "verl_run"
    # verl's Tracking writes every metric as a scalar at the global step (TENSORBOARD_DIR/...)
    _write_tb(run_dir / "tensorboard_log" / "proj" / "exp", {
        "actor/entropy": H, "critic/score/mean": R, "response_length/mean": np.linspace(100, 300, len(H)),
        "val-core/openai/gsm8k/acc/mean@1": R + 0.01, "actor/pg_loss": np.zeros(len(H))})
    run = load_run(run_dir)
    assert run.config["engine"] == "verl" and len(run.records) == len(H)
    s, h = run.series("entropy/mean")
    assert np.allclose(h, H, atol=1e-6) and np.allclose(s, np.arange(1, len(H) + 1))
    assert run.has("reward/accuracy") and run.has("eval/accuracy") and run.has("response/length_mean")
    law = law_from_run(run)
    assert law.fit.a == pytest.approx(A, rel=1e-3) and law.fit.b == pytest.approx(B + 0.01, rel=1e-3)


def test_a_trl_tensorboard_run_and_the_cli_report(tmp_path, capsys):
    from entrolab.cli import main

    H, R = _series()
    run_dir = tmp_path / "trl_run"
    # HF Trainer's TensorBoard callback prefixes "train/"; EntrolabGRPOTrainer adds entrolab's own keys
    _write_tb(run_dir / "runs" / "Dec04_12-00-00", {
        "train/entropy": H + 5.0, "train/entropy/mean": H, "train/reward": R, "train/completions/mean_length": H * 0 + 9,
        "train/dynamics/cov_mean": np.linspace(0.01, 0.001, len(H)), "train/loss": np.zeros(len(H))})
    run = load_run(run_dir)
    assert run.config["engine"] == "trl"
    assert np.allclose(run.series("entropy/mean")[1], H, atol=1e-6)  # entrolab's own key wins over TRL's
    law = law_from_run(run)
    assert law.fit.a == pytest.approx(A, rel=1e-3) and law.fit.b == pytest.approx(B, rel=1e-3)
    out = tmp_path / "report"
    assert main(["analyze", str(run_dir), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_steps"] == len(H) and math.isclose(summary["final entropy/mean"], H[-1], rel_tol=1e-5)
    assert (out / "report.html").is_file()


def test_verl_jsonl_and_trl_trainer_state(tmp_path):
    H, R = _series(6)
    verl_dir = tmp_path / "verl"
    verl_dir.mkdir()
    with open(verl_dir / "exp.jsonl", "w") as f:
        for i, (h, r) in enumerate(zip(H, R), start=1):
            f.write(json.dumps({"step": i, "data": {"actor/entropy": h, "critic/score/mean": r}}) + "\n")
        f.write('{"step": 7, "data": {"actor/ent')  # a crashed run's partial line
    run = load_run(verl_dir)
    assert np.allclose(run.series("reward/accuracy")[1], R) and run.config["engine"] == "verl"

    trl_dir = tmp_path / "trl" / "checkpoint-6"
    trl_dir.mkdir(parents=True)
    history = [{"step": i, "entropy": h, "reward": r, "completions/mean_length": 5.0}
               for i, (h, r) in enumerate(zip(H, R), start=1)]
    (trl_dir / "trainer_state.json").write_text(json.dumps({"global_step": 6, "log_history": history}))
    run = load_run(tmp_path / "trl")
    assert np.allclose(run.series("entropy/mean")[1], H) and run.config["engine"] == "trl"


def test_a_directory_without_any_log_is_refused_by_name(tmp_path):
    with pytest.raises(RunDirError, match="no metrics.jsonl, TensorBoard events"):
        load_run(tmp_path)

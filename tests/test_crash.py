"""Crash safety with real processes: a tiny-model run killed with SIGKILL mid-checkpoint-write and mid-step, then
resumed (``entrolab train --resume``), logs per-step metrics bitwise equal to an uninterrupted run's (the wall-clock
``time/*`` and ``perf/*`` aside); a damaged newest checkpoint is skipped, said, and the run resumes from the one
before, again bitwise; the run directory rules (refuse, overwrite, safe overrides) hold.

The killed process is ``tests/crash_harness.py``: ``entrolab train`` parked at the chosen point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import entrolab
from entrolab.cli import main

HARNESS = Path(__file__).with_name("crash_harness.py")
SRC = Path(entrolab.__file__).resolve().parents[1]
STEPS = 4
REWARD = "def fn(completion, example):\n    return sum(map(ord, completion)) % 7 / 7\n"  # varies within groups


def _config(root: Path) -> Path:
    (root / "letters.py").write_text(REWARD)
    cfg = {
        "model": {"name": "tiny"},
        "data": {"task": "arithmetic", "heldout_size": 2, "reward_fn": f"{root / 'letters.py'}:fn"},
        "rollout": {"n": 2, "max_new_tokens": 6},
        "optim": {"steps": STEPS, "lr": 1e-3, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 2},
        "eval": {"every": 2, "size": 2, "n_samples": 2, "k": 2},
        "logging": {"progress": False, "tensorboard": False},
        "checkpoint": {"every": 1, "keep_last": 3},
        "diagnostics": {"law_refit_every": 2},
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _records(run: Path) -> list[dict]:
    """Per-step metrics without the wall-clock keys, as logged."""
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/"))} for r in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in this process; threads pinned to one as in the harness)."""
    root = tmp_path_factory.mktemp("reference")
    cfg = _config(root)
    assert main(["train", "--config", str(cfg), f"logging.run_dir={root / 'run'}"]) == 0
    return root / "run", cfg


def _killed(root: Path, point: str, step: int, argv: list[str], timeout: float = 300.0) -> tuple[str, str]:
    """Run the harness until it parks at ``point`` of ``step``, kill -9 it; its stdout and stderr."""
    marker = root / f"parked-{point}-{step}"
    out, err = root / f"{point}-{step}.out", root / f"{point}-{step}.err"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, str(HARNESS), str(marker), point, str(step), "--", *argv],
                                stdout=o, stderr=e, env=env, cwd=root)
        t0 = time.monotonic()
        while not marker.exists():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before {point} {step}: {err.read_text()}"
            assert time.monotonic() - t0 < timeout, f"never reached {point} {step}"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return out.read_text(), err.read_text()


def test_kill_9_mid_checkpoint_write_and_mid_step_then_resume_is_bitwise(reference, tmp_path, capsys):
    ref_run, _ = reference
    cfg = _config(tmp_path)
    run = tmp_path / "run"

    # 1. killed while writing the checkpoint after step 1: weights written, the trainer state half
    _killed(tmp_path, "checkpoint", 2, ["train", "--config", str(cfg), f"logging.run_dir={run}"])
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and ckpts[0].startswith(".tmp-step_000002-") and ckpts[1] == "step_000001"
    assert [r["step"] for r in _records(run)] == [0, 1]  # the log is valid JSON lines up to the kill

    # 2. resumed: the leftover is removed and said, the run goes on from step_000001; killed mid-step 3
    _, err = _killed(tmp_path, "update", 3, ["train", "--resume", str(run)])
    assert "removed what a crash left behind" in err and ".tmp-step_000002-" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001", "step_000002", "step_000003"]
    assert [r["step"] for r in _records(run)] == [0, 1, 2]

    # 3. resumed to the end (in this process)
    assert main(["train", "--resume", str(run)]) == 0
    assert f"resuming {run} at step 3" in capsys.readouterr().out
    got, want = _records(run), _records(ref_run)
    assert len(want) == STEPS and len(want[0]) > 30
    assert all(r["update/no_signal_streak"] == 0 for r in want)  # rewards vary: the weights move every step
    assert got == want  # every per-step metric, bitwise


def test_a_damaged_newest_checkpoint_is_skipped_said_and_the_run_resumes_bitwise(reference, tmp_path, capsys):
    ref_run, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref_run, run)
    with open(run / "checkpoints" / "step_000004" / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    (run / "checkpoints" / "step_000003" / "trainer_state.pt").unlink()
    assert main(["train", "--resume", str(run)]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step_000004 is damaged (model.safetensors: size mismatch" in err
    assert "resuming from step_000002" in err
    assert "checkpoint step_000003 is damaged (trainer_state.pt: missing); resuming from step_000002" in err
    assert _records(run) == _records(ref_run)  # steps 2 and 3 again, the same numbers


def test_a_changed_file_fails_its_checksum(reference, tmp_path, capsys):
    ref_run, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref_run, run)
    state = run / "checkpoints" / "step_000004" / "trainer_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    state.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run), "optim.steps=5"]) == 0
    err = capsys.readouterr().err
    assert "checkpoint step_000004 is damaged (trainer_state.pt: checksum mismatch" in err
    assert [r["step"] for r in _records(run)] == [0, 1, 2, 3, 4]


def test_safe_changes_on_resume_extend_the_run(reference, tmp_path, capsys):
    ref_run, _ = reference
    run = tmp_path / "run"
    shutil.copytree(ref_run, run)
    assert main(["train", "--resume", str(run), "optim.steps=5", "eval.every=0", "logging.samples_per_step=0"]) == 0
    assert "resuming" in capsys.readouterr().out
    got, want = _records(run), _records(ref_run)
    assert got[:STEPS] == want and [r["step"] for r in got] == [0, 1, 2, 3, 4]
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["steps"] == 5


def test_a_new_run_refuses_an_existing_run_and_overwrite_moves_it_aside(reference, tmp_path, capsys):
    ref_run, cfg = reference
    run = tmp_path / "run"
    shutil.copytree(ref_run, run)
    old = (run / "metrics.jsonl").read_bytes()
    assert main(["train", "--config", str(cfg), f"logging.run_dir={run}"]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_bytes() == old
    assert main(["train", "--config", str(cfg), f"logging.run_dir={run}", "optim.steps=1", "--overwrite"]) == 0
    out = capsys.readouterr().out
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]
    assert len(aside) == 1 and f"moved the old run directory {run} aside to {aside[0]}" in out
    assert (aside[0] / "metrics.jsonl").read_bytes() == old  # the old run, whole
    assert [r["step"] for r in _records(run)] == [0]  # the new run, alone
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000001"]

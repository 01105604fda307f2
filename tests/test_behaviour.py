"""Behaviour lock: fixed-seed trainer runs (every catalog method, a label-free reward source, the tool task, several
PPO epochs) must reproduce the per-step metrics recorded in ``tests/data/behaviour.json`` (``tests/behaviour.py``
says how they are recorded and when to record them anew). Each run also checks what every method must do in the
trainer: two optimizer steps per RL step, none skipped, a finite loss, and changed weights where there is signal."""

from __future__ import annotations

import json
import math
import sys

import pytest

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import behaviour  # noqa: E402

GOLDEN = json.loads(behaviour.GOLDEN.read_text())
SAME_MACHINE = GOLDEN["fingerprint"] == behaviour.fingerprint()
# EMPO's label-free reward is the frequency of a response's \boxed{} answer, GDPO's components are correctness and a
# \boxed{} answer: the random tiny model never boxes one (nor solves a task).
NO_SIGNAL_ON_THE_TINY_MODEL = {"empo", "gdpo"}


@pytest.fixture(scope="module")
def shared_tiny(tmp_path_factory):
    from entrolab.engine.models import tiny_model

    work = tmp_path_factory.mktemp("behaviour")
    (work / "behaviour_rewards.py").write_text(behaviour.REWARD_MODULE)
    sys.path.insert(0, str(work))
    model, tok = tiny_model(seed=0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    yield work, model, tok, state
    sys.path.remove(str(work))
    sys.modules.pop("behaviour_rewards", None)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        # Bitwise on the recording machine's torch and CPU kernels; elsewhere, float32 rounding of other kernels.
        return a == b if SAME_MACHINE else b == pytest.approx(a, rel=1e-4, abs=1e-6)
    return a == b


def test_every_catalog_method_is_recorded():
    assert set(behaviour.runs()) == set(GOLDEN["runs"]), "record anew: python3 tests/behaviour.py"


@pytest.mark.parametrize("name", sorted(GOLDEN["runs"]))
def test_fixed_seed_run_reproduces_the_recorded_metrics(name, shared_tiny):
    work, model, tok, state = shared_tiny
    before = float(sum(v.double().sum() for v in state.values()))
    got = behaviour.run_one(name, behaviour.runs()[name], work, model, tok, state)
    want = GOLDEN["runs"][name]
    for m in got["steps"]:
        assert m["update/steps"] > 0 and m["update/skipped"] == 0
        assert math.isfinite(m["loss/total"])
    if name.split("+")[0] in NO_SIGNAL_ON_THE_TINY_MODEL:
        assert all(m["dynamics/cov_mean"] == 0.0 for m in got["steps"])  # no answers: nothing to learn
    else:
        assert got["weights_checksum"] != before
    assert len(got["steps"]) == len(want["steps"])
    for step, (g, w) in enumerate(zip(got["steps"], want["steps"])):
        assert sorted(g) == sorted(w), f"step {step}: metric keys changed: +{sorted(set(g) - set(w))} " \
                                       f"-{sorted(set(w) - set(g))}"
        diff = {k: (w[k], g[k]) for k in w if not _same(w[k], g[k])}
        assert not diff, f"step {step}: metrics changed (recorded, now): {diff}"
    assert _same(want["weights_checksum"], got["weights_checksum"])

"""Fixed-seed trainer runs whose per-step metrics are recorded in ``tests/data/behaviour.json``.

Every catalog method runs two steps on the tiny in-memory model with every diagnostic on (the ΔH probe, the law
refit, an evaluation at the second step), plus runs that exercise the paths a method alone does not: a label-free
reward source, the multi-turn tool task, several PPO epochs. A refactor must leave these numbers identical (the
``time/*`` and ``perf/*`` keys aside, which are wall-clock figures); ``tests/test_behaviour.py`` checks it.

Record anew only for an intended change of behaviour, and say why in the commit:

    python3 tests/behaviour.py            # rewrites tests/data/behaviour.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

GOLDEN = Path(__file__).parent / "data" / "behaviour.json"
SKIPPED_PREFIXES = ("time/", "perf/")

REWARD_MODULE = '''
def letter_a(completion, example):
    """A reward the random tiny model earns sometimes: the share of 'a' characters, so groups vary."""
    return completion.count("a") / max(1, len(completion))
'''


def _methods() -> list[str]:
    from entrolab import methods

    return methods.method_names()


def runs() -> dict[str, dict[str, Any]]:
    """Run name → config sections that differ from ``base_config``."""
    out: dict[str, dict[str, Any]] = {name: {"algorithm": {"method": name}} for name in _methods()}
    out["grpo+majority_vote"] = {"data": {"reward_source": "majority_vote", "reward_fn": None}}
    out["grpo+4_steps"] = {"optim": {"steps": 4, "schedule": "cosine", "warmup_steps": 1}}
    out["arpo+tool_arithmetic"] = {"algorithm": {"method": "arpo"}, "data": {"task": "tool_arithmetic"}}
    out["clip_cov+ppo_epochs"] = {"algorithm": {"method": "clip_cov", "overrides": {"clip.ratio": 0.05}},
                                  "optim": {"ppo_epochs": 2, "steps": 4}, "eval": {"every": 3}}  # law refits from 3 steps
    out["dr_grpo+kl_cov"] = {"algorithm": {"method": ["dr_grpo", "kl_cov"], "overrides": {"kl.k": 0.1}}}
    return out


def base_config(run_dir: Path, reward_fn: str) -> dict[str, Any]:
    return {
        "model": {"name": "tiny"},
        "data": {"task": "arithmetic", "heldout_size": 4, "reward_fn": reward_fn},
        "rollout": {"n": 4, "max_new_tokens": 8},
        "optim": {"steps": 2, "lr": 1e-3, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 2},
        "eval": {"every": 2, "size": 2, "n_samples": 2, "k": 2},
        "logging": {"run_dir": str(run_dir), "progress": False, "tensorboard": False},
        "checkpoint": {"every": 0},
        "diagnostics": {"law_refit_every": 1, "delta_h_rows": 4},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for k, v in extra.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.startswith(SKIPPED_PREFIXES)}


def run_one(name: str, sections: dict[str, Any], work: Path, model, tokenizer, state) -> dict[str, Any]:
    """The comparable per-step metrics of one run and a checksum of the final weights."""
    import warnings

    from entrolab.train.config import config_from_dict
    from entrolab.train.trainer import Trainer

    model.load_state_dict(state)
    cfg = config_from_dict(_merge(base_config(work / name.replace("+", "_"), "behaviour_rewards:letter_a"),
                                  sections))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = Trainer(cfg, model=model, tokenizer=tokenizer).train()
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    return {"steps": [comparable(m) for m in history], "weights_checksum": checksum}


def record_all(work: Path, names: list[str] | None = None) -> dict[str, Any]:
    from entrolab.engine.models import tiny_model

    (work / "behaviour_rewards.py").write_text(REWARD_MODULE)
    sys.path.insert(0, str(work))
    try:
        model, tok = tiny_model(seed=0)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        all_runs = runs()
        return {name: run_one(name, all_runs[name], work, model, tok, state) for name in (names or list(all_runs))}
    finally:
        sys.path.remove(str(work))
        sys.modules.pop("behaviour_rewards", None)


def fingerprint() -> dict[str, str]:
    """What the recorded numbers depend on besides the code: torch's version and the CPU kernels it dispatches to."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)  # as the test suite (tests/conftest.py)
    with tempfile.TemporaryDirectory() as tmp:
        results = record_all(Path(tmp))
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"fingerprint": fingerprint(), "runs": results}, indent=1, sort_keys=True) + "\n")
    print(f"recorded {len(results)} runs in {GOLDEN}")

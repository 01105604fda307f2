"""One training step's time, by phase, on the embedded default (SmolLM2-135M-Instruct, 4 prompts × 4 samples,
≤ 64 new tokens, no KL), with entrolab's diagnostics on (ΔH measured after the update); and the same step with a
naive policy forward (full logits → log_softmax, entropy from the full distribution) and no ΔH measurement, as the
baseline measured in the same run, on a copy of the model, the two runs' steps interleaved.

    python bench/train_step.py [--steps 3] [--max-new-tokens 64] [--method grpo]

Prints seconds per phase (generate, old-logprob pass, update, diagnostics, total), the diagnostics share of the
step (target ≤ 3 %), and the ratio of entrolab's step to the naive one. External reference, not re-measured here:
TRL's GRPOTrainer took about 34 s per step for the same work on a 2-core CPU; the target is ≤ 25 s.
"""

from __future__ import annotations

import argparse
import os
import contextlib
import copy
import statistics
import tempfile
import time

import torch

from entrolab.train.config import config_from_dict
from entrolab.engine.models import load_model
from entrolab.train.trainer import Trainer

PHASES = ("generate", "old_logprob", "update", "diagnostics")


def naive_logprobs_entropy(model, input_ids, attention_mask, prompt_len, response_ids, temperature, chunk_size=0):
    """Baseline: the whole logits tensor, log_softmax, and entropy over it (what a plain implementation does)."""
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                   position_ids=position_ids[:, :-1], use_cache=False).logits[:, prompt_len - 1:]
    logp_all = torch.log_softmax(logits.float() / temperature, -1)
    logp = logp_all.gather(-1, response_ids[..., None]).squeeze(-1)
    ent = -(logp_all.exp() * logp_all).sum(-1)
    return logp, ent


def make_trainer(model, tokenizer, args, naive: bool) -> Trainer:
    cfg = config_from_dict({
        "rollout": {"n": 4, "max_new_tokens": args.max_new_tokens},
        "optim": {"steps": args.steps + 1, "prompts_per_step": 4},
        "algorithm": {"method": args.method},
        "eval": {"every": 0},
        "diagnostics": {"measure_delta_h": not naive, "law_refit_every": 0},
        "logging": {"run_dir": tempfile.mkdtemp(prefix="entrolab-bench-"), "progress": False, "tensorboard": False},
        "checkpoint": {"every": 0},
    })
    return Trainer(cfg, model=model, tokenizer=tokenizer)


@contextlib.contextmanager
def naive_forward(active: bool):
    """Swap the trainer's fused policy forward for the naive one while ``active``."""
    import entrolab.train.trainer as trainer_mod

    original = trainer_mod.policy_logprobs_entropy
    if active:
        trainer_mod.policy_logprobs_entropy = naive_logprobs_entropy
    try:
        yield
    finally:
        trainer_mod.policy_logprobs_entropy = original


def run(model, tokenizer, args) -> dict[str, list[dict]]:
    """Both configurations on identical copies of the model, their steps interleaved (e, n, e, n, ...) so that load
    from other processes hits both alike; one warm-up step each."""
    trainers = {"entrolab": make_trainer(model, tokenizer, args, naive=False),
                "naive": make_trainer(copy.deepcopy(model), tokenizer, args, naive=True)}
    out: dict[str, list[dict]] = {k: [] for k in trainers}
    for i in range(args.steps + 1):
        for label, trainer in trainers.items():
            with naive_forward(label == "naive"):
                m = trainer.step()
            if i > 0:
                out[label].append(m)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--method", default="grpo")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t = time.perf_counter()
    model, tokenizer = load_model()
    print(f"model load: {time.perf_counter() - t:.1f} s")
    results = {}
    for label, steps in run(model, tokenizer, args).items():
        results[label] = {p: statistics.median(s[f"time/{p}_s"] for s in steps) for p in PHASES}
        results[label]["total"] = statistics.median(s["time/step_s"] for s in steps)
        results[label]["tokens"] = statistics.median(s["response/length_mean"] * 16 for s in steps)
    print(f"\nmedian of {args.steps} steps (after one warm-up), 4 prompts × 4 samples, ≤ {args.max_new_tokens} tokens")
    print(f"{'phase':<14}{'entrolab s':>12}{'naive s':>10}{'ratio':>8}")
    for p in (*PHASES, "total"):
        e, n = results["entrolab"][p], results["naive"][p]
        print(f"{p:<14}{e:>12.2f}{n:>10.2f}{(e / n if n > 0 else float('nan')):>8.2f}")
    e = results["entrolab"]
    share = e["diagnostics"] / e["total"]
    print(f"\ngenerated tokens per step: entrolab {e['tokens']:.0f}, naive {results['naive']['tokens']:.0f} "
          "(sampling differs between the runs: compare phases per token)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (above {os.cpu_count()} other processes competed)")
    print(f"diagnostics share of the step: {share:.1%} (target ≤ 3%: {'met' if share <= 0.03 else 'NOT met'})")
    print(f"entrolab step: {e['total']:.1f} s (target ≤ 25 s; TRL GRPOTrainer reference ≈ 34 s on a 2-core CPU): "
          f"{'met' if e['total'] <= 25 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Native trainer vs TRL's GRPOTrainer on one config, side by side in one run:

    python bench/engines.py [--model tiny|smollm2] [--method grpo] [--steps 3] [--prompts 2] [--n 4]
                            [--max-new-tokens 16]

1. **Equal objective, equal loss on the same batch.** One rollout batch from the native engine (same model, same
   weights); the loss of its first update computed three ways: the native update forward + ``PolicyObjective``,
   ``EntrolabGRPOTrainer._compute_loss`` (TRL's forward + the same objective) on that batch laid out as TRL's inputs,
   and — for ``grpo`` — TRL's own ``dapo`` loss (``GRPOTrainer._compute_loss``). They agree to float tolerance.
2. **Step time.** ``--steps`` RL steps of each engine from the same config (generation, scoring, the update; the
   first step of each is a warm-up and is not counted), with the tokens each generated, and the ratio TRL / native.

Needs the trl extra. Prints a table; numbers come from this machine, in this run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from entrolab.train.config import load_config  # noqa: E402
from entrolab.train.trainer import Trainer  # noqa: E402


def _config(args, run_dir):
    overrides = [f"model.name={'tiny' if args.model == 'tiny' else 'smollm2-135m-instruct'}",
                 f"optim.steps={args.steps + 1}", f"optim.prompts_per_step={args.prompts}", f"rollout.n={args.n}",
                 f"rollout.max_new_tokens={args.max_new_tokens}", "optim.mini_batches=1", "optim.ppo_epochs=1",
                 f"optim.micro_batch_size={args.prompts * args.n}", "eval.every=0", "logging.tensorboard=false",
                 "logging.progress=false", f"logging.run_dir={run_dir}", "checkpoint.every=1000",
                 "diagnostics.measure_delta_h=false", f"seed={args.seed}"]
    return load_config(None, overrides, args.method)


def same_batch_losses(native: Trainer, trl_trainer) -> tuple[dict[str, float], str]:
    """The first update's loss on one native rollout batch, by each engine's forward (module docstring)."""
    from trl import GRPOTrainer

    obj = native.objective
    batch = native.engine.rollout(0, native.config.optim.prompts_per_step).batch
    note = ""
    if float(batch.rewards.std()) == 0.0:  # e.g. the tiny model never answers right: a loss of 0 compares nothing
        batch = batch.replace(rewards=batch.response_mask.sum(-1) / batch.response_mask.shape[1])
        note = "rewards replaced by the response length (all rewards were equal: advantages would be 0)"
    batch = obj.prepare(obj.compute_advantages(batch))
    native.model.train()
    lp, ent = native.engine.forward(batch)
    native_loss, _ = obj(batch.replace(logprobs=lp, entropy=ent))
    ids, att = batch.extras["input_ids"], batch.extras["attention_mask"]
    P = ids.shape[1] - batch.response_ids.shape[1]
    mask = batch.response_mask.long()
    inputs = {"prompt_ids": ids[:, :P], "prompt_mask": att[:, :P], "completion_ids": batch.response_ids,
              "completion_mask": mask, "advantages": batch.advantages, "old_per_token_logps": batch.old_logprobs,
              "entrolab_old_logprobs": batch.old_logprobs, "entrolab_old_entropy": batch.old_entropy,
              "entrolab_rewards": batch.rewards, "entrolab_group_ids": batch.group_ids,
              "num_items_in_batch": mask.sum()}
    trl_trainer.current_gradient_accumulation_steps = 1
    trl_trainer.model.train()
    out = {"native": float(native_loss), "trl (entrolab objective)": float(trl_trainer._compute_loss(
        trl_trainer.model, dict(inputs)))}
    if list(obj.methods) == ["grpo"]:
        adv = batch.advantages.sum(-1) / batch.response_mask.sum(-1).clamp(min=1)  # GRPO's per-sequence A
        out["trl (its own dapo loss)"] = float(GRPOTrainer._compute_loss(trl_trainer, trl_trainer.model,
                                                                         {**inputs, "advantages": adv}))
    return out, note


def native_steps(native: Trainer, steps: int) -> tuple[list[float], list[int]]:
    """Seconds per step and generated tokens per step (mean response length × rows, as for TRL)."""
    rows = native.config.optim.prompts_per_step * native.config.rollout.n
    times, tokens = [], []
    for _ in range(steps + 1):
        t = time.perf_counter()
        m = native.step()
        times.append(time.perf_counter() - t)
        tokens.append(int(round(m["response/length_mean"] * rows)))
    return times[1:], tokens[1:]


def trl_steps(trl_trainer, steps: int) -> tuple[list[float], list[int]]:
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trl_trainer.remove_callback(PrinterCallback)
    trl_trainer.remove_callback(ProgressCallback)
    trl_trainer.train()
    hist = [h for h in trl_trainer.state.log_history if "step_time" in h]
    rows = trl_trainer.args.per_device_train_batch_size
    times = [h["step_time"] for h in hist]
    tokens = [int(round(h["completions/mean_length"] * rows)) for h in hist]
    return times[1:steps + 1], tokens[1:steps + 1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    p.add_argument("--method", default="grpo")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/entrolab-bench-engines")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    from entrolab.integrations.trl.run import build_trl_trainer

    torch.manual_seed(args.seed)
    config = _config(args, Path(args.out) / "native")
    native = Trainer(config)
    state = {k: v.clone() for k, v in native.model.state_dict().items()}
    trl_trainer, _ = build_trl_trainer(_config(args, Path(args.out) / "trl"), model=native.model,
                                       tokenizer=native.tokenizer, disable_tqdm=True, report_to=[])
    losses, note = same_batch_losses(native, trl_trainer)
    print(f"# engines bench: {args.model}, method {args.method}, {args.prompts} prompts × {args.n} samples, "
          f"≤ {args.max_new_tokens} new tokens, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("\n## loss of the first update on one native rollout batch (same weights, same batch)")
    if note:
        print(f"  ({note})")
    ref = losses["native"]
    for k, v in losses.items():
        print(f"  {k:28s} {v:+.8f}   |Δ| vs native {abs(v - ref):.2e}")

    native.model.load_state_dict(state)
    nt, ntok = native_steps(native, args.steps)
    native.model.load_state_dict(state)
    trl_trainer.model.load_state_dict(state)
    tt, ttok = trl_steps(trl_trainer, args.steps)
    print(f"\n## step time over {args.steps} steps after one warm-up step (generation + reward + update)")
    print(f"  {'engine':10s} {'median s/step':>14s} {'mean s/step':>12s} {'tokens/step':>12s} {'ms/token':>9s}")
    rows = {"native": (nt, ntok), "trl": (tt, ttok)}
    for name, (t, tok) in rows.items():
        mt = statistics.mean(tok) if tok and any(tok) else float("nan")
        print(f"  {name:10s} {statistics.median(t):14.3f} {statistics.mean(t):12.3f} {mt:12.1f} "
              f"{1000 * statistics.mean(t) / mt if mt == mt and mt else float('nan'):9.2f}")
    print(f"  ratio trl/native (median s/step): {statistics.median(tt) / statistics.median(nt):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

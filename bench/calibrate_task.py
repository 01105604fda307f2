"""Measure how well a model does on a task's held-out split before any RL.

GRPO learns only from groups that contain both right and wrong answers, so the default
task must start the model in the middle: this script measures accuracy under sampling
(T=1, top_p=1, no top-k), greedy accuracy, the share of prompts whose sample group is
mixed, response length and generation speed.

Example (the numbers in docs/tasks.md)::

    python bench/calibrate_task.py --task arithmetic --difficulty 3 --n 128 --samples 4

Runs offline; the default model is the packaged SmolLM2-135M-Instruct GGUF.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from entrolab.engine.models import PACKAGED_DEFAULT, load_model  # noqa: E402
from entrolab.env.tasks import DEFAULT_MAX_NEW_TOKENS, build_task  # noqa: E402


def _response_lengths(gen: torch.Tensor, eos_ids: set[int]) -> list[int]:
    """Tokens per response up to and including the first eos (pad == eos for SmolLM2)."""
    lengths = []
    for row in gen.tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in eos_ids:
                n = i + 1
                break
        lengths.append(n)
    return lengths


def generate(model, tok, prompts, *, samples, greedy, max_new_tokens, temperature, top_p):
    """Batched generation; returns (texts [len(prompts)*samples], lengths, seconds)."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = dict(do_sample=False) if greedy else dict(
        do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=samples)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs)
    dt = time.perf_counter() - t0
    gen = out[:, enc["input_ids"].shape[1]:]
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
    return tok.batch_decode(gen, skip_special_tokens=True), _response_lengths(gen, eos_ids), dt


def main(argv: list[str] | None = None) -> dict:
    """Run the calibration and print (and optionally save) the summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="arithmetic")
    p.add_argument("--difficulty", type=int, default=None, help="arithmetic level (see ARITHMETIC_LEVELS)")
    p.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE",
                   help="extra task parameter (JSON value), e.g. num_numbers=3")
    p.add_argument("--n", type=int, default=128, help="held-out questions")
    p.add_argument("--samples", type=int, default=4, help="samples per question at --temperature")
    p.add_argument("--prompts-per-batch", type=int, default=4, help="questions per generate() call (x samples)")
    p.add_argument("--greedy-batch", type=int, default=16)
    p.add_argument("--no-greedy", action="store_true")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--model", default=PACKAGED_DEFAULT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--show", type=int, default=6, help="print this many sample completions")
    p.add_argument("--json", default=None, help="write the summary here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    params = {}
    if args.difficulty is not None:
        params["difficulty"] = args.difficulty
    for kv in args.task_param:
        k, _, v = kv.partition("=")
        try:
            params[k] = json.loads(v)
        except json.JSONDecodeError:
            params[k] = v
    task = build_task(args.task, **params)
    examples = task.heldout(args.n)

    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    load_s = time.perf_counter() - t0
    print(f"loaded {args.model} in {load_s:.1f}s; task {task.describe()}", flush=True)
    prompts = [task.format_prompt(tok, e) for e in examples]
    torch.manual_seed(args.seed)

    # Sampling at T (the RL setting): groups of `samples` per question.
    per_q_correct = []
    lengths, boxed, rewards = [], 0, []
    gen_tokens, gen_s = 0, 0.0
    shown = 0
    for b in range(0, len(examples), args.prompts_per_batch):
        batch = examples[b:b + args.prompts_per_batch]
        texts, lens, dt = generate(model, tok, prompts[b:b + args.prompts_per_batch], samples=args.samples,
                                   greedy=False, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p)
        gen_tokens += sum(lens)
        gen_s += dt
        lengths += lens
        for qi, ex in enumerate(batch):
            n_ok = 0
            for s in range(args.samples):
                text = texts[qi * args.samples + s]
                r, ok = task.score(text, ex)
                n_ok += ok
                boxed += "\\boxed{" in text
                rewards.append(r)
                if shown < args.show:
                    print(f"  [{ex.prompt} -> {ex.answer}] {'OK ' if ok else 'BAD'} {text!r}", flush=True)
                    shown += 1
            per_q_correct.append(n_ok)
        done = b + len(batch)
        acc = sum(per_q_correct) / (len(per_q_correct) * args.samples)
        print(f"sampled {done}/{len(examples)} questions: acc={acc:.3f} "
              f"tok/s={gen_tokens / gen_s:.1f}", flush=True)

    n_samples = len(per_q_correct) * args.samples
    result = {
        "task": task.describe(),
        "model": args.model,
        "n_questions": len(examples),
        "samples_per_question": args.samples,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "acc_sampled": sum(per_q_correct) / n_samples,
        "mixed_group_fraction": sum(0 < c < args.samples for c in per_q_correct) / len(per_q_correct),
        "all_wrong_fraction": sum(c == 0 for c in per_q_correct) / len(per_q_correct),
        "boxed_rate_sampled": boxed / n_samples,
        "mean_response_tokens_sampled": statistics.mean(lengths),
        "gen_tokens_per_s_sampled": gen_tokens / gen_s,
        "gen_s_per_batch_sampled": gen_s / -(-len(examples) // args.prompts_per_batch),
        "sequences_per_batch_sampled": args.prompts_per_batch * args.samples,
        "load_s": load_s,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import transformers

        result["transformers"] = transformers.__version__
    except Exception:  # pragma: no cover
        pass

    if not args.no_greedy:
        g_ok, g_len, g_tok, g_s = 0, [], 0, 0.0
        for b in range(0, len(examples), args.greedy_batch):
            batch = examples[b:b + args.greedy_batch]
            texts, lens, dt = generate(model, tok, prompts[b:b + args.greedy_batch], samples=1, greedy=True,
                                       max_new_tokens=args.max_new_tokens, temperature=1.0, top_p=1.0)
            g_ok += sum(task.score(t, e)[1] for t, e in zip(texts, batch))
            g_len += lens
            g_tok += sum(lens)
            g_s += dt
        result.update(acc_greedy=g_ok / len(examples), mean_response_tokens_greedy=statistics.mean(g_len),
                      gen_tokens_per_s_greedy=g_tok / g_s)

    print(json.dumps(result, indent=2))
    print("| level | sampled acc (T=1) | mixed groups | greedy acc | mean tokens | gen tok/s |")
    print(f"| {task.describe().get('difficulty', '-')} | {result['acc_sampled']:.3f} | {result['mixed_group_fraction']:.2f} | "
          f"{result.get('acc_greedy', float('nan')):.3f} | {result['mean_response_tokens_sampled']:.1f} | "
          f"{result['gen_tokens_per_s_sampled']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])

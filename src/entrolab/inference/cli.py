"""``entrolab infer`` and ``entrolab evaluate``: entropy-guided inference from the command line.

    entrolab infer [--model default|tiny|PATH] [--strategy NAME] [--budget N] [--param key=value ...] "question"
    entrolab evaluate --data FILE.jsonl [--strategy NAME] [--budget N] [--limit N] [--out DIR]

``infer`` prints the answer, the tokens spent and the entropy trace of the response. ``evaluate`` scores a strategy
on a JSONL file of ``{"question": ..., "answer": ...}`` rows (``problem``/``solution`` also accepted; a solution's
last ``\\boxed{}`` is its answer) and compares it with plain sampling + majority vote at matched compute: for each
question the baseline samples until it has spent at least the strategy's tokens for that question. It writes
``results.jsonl``, ``metrics.json`` and ``accuracy_vs_tokens.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Optional

from ..knobs.base import ConfigError



def _registry_help() -> tuple[str, str]:
    """--strategy and --budget help, generated from the strategy registry."""
    from .base import STRATEGIES, strategy_names

    names = strategy_names()
    budgets = ", ".join(f"{n}: {STRATEGIES.get(n).budget_field}" for n in names)
    return (f"inference strategy: {', '.join(names)} (default: %(default)s)",
            f"sets the strategy's compute knob ({budgets})")


def register(sub) -> None:
    p = sub.add_parser("infer", help="answer one question with an entropy-guided inference strategy",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("question", help="the question (the prompt template asks for a \\boxed{} answer)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=_cmd_infer)

    e = sub.add_parser("evaluate", help="score an inference strategy on a JSONL dataset against majority voting",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("--data", required=True, help="JSONL file with question/answer (or problem/solution) rows")
    _common(e)
    e.add_argument("--limit", type=int, default=None, help="use the first N rows")
    e.add_argument("--out", default="entrolab_eval", help="output directory (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=4, help="questions decoded together (default: %(default)s)")
    e.add_argument("--baseline-max-samples", type=int, default=16,
                   help="cap on baseline samples per question (default: %(default)s)")
    e.set_defaults(func=_cmd_evaluate)


def _common(p: argparse.ArgumentParser) -> None:
    strategy_help, budget_help = _registry_help()
    p.add_argument("--model", default="default",
                   help="'default' (packaged SmolLM2-135M-Instruct), 'tiny' (random test model) or a local HF path")
    p.add_argument("--strategy", default="sample", help=strategy_help)
    p.add_argument("--budget", type=int, default=None, help=budget_help)
    p.add_argument("--max-new-tokens", type=int, default=None, help="tokens per response (overrides the default)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="set any strategy hyperparameter, e.g. --param delta=0.5 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    p.add_argument("--answer", choices=["boxed", "boxed_or_last_number"], default="boxed",
                   help="answer extraction: the last \\boxed{}, or that else the last number (default: %(default)s)")


# ---------------------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text.encode().decode("unicode_escape") if "\\" in text else text


def _strategy(args: argparse.Namespace):
    from .base import build_strategy, strategy_names

    names = strategy_names()
    if args.strategy not in names:
        raise ConfigError(f"unknown strategy {args.strategy!r}; valid strategies: {', '.join(names)}")
    params: dict[str, Any] = {}
    for item in args.param:
        if "=" not in item:
            raise ConfigError(f"--param expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        params[key.strip().replace("-", "_")] = _parse_value(value)
    from .base import STRATEGIES

    cls = STRATEGIES.get(args.strategy)
    if args.budget is not None:
        params[cls.budget_field] = args.budget
    if args.max_new_tokens is not None:
        params["max_new_tokens"] = args.max_new_tokens
    return build_strategy(args.strategy, **params)


def _load_model(spec: str):
    import torch

    if spec in ("default", "smollm2"):
        from ..train.models import load_model

        model, tok = load_model()
    elif spec == "tiny":
        from ..train.models import tiny_model

        model, tok = tiny_model()
    else:
        import os

        if not os.path.isdir(spec):
            raise ConfigError(f"--model {spec!r}: not 'default', 'tiny' or a local model directory")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(spec, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=torch.float32)
    model.eval()
    return model, tok


_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 80) -> str:
    """Entropy trace as block characters (bucket maxima when longer than ``width``), scaled to the trace maximum."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step): max(int((i + 1) * step), int(i * step) + 1)]) for i in range(width)]
    top = max(values) or 1.0
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))] for v in values)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 6)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


# ---------------------------------------------------------------------------------------------------------------------
# infer
# ---------------------------------------------------------------------------------------------------------------------


def _cmd_infer(args: argparse.Namespace) -> int:
    import time

    import torch

    strategy = _strategy(args)
    model, tok = _load_model(args.model)
    t0 = time.perf_counter()
    from .base import ANSWER_FNS

    res = strategy.run(model, tok, [args.question], generator=torch.Generator().manual_seed(args.seed),
                       answer_fn=ANSWER_FNS[args.answer])[0]
    seconds = time.perf_counter() - t0
    ent = res.entropy_trace
    if args.json:
        print(json.dumps(_jsonable({"strategy": strategy.spec(), "answer": res.answer, "tokens_spent": res.tokens_spent,
                                    "seconds": seconds, "entropy_trace": ent, "response": res.text,
                                    "info": res.info}), ensure_ascii=False))
        return 0
    arxiv = f" (arXiv {strategy.arxiv})" if strategy.arxiv else ""
    print(f"strategy: {strategy.name}{arxiv}")
    print(f"answer: {res.answer}")
    print(f"tokens spent: {res.tokens_spent} ({len(res.traces)} sequence(s); response {len(ent)} tokens; "
          f"{seconds:.1f} s)")
    if ent:
        mean = sum(ent) / len(ent)
        print(f"entropy trace (nats per token; mean {mean:.3f}, max {max(ent):.3f}):")
        print(f"  {sparkline(ent)}")
        print("  " + " ".join(f"{h:.2f}" for h in ent[:64]) + (" …" if len(ent) > 64 else ""))
    details = {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool)) and k != "report"}
    if details:
        print("details: " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in details.items()))
    print("--- response ---")
    print(res.text)
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------------


def _load_rows(path: str, limit: Optional[int]) -> list[dict[str, str]]:
    import os

    if not os.path.isfile(path):
        raise ConfigError(f"--data {path!r}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not JSON ({e.msg})") from e
            q = obj.get("question", obj.get("problem", obj.get("prompt")))
            a = obj.get("answer", obj.get("gold", obj.get("target")))
            if a is None and obj.get("solution") is not None:
                from ..train.rewards import extract_boxed

                a = extract_boxed(str(obj["solution"]))
            if q is None or a is None:
                raise ConfigError(f"{path}:{n}: needs 'question' (or 'problem') and 'answer' (or a 'solution' "
                                  f"with \\boxed{{}}); got keys {sorted(obj)}")
            rows.append({"question": str(q), "answer": str(a)})
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ConfigError(f"--data {path!r} has no rows")
    return rows


def baseline_curve(samples: list[list[tuple[Optional[str], int]]], golds: list[str], targets: list[int],
                   correct_fn) -> dict[str, Any]:
    """Majority-vote accuracy vs mean tokens for the first k baseline samples (k = 1..K), and at matched compute:
    for question i, the fewest first samples whose tokens reach ``targets[i]`` (or all of them)."""
    from .aggregate import majority_vote

    kmax = max(len(s) for s in samples)
    curve = []
    for k in range(1, kmax + 1):
        acc = toks = 0.0
        for s, gold in zip(samples, golds):
            sub = s[:k]
            acc += float(correct_fn(majority_vote([a for a, _ in sub]).answer, gold))
            toks += sum(n for _, n in sub)
        curve.append({"k": k, "accuracy": acc / len(samples), "tokens": toks / len(samples)})
    acc = toks = 0.0
    ks = []
    for s, gold, target in zip(samples, golds, targets):
        spent, k = 0, 0
        for _, n in s:
            spent += n
            k += 1
            if spent >= target:
                break
        ks.append(k)
        acc += float(correct_fn(majority_vote([a for a, _ in s[:k]]).answer, gold))
        toks += spent
    return {"curve": curve, "matched": {"accuracy": acc / len(samples), "tokens": toks / len(samples),
                                        "mean_samples": sum(ks) / len(ks)}}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import os
    import time

    import torch

    from ..train.rewards import verify_math
    from .base import ANSWER_FNS, SampleStrategy

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be ≥ 1, got {args.limit}")
    if args.batch_size < 1 or args.baseline_max_samples < 1:
        raise ConfigError("--batch-size and --baseline-max-samples must be ≥ 1")
    rows = _load_rows(args.data, args.limit)
    strategy = _strategy(args)
    model, tok = _load_model(args.model)
    gen = torch.Generator().manual_seed(args.seed)

    def correct(pred: Optional[str], gold: str) -> bool:
        return pred is not None and bool(verify_math(pred, gold))

    t0 = time.perf_counter()
    results = []
    for i in range(0, len(rows), args.batch_size):
        batch = rows[i:i + args.batch_size]
        results += strategy.run(model, tok, [r["question"] for r in batch], generator=gen,
                                answer_fn=ANSWER_FNS[args.answer])
    strat_seconds = time.perf_counter() - t0

    # plain sampling + majority vote, same sampling settings, until each question's strategy spend is reached
    sampler = SampleStrategy(max_new_tokens=getattr(strategy, "max_new_tokens", 512),
                             temperature=getattr(strategy, "temperature", 0.6), top_p=getattr(strategy, "top_p", 0.95))
    chunk = 4
    samples: list[list[tuple[Optional[str], int]]] = [[] for _ in rows]
    targets = [r.tokens_spent for r in results]
    t1 = time.perf_counter()
    while True:
        todo = [i for i in range(len(rows)) if sum(n for _, n in samples[i]) < max(targets[i], 1)
                and len(samples[i]) < args.baseline_max_samples]
        if not todo:
            break
        for j in range(0, len(todo), args.batch_size):
            idx = todo[j:j + args.batch_size]
            qs = [rows[i]["question"] for i in idx for _ in range(chunk)]
            outs = sampler.run(model, tok, qs, generator=gen, answer_fn=ANSWER_FNS[args.answer])
            for k, i in enumerate(idx):
                for o in outs[k * chunk:(k + 1) * chunk]:
                    if len(samples[i]) < args.baseline_max_samples:
                        samples[i].append((o.answer, o.tokens_spent))
    base_seconds = time.perf_counter() - t1
    golds = [r["answer"] for r in rows]
    base = baseline_curve(samples, golds, targets, correct)

    flags = [correct(r.answer, g) for r, g in zip(results, golds)]
    metrics = {
        "strategy": strategy.spec(), "model": args.model, "rows": len(rows), "seed": args.seed,
        "answer_extraction": args.answer,
        "accuracy": sum(flags) / len(flags),
        "tokens_per_question": sum(targets) / len(targets),
        "seconds": strat_seconds,
        "baseline": {"name": "sample + vote:majority at matched compute", **base["matched"], "seconds": base_seconds,
                     "curve": base["curve"]},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.jsonl"), "w", encoding="utf-8") as f:
        for row, r, ok, s in zip(rows, results, flags, samples):
            f.write(json.dumps(_jsonable({**row, "prediction": r.answer, "correct": ok, "tokens_spent": r.tokens_spent,
                                          "info": {k: v for k, v in r.info.items() if k != "report"},
                                          "baseline_answers": [a for a, _ in s],
                                          "baseline_tokens": [n for _, n in s]}), ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(_jsonable(metrics), f, indent=2)
    plot = os.path.join(args.out, "accuracy_vs_tokens.png")
    _plot(metrics, plot)
    print(f"strategy {strategy.name}: accuracy {metrics['accuracy']:.3f} on {len(rows)} questions, "
          f"{metrics['tokens_per_question']:.1f} tokens/question ({strat_seconds:.1f} s)")
    print(f"baseline sample + majority vote at matched compute: accuracy {base['matched']['accuracy']:.3f}, "
          f"{base['matched']['tokens']:.1f} tokens/question ({base['matched']['mean_samples']:.2f} samples)")
    print(f"wrote {os.path.join(args.out, 'results.jsonl')}, {os.path.join(args.out, 'metrics.json')}, {plot}")
    return 0


def _plot(metrics: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["baseline"]["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([c["tokens"] for c in curve], [c["accuracy"] for c in curve], "o-", color="tab:gray",
            label="sample + majority vote (k = 1…K)")
    ax.plot([metrics["baseline"]["tokens"]], [metrics["baseline"]["accuracy"]], "s", color="tab:gray",
            markerfacecolor="white", label="majority vote at matched compute")
    ax.plot([metrics["tokens_per_question"]], [metrics["accuracy"]], "*", markersize=14, color="tab:red",
            label=metrics["strategy"]["name"])
    ax.set_xlabel("tokens per question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{metrics['strategy']['name']} vs majority vote ({metrics['rows']} questions, {metrics['model']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

"""``entrolab infer`` and ``entrolab evaluate``: entropy-guided inference from the command line.

    entrolab infer [--model default|tiny|PATH] [--strategy NAME] [--budget N] [--param key=value ...]
                   [--clustering strategy|exact|math|embedding] "question"
    entrolab evaluate --data FILE.jsonl|arithmetic [--strategy NAME] [--budget N] [--limit N] [--out DIR]
                      [--sweep auto|none|V1,V2,...] [--baseline-max-samples 64] [--bootstrap 1000]

``infer`` prints the answer, the tokens spent, the entropy trace of the response and an uncertainty block: for a
strategy that samples several answers (vote:*, eager, seat, dts with num_traces ≥ 2) the semantic entropy of the
answer clusters (likelihood and count forms), the clusters and the winner's share; for every strategy the chosen
response's mean and max token entropy, trace length and self-certainty (``--json`` carries the same fields under
"uncertainty"). ``evaluate`` scores a strategy on a JSONL file of ``{"question": ..., "answer": ...}`` rows (``problem``/``solution`` also accepted; a solution's
last ``\\boxed{}`` is its answer), at its configured setting and at the other settings of its sweep knob, and
compares it with plain sampling + majority vote at matched compute: every question gets the same number K of plain
samples, K raised until each question's samples reach the largest number of tokens the strategy spent on it, and for
each strategy setting the baseline votes over the fewest first samples that reach that setting's tokens. When the
cap ``--baseline-max-samples`` stops K first, the output and metrics.json say "baseline capped at N samples: X tokens
vs Y" instead of claiming matched compute. It writes ``results.jsonl``, ``metrics.json``,
``accuracy_vs_tokens.png`` (both accuracy-vs-tokens curves) and ``accuracy_vs_rejection.png`` to ``--out``. It also
scores every uncertainty measure the strategy allows (:mod:`entrolab.inference.uncertainty`) against correctness at
the configured setting: AUROC and PRR with 95 % percentile-bootstrap CIs over questions, and accuracy vs the fraction
of most uncertain questions left unanswered (``accuracy_vs_rejection.png``). ``--data arithmetic`` reads the packaged
64-question set.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any, Optional

from ..errors import ConfigError


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
    e.add_argument("--data", required=True,
                   help="JSONL file with question/answer (or problem/solution) rows, or the name of a packaged set: "
                   + "; ".join(f"{k} ({v[1]})" for k, v in PACKAGED_DATA.items()))
    _common(e)
    e.add_argument("--limit", type=int, default=None, help="use the first N rows")
    e.add_argument("--out", default="entrolab_eval", help="output directory (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=4, help="questions decoded together (default: %(default)s)")
    e.add_argument("--baseline-max-samples", type=int, default=64,
                   help="cap on baseline samples per question; when it stops the baseline short of the strategy's "
                   "tokens the output says so (default: %(default)s)")
    e.add_argument("--sweep", default="auto", metavar="V1,V2,...|auto|none",
                   help="settings of the strategy's sweep knob for the accuracy-vs-tokens curve: auto (the "
                   "strategy's default sweep, see docs/inference.md), none (only the configured setting), or "
                   "comma-separated values (default: %(default)s)")
    e.add_argument("--sweep-field", default=None, metavar="FIELD",
                   help="the parameter to sweep (default: the strategy's sweep knob, e.g. n for vote:*, "
                   "max_active for dts, delta for eat)")
    e.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="percentile-bootstrap resamples over questions for the 95 %% CIs of each uncertainty "
                   "measure's AUROC and PRR (seeded by --seed; 0: no CIs; default: %(default)s)")
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
    p.add_argument("--clustering", choices=["strategy", "exact", "math", "embedding"], default="strategy",
                   help="how sampled answers are grouped for semantic entropy and the cluster summary: the "
                   "strategy's own equivalence setting (math for strategies without one), exact strings, "
                   "math-verify equivalence, or the packaged all-MiniLM-L6-v2 embedding (default: %(default)s)")


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
        from ..engine.models import load_model

        model, tok = load_model()
    elif spec == "tiny":
        from ..engine.models import tiny_model

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


def _clustering(args: argparse.Namespace, strategy) -> str:
    """--clustering, where "strategy" means the strategy's ``equivalence`` field (math when it has none)."""
    if getattr(args, "clustering", "strategy") != "strategy":
        return args.clustering
    return getattr(strategy, "equivalence", "math")


def _f(x: Any, spec: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def format_uncertainty(block: dict[str, Any]) -> list[str]:
    """The text lines of ``entrolab infer``'s uncertainty block (:func:`entrolab.inference.uncertainty.
    uncertainty_block`)."""
    n = block["samples"]
    lines = []
    if n >= 2:
        lines.append(f"uncertainty ({n} sampled answers; clusters by {block['clustering_label']}):")
        lines.append(f"  semantic entropy: {_f(block['semantic_entropy'])} nats (likelihood form), "
                     f"{_f(block['semantic_entropy_count'])} nats (count form); ln {n} = {math.log(n):.3f} is "
                     f"the most for {n} samples")
        shown = []
        for c in block["clusters"][:6]:
            label = "no answer" if c["answer"] is None else repr(c["answer"])
            shown.append(f"{label} ×{c['count']} (p {c['probability']:.2f})")
        more = f", … {len(block['clusters']) - 6} more" if len(block["clusters"]) > 6 else ""
        lines.append(f"  answer clusters: {block['num_clusters']}: " + ", ".join(shown) + more)
        agree, answered = round(block["winner_share"] * n), block["answered"]
        of_answered = (f"; {_f(block['winner_share_answered'])} of the {answered} that answered"
                       if answered < n else "")
        lines.append(f"  winner's share: {block['winner_share']:.3f} ({agree} of {n} samples give the answer"
                     f"{of_answered}); inverse-entropy vote confidence {_f(block['inverse_entropy_confidence'])}")
    else:
        lines.append(f"uncertainty ({n} response{'s' if n != 1 else ''}):")
    if "trace_length" in block:
        lines.append(f"  chosen response: mean token entropy {_f(block['mean_token_entropy'])} nats, max "
                     f"{_f(block['max_token_entropy'])} nats, trace length {block['trace_length']} tokens, "
                     f"self-certainty {_f(block['self_certainty'])} nats")
    if block["unavailable"]:
        names = ", ".join(block["unavailable"])
        why = sorted(set(block["unavailable"].values()))
        lines.append(f"  not available from this strategy: {names} ({'; '.join(why)}); "
                     f"a sampling strategy such as vote:majority gives them")
    return lines


# ---------------------------------------------------------------------------------------------------------------------
# infer
# ---------------------------------------------------------------------------------------------------------------------


def _cmd_infer(args: argparse.Namespace) -> int:
    import time

    import torch

    if not args.question.strip():
        raise ConfigError("infer: the question is empty; pass it as the first argument, e.g. "
                          "`entrolab infer \"What is 17 + 25?\"`")
    strategy = _strategy(args)
    model, tok = _load_model(args.model)
    t0 = time.perf_counter()
    from .base import ANSWER_FNS

    res = strategy.run(model, tok, [args.question], generator=torch.Generator().manual_seed(args.seed),
                       answer_fn=ANSWER_FNS[args.answer])[0]
    seconds = time.perf_counter() - t0
    ent = res.entropy_trace
    from .uncertainty import uncertainty_block

    block = uncertainty_block(res, _clustering(args, strategy))
    if args.json:
        print(json.dumps(_jsonable({"strategy": strategy.spec(), "answer": res.answer, "tokens_spent": res.tokens_spent,
                                    "seconds": seconds, "entropy_trace": ent, "response": res.text,
                                    "info": res.info, "uncertainty": block}), ensure_ascii=False))
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
    for line in format_uncertainty(block):
        print(line)
    print("--- response ---")
    print(res.text)
    return 0


# ---------------------------------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------------------------------


# Evaluation sets shipped with the package (``--data NAME``), under src/entrolab/inference/data/.
PACKAGED_DATA = {
    "arithmetic": ("arithmetic.jsonl", "64 held-out questions of the synthetic arithmetic task at its default level "
                   "(2-digit + 2-digit), build_task('arithmetic').heldout(64)"),
}


def packaged_data(name: str) -> str:
    """The path of a packaged evaluation set (:data:`PACKAGED_DATA`)."""
    from importlib.resources import files

    if name not in PACKAGED_DATA:
        raise ConfigError(f"no packaged data set {name!r}; packaged: {', '.join(PACKAGED_DATA)}")
    return str(files("entrolab.inference").joinpath("data", PACKAGED_DATA[name][0]))


def _load_rows(path: str, limit: Optional[int]) -> list[dict[str, str]]:
    import os

    if not os.path.isfile(path) and path in PACKAGED_DATA:
        path = packaged_data(path)
    if not os.path.isfile(path):
        raise ConfigError(f"--data {path!r}: no such file (packaged sets: {', '.join(PACKAGED_DATA)})")
    from ..files import numbered_jsonl, read_text

    rows = []
    for n, obj in numbered_jsonl(read_text(path, what="data file"), path, objects=True):
        q = obj.get("question", obj.get("problem", obj.get("prompt")))
        a = obj.get("answer", obj.get("gold", obj.get("target")))
        if a is None and obj.get("solution") is not None:
            from ..env.rewards import extract_boxed

            a = extract_boxed(str(obj["solution"]))
        if q is None or a is None or not str(q).strip():
            raise ConfigError(f"{path} line {n}: needs 'question' (or 'problem'), not empty, and 'answer' (or a "
                              f"'solution' with \\boxed{{}}); got keys {sorted(obj)}")
        rows.append({"question": str(q), "answer": str(a)})
        if limit is not None and len(rows) >= limit:
            break
    if not rows:
        raise ConfigError(f"--data {path!r} has no rows")
    return rows


def majority_curve(samples: list[list[tuple[Optional[str], int]]], golds: list[str], correct_fn) -> list[dict]:
    """Majority-vote accuracy and mean tokens per question using the first k baseline samples of every question, for
    k = 1 … (the fewest samples any question has), so that every point is exactly k samples per question."""
    from .aggregate import majority_vote

    kmax = min(len(s) for s in samples) if samples else 0
    curve = []
    for k in range(1, kmax + 1):
        acc = toks = 0.0
        for s, gold in zip(samples, golds):
            acc += float(correct_fn(majority_vote([a for a, _ in s[:k]]).answer, gold))
            toks += sum(n for _, n in s[:k])
        curve.append({"k": k, "accuracy": acc / len(samples), "tokens": toks / len(samples)})
    return curve


def matched_point(samples: list[list[tuple[Optional[str], int]]], golds: list[str], targets: list[int],
                  correct_fn) -> dict[str, Any]:
    """Majority vote at matched compute: for question i the fewest first samples whose tokens reach ``targets[i]``
    (the strategy's tokens on that question). A question whose samples never reach it (the sample cap) uses all of
    them and counts in ``capped_questions``; ``matched`` is True only when no question was capped."""
    from .aggregate import majority_vote

    acc = toks = 0.0
    ks, capped = [], 0
    for s, gold, target in zip(samples, golds, targets):
        spent, k = 0, 0
        for _, n in s:
            spent += n
            k += 1
            if spent >= target:
                break
        if spent < target:
            capped += 1
        ks.append(k)
        acc += float(correct_fn(majority_vote([a for a, _ in s[:k]]).answer, gold))
        toks += spent
    n = max(len(samples), 1)
    return {"accuracy": acc / n, "tokens": toks / n, "strategy_tokens": sum(targets) / n,
            "mean_samples": sum(ks) / n, "capped_questions": capped, "matched": capped == 0}


def baseline_curve(samples: list[list[tuple[Optional[str], int]]], golds: list[str], targets: list[int],
                   correct_fn) -> dict[str, Any]:
    """``{"curve": majority_curve(...), "matched": matched_point(...)}``."""
    return {"curve": majority_curve(samples, golds, correct_fn),
            "matched": matched_point(samples, golds, targets, correct_fn)}


def capped_note(point: dict[str, Any], max_samples: int) -> str:
    """'baseline capped at N samples: X tokens vs Y' (X the baseline's, Y the strategy's tokens per question)."""
    return (f"baseline capped at {max_samples} samples: {point['tokens']:.1f} tokens vs "
            f"{point['strategy_tokens']:.1f}")


def sample_baseline(sampler, model, tok, questions: list[str], targets: list[int], max_samples: int,
                    chunk: int, generator, answer_fn) -> list[list[tuple[Optional[str], int]]]:
    """Plain samples for every question, the same number K for all (so the majority-vote curve is exact for
    k = 1 … K): K grows, from an estimate of the samples still needed, until every question's samples reach its
    target tokens, or K = ``max_samples``. Returns per question [(answer, tokens)]."""
    samples: list[list[tuple[Optional[str], int]]] = [[] for _ in questions]
    k = 0
    while k < max_samples:
        spent = [sum(n for _, n in s) for s in samples]
        short = [i for i in range(len(questions)) if spent[i] < max(targets[i], 1)]
        if not short:
            break
        if k == 0:
            k_next = 2
        else:  # samples needed at each short question's mean length so far
            k_next = max(k + 1, max(k + math.ceil((max(targets[i], 1) - spent[i]) / max(spent[i] / k, 1.0))
                                    for i in short))
        k_next = min(k_next, max_samples)
        todo = [i for i in range(len(questions)) for _ in range(k_next - len(samples[i]))]
        for j in range(0, len(todo), chunk):
            idx = todo[j:j + chunk]
            outs = sampler.run(model, tok, [questions[i] for i in idx], generator=generator, answer_fn=answer_fn)
            for i, o in zip(idx, outs):
                samples[i].append((o.answer, o.tokens_spent))
        k = k_next
    return samples


def _sweep_values(args: argparse.Namespace, strategy) -> tuple[str, list[Any]]:
    knob = args.sweep_field or strategy.sweep_knob()
    if not hasattr(strategy, knob):
        raise ConfigError(f"--sweep-field {knob!r} is not a parameter of {strategy.name}")
    main = getattr(strategy, knob)
    spec = (args.sweep or "auto").strip().lower()
    if spec == "none":
        values: list[Any] = []
    elif spec == "auto":
        if args.sweep_field and args.sweep_field != strategy.sweep_knob():
            raise ConfigError("--sweep-field needs explicit --sweep values (e.g. --sweep 1,2,4)")
        values = list(strategy.default_sweep())
    else:
        values = [_parse_value(v.strip()) for v in args.sweep.split(",") if v.strip()]
        if not values:
            raise ConfigError(f"--sweep {args.sweep!r}: expected comma-separated values, 'auto' or 'none'")
        from .base import build_strategy

        params = {k: v for k, v in strategy.spec().items() if k != "name"}
        for v in values:  # values the user wrote are checked now, before any model loads
            try:
                build_strategy(strategy.name, **{**params, knob: v})
            except ConfigError as e:
                raise ConfigError(f"--sweep {args.sweep!r}: {knob}={v!r} is not a valid setting ({e})") from None
    values = [v for v in values if v != main]
    return knob, [main] + values


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import os
    import time

    import torch

    from ..env.rewards import verify_math
    from .base import ANSWER_FNS, GenerationSettings, SampleStrategy, build_strategy

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be ≥ 1, got {args.limit}")
    if args.batch_size < 1 or args.baseline_max_samples < 1:
        raise ConfigError("--batch-size and --baseline-max-samples must be ≥ 1")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap must be ≥ 0 (0: no confidence intervals), got {args.bootstrap}")
    from ..files import check_dir_path

    check_dir_path("--out", args.out)
    rows = _load_rows(args.data, args.limit)
    strategy = _strategy(args)
    knob, values = _sweep_values(args, strategy)
    model, tok = _load_model(args.model)
    answer_fn = ANSWER_FNS[args.answer]
    questions = [r["question"] for r in rows]
    golds = [r["answer"] for r in rows]

    def correct(pred: Optional[str], gold: str) -> bool:
        return pred is not None and bool(verify_math(pred, gold))

    def run_setting(strat):
        gen = torch.Generator().manual_seed(args.seed)  # the same random numbers for every setting
        t0 = time.perf_counter()
        res = []
        for i in range(0, len(rows), args.batch_size):
            res += strat.run(model, tok, questions[i:i + args.batch_size], generator=gen, answer_fn=answer_fn)
        return res, time.perf_counter() - t0

    # the strategy as configured (the main point), then the other settings of its sweep knob
    results, strat_seconds = run_setting(strategy)
    points = [{"value": values[0], "results": results, "seconds": strat_seconds}]
    sweep_notes: list[str] = []
    base_params = {k: v for k, v in strategy.spec().items() if k != "name"}
    for v in values[1:]:
        try:
            strat = build_strategy(strategy.name, **{**base_params, knob: v})
            res, secs = run_setting(strat)
        except ConfigError as e:
            sweep_notes.append(f"{knob}={v} skipped: {e}")
            continue
        points.append({"value": v, "results": res, "seconds": secs})

    # plain sampling + majority vote, same sampling settings, until each question's largest spend is reached
    sampler = SampleStrategy(**{f: getattr(strategy, f) for f in ("max_new_tokens", "temperature", "top_p")
                                if isinstance(strategy, GenerationSettings)})
    targets_max = [max(p["results"][i].tokens_spent for p in points) for i in range(len(rows))]
    t1 = time.perf_counter()
    samples = sample_baseline(sampler, model, tok, questions, targets_max, args.baseline_max_samples,
                              args.batch_size * 4, torch.Generator().manual_seed(args.seed + 1), answer_fn)
    base_seconds = time.perf_counter() - t1
    cap = args.baseline_max_samples
    sweep_points = []
    for p in points:
        targets = [r.tokens_spent for r in p["results"]]
        flags = [correct(r.answer, g) for r, g in zip(p["results"], golds)]
        m = matched_point(samples, golds, targets, correct)
        if not m["matched"]:
            m["note"] = capped_note(m, cap)
        sweep_points.append({"value": p["value"], "accuracy": sum(flags) / len(flags),
                             "tokens_per_question": sum(targets) / len(targets), "seconds": p["seconds"],
                             "baseline": m})
    main = sweep_points[0]
    base = main["baseline"]
    name = ("sample + vote:majority at matched compute" if base["matched"]
            else f"sample + vote:majority, compute NOT matched ({base['note']})")
    flags = [correct(r.answer, g) for r, g in zip(results, golds)]
    unc, per_question = uncertainty_metrics(results, flags, _clustering(args, strategy), args.bootstrap, args.seed)
    metrics = {
        "strategy": strategy.spec(), "model": args.model, "rows": len(rows), "seed": args.seed,
        "answer_extraction": args.answer,
        "accuracy": main["accuracy"],
        "tokens_per_question": main["tokens_per_question"],
        "seconds": strat_seconds,
        "baseline": {"name": name, **base, "max_samples": cap,
                     "samples_per_question": min(len(s) for s in samples), "seconds": base_seconds,
                     "curve": majority_curve(samples, golds, correct)},
        "sweep": {"field": knob, "points": sorted(sweep_points, key=lambda q: q["tokens_per_question"]),
                  "notes": sweep_notes},
        "uncertainty": unc,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.jsonl"), "w", encoding="utf-8") as f:
        for row, r, ok, s, u in zip(rows, results, flags, samples, per_question):
            f.write(json.dumps(_jsonable({**row, "prediction": r.answer, "correct": ok, "tokens_spent": r.tokens_spent,
                                          "uncertainty": u,
                                          "info": {k: v for k, v in r.info.items() if k != "report"},
                                          "baseline_answers": [a for a, _ in s],
                                          "baseline_tokens": [n for _, n in s],
                                          "baseline_reached_tokens": sum(n for _, n in s) >= r.tokens_spent}),
                               ensure_ascii=False) + "\n")
    with open(os.path.join(args.out, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(_jsonable(metrics), f, indent=2)
    plot = os.path.join(args.out, "accuracy_vs_tokens.png")
    _plot(metrics, plot)
    rej_plot = os.path.join(args.out, "accuracy_vs_rejection.png")
    _plot_rejection(unc, rej_plot, f"{strategy.name} ({len(rows)} questions, {args.model})")
    print(f"strategy {strategy.name} ({knob}={values[0]}): accuracy {metrics['accuracy']:.3f} on {len(rows)} "
          f"questions, {metrics['tokens_per_question']:.1f} tokens/question ({strat_seconds:.1f} s)")
    if base["matched"]:
        print(f"baseline sample + majority vote at matched compute: accuracy {base['accuracy']:.3f}, "
              f"{base['tokens']:.1f} tokens/question ({base['mean_samples']:.2f} samples)")
    else:
        print(f"baseline sample + majority vote, compute NOT matched ({base['note']}; "
              f"{base['capped_questions']} of {len(rows)} questions capped; raise --baseline-max-samples): "
              f"accuracy {base['accuracy']:.3f}, {base['tokens']:.1f} tokens/question "
              f"({base['mean_samples']:.2f} samples)")
    if len(sweep_points) > 1 or sweep_notes:
        print(f"sweep of {knob} (strategy accuracy, tokens/question | baseline majority vote at those tokens):")
        for q in metrics["sweep"]["points"]:
            b = q["baseline"]
            bl = (f"{b['accuracy']:.3f}, {b['tokens']:.1f} ({b['mean_samples']:.2f} samples)" if b["matched"]
                  else f"{b['accuracy']:.3f}, {b['note']}")
            print(f"  {knob}={q['value']}: {q['accuracy']:.3f}, {q['tokens_per_question']:.1f} | {bl}")
        for n in sweep_notes:
            print(f"  note: {n}")
    for line in format_uncertainty_scores(unc):
        print(line)
    print(f"wrote {os.path.join(args.out, 'results.jsonl')}, {os.path.join(args.out, 'metrics.json')}, {plot}, "
          f"{rej_plot}")
    return 0


def uncertainty_metrics(results: list, flags: list[bool], clustering: str, resamples: int,
                        seed: int) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Every registered uncertainty measure the strategy's results allow, scored against correctness: per measure
    AUROC and PRR with 95 % percentile-bootstrap CIs over questions, the mean U on right and wrong answers, and the
    accuracy-vs-rejection curve. Returns (the ``uncertainty`` entry of metrics.json, per question {measure: U})."""
    from .uncertainty import (
        CLUSTERINGS,
        MEASURES,
        Evidence,
        build_measures,
        measure_values,
        prediction_rejection_area,
        rejection_curve,
        score_measures,
    )

    measures = build_measures()
    per_question: list[dict[str, float]] = []
    missing: dict[str, str] = {}
    for r in results:
        vals, why = measure_values(Evidence.from_result(r, clustering), measures)
        per_question.append(vals)
        for k, v in why.items():
            missing.setdefault(k, v)
    names = [m.name for m in measures if any(m.name in v for v in per_question)]
    series = {n: [v.get(n, float("nan")) for v in per_question] for n in names}
    scored = score_measures(series, flags, resamples=resamples, seed=seed)
    for n in names:
        finite = [(u, ok) for u, ok in zip(series[n], flags) if math.isfinite(u)]
        scored[n]["arxiv"] = MEASURES.get(n).arxiv
        scored[n]["curve"] = [[round(x, 6), y] for x, y in rejection_curve([u for u, _ in finite],
                                                                           [ok for _, ok in finite])]
        if scored[n]["questions"] < len(results):
            scored[n]["note"] = (f"computed on {scored[n]['questions']} of {len(results)} questions "
                                 f"({missing.get(n, 'undefined elsewhere')})")
    n_right = sum(flags)
    unc = {
        "higher_means": "less confident",
        "clustering": clustering, "clustering_label": CLUSTERINGS.get(clustering, clustering),
        "questions": len(flags), "right": n_right,
        "bootstrap": {"method": "percentile, over questions", "resamples": resamples, "seed": seed, "level": 0.95},
        "measures": scored,
        "unavailable": {k: v for k, v in missing.items() if k not in names},
        "oracle_curve": [[round(x, 6), y] for x, y in rejection_curve([-float(f) for f in flags], flags)],
        "random_accuracy": n_right / len(flags) if flags else float("nan"),
        "oracle_area": prediction_rejection_area([-float(f) for f in flags], flags) if flags else float("nan"),
    }
    return unc, per_question


def format_uncertainty_scores(unc: dict[str, Any]) -> list[str]:
    """The terminal summary of :func:`uncertainty_metrics`."""
    n, right = unc["questions"], unc["right"]
    b = unc["bootstrap"]
    ci = (f"95 % percentile-bootstrap CIs over questions, {b['resamples']} resamples, seed {b['seed']}"
          if b["resamples"] else "no CIs (--bootstrap 0)")
    lines = [f"uncertainty vs errors on {n} questions ({right} right; clusters by {unc['clustering_label']}; "
             f"U higher = less confident; {ci}):"]
    if right in (0, n):
        lines.append(f"  every answer is {'right' if right else 'wrong'}: AUROC and PRR are undefined")
    lines.append(f"  {'measure':<28} {'AUROC':>6} {'[95 % CI]':<16} {'PRR':>7} {'[95 % CI]':<17} mean U right / wrong")

    def ci_s(row: dict, key: str) -> str:
        lo_hi = row.get(f"{key}_ci")
        return f"[{_f(lo_hi[0], '.2f')}, {_f(lo_hi[1], '.2f')}]" if lo_hi else ""

    for name, row in unc["measures"].items():
        lines.append(f"  {name:<28} {_f(row['auroc']):>6} {ci_s(row, 'auroc'):<16} {_f(row['prr']):>7} "
                     f"{ci_s(row, 'prr'):<17} {_f(row['mean_right'], '.3g')} / {_f(row['mean_wrong'], '.3g')}"
                     + (f"  ({row['note']})" if "note" in row else ""))
    if unc["unavailable"]:
        reasons = "; ".join(sorted(set(unc["unavailable"].values())))
        lines.append(f"  not available from this strategy: {', '.join(unc['unavailable'])} ({reasons})")
    return lines


def _plot_rejection(unc: dict[str, Any], path: str, title: str) -> dict[str, tuple[list[float], list[float]]]:
    """Accuracy of the answered questions vs the fraction rejected (the most uncertain first) for every scored
    measure, with the oracle (reject wrong answers first) and random rejection (flat at the accuracy). Returns the
    plotted series {label: (x, y)}."""
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[float], list[float]]] = {}
    fig = Figure(figsize=(7.5, 4.8), dpi=120, layout="constrained")
    ax = fig.subplots()
    for name, row in unc["measures"].items():
        x, y = [p[0] for p in row["curve"]], [p[1] for p in row["curve"]]
        ax.plot(x, y, "-", lw=1.4, label=f"{name} (PRR {_f(row['prr'], '.2f')}, AUROC {_f(row['auroc'], '.2f')})")
        series[name] = (x, y)
    x, y = [p[0] for p in unc["oracle_curve"]], [p[1] for p in unc["oracle_curve"]]
    ax.plot(x, y, "--", color="black", lw=1, label="oracle (wrong answers rejected first)")
    series["oracle"] = (x, y)
    ax.axhline(unc["random_accuracy"], ls=":", color="0.5", lw=1, label="random rejection")
    series["random"] = ([0.0, 1.0], [unc["random_accuracy"]] * 2)
    ax.set_xlabel("rejection rate (most uncertain questions left unanswered)")
    ax.set_ylabel("accuracy on the answered questions")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"accuracy vs rejection: {title}; clusters: {unc['clustering']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)
    fig.savefig(path)
    return series


def _plot(metrics: dict[str, Any], path: str) -> dict[str, tuple[list[float], list[float]]]:
    """Accuracy vs tokens per question: the strategy's sweep, the baseline's majority-vote curve (k = 1…K samples)
    and the baseline at the tokens of each strategy setting. Returns the plotted series {label: (x, y)}."""
    from matplotlib.figure import Figure

    series: dict[str, tuple[list[float], list[float]]] = {}
    name = metrics["strategy"]["name"]
    sweep = metrics["sweep"]
    fig = Figure(figsize=(7, 4.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    curve = metrics["baseline"]["curve"]
    x, y = [c["tokens"] for c in curve], [c["accuracy"] for c in curve]
    ax.plot(x, y, "o-", color="tab:gray", ms=4, label=f"sample + majority vote (k = 1…{len(curve)} samples)")
    series["baseline"] = (x, y)
    for c in curve:
        ax.annotate(f"k={c['k']}", (c["tokens"], c["accuracy"]), fontsize=6, color="0.4", xytext=(2, -8),
                    textcoords="offset points")
    pts = sweep["points"]
    x, y = [p["tokens_per_question"] for p in pts], [p["accuracy"] for p in pts]
    ax.plot(x, y, "D-", color="tab:red", ms=5, label=f"{name}, sweep of {sweep['field']} (labels: its values)")
    series["strategy"] = (x, y)
    for i, p in enumerate(pts):  # labels alternate above and below, so that close points stay readable
        ax.annotate(f"{p['value']:g}" if isinstance(p["value"], float) else str(p["value"]),
                    (p["tokens_per_question"], p["accuracy"]), fontsize=7, color="tab:red",
                    xytext=(2, 5 if i % 2 == 0 else -11), textcoords="offset points")
    main = metrics["strategy"].get(sweep["field"])
    mp = [p for p in pts if p["value"] == main] or pts[:1]
    ax.plot([mp[0]["tokens_per_question"]], [mp[0]["accuracy"]], "*", ms=14, color="tab:red",
            label=f"{name} as configured")
    ok = [p["baseline"] for p in pts if p["baseline"]["matched"]]
    capped = [p["baseline"] for p in pts if not p["baseline"]["matched"]]
    if ok:
        ax.plot([b["tokens"] for b in ok], [b["accuracy"] for b in ok], "s", color="tab:gray",
                markerfacecolor="white", label="majority vote at matched compute")
    if capped:
        ax.plot([b["tokens"] for b in capped], [b["accuracy"] for b in capped], "x", color="tab:gray", ms=8,
                label=f"majority vote, capped at {metrics['baseline']['max_samples']} samples (fewer tokens)")
    series["matched"] = ([b["tokens"] for b in ok], [b["accuracy"] for b in ok])
    series["capped"] = ([b["tokens"] for b in capped], [b["accuracy"] for b in capped])
    ax.set_xlabel("tokens per question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{name} vs majority vote ({metrics['rows']} questions, {metrics['model']})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path)
    return series

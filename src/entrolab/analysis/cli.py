"""``entrolab analyze`` and ``entrolab compare``: run reports from the command line.

    entrolab analyze RUN_DIR [--out DIR] [--fit-fraction 0.15]
                     [--verify-dynamics [--model default|HF_MODEL_DIR] [--lr 1e-4] [--n-prompts 4] ...]
    entrolab compare RUN_DIR RUN_DIR ... [--out DIR] [--labels A B ...]

Heavy imports (matplotlib, transformers) happen inside the handlers. Errors are ``ConfigError``: the main CLI prints
them and exits with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..knobs.base import ConfigError


def _load_model(spec: str):
    """'default' → the packaged SmolLM2-135M-Instruct; otherwise a local HF model directory or .gguf file (float32:
    the check measures small logit changes)."""
    try:
        from ..train.models import PACKAGED_DEFAULT, ModelLoadError, load_model
    except ImportError as e:
        raise ConfigError(f"--model needs entrolab.train.models ({e}); install the train extra "
                          "(pip install -e '.[train]')") from None
    name = PACKAGED_DEFAULT if spec.strip().lower() == "default" else spec
    try:
        return load_model(name, dtype="float32")
    except ModelLoadError as e:
        raise ConfigError(f"--model {spec!r}: {e}") from None


def _run_prompts(run, n: int) -> list[str]:
    from .dynamics_check import DEFAULT_PROMPTS

    seen: dict[str, None] = {}
    for s in run.samples:
        p = s.get("prompt")
        if isinstance(p, str) and p.strip():
            seen.setdefault(p, None)
        if len(seen) >= n:
            break
    prompts = list(seen) or list(DEFAULT_PROMPTS)
    return prompts[:n]


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .report import analyze_run
    from .run import load_run

    if not 0.0 < args.fit_fraction < 1.0:
        raise ConfigError(f"--fit-fraction must be in (0, 1), got {args.fit_fraction}")
    run = load_run(args.run_dir)  # fail fast, before a model load, on a bad run directory
    dyn = None
    if args.verify_dynamics:
        if args.n_prompts < 1:
            raise ConfigError(f"--n-prompts must be >= 1, got {args.n_prompts}")
        from .dynamics_check import verify_dynamics

        model, tok = _load_model(args.model)
        prompts = _run_prompts(run, args.n_prompts)
        try:
            dyn = verify_dynamics(model, tok, prompts, lr=args.lr, max_new_tokens=args.max_new_tokens,
                                  group_size=args.group_size, seed=args.seed)
        except ValueError as e:
            raise ConfigError(f"dynamics check: {e}") from None
        print(dyn.describe())
    try:
        rep = analyze_run(run.path, args.out, fit_fraction=args.fit_fraction, dynamics_report=dyn)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    law = rep.summary.get("law")
    if law:
        print(f"law ({law['r_key']}): R = -{law['a']:.4g}*exp(H) + {law['b']:.4g}, ceiling {law['ceiling']:.4g}, "
              f"R² {law['r2']:.3f} over {law['n']} points")
    fc = rep.summary.get("forecast")
    if fc:
        print(f"forecast from the first {fc['n_fit']} points: RMSE {fc['rmse']:.4f}, "
              f"final-step error {fc['final_error']:.4f}")
    for n in rep.notes:
        print(f"note: {n}")
    print(f"report: {rep.html}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .report import compare_runs

    if len(args.run_dirs) < 2:
        raise ConfigError("compare needs at least two run directories (use `entrolab analyze RUN_DIR` for one)")
    out = args.out or str(Path(args.run_dirs[0]).resolve().parent / "compare")
    try:
        rep = compare_runs(args.run_dirs, out, labels=args.labels)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    for row in rep.summary["runs"]:
        acc = row["final_accuracy"]
        print(f"{row['run']}: final accuracy {'–' if acc is None else f'{acc:.4g}'}"
              f"{'' if acc is None else ' (' + row['accuracy_source'] + ')'}, final entropy "
              f"{'–' if row['final_entropy'] is None else format(row['final_entropy'], '.4g')}")
    for n in rep.notes:
        print(f"note: {n}")
    print(f"report: {rep.html}")
    return 0


def register(subparsers) -> None:
    """Add ``analyze`` and ``compare`` to the ``entrolab`` command line."""
    p = subparsers.add_parser("analyze", help="figures and a self-contained HTML report of one run",
                              description="Write figures, report.html and summary.json for a run directory: "
                              "entropy/reward curves, the entropy–performance law and its forecast (2505.22617), "
                              "entropy dynamics, covariance tails, token-entropy histograms and samples.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `entrolab train`")
    p.add_argument("--out", metavar="DIR", default=None, help="output folder (default RUN_DIR/analysis)")
    p.add_argument("--fit-fraction", type=float, default=0.15,
                   help="fraction of points the forecast fits the law on (the paper's 15%%)")
    p.add_argument("--verify-dynamics", action="store_true",
                   help="also take one SGD policy-gradient step on a model and compare predicted vs. exact ΔH")
    p.add_argument("--model", default="default", metavar="PATH_OR_DEFAULT",
                   help="model for --verify-dynamics: 'default' (packaged SmolLM2-135M-Instruct), a local HF model "
                   "directory or a .gguf file")
    p.add_argument("--lr", type=float, default=1e-4, help="SGD step size of the dynamics check")
    p.add_argument("--n-prompts", type=int, default=4,
                   help="prompts for the dynamics check (from the run's samples.jsonl, else built-in ones)")
    p.add_argument("--group-size", type=int, default=4, help="responses sampled per prompt in the dynamics check")
    p.add_argument("--max-new-tokens", type=int, default=16, help="response length cap in the dynamics check")
    p.add_argument("--seed", type=int, default=0, help="sampling / advantage seed of the dynamics check")
    p.set_defaults(func=_cmd_analyze)

    c = subparsers.add_parser("compare", help="overlay several runs and tabulate their outcomes",
                              description="Overlay entropy and reward curves of several runs and write compare.html "
                              "with final accuracy, pass@k, final entropy, entropy area and the law's a/b/ceiling.")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", metavar="DIR", default=None, help="output folder (default: 'compare' beside the first run)")
    c.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the directory names)")
    c.set_defaults(func=_cmd_compare)

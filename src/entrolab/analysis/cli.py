"""``entrolab analyze`` and ``entrolab compare``: run reports from the command line.

    entrolab analyze RUN_DIR [--out DIR] [--fit-fraction 0.15] [--verify-dynamics ...]
    entrolab analyze --verify-dynamics [--model smollm2|tiny|PATH] [--optimizer adamw] [--lr 1e-6]
                     [--advantages auto|verifier|random] [--n-prompts 4] [--group-size 4] [--out DIR]
    entrolab compare RUN_DIR RUN_DIR ... [--out DIR] [--labels A B ...]

``--verify-dynamics`` takes one real update on a model (a batch of the default task's prompts, rewards from its
verifier, GRPO group advantages, one AdamW step by default) and compares the per-state Lemma-1 prediction with the
exact entropy change. Without RUN_DIR it writes ``dynamics_check.png`` and ``dynamics_check.json`` to ``--out``
(default ``dynamics_check``); with RUN_DIR the check becomes part of the run's report.

Heavy imports (matplotlib, transformers) happen inside the handlers. Errors are ``ConfigError``: the main CLI prints
them and exits with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..files import check_dir_path


def _load_model(spec: str):
    """'default'/'smollm2' → the packaged SmolLM2-135M-Instruct; 'tiny' → the tiny random test model; otherwise a
    local HF model directory or .gguf file (float32: the check measures small logit changes)."""
    try:
        from ..engine.models import (
            PACKAGED_DEFAULT,
            ModelLoadError,
            load_model,
            tiny_model,
        )
    except ImportError as e:
        raise ConfigError(f"--model needs entrolab.engine.models ({e}); install the train extra "
                          "(pip install -e '.[train]')") from None
    key = spec.strip().lower()
    if key == "tiny":
        return tiny_model(seed=0)
    name = PACKAGED_DEFAULT if key in ("default", "smollm2") else spec
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


DEFAULT_LR = {"adamw": 1e-7, "sgd": 1e-4}


def _run_task(run):
    """The task a run trained on, when its config.yaml names a built-in synthetic one; else None (the default)."""
    data = run.config.get("data") if run is not None else None
    if not isinstance(data, dict) or data.get("task") not in ("arithmetic", "countdown"):
        return None
    from ..env.tasks import build_task

    params = {k: data[k] for k in ("difficulty",) if data.get(k) is not None}
    try:
        return build_task(data["task"], **params)
    except Exception:  # noqa: BLE001 — an unbuildable task falls back to the default one
        return None


def _verify(args: argparse.Namespace, run):
    """Run the dynamics check the options ask for; returns the DynamicsReport."""
    from .dynamics_check import verify_dynamics, verify_dynamics_on_task

    if args.n_prompts < 1 or args.group_size < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise ConfigError("--n-prompts, --group-size and --max-new-tokens must be >= 1")
    lr = DEFAULT_LR[args.optimizer] if args.lr is None else args.lr
    model, tok = _load_model(args.model)
    try:
        if run is not None and args.advantages == "random" and run.samples:
            # the run's own prompts (samples.jsonl) carry no gold answers: random ±1 advantages on them
            prompts = _run_prompts(run, args.n_prompts)
            return verify_dynamics(model, tok, prompts, lr=lr, max_new_tokens=args.max_new_tokens or 16,
                                   group_size=args.group_size, seed=args.seed, optimizer=args.optimizer,
                                   source=f"prompts from {run.path.name}/samples.jsonl")
        return verify_dynamics_on_task(model, tok, _run_task(run), n_prompts=args.n_prompts,
                                       group_size=args.group_size, max_new_tokens=args.max_new_tokens, lr=lr,
                                       optimizer=args.optimizer, advantages=args.advantages, seed=args.seed)
    except ValueError as e:
        raise ConfigError(f"dynamics check: {e}") from None


def _cmd_analyze(args: argparse.Namespace) -> int:
    from .report import analyze_run
    from .run import load_run

    if not 0.0 < args.fit_fraction < 1.0:
        raise ConfigError(f"--fit-fraction must be in (0, 1), got {args.fit_fraction}")
    if args.lr is not None and not args.lr > 0:
        raise ConfigError(f"--lr must be > 0, got {args.lr}")
    if args.out is not None:
        check_dir_path("--out", args.out)
    if args.run_dir is None:
        if not args.verify_dynamics:
            raise ConfigError("analyze needs a RUN_DIR, or --verify-dynamics to check the entropy dynamics on a "
                              "model without a run (e.g. `entrolab analyze --verify-dynamics --model smollm2`)")
        from .report import write_dynamics_check

        dyn = _verify(args, None)
        print(dyn.describe())
        paths = write_dynamics_check(dyn, args.out or "dynamics_check")
        print(f"wrote {paths['png']}, {paths['json']}")
        return 0
    run = load_run(args.run_dir)  # fail fast, before a model load, on a bad run directory
    dyn = None
    if args.verify_dynamics:
        dyn = _verify(args, run)
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
    check_dir_path("--out", out)
    try:
        rep = compare_runs(args.run_dirs, out, labels=args.labels)
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    for row in rep.summary["runs"]:
        acc = row["final_accuracy"]
        cov = row.get("cov_positive_frac")
        print(f"{row['run']}: final accuracy {'–' if acc is None else f'{acc:.4g}'}"
              f"{'' if acc is None else ' (' + row['accuracy_source'] + ')'}, final entropy "
              f"{'–' if row['final_entropy'] is None else format(row['final_entropy'], '.4g')}, "
              f"dynamics/cov_mean > 0 on {'–' if cov is None else f'{cov:.1%}'} of steps")
    for n in rep.notes:
        print(f"note: {n}")
    print(f"report: {rep.html}")
    return 0


def register(subparsers) -> None:
    """Add ``analyze`` and ``compare`` to the ``entrolab`` command line."""
    p = subparsers.add_parser("analyze", help="figures and a self-contained HTML report of one run",
                              description="Write figures, report.html and summary.json for a run directory: "
                              "entropy/reward curves, the entropy–performance law and its forecast (2505.22617), "
                              "entropy dynamics, covariance tails, token-entropy histograms and samples. With --verify-dynamics "
                              "(with or without RUN_DIR): one real update on a model, predicted vs. exact ΔH per "
                              "state (2505.22617 Lemma 1).")
    p.add_argument("run_dir", metavar="RUN_DIR", nargs="?", default=None,
                   help="a run directory written by `entrolab train` (optional with --verify-dynamics)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output folder (default RUN_DIR/analysis; without RUN_DIR: dynamics_check)")
    p.add_argument("--fit-fraction", type=float, default=0.15,
                   help="fraction of points the forecast fits the law on (the paper's 15%%)")
    p.add_argument("--verify-dynamics", action="store_true",
                   help="take one real policy-gradient update on a model and compare predicted vs. exact ΔH per "
                   "state (with or without RUN_DIR)")
    p.add_argument("--model", default="default", metavar="smollm2|tiny|PATH",
                   help="model for --verify-dynamics: 'smollm2' or 'default' (packaged SmolLM2-135M-Instruct), "
                   "'tiny' (random test model), a local HF model directory or a .gguf file")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                   help="the update of the dynamics check: one AdamW step (the trainer's optimizer, fresh state) "
                   "or one plain SGD step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"step size of the dynamics check (default: {DEFAULT_LR['adamw']:g} for adamw, "
                   f"{DEFAULT_LR['sgd']:g} for sgd)")
    p.add_argument("--advantages", choices=["auto", "verifier", "random"], default="auto",
                   help="verifier: GRPO group advantages from the task verifier's rewards; auto: the same, falling "
                   "back to random ±1 when every group's rewards are equal (e.g. a random model); random: random "
                   "±1 (with RUN_DIR: on the run's sampled prompts) (default: %(default)s)")
    p.add_argument("--n-prompts", type=int, default=4,
                   help="prompts in the dynamics check's batch (from the default task, or the run's task)")
    p.add_argument("--group-size", type=int, default=4, help="responses sampled per prompt in the dynamics check")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="response length cap in the dynamics check (default: the task's, 64)")
    p.add_argument("--seed", type=int, default=0, help="sampling / advantage seed of the dynamics check")
    p.set_defaults(func=_cmd_analyze)

    c = subparsers.add_parser("compare", help="overlay several runs and tabulate their outcomes",
                              description="Overlay entropy and reward curves of several runs and write compare.html "
                              "with final accuracy, pass@k, final entropy, entropy area and the law's a/b/ceiling.")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--out", metavar="DIR", default=None, help="output folder (default: 'compare' beside the first run)")
    c.add_argument("--labels", nargs="+", default=None, help="one label per run (default: the directory names)")
    c.set_defaults(func=_cmd_compare)

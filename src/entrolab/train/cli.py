"""``entrolab train``: the main job. With no arguments it runs the embedded default (GRPO on the packaged
SmolLM2-135M-Instruct with the calibrated arithmetic task, 20 steps on a CPU)."""

from __future__ import annotations

import argparse
from typing import Callable

TRAIN_ENGINES: dict[str, Callable] = {}
"""Other engines for ``--engine``: name → ``run(config) -> exit code``; ``entrolab.integrations.cli`` adds ``trl``."""


def register(sub) -> None:
    p = sub.add_parser("train", help="RL-train a causal LM with any catalog method (default: the embedded CPU run)",
                       description=__doc__)
    p.add_argument("--config", help="YAML config file (sections: model, data, rollout, algorithm, optim, eval, "
                                    "diagnostics, logging, checkpoint, critic, seed)")
    p.add_argument("--method", help="catalog method, or several joined by commas (e.g. dr_grpo,kl_cov)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest intact checkpoint (key=value "
                   "overrides may change only the keys docs/training.md lists as safe, e.g. optim.steps)")
    p.add_argument("--overwrite", action="store_true", help="start anew in a logging.run_dir that holds a run, moving "
                                                            "the old one aside to <dir>.replaced-<time>")
    p.add_argument("--print-config", action="store_true", help="print the fully resolved config and exit")
    p.add_argument("--engine", default="native", help="native (entrolab's trainer, default) or trl (TRL's "
                                                        "GRPOTrainer with entrolab's objective; the trl extra)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.lr=1e-5")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .config import load_config

    if args.resume:
        if getattr(args, "engine", "native") != "native":
            raise ConfigError("--resume continues a native run; resume a TRL run with TRL's "
                              "resume_from_checkpoint (docs/scale-out.md)")
        if args.config or args.method or args.overwrite or args.print_config:
            raise ConfigError("--resume takes the run's own config.yaml; drop --config/--method/--overwrite/"
                              "--print-config (key=value overrides of safe keys, e.g. optim.steps=40, are allowed)")
        from .trainer import Trainer

        trainer = Trainer.resume(args.resume, overrides=args.overrides or ())
        print(f"entrolab: resuming {args.resume} at step {trainer.step_index}")
    else:
        config = load_config(args.config, args.overrides, args.method)
        if args.print_config:
            import yaml

            print(config.to_yaml(), end="")
            resolved = config.algorithm.spec().to_dict()
            print("# the algorithm, resolved to its knob components (every default filled in):")
            for line in yaml.safe_dump(resolved, sort_keys=False).splitlines():
                print(f"#   {line}")
            return 0
        engine = getattr(args, "engine", "native")
        if engine != "native":
            if engine not in TRAIN_ENGINES:
                raise ConfigError(f"--engine {engine!r} is unknown; choose one of: native, {', '.join(TRAIN_ENGINES)}")
            return TRAIN_ENGINES[engine](config)
        from .trainer import Trainer

        trainer = Trainer(config, mode="overwrite" if args.overwrite else "new")
        print(f"entrolab: run directory {trainer.run_dir}")
    history = trainer.train()
    last = history[-1] if history else {}
    keys = ("reward/accuracy", "entropy/mean", "eval/accuracy", "eval/pass_at_k")
    summary = ", ".join(f"{k} {last[k]:.3f}" for k in keys if isinstance(last.get(k), float))
    print(f"entrolab: done, {trainer.step_index} steps in {trainer.run_dir}" + (f"; last step: {summary}" if summary else ""))
    print(f"entrolab: see the run with `entrolab analyze {trainer.run_dir}`")
    return 0

"""``entrolab train``: the main job. With no arguments it runs the embedded default (GRPO on the packaged
SmolLM2-135M-Instruct with the calibrated arithmetic task, 20 steps on a CPU)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("train", help="RL-train a causal LM with any catalog method (default: the embedded CPU run)",
                       description=__doc__)
    p.add_argument("--config", help="YAML config file (sections: model, data, rollout, algorithm, optim, eval, "
                                    "diagnostics, logging, checkpoint, critic, seed)")
    p.add_argument("--method", help="catalog method, or several joined by commas (e.g. dr_grpo,kl_cov)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    p.add_argument("--print-config", action="store_true", help="print the fully resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. optim.lr=1e-5")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from ..engine.models import ModelLoadError
    from ..env.tasks import TaskError
    from ..errors import ConfigError

    try:
        return _train(args)
    except (ModelLoadError, TaskError) as e:  # user-facing: a clear message, not a traceback
        raise ConfigError(str(e)) from None


def _train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .config import load_config

    if args.resume:
        if args.config or args.method or args.overrides:
            raise ConfigError("--resume takes the run's own config.yaml; drop --config/--method/overrides")
        from .trainer import Trainer

        trainer = Trainer.resume(args.resume)
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
        from .trainer import Trainer

        trainer = Trainer(config)
        print(f"entrolab: run directory {trainer.run_dir}")
    history = trainer.train()
    last = history[-1] if history else {}
    keys = ("reward/accuracy", "entropy/mean", "eval/accuracy", "eval/pass_at_k")
    summary = ", ".join(f"{k} {last[k]:.3f}" for k in keys if isinstance(last.get(k), float))
    print(f"entrolab: done, {trainer.step_index} steps in {trainer.run_dir}" + (f"; last step: {summary}" if summary else ""))
    print(f"entrolab: see the run with `entrolab analyze {trainer.run_dir}`")
    return 0

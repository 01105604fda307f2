"""``entrolab`` command line: thin over the library. Each area registers its own subcommands and imports its heavy
dependencies only when its command runs.

    entrolab methods [--format table|json|markdown]
    entrolab methods show NAME [--steps N --seed S]
    entrolab train [--config run.yaml] [--method NAME] [key.sub=value ...] [--resume RUN_DIR] [--print-config]
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Optional, Sequence

from .errors import ConfigError, EntrolabError

# Modules that add subcommands: each exposes register(subparsers) -> None.
_AREAS = (
    "entrolab.train.cli",
    "entrolab.analysis.cli",
    "entrolab.inference.cli",
    "entrolab.integrations.cli",
)


def _methods_table(fmt: str) -> str:
    from . import methods

    if fmt == "json":
        from .integrations.support import method_support

        cards = []
        for n in methods.method_names():
            card = methods.get_method(n).card()
            card["engines"] = {e: {"runs": s.ok, "route": s.route, "reason": s.reason,
                                   **({"adv_estimator": s.adv_estimator} if s.adv_estimator else {})}
                               for e, s in method_support(n).items()}
            cards.append(card)
        return json.dumps(cards, indent=2)
    if fmt == "markdown":
        return methods.markdown_table()
    from rich.console import Console
    from rich.table import Table

    from .integrations.support import method_support

    table = Table(title="entrolab methods (engines: native · verl loss|recipe · TRL; docs/scale-out.md)",
                  show_lines=False)
    for col in ("method", "knobs", "arXiv", "entropy effect", "evidence", "native", "verl", "trl"):
        table.add_column(col, overflow="fold")
    for n in methods.method_names():
        m = methods.get_method(n)
        s = method_support(n)
        table.add_row(m.name, ", ".join(m.knobs), m.arxiv, m.entropy_effect, m.evidence,
                      *(s[e].short() for e in ("native", "verl", "trl")))
    console = Console(width=160, record=True)
    with console.capture() as cap:
        console.print(table)
    return cap.get()


def _resolved_components(name: str) -> list[str]:
    """Each slot of the method's resolved objective: its component and a table of the component's fields (the
    value for this method, ``*`` where the preset differs from the component default, and the field's doc)."""
    from . import methods
    from .methods.reference import KNOB_REGISTRIES, parameters, text_table

    resolved = methods.resolve(name)
    lines, preset = [], False
    specs = [(slot, resolved[slot]) for slot in ("sampling", "advantage", "clip", "kl")]
    specs += [("objective", term) for term in resolved["objective"]]
    for slot, spec in specs:
        params = parameters(KNOB_REGISTRIES[slot], spec["name"], spec)
        preset |= any(p.preset for p in params)
        lines.append(f"  {slot + ':':12s} {spec['name']}" + ("" if params else " (no parameters)"))
        lines += text_table(params, indent=4)
    if not resolved["objective"]:
        lines.append(f"  {'objective:':12s} (no terms)")
    lines.append(f"  {'aggregation:':12s} {resolved['aggregation']}")
    if resolved.get("norm_length") is not None:
        lines.append(f"  {'norm_length:':12s} {resolved['norm_length']}")
    if preset:
        lines.append("  * set by this method's preset (the component's own default is given first in the doc)")
    return lines


def _engine_lines(name: str) -> list[str]:
    """Per engine: whether it runs the method, by which route, or why not."""
    from .integrations.support import method_support

    lines = ["  engines:"]
    for engine, s in method_support(name).items():
        if not s.ok:
            lines.append(f"    {engine + ':':8s} no — {s.reason}")
        elif engine == "verl" and s.route == "policy loss":
            lines.append(f"    {engine + ':':8s} actor_rollout_ref.actor.policy_loss.loss_mode=entrolab/{name}"
                         f" algorithm.adv_estimator={s.adv_estimator}")
        elif engine == "verl":
            lines.append(f"    {engine + ':':8s} recipe: python -m entrolab.integrations.verl.main_ppo "
                         f"+entrolab.method={name}")
        elif engine == "trl":
            lines.append(f"    {engine + ':':8s} entrolab train --engine trl --method {name}  (EntrolabGRPOTrainer)")
        else:
            lines.append(f"    {engine + ':':8s} entrolab train --method {name}")
    return lines


def _methods_show(name: str, steps: int, seed: int) -> str:
    import warnings

    from . import methods
    from .batch import BatchError
    from .toy import TabularPolicy, ToySettings, train_toy

    m = methods.get_method(name)
    lines = [f"{m.name} — {m.title}", f"  arXiv {m.arxiv} · knobs: {', '.join(m.knobs)} · evidence: {m.evidence}",
             f"  entropy effect: {m.entropy_effect}"]
    if m.notes:
        lines.append(f"  notes: {m.notes}")
    if m.anchor:
        lines.append(f"  anchor: {m.anchor}")
    lines += _resolved_components(name)
    lines += _engine_lines(name)
    if m.toy_overrides:
        lines.append(f"  toy run overrides (scaled to the toy's ~128-token batches): {dict(m.toy_overrides)}")
    settings = ToySettings(steps=steps, seed=seed)
    objective = methods.build(name, **m.toy_overrides)
    if objective.sampling.takes_over_generation():
        lines.append(f"  The toy samples plainly: the sampling strategy {objective.sampling.name!r} (generation, "
                     "branching or prompt order) acts only in `entrolab train`.")
    missing = objective.engine_primitives - {"generation"} - TabularPolicy.PROVIDES
    if missing:
        lines += ["", f"No toy trajectory: {name} needs {', '.join(sorted(missing))} from its engine, which the "
                  "tabular toy has not (texts, a tokenizer, LM logits, reward sources); see the method's docs for its "
                  f"tests, or run `entrolab train --method {name}`."]
        return "\n".join(lines)
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            for label, obj in (("grpo", methods.build("grpo")), (name, objective)):
                runs[label] = train_toy(obj, TabularPolicy(seed=seed), ToySettings(**vars(settings)))
        except BatchError as e:
            lines += ["", f"No toy trajectory: {e}.", "The tabular toy has no texts, answers, rollout trees or LM "
                      f"logits; see the method's docs for its tests, or run `entrolab train --method {name}`."]
            return "\n".join(lines)
    lines.append("")
    lines.append(f"Toy tabular softmax policy (8 prompts × 4 positions × 8 actions, seed {seed}); exact entropy (nats)"
                 " and expected reward:")
    header = f"  {'step':>4}  {'H grpo':>8}  {'H ' + name:>{max(8, len(name) + 2)}}  {'R grpo':>7}  {'R ' + name:>{max(7, len(name) + 2)}}"
    lines.append(header)
    every = max(1, steps // 10)
    g, o = runs["grpo"], runs[name]
    for i in list(range(0, len(g), every)) + ([len(g) - 1] if (len(g) - 1) % every else []):
        lines.append(f"  {int(g[i]['step']):>4}  {g[i]['entropy']:>8.3f}  {o[i]['entropy']:>{max(8, len(name) + 2)}.3f}"
                     f"  {g[i]['reward']:>7.3f}  {o[i]['reward']:>{max(7, len(name) + 2)}.3f}")
    return "\n".join(lines)


def _cmd_methods(args: argparse.Namespace) -> int:
    if args.action == "show":
        if not args.name:
            raise ConfigError("entrolab methods show needs a method name, e.g. `entrolab methods show clip_cov`")
        print(_methods_show(args.name, args.steps, args.seed))
    else:
        print(_methods_table(args.format))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entrolab", description="Policy entropy, measured and controlled.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("methods", help="list the method catalog, or show one method on the toy policy")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="method name (with `show`)")
    p.add_argument("--format", choices=["table", "json", "markdown"], default="table")
    p.add_argument("--steps", type=int, default=30, help="toy steps for `show`")
    p.add_argument("--seed", type=int, default=0, help="toy seed for `show`")
    p.set_defaults(func=_cmd_methods)
    for mod_name in _AREAS:
        try:
            mod = __import__(mod_name, fromlist=["register"])
        except ImportError as e:
            if e.name and e.name.startswith("entrolab"):
                continue  # that area is not part of this build
            raise
        register: Callable = getattr(mod, "register")
        register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may stand before or after options (`train model.name=x --method y optim.lr=z`).
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except EntrolabError as e:  # entrolab's own errors: one line naming the field or file; anything else is a bug
        print(f"entrolab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("entrolab: interrupted (a run's last checkpoint is intact: --resume RUN_DIR continues it)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

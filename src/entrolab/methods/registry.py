"""The method catalog: each method is a named, documented preset of knob components.

A method *sets* some slots of the objective — ``sampling``, ``advantage``, ``clip``, ``kl``, ``objective`` (a list
of terms) and ``aggregation`` — and leaves the rest at the baseline (GRPO advantage, PPO clip ε = 0.2, no KL, no
terms, token-mean). Methods compose when they set different slots (``["qae", "clip_cov"]``); composing two that set
the same slot is an error naming both. ``build`` returns a ready ``PolicyObjective``:

    build("clip_cov")                               # the preset
    build("clip_cov", ratio=1e-3)                   # a hyperparameter, found in the slot that has it
    build(["dr_grpo", "kl_cov"], **{"kl.coef": 2})  # composition, and a slot-qualified hyperparameter
    build("grpo", clip="clip_higher")               # replace a slot's component by name
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

from ..errors import ConfigError
from ..knobs.advantage.base import ADVANTAGES
from ..knobs.clip.base import CLIPS
from ..knobs.kl.base import KLS
from ..knobs.objective.base import TERMS
from ..knobs.sampling.base import SAMPLINGS
from ..objective import PolicyObjective
from ..ops.masked import AGGREGATION_MODES
from ..registry import Registry

COMPONENT_SLOTS: dict[str, Registry] = {
    "sampling": SAMPLINGS,
    "advantage": ADVANTAGES,
    "clip": CLIPS,
    "kl": KLS,
}
SLOTS = (*COMPONENT_SLOTS, "objective", "aggregation")
BASELINE: dict[str, Any] = {
    "sampling": "standard",
    "advantage": "grpo",
    "clip": "ppo",
    "kl": "none",
    "objective": [],
    "aggregation": "token-mean",
}
KNOB_OF_SLOT = {s: ("objective" if s == "aggregation" else s) for s in SLOTS}


@dataclass(frozen=True)
class Method:
    """A catalog entry: what it sets, where it comes from, what it does to entropy, and how exact we are."""

    name: str
    title: str
    arxiv: str
    sets: Mapping[str, Any]
    entropy_effect: str
    evidence: str = "exact"
    notes: str = ""
    category: str = "entropy"  # "baseline" or "entropy"
    # Overrides that scale the preset to the toy policy's small batches (documented per method).
    toy_overrides: Mapping[str, Any] = field(default_factory=dict)

    @property
    def knobs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(KNOB_OF_SLOT[s] for s in self.sets))

    def card(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "arxiv": self.arxiv,
            "knobs": list(self.knobs),
            "sets": {k: v for k, v in self.sets.items()},
            "entropy_effect": self.entropy_effect,
            "evidence": self.evidence,
            "category": self.category,
            "notes": self.notes,
        }


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add a method to the catalog; its slots and component names are checked now, not at first use."""
    if method.name in METHODS:
        raise ConfigError(f"method {method.name!r} is already in the catalog")
    unknown = sorted(set(method.sets) - set(SLOTS))
    if unknown:
        raise ConfigError(f"method {method.name!r} sets unknown slots {unknown}; slots are {', '.join(SLOTS)}")
    if not (method.evidence == "exact" or method.evidence.startswith("approximate")):
        raise ConfigError(f"method {method.name!r}: evidence must be 'exact' or 'approximate — why'")
    METHODS[method.name] = method
    try:
        _resolve([method.name], {})  # validates component names and parameters
    except Exception:
        del METHODS[method.name]  # a rejected method must not stay half-registered
        raise
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_names() -> list[str]:
    return sorted(METHODS)


# --------------------------------------------------------------------------------------------- resolution
def _spec(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return dict(value)
    raise ConfigError(f"{where}: expected a component name or a mapping with a 'name' key, got {value!r}")


def _resolve(names: Sequence[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Compose the presets of ``names`` and apply ``overrides``; returns slot → spec(s)."""
    owner: dict[str, str] = {}
    slots: dict[str, Any] = {k: (list(v) if isinstance(v, list) else v) for k, v in BASELINE.items()}
    for n in names:
        m = get_method(n)
        for slot, value in m.sets.items():
            if slot in owner:
                raise ConfigError(
                    f"methods {owner[slot]!r} and {n!r} both set the {slot!r} slot of the {KNOB_OF_SLOT[slot]} knob; "
                    "compose methods that touch different knobs, or override the slot explicitly"
                )
            owner[slot] = n
            slots[slot] = list(value) if slot == "objective" else value
    specs: dict[str, Any] = {s: _spec(slots[s], f"slot {s!r}") for s in COMPONENT_SLOTS}
    specs["objective"] = [_spec(v, "slot 'objective'") for v in slots["objective"]]
    specs["aggregation"] = slots["aggregation"]
    specs["norm_length"] = None

    # Slot replacements first, then hyperparameters.
    params: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in COMPONENT_SLOTS:
            specs[key] = _spec(value, f"override {key!r}")
        elif key == "objective":
            vals = value if isinstance(value, list) else [value]
            specs["objective"] = [_spec(v, "override 'objective'") for v in vals]
        elif key in ("aggregation", "norm_length"):
            specs[key] = value
        else:
            params[key] = value
    for key, value in params.items():
        _set_param(specs, key, value)

    for slot, reg in COMPONENT_SLOTS.items():
        reg.build(specs[slot]["name"], {k: v for k, v in specs[slot].items() if k != "name"})
    for t in specs["objective"]:
        TERMS.build(t["name"], {k: v for k, v in t.items() if k != "name"})
    if specs["aggregation"] not in AGGREGATION_MODES:
        raise ConfigError(
            f"aggregation {specs['aggregation']!r} is unknown; choose one of {', '.join(AGGREGATION_MODES)}"
        )
    return specs


def _fields(registry: Registry, name: str) -> set[str]:
    return set(registry.defaults(name))


def _set_param(specs: dict[str, Any], key: str, value: Any) -> None:
    """Route ``key`` ('param', 'slot.param', 'objective.i.param' or 'term_name.param') to one component spec."""
    targets: list[tuple[dict[str, Any], Registry, str]] = []
    parts = key.split(".")
    if len(parts) == 1:
        for slot, reg in COMPONENT_SLOTS.items():
            if key in _fields(reg, specs[slot]["name"]):
                targets.append((specs[slot], reg, slot))
        for i, t in enumerate(specs["objective"]):
            if key in _fields(TERMS, t["name"]):
                targets.append((t, TERMS, f"objective.{i}"))
        if len(targets) > 1:
            where = ", ".join(f"{slot}.{key}" for _, _, slot in targets)
            raise ConfigError(f"parameter {key!r} is ambiguous; qualify it as one of: {where}")
        param = key
    else:
        head, param = ".".join(parts[:-1]), parts[-1]
        if head in COMPONENT_SLOTS:
            targets.append((specs[head], COMPONENT_SLOTS[head], head))
        elif head == "objective" and len(specs["objective"]) == 1:
            targets.append((specs["objective"][0], TERMS, "objective.0"))
        elif head.startswith("objective.") and head.split(".", 1)[1].isdigit():
            i = int(head.split(".", 1)[1])
            if i >= len(specs["objective"]):
                raise ConfigError(f"override {key!r}: there are only {len(specs['objective'])} objective terms")
            targets.append((specs["objective"][i], TERMS, head))
        else:
            for i, t in enumerate(specs["objective"]):
                if t["name"] == head:
                    targets.append((t, TERMS, f"objective.{i}"))
        if not targets:
            raise ConfigError(
                f"override {key!r}: {head!r} is not a slot ({', '.join(SLOTS)}) or an objective term of this method"
            )
    if not targets:
        allowed = sorted(
            {f"{slot}.{p}" for slot, reg in COMPONENT_SLOTS.items() for p in _fields(reg, specs[slot]["name"])}
            | {f"objective.{i}.{p}" for i, t in enumerate(specs["objective"]) for p in _fields(TERMS, t["name"])}
        )
        raise ConfigError(f"no component of this method has a parameter {key!r}; parameters: {', '.join(allowed)}")
    spec, reg, slot = targets[0]
    if param not in _fields(reg, spec["name"]):
        allowed = ", ".join(sorted(_fields(reg, spec["name"]))) or "(none)"
        raise ConfigError(f"override {key!r}: {slot} component {spec['name']!r} has no parameter {param!r}; "
                          f"its parameters are: {allowed}")
    spec[param] = value


def resolve(methods: Union[str, Sequence[str]], **overrides: Any) -> dict[str, Any]:
    """The fully resolved slot specs (every default filled in) of ``methods`` with ``overrides``."""
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ConfigError("no method given; choose one or more of: " + ", ".join(method_names()))
    specs = _resolve(names, overrides)
    full: dict[str, Any] = {"methods": names}
    for slot, reg in COMPONENT_SLOTS.items():
        s = specs[slot]
        full[slot] = {"name": s["name"], **reg.defaults(s["name"]), **{k: v for k, v in s.items() if k != "name"}}
    full["objective"] = [
        {"name": t["name"], **TERMS.defaults(t["name"]), **{k: v for k, v in t.items() if k != "name"}}
        for t in specs["objective"]
    ]
    full["aggregation"] = specs["aggregation"]
    full["norm_length"] = specs["norm_length"]
    return full


def build(methods: Union[str, Sequence[str]], **overrides: Any) -> PolicyObjective:
    """A ``PolicyObjective`` for one method or a composition, with hyperparameter / slot overrides."""
    full = resolve(methods, **overrides)

    def make(reg: Registry, spec: Mapping[str, Any]):
        return reg.build(spec["name"], {k: v for k, v in spec.items() if k != "name"})

    return PolicyObjective(
        sampling=make(SAMPLINGS, full["sampling"]),
        advantage=make(ADVANTAGES, full["advantage"]),
        clip=make(CLIPS, full["clip"]),
        kl=make(KLS, full["kl"]),
        terms=[make(TERMS, t) for t in full["objective"]],
        aggregation=full["aggregation"],
        norm_length=full["norm_length"],
        methods=full["methods"],
    )


def markdown_table(names: Optional[Iterable[str]] = None) -> str:
    """The catalog as a Markdown table (``docs/methods.md`` is generated from this)."""
    rows = ["| method | knobs | arXiv | entropy effect | evidence | sets |", "|---|---|---|---|---|---|"]
    for n in names or method_names():
        m = METHODS[n]
        sets = "; ".join(f"{k}={_short(v)}" for k, v in m.sets.items())
        rows.append(f"| `{m.name}` | {', '.join(m.knobs)} | {m.arxiv} | {m.entropy_effect} | {m.evidence} | {sets} |")
    return "\n".join(rows)


def _short(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return str(v.get("name"))
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


__all__ = ["Method", "METHODS", "SLOTS", "build", "resolve", "get_method", "method_names", "register_method",
           "markdown_table"]

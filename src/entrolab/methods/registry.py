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

import typing
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
from ..registry import FieldError, Registry, check_type, init_fields

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
    # The reference implementation the method equals on fixed inputs (tests record its numbers), if any.
    anchor: str = ""

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
            "anchor": self.anchor,
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
        resolve_spec([method.name])  # validates component names and parameters
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
@dataclass(frozen=True)
class ComponentSpec:
    """One slot of a resolved objective: the component's registry name and every parameter (defaults filled)."""

    slot: str
    """``sampling``, ``advantage``, ``clip``, ``kl`` or ``objective.<i>``."""
    registry: Registry = field(repr=False, compare=False)
    name: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}

    def component_class(self) -> type:
        return self.registry.get(self.name)


@dataclass
class ObjectiveSpec:
    """A fully resolved objective: the methods, one :class:`ComponentSpec` per slot, the aggregation and its
    constant length. :func:`resolve_spec` makes it (and validates every value by building each component once);
    :meth:`build` makes the ``PolicyObjective`` — with the instances made during validation the first time, so each
    component is constructed exactly once per resolution."""

    methods: tuple[str, ...]
    slots: dict[str, ComponentSpec]
    aggregation: str
    norm_length: Optional[float]
    _fresh: Optional[dict[str, Any]] = field(default=None, repr=False, compare=False)

    def component(self, slot: str) -> ComponentSpec:
        return self.slots[slot]

    @property
    def terms(self) -> list[ComponentSpec]:
        return [self.slots[k] for k in sorted((k for k in self.slots if k.startswith("objective.")),
                                              key=lambda k: int(k.split(".")[1]))]

    @property
    def reward_source(self) -> Optional[str]:
        """The reward source a component of this objective needs (``env/reward_sources.py``), or None."""
        named = {getattr(c.component_class(), "reward_source", None) for c in self.slots.values()} - {None}
        if len(named) > 1:
            raise ConfigError(f"{'+'.join(self.methods)}: components need different reward sources "
                              f"{', '.join(sorted(named))}")
        return next(iter(named), None)

    def group_relative(self) -> bool:
        """Whether one response per prompt leaves nothing to learn: the advantage compares the responses to a prompt
        (a group of one gets 0) and the sampling strategy samples plain groups of ``rollout.n`` (a strategy that
        generates its own rows, trees or branches, forms its own groups)."""
        advantage = self.slots["advantage"].component_class()
        sampling = self.slots["sampling"].component_class()
        return bool(getattr(advantage, "groupwise", False)) and not sampling.takes_over_generation()

    def advantage_name(self) -> str:
        return self.slots["advantage"].name

    def build(self) -> PolicyObjective:
        comps = self._fresh if self._fresh is not None else {k: _construct(c, "") for k, c in self.slots.items()}
        self._fresh = None
        return PolicyObjective(
            sampling=comps["sampling"], advantage=comps["advantage"], clip=comps["clip"], kl=comps["kl"],
            terms=[comps[t.slot] for t in self.terms], aggregation=self.aggregation, norm_length=self.norm_length,
            methods=self.methods,
        )

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec as plain data (what ``entrolab train --print-config`` shows)."""
        out: dict[str, Any] = {"methods": list(self.methods)}
        for slot in COMPONENT_SLOTS:
            out[slot] = self.slots[slot].as_dict()
        out["objective"] = [t.as_dict() for t in self.terms]
        out["aggregation"] = self.aggregation
        out["norm_length"] = self.norm_length
        return out


def _spec(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return dict(value)
    raise ConfigError(f"{where}: expected a component name or a mapping with a 'name' key, got {value!r}")


def canonical_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides in their one canonical form, dotted keys: the nested YAML ``{clip: {ratio: 1e-3}}``, the flat
    ``{"clip.ratio": 1e-3}`` and the command line's ``algorithm.overrides.clip.ratio=1e-3`` all give
    ``{"clip.ratio": 1e-3}``. A mapping with a ``name`` (``{clip: {name: clip_higher, eps_high: 0.3}}``) replaces the
    slot's component; a bare name (``{kl: ref_kl}``) too."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        key = str(key)
        if isinstance(value, Mapping) and "name" not in value:
            for sub, v in canonical_overrides(value).items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    return out


def resolve_spec(methods: Union[str, Sequence[str]], overrides: Optional[Mapping[str, Any]] = None, *,
                 generation_budget: Optional[int] = None, key_prefix: str = "") -> ObjectiveSpec:
    """Compose the presets of ``methods``, apply ``overrides`` (:func:`canonical_overrides`), fill every default,
    and validate every value by building each component once. ``generation_budget`` (the response length cap) is
    the constant length of Dr. GRPO's ``seq-mean-token-sum-norm`` unless ``norm_length`` is set. Errors name the
    key a user types, prefixed with ``key_prefix`` (``algorithm.overrides.`` in a config)."""
    names = [methods] if isinstance(methods, str) else list(methods)
    if not names:
        raise ConfigError("no method given; choose one or more of: " + ", ".join(method_names()))
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
    for key, value in canonical_overrides(overrides or {}).items():
        if key in COMPONENT_SLOTS:
            specs[key] = _spec(value, f"override {key_prefix}{key}")
        elif key == "objective":
            vals = value if isinstance(value, list) else [value]
            specs["objective"] = [_spec(v, f"override {key_prefix}objective") for v in vals]
        elif key in ("aggregation", "norm_length"):
            specs[key] = value
        else:
            params[key] = value
    for key, value in params.items():
        _set_param(specs, key, value, key_prefix)
    if specs["aggregation"] not in AGGREGATION_MODES:
        raise ConfigError(f"{key_prefix}aggregation = {specs['aggregation']!r} is unknown; choose one of "
                          f"{', '.join(AGGREGATION_MODES)}")
    norm_length = specs["norm_length"]
    if norm_length is None and specs["aggregation"] == "seq-mean-token-sum-norm" and generation_budget is not None:
        norm_length = float(generation_budget)  # Dr. GRPO: a constant length, the generation budget

    resolved: dict[str, ComponentSpec] = {}
    for slot, reg in COMPONENT_SLOTS.items():
        s = specs[slot]
        resolved[slot] = ComponentSpec(slot, reg, s["name"], _full_params(reg, s, f"{key_prefix}{slot}"))
    for i, t in enumerate(specs["objective"]):
        resolved[f"objective.{i}"] = ComponentSpec(f"objective.{i}", TERMS, t["name"],
                                                   _full_params(TERMS, t, f"{key_prefix}objective.{i}"))
    fresh = {slot: _construct(c, key_prefix) for slot, c in resolved.items()}
    return ObjectiveSpec(tuple(names), resolved, specs["aggregation"], norm_length, _fresh=fresh)


def _full_params(reg: Registry, spec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Every parameter of the component (its defaults, then the spec's), type-checked, naming ``where.param``."""
    cls = reg.get(spec["name"])
    hints = typing.get_type_hints(cls)
    given = {k: v for k, v in spec.items() if k != "name"}
    unknown = sorted(set(given) - set(init_fields(cls)))
    if unknown:
        raise ConfigError(f"{where} ({spec['name']}) has no parameter {', '.join(map(repr, unknown))}; its "
                          f"parameters are: {', '.join(sorted(init_fields(cls))) or '(none)'}")
    checked = {k: check_type(where, k, v, hints.get(k)) for k, v in given.items()}
    return {**reg.defaults(spec["name"]), **checked}


def _construct(spec: ComponentSpec, key_prefix: str) -> Any:
    """Build the component of ``spec`` once; a bad value's error names the key a user types."""
    where = f"{key_prefix}{spec.slot}"
    try:
        return spec.registry.build(spec.name, dict(spec.params))
    except FieldError as e:
        if e.field in spec.params:
            raise ConfigError(f"{where}.{e.field} = {e.value!r} {e.reason}") from None
        raise ConfigError(f"{where} ({spec.name}): {e}") from None
    except ConfigError as e:
        raise ConfigError(f"{where} ({spec.name}): {e}") from None


def _fields(registry: Registry, name: str) -> set[str]:
    return set(init_fields(registry.get(name)))


def _set_param(specs: dict[str, Any], key: str, value: Any, key_prefix: str = "") -> None:
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
            where = ", ".join(f"{key_prefix}{slot}.{key}" for _, _, slot in targets)
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
                raise ConfigError(f"override {key_prefix}{key}: there are only {len(specs['objective'])} objective "
                                  "terms")
            targets.append((specs["objective"][i], TERMS, head))
        else:
            for i, t in enumerate(specs["objective"]):
                if t["name"] == head:
                    targets.append((t, TERMS, f"objective.{i}"))
        if not targets:
            raise ConfigError(
                f"override {key_prefix}{key}: {head!r} is not a slot ({', '.join(SLOTS)}) or an objective term of "
                "this method"
            )
    if not targets:
        allowed = sorted(
            {f"{key_prefix}{slot}.{p}" for slot, reg in COMPONENT_SLOTS.items() for p in _fields(reg, specs[slot]["name"])}
            | {f"{key_prefix}objective.{i}.{p}" for i, t in enumerate(specs["objective"])
               for p in _fields(TERMS, t["name"])}
        )
        raise ConfigError(f"no component of this method has a parameter {key!r}; parameters: {', '.join(allowed)}")
    spec, reg, slot = targets[0]
    if param not in _fields(reg, spec["name"]):
        allowed = ", ".join(sorted(_fields(reg, spec["name"]))) or "(none)"
        raise ConfigError(f"override {key_prefix}{key}: {slot} component {spec['name']!r} has no parameter "
                          f"{param!r}; its parameters are: {allowed}")
    spec[param] = value


def resolve(methods: Union[str, Sequence[str]], **overrides: Any) -> dict[str, Any]:
    """The fully resolved slot specs (every default filled in) of ``methods`` with ``overrides``, as plain data."""
    return resolve_spec(methods, overrides).to_dict()


def build(methods: Union[str, Sequence[str]], **overrides: Any) -> PolicyObjective:
    """A ``PolicyObjective`` for one method or a composition, with hyperparameter / slot overrides; each component
    is constructed once."""
    return resolve_spec(methods, overrides).build()


def markdown_table(names: Optional[Iterable[str]] = None) -> str:
    """The catalog as a Markdown table (``docs/methods.md`` is generated from this)."""
    rows = ["| method | knobs | arXiv | entropy effect | evidence | sets |", "|---|---|---|---|---|---|"]
    for n in names or method_names():
        m = METHODS[n]
        sets = "; ".join(f"{k}={_short(v)}" for k, v in m.sets.items())
        rows.append(f"| `{m.name}` | {', '.join(m.knobs)} | {m.arxiv} | {m.entropy_effect} | {m.evidence} | {sets} |")
    return "\n".join(rows)


def anchors_table() -> str:
    """The methods that name an anchor, with it, as a Markdown table (``docs/methods-baselines.md`` is generated
    from this)."""
    rows = ["| method | sets | anchor (equal on the fixed inputs of tests/anchor_inputs.py) |", "|---|---|---|"]
    for n in method_names():
        m = METHODS[n]
        if m.anchor:
            sets = "; ".join(f"{k}={_short(v)}" for k, v in m.sets.items())
            rows.append(f"| `{m.name}` | {sets} | {m.anchor} |")
    return "\n".join(rows)


def _short(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, Mapping):
        return str(v.get("name"))
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)


__all__ = ["ComponentSpec", "Method", "METHODS", "ObjectiveSpec", "SLOTS", "build", "canonical_overrides", "resolve",
           "resolve_spec", "get_method", "method_names", "register_method", "markdown_table", "anchors_table"]

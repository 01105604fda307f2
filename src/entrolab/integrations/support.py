"""Which engine runs which method, and how: the engine contract (``docs/architecture.md``) applied to verl and TRL.

Plain Python, no verl or TRL import: ``entrolab methods`` prints this table and both adapters refuse a method with
its reason before any work (``refuse``).

- **native**: entrolab's own trainer provides every primitive.
- **verl**, two routes:
  - ``policy loss``: the method's loss needs only log-probs, old log-probs, advantages and the mask, and keeps no
    controller state, so it registers as a verl policy loss ``entrolab/<method>`` that an unmodified verl selects
    with ``actor_rollout_ref.actor.policy_loss.loss_mode=entrolab/<method>``; a non-GRPO advantage computed from
    rewards, masks and groups alone registers as ``algorithm.adv_estimator=entrolab/<estimator>``;
  - ``recipe``: the method needs the current policy's entropies (with gradient), the rollout policy's entropies,
    the reference's log-probs, an entropy-shaped advantage or controller state; the recipe entry
    (``python -m entrolab.integrations.verl.main_ppo``) replaces verl's whole loss with entrolab's objective
    (``set_loss_fn``), computes entropy-shaped advantages on the driver from the whole batch, and sends the
    controller state to every rank each step.
  verl provides none of the text-level primitives (texts, tokenizer, logits, generation, reward sources).
- **TRL**: ``EntrolabGRPOTrainer`` (a GRPOTrainer subclass) runs the objective in place of TRL's loss and advantages;
  it provides the decoded completions with their answers (``texts``) and the tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError
from ..knobs.base import Component
from ..knobs.extras import PRIMITIVES
from ..objective import PolicyObjective

ENGINES = ("native", "verl", "trl")

PROVIDES: dict[str, frozenset[str]] = {
    "native": frozenset(PRIMITIVES),
    "verl": frozenset(),
    "trl": frozenset({"texts", "tokenizer"}),
}
"""Engine → the primitives of ``knobs/extras.py`` its adapter provides."""

LOSS_FIELDS = frozenset({"logprobs", "advantages"})
"""What a verl policy loss function receives (besides old log-probs and the mask)."""

GROUP_STATS_IN_LOSS = frozenset({"eag_rl", "aer", "prorl_kl", "ulorl"})
"""Components that read rewards or per-prompt groups inside the loss. A verl micro-batch carries neither whole groups
nor the rewards, so verl refuses them."""


@dataclass(frozen=True)
class Support:
    """Whether ``engine`` runs an objective, by which route, and why not."""

    engine: str
    """``native``, ``verl`` or ``trl``."""
    ok: bool
    """Whether the engine runs the objective."""
    route: str = ""
    """native: ``trainer``; verl: ``policy loss`` or ``recipe``; TRL: ``trainer``."""
    reason: str = ""
    """Why the engine refuses the method (empty when ``ok``)."""
    adv_estimator: Optional[str] = None
    """verl: the ``algorithm.adv_estimator`` the method needs (``grpo`` or ``entrolab/<estimator>``)."""

    def short(self) -> str:
        if not self.ok:
            return "no"
        return {"policy loss": "loss", "recipe": "recipe"}.get(self.route, "yes")


def _overrides(c: Component, hook: str) -> bool:
    return getattr(type(c), hook) is not getattr(Component, hook)


def is_stateful(c: Component) -> bool:
    """A component that updates state between steps (a controller, a curriculum, a history)."""
    return _overrides(c, "on_step_end")


def driver_advantage(c: Component) -> bool:
    """An advantage estimator computed from rewards, masks and groups alone (a verl advantage estimator): it declares
    no field, primitive or state, and computes on a batch that carries nothing else (no tree extras, no
    ``prompt_id`` history) without an error or a warning."""
    if c.requires or c.engine_primitives or c.extras or is_stateful(c):
        return False
    return _computes_from_rewards_alone(type(c).__name__, c)


_PROBED: dict[str, bool] = {}


def _computes_from_rewards_alone(key: str, c: Component) -> bool:
    if key not in _PROBED:
        import copy
        import warnings

        import torch

        from ..batch import RolloutBatch

        g = torch.Generator().manual_seed(0)
        B, T = 8, 5
        batch = RolloutBatch(response_ids=torch.zeros(B, T, dtype=torch.long), response_mask=torch.ones(B, T),
                             old_logprobs=-torch.rand(B, T, generator=g), rewards=torch.rand(B, generator=g),
                             group_ids=torch.arange(B) // 4)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                copy.deepcopy(c).compute(batch)
            _PROBED[key] = True
        except Exception:  # noqa: BLE001 — any failure means it needs more than rewards, masks and groups
            _PROBED[key] = False
    return _PROBED[key]


def _missing(objective: PolicyObjective, engine: str) -> str:
    try:
        objective.check_engine(engine, PROVIDES[engine])
    except ConfigError as e:
        return str(e)
    return ""


def _common_refusals(objective: PolicyObjective, engine: str) -> str:
    missing = _missing(objective, engine)
    if missing:
        return missing
    owners = [c.name for c in objective.components().values() if c.parameters()]
    if owners:
        return (f"{', '.join(owners)} owns trainable parameters, which {engine}'s optimizer does not know; run it in "
                "the native trainer")
    return ""


def verl_support(objective: PolicyObjective) -> Support:
    why = _common_refusals(objective, "verl")
    if why:
        return Support("verl", False, reason=why)
    comps = objective.components()
    if objective.sampling.name != "standard":
        return Support("verl", False, reason=f"the sampling knob's {objective.sampling.name!r} filters or refills "
                       "rollout batches, which verl's own trainer does (algorithm.filter_groups for DAPO's dynamic "
                       "sampling); run it in the native trainer or TRL")
    actions = [c.name for c in comps.values() if _overrides(c, "pop_actions")]
    if actions:
        return Support("verl", False, reason=f"{', '.join(actions)} resets the reference model or the optimizer, "
                       "which verl's workers do not expose")
    batch_scope = [c.name for c in comps.values() if getattr(c, "scope", None) == "batch"]
    if batch_scope:
        return Support("verl", False, reason=f"{', '.join(batch_scope)} with scope=batch selects tokens over the "
                       "whole rollout batch, which a verl loss never sees; use scope=micro")
    grouped = [c.name for c in comps.values() if c.name in GROUP_STATS_IN_LOSS]
    if grouped:
        return Support("verl", False, reason=f"{', '.join(grouped)} reads rewards or per-prompt groups inside the "
                       "loss; a verl micro-batch splits groups and carries no rewards")
    adv = objective.advantage
    adv_estimator = "grpo" if adv.name == "grpo" else (f"entrolab/{adv.name}" if driver_advantage(adv) else None)
    loss_side = [c for slot, c in comps.items() if slot != "advantage"]
    needs_recipe = (adv_estimator is None or any(is_stateful(c) for c in loss_side)
                    or not (objective.requires - {"advantages"}) <= LOSS_FIELDS)
    if needs_recipe:
        return Support("verl", True, "recipe", adv_estimator=adv_estimator or "entrolab (driver)")
    return Support("verl", True, "policy loss", adv_estimator=adv_estimator)


def trl_support(objective: PolicyObjective) -> Support:
    why = _common_refusals(objective, "trl")
    if why:
        return Support("trl", False, reason=why)
    return Support("trl", True, "trainer")


def engine_support(objective: PolicyObjective) -> dict[str, Support]:
    """Engine → :class:`Support` of one objective."""
    native = _missing(objective, "native")
    return {
        "native": Support("native", not native, "trainer" if not native else "", native),
        "verl": verl_support(objective),
        "trl": trl_support(objective),
    }


def method_support(method: str | list[str], **overrides) -> dict[str, Support]:
    from .. import methods

    return engine_support(methods.build(method, **overrides))


def refuse(objective: PolicyObjective, engine: str, route: Optional[str] = None) -> Support:
    """The objective's :class:`Support` in ``engine``; a ``ConfigError`` with the reason when the engine (or the
    given route) cannot run it."""
    s = engine_support(objective)[engine]
    name = "+".join(objective.methods) or "this objective"
    if not s.ok:
        raise ConfigError(f"{engine} cannot run {name}: {s.reason}")
    if route is not None and s.route != route:
        raise ConfigError(f"{name} needs verl's {s.route} route, not the {route} route: "
                          + ("use `python -m entrolab.integrations.verl.main_ppo +entrolab.method=" + name + "`"
                             if s.route == "recipe" else f"select loss_mode=entrolab/{name}"))
    return s


def policy_loss_methods() -> list[str]:
    """Catalog methods that register as verl policy losses ``entrolab/<method>``."""
    from .. import methods

    return [n for n in methods.method_names() if verl_support(methods.build(n)).route == "policy loss"]


def driver_advantages() -> list[str]:
    """Advantage estimators that register as verl advantage estimators ``entrolab/<name>``."""
    from ..knobs.advantage.base import ADVANTAGES

    out = []
    for n in ADVANTAGES.names():
        try:
            c = ADVANTAGES.build(n, {})
        except Exception:  # noqa: BLE001 — a component without defaults for every field is not a preset estimator
            continue
        if driver_advantage(c):
            out.append(n)
    return out

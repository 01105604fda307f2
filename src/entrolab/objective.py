"""``PolicyObjective``: the one place where the knobs meet. Engine-agnostic: the native trainer and the toy policy call
it the same way, and so does any engine that implements the contract of ``docs/architecture.md``.

    objective = PolicyObjective(advantage=GRPOAdvantage(), clip=ClipCov(), kl=NoKL())
    batch = objective.compute_advantages(batch)        # once per rollout batch
    batch = objective.prepare(batch)                   # once per rollout batch (batch-scope selections)
    loss, metrics = objective(micro_batch_with_logprobs)  # per micro-batch, differentiable
    objective.on_step_end(step_metrics)                # once per RL step (controllers)

The loss is  aggregate( term_k ∘ … ∘ term_1 ( ℓ_clip + ℓ_kl ) ),  with ℓ_clip the clip rule's per-token surrogate,
ℓ_kl the KL knob's per-token penalty, and the aggregation one of ``ops.masked.AGGREGATION_MODES``.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import torch

from .batch import RolloutBatch
from .errors import ConfigError
from .knobs.advantage.base import AdvantageEstimator, GRPOAdvantage
from .knobs.base import Component
from .knobs.clip.base import ClipRule, PPOClip
from .knobs.kl.base import KLPenalty, NoKL
from .knobs.objective.base import ObjectiveTerm
from .knobs.sampling.base import SamplingStrategy, StandardSampling
from .ops.dynamics import centered_covariance
from .ops.masked import AGGREGATION_MODES, aggregate_loss, masked_mean

if TYPE_CHECKING:
    from .knobs.extras import ForwardContext, RolloutContext

ENGINE_ACTIONS = frozenset({"reset_reference", "reset_optimizer"})


class PolicyObjective:
    """One component per knob (sampling, advantage, clip, kl) plus an ordered list of objective terms."""

    def __init__(
        self,
        advantage: Optional[AdvantageEstimator] = None,
        clip: Optional[ClipRule] = None,
        kl: Optional[KLPenalty] = None,
        terms: Sequence[ObjectiveTerm] = (),
        aggregation: str = "token-mean",
        sampling: Optional[SamplingStrategy] = None,
        norm_length: Optional[float] = None,
        methods: Sequence[str] = (),
    ):
        if aggregation not in AGGREGATION_MODES:
            raise ConfigError(
                f"aggregation {aggregation!r} is unknown; choose one of {', '.join(AGGREGATION_MODES)}"
            )
        self.sampling = sampling or StandardSampling()
        self.advantage = advantage or GRPOAdvantage()
        self.clip = clip or PPOClip()
        self.kl = kl or NoKL()
        self.terms = list(terms)
        self.aggregation = aggregation
        self.norm_length = norm_length
        self.methods = tuple(methods)
        self._warned_on_policy = False
        for knob, comp, base in (
            ("sampling", self.sampling, SamplingStrategy),
            ("advantage", self.advantage, AdvantageEstimator),
            ("clip", self.clip, ClipRule),
            ("kl", self.kl, KLPenalty),
        ):
            if not isinstance(comp, base):
                raise ConfigError(f"PolicyObjective.{knob}: expected a {base.__name__}, got {type(comp).__name__}")
        for t in self.terms:
            if not isinstance(t, ObjectiveTerm):
                raise ConfigError(f"PolicyObjective.terms: expected ObjectiveTerm items, got {type(t).__name__}")
        for t in self.terms:
            t.attach(self)

    # ---------------------------------------------------------------- structure
    def components(self) -> dict[str, Component]:
        """Slot name → component, e.g. {'sampling': ..., 'advantage': ..., 'clip': ..., 'kl': ..., 'objective.0': ...}."""
        out: dict[str, Component] = {
            "sampling": self.sampling, "advantage": self.advantage, "clip": self.clip, "kl": self.kl
        }
        for i, t in enumerate(self.terms):
            out[f"objective.{i}"] = t
        return out

    @property
    def requires(self) -> frozenset[str]:
        """Optional RolloutBatch fields some component reads (``ref_logprobs``, ``entropy``, ``old_entropy``)."""
        req: set[str] = set()
        for c in self.components().values():
            req |= set(c.requires)
        return frozenset(req)

    @property
    def engine_primitives(self) -> frozenset[str]:
        """What the engine must provide beyond per-token log-probs (``knobs/extras.py``: ``PRIMITIVES``)."""
        out: set[str] = set()
        for c in self.components().values():
            out |= set(c.engine_primitives)
        return frozenset(out)

    @property
    def reward_source(self) -> Optional[str]:
        """The reward source a component needs (``env/reward_sources.py``), or None."""
        named = {c.reward_source for c in self.components().values() if c.reward_source}
        if len(named) > 1:
            raise ConfigError(f"components need different reward sources: {', '.join(sorted(named))}")
        return next(iter(named), None)

    @property
    def has_forward_extras(self) -> bool:
        """Whether some component computes extras in the update forward (the engine then hands it the logits)."""
        return any(type(c).computes_forward_extras() for c in self.components().values())

    def check_engine(self, engine: str, provides: frozenset[str] | set[str]) -> None:
        """Refuse, before any work, a method whose components need primitives this engine does not provide."""
        missing: dict[str, list[str]] = {}
        for c in self.components().values():  # two slots may hold components of one name (MENTOR's)
            lacks = set(c.engine_primitives) - set(provides) - set(missing.get(c.name, ()))
            if lacks:
                missing[c.name] = sorted(set(missing.get(c.name, ())) | lacks)
        if missing:
            detail = "; ".join(f"{k} needs {', '.join(v)}" for k, v in missing.items())
            raise ConfigError(f"{engine} cannot run {'+'.join(self.methods) or 'this objective'}: {detail} "
                              f"(it provides {', '.join(sorted(provides)) or 'no primitives'}). See "
                              "docs/architecture.md, the engine contract.")

    def rollout_extras(self, ctx: "RolloutContext") -> dict[str, torch.Tensor]:
        """Every component's rollout-side extras (``knobs/extras.py``), once per rollout batch, without gradient."""
        return self._merge_extras(lambda c: c.rollout_extras(ctx))

    def forward_extras(self, ctx: "ForwardContext") -> dict[str, torch.Tensor]:
        """Every component's forward-side extras, in an update forward, with gradient."""
        return self._merge_extras(lambda c: c.forward_extras(ctx))

    def _merge_extras(self, compute) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        owner: dict[str, str] = {}
        for slot, c in self.components().items():
            for key, value in compute(c).items():
                if key in out and not torch.equal(out[key], value):
                    raise ConfigError(f"components {owner[key]} and {slot} ({c.name}) compute different "
                                      f"extras[{key!r}]; give them the same settings or compose other methods")
                out[key], owner[key] = value, f"{slot} ({c.name})"
        return out

    @property
    def needs_reference(self) -> bool:
        return "ref_logprobs" in self.requires

    @property
    def needs_entropy_grad(self) -> bool:
        return "entropy" in self.requires

    def describe(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "sampling": self.sampling.spec(),
            "advantage": self.advantage.spec(),
            "clip": self.clip.spec(),
            "kl": self.kl.spec(),
            "objective": [t.spec() for t in self.terms],
            "aggregation": self.aggregation,
        }

    def check_update_regime(self, updates_per_rollout: int) -> None:
        """Warn once if some component can have no effect because every update is on-policy (ratio ≡ 1)."""
        if updates_per_rollout > 1 or self._warned_on_policy:
            return
        idle = [c.name for c in self.components().values() if c.needs_off_policy]
        if idle:
            self._warned_on_policy = True
            warnings.warn(
                f"{', '.join(idle)} can have no effect: each rollout batch gets a single on-policy update, so "
                "π_θ = π_old and the ratio is 1. Use ppo_epochs > 1 or several mini-batches per step.",
                stacklevel=2,
            )

    # ---------------------------------------------------------------- per rollout batch
    def keep(self, batch: RolloutBatch) -> torch.Tensor:
        """The sampling knob's keep-mask over samples (B,)."""
        return self.sampling.keep(batch)

    def compute_advantages(self, batch: RolloutBatch) -> RolloutBatch:
        return batch.replace(advantages=self.advantage.compute(batch))

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        for c in self.components().values():
            batch = c.prepare(batch)
        return batch

    # ---------------------------------------------------------------- per micro-batch
    def __call__(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch.require("logprobs", "advantages", who="PolicyObjective")
        for name in self.requires:
            batch.require(name, who=f"PolicyObjective({', '.join(self.methods) or 'custom'})")
        mask = batch.mask
        agg = dict(num_tokens=batch.global_num_tokens, num_seqs=batch.global_num_seqs, norm_length=self.norm_length)

        pg, metrics = self.clip.pg_loss(batch)
        pen, kl_metrics = self.kl.penalty(batch)
        metrics.update(kl_metrics)
        loss_mat = pg + pen
        for t in self.terms:
            if t.replaces_surrogate:
                # the term replaces the surrogate only: the KL knob's penalty stays, so KL methods compose with it
                new, m = t.apply(loss_mat - pen, batch)
                loss_mat = new + pen
            else:
                loss_mat, m = t.apply(loss_mat, batch)
            metrics.update(m)
        loss = aggregate_loss(loss_mat, mask, self.aggregation, **agg)

        with torch.no_grad():
            metrics["loss/total"] = float(loss)
            metrics["loss/pg"] = float(aggregate_loss(pg, mask, self.aggregation, **agg))
            if not isinstance(self.kl, NoKL):
                metrics["loss/kl"] = float(aggregate_loss(pen, mask, self.aggregation, **agg))
            if batch.entropy is not None:
                metrics["entropy/mean"] = float(masked_mean(batch.entropy.detach(), mask))
            cov = centered_covariance(batch.logprobs, batch.advantages, mask)
            metrics["dynamics/cov_mean"] = float(masked_mean(cov, mask))
        return loss, metrics

    # ---------------------------------------------------------------- per step / state
    def on_step_end(self, metrics: Mapping[str, float]) -> None:
        for c in self.components().values():
            c.on_step_end(metrics)

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors owned by components (engines add them to the optimizer)."""
        return [p for c in self.components().values() for p in c.parameters()]

    def pop_actions(self) -> set[str]:
        """Engine actions requested by components since the last call (``reset_reference``, ``reset_optimizer``)."""
        out: set[str] = set()
        for c in self.components().values():
            out |= set(c.pop_actions())
        unknown = out - ENGINE_ACTIONS
        if unknown:
            raise ConfigError(f"components requested unknown engine actions {sorted(unknown)}; known: "
                              f"{sorted(ENGINE_ACTIONS)}")
        return out

    def state_dict(self) -> dict[str, Any]:
        return {slot: c.state_dict() for slot, c in self.components().items() if c.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        comps = self.components()
        unknown = sorted(set(state) - set(comps))
        if unknown:
            raise ConfigError(f"objective state has entries for unknown slots {unknown}; slots: {sorted(comps)}")
        for slot, s in state.items():
            comps[slot].load_state_dict(s)

"""Engine extras: what the trainer computes for components that need more than per-token log-probs.

A knob component names the ``RolloutBatch.extras`` it reads in ``engine_extras``. Each such name has one *provider*
here, registered in one of two registries:

- ``ROLLOUT_EXTRAS``: computed once per rollout batch, after rewards and the rollout policy's forward pass, without
  gradient (e.g. the rollout policy's top-K log-probs, a response's stage ids, label-free rewards). A provider gets a
  ``RolloutContext`` and returns a tensor with leading dimension B; it may also rewrite ``ctx.rewards`` (label-free
  reward sources such as EVOL-RL's).
- ``FORWARD_EXTRAS``: computed in every policy forward pass of the update, *with* gradient (e.g. AEnt's clamped
  entropy, SimKO's current top-K log-probs). A provider gets a ``ForwardContext`` and returns a tensor ``(b, T, ...)``.

``entrolab train`` refuses up front a method one of whose extras has no provider (``PolicyObjective.check_engine``).
Other engines (verl, TRL adapters) reuse the same providers. Providers that materialise logits do so per micro-batch
(rollout: per ``optim.micro_batch_size`` rows), never for the whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from ..batch import RolloutBatch
from ..errors import ConfigError
from ..knobs.base import Component

ProviderFn = Callable[[Any], torch.Tensor]

# Extras the trainer always fills, with no provider needed.
BASE_EXTRAS = frozenset({"input_ids", "attention_mask", "prompt_id"})


class ProviderRegistry:
    """Name → provider function; registration rejects duplicates."""

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, ProviderFn] = {}

    def register(self, name: str) -> Callable[[ProviderFn], ProviderFn]:
        def deco(fn: ProviderFn) -> ProviderFn:
            if name in self._fns or name in BASE_EXTRAS:
                raise ConfigError(f"{self.kind} extra {name!r} already has a provider")
            self._fns[name] = fn
            return fn

        return deco

    def names(self) -> frozenset[str]:
        return frozenset(self._fns)

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def __getitem__(self, name: str) -> ProviderFn:
        return self._fns[name]


ROLLOUT_EXTRAS = ProviderRegistry("rollout")
FORWARD_EXTRAS = ProviderRegistry("forward")


def provided_extras() -> frozenset[str]:
    """Every extra the trainer can compute."""
    return BASE_EXTRAS | ROLLOUT_EXTRAS.names() | FORWARD_EXTRAS.names()


def component_needing(objective: Any, extra: str) -> Component:
    """The (first) component of ``objective`` that lists ``extra`` in its ``engine_extras`` (to read its
    hyperparameters, e.g. SimKO's ``top_k``)."""
    for comp in objective.components().values():
        if extra in comp.engine_extras:
            return comp
    raise ConfigError(f"no component of this objective needs the extra {extra!r}")


@dataclass
class RolloutContext:
    """What a rollout-extras provider may read. ``rewards`` is mutable: a label-free reward source replaces it."""

    batch: RolloutBatch
    texts: list[str]
    examples: list[Any]
    correct: list[bool]
    objective: Any
    tokenizer: Any
    temperature: float
    rewards: torch.Tensor
    # (rows) → (b, T, V) logits of the rollout policy at the response positions, divided by the temperature.
    old_logits_fn: Optional[Callable[[slice], torch.Tensor]] = None
    chunk_rows: int = 8
    cache: dict[str, Any] = field(default_factory=dict)

    def old_logits(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """The rollout policy's temperature-scaled logits, a chunk of rows at a time: ``(rows, (b, T, V))``."""
        if self.old_logits_fn is None:
            raise ConfigError("this engine cannot provide the rollout policy's logits")
        B = self.batch.batch_size
        for s in range(0, B, self.chunk_rows):
            rows = slice(s, min(B, s + self.chunk_rows))
            yield rows, self.old_logits_fn(rows)

    def answers(self) -> list[Optional[str]]:
        """Each response's final answer (``\\boxed{}``, else the last number), cached."""
        if "answers" not in self.cache:
            from ..env.rewards import extract_answer

            self.cache["answers"] = [extract_answer(t) for t in self.texts]
        return self.cache["answers"]


@dataclass
class ForwardContext:
    """What a forward-extras provider may read: the micro-batch, the policy's final hidden states at the response
    positions (with gradient) and its LM head."""

    micro: RolloutBatch
    hidden: torch.Tensor  # (b, T, D)
    weight: torch.Tensor  # (V, D)
    bias: Optional[torch.Tensor]
    temperature: float
    objective: Any
    cache: dict[str, Any] = field(default_factory=dict)

    def logits(self) -> torch.Tensor:
        """(b, T, V) temperature-scaled logits with gradient, computed once per micro-batch."""
        if "logits" not in self.cache:
            z = torch.nn.functional.linear(self.hidden, self.weight, self.bias).float()
            self.cache["logits"] = z / self.temperature
        return self.cache["logits"]


def compute_rollout_extras(ctx: RolloutContext, names: Sequence[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in sorted(set(names) & ROLLOUT_EXTRAS.names()):
        out[name] = ROLLOUT_EXTRAS[name](ctx)
    return out


def compute_forward_extras(ctx: ForwardContext, names: Sequence[str]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name in sorted(set(names) & FORWARD_EXTRAS.names()):
        out[name] = FORWARD_EXTRAS[name](ctx)
    return out


# ============================================================================ providers of the objective knob (issue 8)
@ROLLOUT_EXTRAS.register("topk_ids")
def _topk_ids(ctx: RolloutContext) -> torch.Tensor:
    """(B, T, K) ids of the rollout policy's top-K tokens per position, sorted by probability (SimKO)."""
    _rollout_topk(ctx)
    return ctx.cache["topk_ids"]


@ROLLOUT_EXTRAS.register("old_topk_logprobs")
def _old_topk_logprobs(ctx: RolloutContext) -> torch.Tensor:
    """(B, T, K) log π_old of those top-K tokens (SimKO)."""
    _rollout_topk(ctx)
    return ctx.cache["old_topk_logprobs"]


def _rollout_topk(ctx: RolloutContext) -> None:
    if "topk_ids" in ctx.cache:
        return
    k = int(getattr(component_needing(ctx.objective, "topk_ids"), "top_k"))
    ids, vals = [], []
    for _, z in ctx.old_logits():
        top = torch.log_softmax(z.float(), -1).topk(k, -1)
        ids.append(top.indices)
        vals.append(top.values)
    ctx.cache["topk_ids"] = torch.cat(ids)
    ctx.cache["old_topk_logprobs"] = torch.cat(vals)


@FORWARD_EXTRAS.register("topk_logprobs")
def _topk_logprobs(ctx: ForwardContext) -> torch.Tensor:
    """(b, T, K) log π_θ of the rollout policy's top-K tokens, with gradient (SimKO)."""
    return torch.log_softmax(ctx.logits(), -1).gather(-1, ctx.micro.extras["topk_ids"].long())


@FORWARD_EXTRAS.register("clamped_entropy")
def _clamped_entropy(ctx: ForwardContext) -> torch.Tensor:
    """(b, T) AEnt's clamped entropy with gradient (``knobs.objective.clamped_entropy_from_logits``)."""
    from ..knobs.objective.bonuses import clamped_entropy_from_logits

    p = float(getattr(component_needing(ctx.objective, "clamped_entropy"), "clamp_p"))
    return clamped_entropy_from_logits(ctx.logits(), p)


ANSWER_MARKERS = ("</think>", "<answer>", "\\boxed")


def answer_start_positions(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor,
                           markers: Sequence[str] = ANSWER_MARKERS) -> torch.Tensor:
    """(B,) index of the first response token whose decoded prefix contains an answer marker (the token that
    completes the marker, or the next one for ``</think>``); T when a response has none."""
    B, T = response_ids.shape
    out = torch.full((B,), T, dtype=torch.long)
    for i in range(B):
        L = int(mask[i].sum())
        ids = response_ids[i, :L].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        hits = [(text.find(m), m) for m in markers if m in text]
        if not hits:
            continue
        pos, marker = min(hits)
        end = pos + (len(marker) if marker == "</think>" else 1)
        lo = first_prefix_reaching(tokenizer, ids, end)
        out[i] = lo if marker == "</think>" else lo - 1
    return out


def first_prefix_reaching(tokenizer: Any, ids: Sequence[int], n_chars: int) -> int:
    """The smallest k in [1, len(ids)] whose decoded prefix ``ids[:k]`` has at least ``n_chars`` characters (binary
    search over prefix lengths): token k − 1 is the one that completes character ``n_chars − 1`` of the text. Maps a
    character offset of a decoded response back to a token (answer markers here, phases and step delimiters in
    ``extras_advantage``)."""
    lo, hi = 1, max(1, len(ids))
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=False)) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


@ROLLOUT_EXTRAS.register("stage")
def _stage(ctx: RolloutContext) -> torch.Tensor:
    """(B, T) AEPO-He stage ids: reflection before the answer marker, answer from it."""
    from ..knobs.objective.bonuses import stage_ids_from_answer_start

    b = ctx.batch
    return stage_ids_from_answer_start(b.mask, answer_start_positions(ctx.tokenizer, b.response_ids, b.mask))


@ROLLOUT_EXTRAS.register("evol_rl_shaped")
def _evol_rl(ctx: RolloutContext) -> torch.Tensor:
    """EVOL-RL (2509.15194) is label-free: replace the rewards by ``evol_rl_rewards`` (majority selects, novelty
    varies) and mark the batch. The novelty embeds the response after ``</think>``."""
    from ..knobs.objective.bonuses import evol_rl_rewards

    texts = [t.split("</think>", 1)[-1] for t in ctx.texts]
    ctx.rewards = evol_rl_rewards(ctx.answers(), texts, ctx.batch.group_ids).to(ctx.rewards.dtype)
    return torch.ones(ctx.batch.batch_size)


# Providers of the advantage knob (issue 6) and label-free rewards register on import.
from . import extras_advantage  # noqa: E402,F401

"""The engine contract of knob components: what a component may ask an engine for beyond the batch's per-token
tensors, and the two contexts through which it computes its own ``RolloutBatch.extras``.

A component names the engine *primitives* it needs (``engine_primitives``) and the extras it computes and reads
(``extras``), and computes them in its own hooks:

- ``rollout_extras(ctx: RolloutContext) -> {name: tensor (B, ...)}``: once per rollout batch, without gradient;
- ``forward_extras(ctx: ForwardContext) -> {name: tensor (b, T, ...)}``: in every policy forward of the update, with
  gradient.

An engine provides a small set of primitives (:data:`PRIMITIVES`) and nothing method-specific; it refuses, before any
work, an objective that needs one it lacks (``PolicyObjective.check_engine``). The shared computations several
components use (answer clusters, phases and steps split at a marker, the rollout policy's top-K, self-certainty)
are functions here, so each component reads its own hyperparameters (``self.top_k``, ``self.step_delimiter``) instead
of an engine reading them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

from ..batch import RolloutBatch
from ..env.rewards import extract_answer
from ..errors import ConfigError

__all__ = ["PRIMITIVES", "ForwardContext", "RolloutContext", "answer_start_positions", "first_prefix_reaching",
           "phase_ids", "rollout_topk", "self_certainty_from_logits", "step_ids"]

PRIMITIVES: dict[str, str] = {
    "texts": "the decoded responses, their examples (gold answers) and the reward source's correctness",
    "tokenizer": "the policy's tokenizer, to map text positions (markers, delimiters) back to tokens",
    "rollout_logits": "the rollout policy's temperature-scaled logits at the response positions, no gradient, a chunk "
                      "of rows at a time",
    "policy_logits": "the current policy's temperature-scaled logits in the update forward, with gradient",
    "generation": "generation services for sampling strategies that choose prompts or take over generation "
                  "(generation.engine.RolloutEngine)",
    "reward_sources": "running a reward source (env/reward_sources.py) named by a component",
    "greedy_rollout": "one greedy (argmax) response per prompt of the rollout batch, scored by the task's verifier: "
                      "each row's prompt's greedy reward (ReMax's baseline)",
    "values": "a value model: its per-token predictions V(s_t) at the response positions of the rollout (no gradient), "
              "and training it in the same update loop on extras['returns'] with PPO's clipped value loss (the "
              "critic: engine/critic.py, and the toy's value table)",
}
"""Primitive → what the engine provides. The native engine provides all of them."""


@dataclass
class RolloutContext:
    """What ``rollout_extras`` may read, once per rollout batch (no gradient)."""

    batch: RolloutBatch
    texts: list[str]
    """The decoded responses (special tokens skipped)."""
    examples: list[Any]
    """Each row's example (``env.tasks.Example``: prompt, gold answer)."""
    correct: list[bool]
    """Each row's correctness under the reward source (the verifier's verdict, or a label-free pseudo-label)."""
    tokenizer: Any = None
    temperature: float = 1.0
    old_logits_fn: Optional[Callable[[slice], torch.Tensor]] = None
    """(rows) → (b, T, V) logits of the rollout policy at the response positions, divided by the temperature."""
    chunk_rows: int = 8
    values_fn: Optional[Callable[[], torch.Tensor]] = None
    """() → (B, T) the value model's predictions V(s_t) at the response positions (the ``values`` primitive)."""
    greedy_fn: Optional[Callable[[], torch.Tensor]] = None
    """() → (B,) the verifier's reward of one greedy response to each row's prompt (the ``greedy_rollout``
    primitive), generated once per prompt."""
    cache: dict[str, Any] = field(default_factory=dict)

    def old_logits(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """The rollout policy's temperature-scaled logits, a chunk of rows at a time: ``(rows, (b, T, V))``."""
        if self.old_logits_fn is None:
            raise ConfigError("this engine cannot provide the rollout policy's logits")
        B = self.batch.batch_size
        for s in range(0, B, self.chunk_rows):
            rows = slice(s, min(B, s + self.chunk_rows))
            yield rows, self.old_logits_fn(rows)

    def values(self) -> torch.Tensor:
        """(B, T) the value model's predictions at the response positions, 0 on padding (cached)."""
        if self.values_fn is None:
            raise ConfigError("this engine has no value model (the `values` primitive)")
        if "values" not in self.cache:
            self.cache["values"] = self.values_fn().float() * self.batch.mask
        return self.cache["values"]

    def greedy_rewards(self) -> torch.Tensor:
        """(B,) each row's prompt's greedy-response reward (cached; one greedy generation per prompt)."""
        if self.greedy_fn is None:
            raise ConfigError("this engine cannot generate greedy responses (the `greedy_rollout` primitive)")
        if "greedy_rewards" not in self.cache:
            self.cache["greedy_rewards"] = self.greedy_fn().float()
        return self.cache["greedy_rewards"]

    def answers(self) -> list[Optional[str]]:
        """Each response's final answer (``\\boxed{}``, else the last number), cached."""
        if "answers" not in self.cache:
            self.cache["answers"] = [extract_answer(t) for t in self.texts]
        return self.cache["answers"]

    def correct_tensor(self) -> torch.Tensor:
        """(B,) float 1.0 for a correct response, else 0.0."""
        return torch.tensor([float(bool(c)) for c in self.correct], dtype=torch.float32)

    def require_tokenizer(self, who: str) -> Any:
        if self.tokenizer is None:
            raise ConfigError(f"{who} needs the policy's tokenizer, which this engine does not provide")
        return self.tokenizer


@dataclass
class ForwardContext:
    """What ``forward_extras`` may read in the update forward: the micro-batch, the policy's final hidden states at
    the response positions (with gradient) and its LM head."""

    micro: RolloutBatch
    hidden: torch.Tensor  # (b, T, D)
    weight: torch.Tensor  # (V, D)
    bias: Optional[torch.Tensor]
    temperature: float
    cache: dict[str, Any] = field(default_factory=dict)

    def logits(self) -> torch.Tensor:
        """(b, T, V) temperature-scaled logits with gradient, computed once per micro-batch."""
        if "logits" not in self.cache:
            z = torch.nn.functional.linear(self.hidden, self.weight, self.bias).float()
            self.cache["logits"] = z / self.temperature
        return self.cache["logits"]


# ============================================================================================ rollout logits
def rollout_topk(ctx: RolloutContext, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, K) ids of the rollout policy's top-K tokens per position, sorted by probability, and their
    log π_old (cached per K)."""
    key = f"topk:{k}"
    if key not in ctx.cache:
        ids, vals = [], []
        for _, z in ctx.old_logits():
            top = torch.log_softmax(z.float(), -1).topk(k, -1)
            ids.append(top.indices)
            vals.append(top.values)
        ctx.cache[key] = (torch.cat(ids), torch.cat(vals))
    return ctx.cache[key]


def self_certainty_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Token self-certainty c = logsumexp(z) − mean_v z_v = KL(U‖π) + log|V| (UCAS, 2510.10649), (..., V) → (...)."""
    z = logits.float()
    return torch.logsumexp(z, -1) - z.mean(-1)


def certainty_and_sampled_logit(ctx: RolloutContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) self-certainty and the sampled token's logit under the rollout policy (UCAS), masked, cached."""
    if "certainty" not in ctx.cache:
        b = ctx.batch
        cert, logit = [], []
        for rows, z in ctx.old_logits():
            z = z.float()
            cert.append(self_certainty_from_logits(z))
            logit.append(z.gather(-1, b.response_ids[rows, :, None].long().to(z.device)).squeeze(-1))
        ctx.cache["certainty"] = (torch.cat(cert).cpu() * b.mask, torch.cat(logit).cpu() * b.mask)
    return ctx.cache["certainty"]


# ============================================================================================ text positions
ANSWER_MARKERS = ("</think>", "<answer>", "\\boxed")


def first_prefix_reaching(tokenizer: Any, ids: Sequence[int], n_chars: int) -> int:
    """The smallest k in [1, len(ids)] whose decoded prefix ``ids[:k]`` has at least ``n_chars`` characters (binary
    search over prefix lengths): token k − 1 is the one that completes character ``n_chars − 1`` of the text. Maps a
    character offset of a decoded response back to a token (answer markers, phases, step delimiters)."""
    lo, hi = 1, max(1, len(ids))
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(ids[:mid]), skip_special_tokens=False)) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


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


def _span(mask_row: torch.Tensor) -> int:
    """Length of a response up to its last valid token (a loss mask may have holes, e.g. tool observations)."""
    valid = torch.nonzero(mask_row > 0).flatten()
    return int(valid.max()) + 1 if valid.numel() else 0


def phase_ids(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor, markers: Sequence[str]) -> torch.Tensor:
    """(B, T) PEAR phases: 1 before the first occurrence of any of ``markers`` (thinking), 0 on the tokens that hold
    the marker, 2 after it (answer); a response without a marker is all thinking. 0 where ``mask`` is 0 (padding,
    tokens the loss does not train)."""
    B, T = response_ids.shape
    out = torch.zeros((B, T), dtype=torch.long)
    for i in range(B):
        L = _span(mask[i])
        out[i, :L] = 1
        ids = response_ids[i, :L].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        hits = [(text.find(m), m) for m in markers if m in text]
        if not hits:
            continue
        pos, marker = min(hits)
        start = first_prefix_reaching(tokenizer, ids, pos + 1) - 1    # the token holding the marker's first char
        end = first_prefix_reaching(tokenizer, ids, pos + len(marker))  # one past the token completing it
        out[i, start:end] = 0
        out[i, end:L] = 2
    return out * (mask > 0)


def step_ids(tokenizer: Any, response_ids: torch.Tensor, mask: torch.Tensor, delimiter: str) -> torch.Tensor:
    """(B, T) step index of each token: a new step starts at the token after the one completing each occurrence of
    ``delimiter`` in the decoded response (non-overlapping; a delimiter inside a token splits after that token).
    The whole response up to its last valid token is decoded; ids past it are 0."""
    if not delimiter:
        raise ValueError("step_ids: the delimiter must be a non-empty string")
    B, T = response_ids.shape
    out = torch.zeros((B, T), dtype=torch.long)
    for i in range(B):
        L = _span(mask[i])
        ids = response_ids[i, :L].tolist()
        text = tokenizer.decode(ids, skip_special_tokens=False)
        starts = torch.zeros(L, dtype=torch.long)
        pos = text.find(delimiter)
        while pos >= 0:
            k = first_prefix_reaching(tokenizer, ids, pos + len(delimiter))
            if k < L:
                starts[k] = 1
            pos = text.find(delimiter, pos + len(delimiter))
        out[i, :L] = torch.cumsum(starts, 0)
    return out

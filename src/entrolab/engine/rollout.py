"""``Rollout``: what one round of sampling hands the trainer — the ``RolloutBatch`` with the texts, examples and
verifier verdicts behind its rows, the rollout pass's hidden states when they were kept, and the generation's own
metrics — and ``PromptStream``, the run's resumable position in the task's training examples."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ..batch import RolloutBatch
from ..errors import ConfigError, TrainingError

SEQUENCE_EXTRAS = ("input_ids", "attention_mask")
"""Extras holding whole sequences ``[left-padded prompt | response]``; stacked with the prompt padded on the left."""


def _pad_right(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _pad_left(x: torch.Tensor, width: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)


@dataclass
class Rollout:
    """One rollout batch and everything behind its rows (row i of each field belongs to row i of ``batch``)."""

    batch: RolloutBatch
    """Rewards (after the reward source), old log-probs and entropies, extras (``input_ids``/``attention_mask`` too)."""
    texts: list[str]
    """The decoded responses."""
    examples: list[Any]
    """Each row's example (prompt and gold answer)."""
    correct: list[bool]
    """The verifier's verdict per row (label-free reward sources never change it: it is what accuracy reports)."""
    truncated: torch.Tensor
    """(B,) bool: no end of sequence within the length cap."""
    hidden: Optional[torch.Tensor] = None
    """(B, T, D) final hidden states of the rollout pass at the response positions, when the engine kept them."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """The generation's own metrics (a sampling strategy's ``sampling/*``, tool use ``tools/*``)."""
    generated_tokens: int = 0
    """Tokens the policy generated for this batch (forked prefixes once; pre-rollouts included)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent: ``generate`` and ``old_logprob`` (the rollout forward, reference and extras)."""

    @property
    def prompt_len(self) -> int:
        return self.batch.extras["input_ids"].shape[1] - self.batch.response_ids.shape[1]

    def summary(self) -> dict[str, Any]:
        """The step metrics of the sampled batch: rewards, verifier accuracy, lengths, and the generation's own."""
        out: dict[str, Any] = {
            "reward/mean": float(self.batch.rewards.mean()),
            "reward/accuracy": float(np.mean(self.correct)),
            "response/length_mean": float(self.batch.mask.sum(-1).mean()),
            "response/truncated_frac": float(self.truncated.float().mean()),
        }
        out.update(self.metrics)
        return out

    def select(self, index: torch.Tensor) -> "Rollout":
        """The rows ``index`` (a LongTensor of row indices)."""
        rows = index.tolist()
        return Rollout(batch=self.batch.select(index), texts=[self.texts[i] for i in rows],
                       examples=[self.examples[i] for i in rows], correct=[self.correct[i] for i in rows],
                       truncated=self.truncated[index], hidden=None if self.hidden is None else self.hidden[index],
                       metrics=self.metrics, generated_tokens=self.generated_tokens, timings=self.timings)

    def concat(self, other: "Rollout", pad_token_id: int) -> "Rollout":
        """Both rollouts' rows, this one's first: prompts padded on the left and responses (and every token-aligned
        extra) on the right to common widths; ``other``'s groups renumbered after this one's. The generation metrics
        stay this rollout's; tokens and timings add up."""
        a, b = self.batch, other.batch
        Ta, Tb = a.response_ids.shape[1], b.response_ids.shape[1]
        T = max(Ta, Tb)
        P = max(self.prompt_len, other.prompt_len)

        def sequences(batch: RolloutBatch, key: str, fill: int) -> torch.Tensor:
            seq = batch.extras[key]
            p = seq.shape[1] - batch.response_ids.shape[1]
            return torch.cat([_pad_left(seq[:, :p], P, fill), _pad_right(seq[:, p:], T, fill)], 1)

        def tokens(x: Optional[torch.Tensor], y: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            return None if x is None else torch.cat([_pad_right(x, T, 0), _pad_right(y, T, 0)])

        def extra(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # token-aligned extras (dim 1 = response length) are padded on the right; others stack as they are
            if x.dim() >= 2 and x.shape[1] == Ta and y.shape[1] == Tb:
                padx = [0, 0] * (x.dim() - 2) + [0, T - x.shape[1]]
                pady = [0, 0] * (y.dim() - 2) + [0, T - y.shape[1]]
                return torch.cat([torch.nn.functional.pad(x, padx), torch.nn.functional.pad(y, pady)])
            return torch.cat([x, y])

        if set(a.extras) != set(b.extras):
            raise ConfigError(f"cannot stack rollouts with different extras: {sorted(set(a.extras) ^ set(b.extras))}")
        extras = {k: extra(a.extras[k], b.extras[k]) for k in a.extras if k not in SEQUENCE_EXTRAS}
        extras["input_ids"] = torch.cat([sequences(a, "input_ids", pad_token_id),
                                         sequences(b, "input_ids", pad_token_id)])
        extras["attention_mask"] = torch.cat([sequences(a, "attention_mask", 0), sequences(b, "attention_mask", 0)])
        offset = int(a.group_ids.max()) + 1
        batch = RolloutBatch(
            response_ids=torch.cat([_pad_right(a.response_ids, T, pad_token_id),
                                    _pad_right(b.response_ids, T, pad_token_id)]),
            response_mask=tokens(a.response_mask, b.response_mask),
            old_logprobs=tokens(a.old_logprobs, b.old_logprobs), rewards=torch.cat([a.rewards, b.rewards]),
            group_ids=torch.cat([a.group_ids, b.group_ids + offset]),
            old_entropy=tokens(a.old_entropy, b.old_entropy), ref_logprobs=tokens(a.ref_logprobs, b.ref_logprobs),
            step=a.step, extras=extras,
        )
        hidden = None
        if self.hidden is not None and other.hidden is not None:
            hidden = torch.cat([torch.nn.functional.pad(self.hidden, (0, 0, 0, T - self.hidden.shape[1])),
                                torch.nn.functional.pad(other.hidden, (0, 0, 0, T - other.hidden.shape[1]))])
        timings = {k: self.timings.get(k, 0.0) + other.timings.get(k, 0.0) for k in {*self.timings, *other.timings}}
        return Rollout(batch=batch, texts=self.texts + other.texts, examples=self.examples + other.examples,
                       correct=self.correct + other.correct, truncated=torch.cat([self.truncated, other.truncated]),
                       hidden=hidden, metrics=self.metrics,
                       generated_tokens=self.generated_tokens + other.generated_tokens, timings=timings)


class PromptStream:
    """The run's position in the task's training examples: ``take(n)`` returns the next ``n`` and advances;
    ``position`` is checkpointed and restored, so a resumed run draws the same prompts."""

    def __init__(self, task: Any, position: int = 0):
        self.task = task
        self.position = int(position)
        self._it: Optional[Iterator] = None

    def take(self, n: int) -> list:
        if self._it is None:
            self._it = iter(self.task.train_examples(start=self.position))
        out = list(islice(self._it, n))
        if len(out) < n:
            raise StreamExhausted(f"the training data ran out at position {self.position + len(out)}; use more data "
                                  "or fewer optim.steps")
        self.position += n
        return out

    def seek(self, position: int) -> None:
        self.position = int(position)
        self._it = None


class StreamExhausted(TrainingError):
    """The task has no more training examples."""

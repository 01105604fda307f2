"""The rows a rollout generated: ``Generation``, the record every generation path returns (plain sampling, trees,
tool turns), with the operations on rows that sampling strategies need (stack, select)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch


@dataclass
class Generation:
    """Token ids of sampled responses. Sequences are ``[left-padded prompt | response | padding]``.

    Plain sampling gives ``n`` rows per prompt, prompt-major. A sampling strategy that takes over generation
    (``SamplingStrategy.rollout``, see ``train/branching.py``) may return any number of rows and fills the optional
    fields: ``prompt_index`` (row → index of its prompt/example, for rewards), ``group_ids`` (row → advantage group;
    default ``prompt_index``), ``trainable`` (the loss mask; default ``response_mask`` — e.g. tool outputs or a
    re-used prefix are attended but not trained), ``extras`` (``RolloutBatch.extras`` with leading dim B; (B, T, ...)
    ones are token-aligned) and ``metrics`` (merged into the step's metrics).
    """

    input_ids: torch.Tensor  # (B, P + T)
    attention_mask: torch.Tensor  # (B, P + T): prompt mask, then 1 on every real response token
    prompt_len: int  # P
    response_ids: torch.Tensor  # (B, T)
    response_mask: torch.Tensor  # (B, T) float: 1 on real response tokens (up to and including EOS)
    truncated: torch.Tensor  # (B,) bool: no EOS within max_new_tokens
    trainable: Optional[torch.Tensor] = None  # (B, T) float loss mask ⊆ response_mask; None = response_mask
    prompt_index: Optional[torch.Tensor] = None  # (B,) long; None = prompt-major with equal counts
    group_ids: Optional[torch.Tensor] = None  # (B,) long; None = prompt_index
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def loss_mask(self) -> torch.Tensor:
        return self.response_mask if self.trainable is None else self.trainable

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())



"""Batch builders shared by the foundation-layer tests."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from entrolab.batch import RolloutBatch


def make_batch(
    lengths: Sequence[int],
    T: Optional[int] = None,
    *,
    rewards: Optional[Sequence[float]] = None,
    group_ids: Optional[Sequence[int]] = None,
    old_logprobs: Optional[torch.Tensor] = None,
    seed: int = 0,
    **fields,
) -> RolloutBatch:
    """A valid RolloutBatch with response lengths ``lengths`` (padding after them); random log-probs in (-3, 0)."""
    B = len(lengths)
    T = T or max(lengths)
    g = torch.Generator().manual_seed(seed)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).float()
    if old_logprobs is None:
        old_logprobs = -3.0 * torch.rand(B, T, generator=g) - 0.01
    return RolloutBatch(
        response_ids=torch.randint(0, 10, (B, T), generator=g),
        response_mask=mask,
        old_logprobs=old_logprobs,
        rewards=torch.tensor(rewards if rewards is not None else [float(i % 2) for i in range(B)]),
        group_ids=torch.tensor(group_ids if group_ids is not None else [0] * B),
        **fields,
    )


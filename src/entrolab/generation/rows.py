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
    (``SamplingStrategy.rollout``, see ``generation/branching.py``) may return any number of rows and fills the optional
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


def select_rows(gen: Any, index: Sequence[int]) -> Any:
    """The rows ``index`` of a ``Generation`` (optional fields and extras sliced along)."""
    idx = torch.as_tensor(list(index), dtype=torch.long)
    out = dataclasses.replace(
        gen, input_ids=gen.input_ids[idx], attention_mask=gen.attention_mask[idx], response_ids=gen.response_ids[idx],
        response_mask=gen.response_mask[idx], truncated=gen.truncated[idx],
        trainable=None if gen.trainable is None else gen.trainable[idx],
        prompt_index=None if gen.prompt_index is None else gen.prompt_index[idx],
        group_ids=None if gen.group_ids is None else gen.group_ids[idx],
        extras={k: v[idx] for k, v in gen.extras.items()}, metrics=dict(gen.metrics))
    return out


def stack_generations(gens: Sequence[Generation], pad_token_id: int) -> Generation:
    """Rows of several generations in one (prompts left-padded, responses right-padded to common widths); optional
    fields filled with their defaults where a part lacks them; extras must be present in every part."""
    P = max(g.prompt_len for g in gens)
    T = max(g.response_ids.shape[1] for g in gens)

    def lp(x, w, v):
        return torch.nn.functional.pad(x, (w - x.shape[1], 0), value=v)

    def rp(x, w, v):
        pad = [0, 0] * (x.dim() - 2) + [0, w - x.shape[1]]
        return torch.nn.functional.pad(x, pad, value=v)

    ids, att, rid, rm, tr, pi, gi = [], [], [], [], [], [], []
    for g in gens:
        ids.append(torch.cat([lp(g.input_ids[:, :g.prompt_len], P, pad_token_id),
                              rp(g.input_ids[:, g.prompt_len:], T, pad_token_id)], 1))
        att.append(torch.cat([lp(g.attention_mask[:, :g.prompt_len], P, 0), rp(g.attention_mask[:, g.prompt_len:], T, 0)],
                             1))
        rid.append(rp(g.response_ids, T, pad_token_id))
        rm.append(rp(g.response_mask, T, 0))
        tr.append(rp(g.loss_mask, T, 0))
        pi.append(g.prompt_index if g.prompt_index is not None else _prompt_major(g))
        gi.append(g.group_ids if g.group_ids is not None else pi[-1])
    keys = set().union(*(g.extras for g in gens))
    extras = {}
    for k in sorted(keys):
        if not all(k in g.extras for g in gens):
            raise ValueError(f"extra {k!r} is missing from some of the stacked generations")
        parts = [g.extras[k] for g in gens]
        token = all(p.dim() >= 2 and p.shape[1] == g.response_ids.shape[1] for p, g in zip(parts, gens))
        extras[k] = torch.cat([rp(p, T, 0) if token else p for p in parts])
    metrics: dict[str, Any] = {}
    for g in gens:
        metrics.update(g.metrics)
    return Generation(input_ids=torch.cat(ids), attention_mask=torch.cat(att), prompt_len=P,
                      response_ids=torch.cat(rid), response_mask=torch.cat(rm),
                      truncated=torch.cat([g.truncated for g in gens]), trainable=torch.cat(tr),
                      prompt_index=torch.cat(pi), group_ids=torch.cat(gi), extras=extras, metrics=metrics)


def _prompt_major(g: Generation) -> torch.Tensor:
    raise ValueError("a generation without prompt_index cannot be stacked; set prompt_index (row → prompt)")

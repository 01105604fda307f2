"""Rollout: batched sampling with transformers ``generate`` (KV cache, left padding), and the policy forward that
turns (prompt + response) token ids into per-token log-probs and entropies of the *sampling* distribution
(temperature applied) with the fused kernel — hidden states × LM-head weight in token chunks, never all logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from ..ops.entropy import fused_logprobs_entropy


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


def eos_ids(model, tokenizer) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return [int(i) for i in ids if i is not None]


def response_mask_from_ids(response_ids: torch.Tensor, eos: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask (B, T): 1 up to and including the first EOS (the model learns to stop), 0 after; and truncation flags."""
    is_eos = torch.zeros_like(response_ids, dtype=torch.bool)
    for e in eos:
        is_eos |= response_ids == e
    seen_before = (is_eos.cumsum(-1) - is_eos.long()) > 0
    mask = (~seen_before).float()
    return mask, ~is_eos.any(-1)


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[str], n: int, temperature: float, top_p: float,
             max_new_tokens: int, do_sample: bool = True) -> Generation:
    """``n`` responses per prompt (rows ordered prompt-major: prompt 0's n samples first)."""
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    ids = enc["input_ids"].repeat_interleave(n, 0)
    att = enc["attention_mask"].repeat_interleave(n, 0)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    out = model.generate(input_ids=ids, attention_mask=att, **kwargs)
    P = ids.shape[1]
    resp = out[:, P:]
    if resp.shape[1] == 0:  # nothing generated: keep a (B, 1) shape with an empty mask
        resp = torch.full((ids.shape[0], 1), tokenizer.pad_token_id, dtype=ids.dtype, device=device)
    rmask, truncated = response_mask_from_ids(resp, eos_ids(model, tokenizer))
    return Generation(
        input_ids=torch.cat([ids, resp], 1), attention_mask=torch.cat([att, rmask.long()], 1), prompt_len=P,
        response_ids=resp, response_mask=rmask, truncated=truncated,
    )


def _backbone(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(base, "base_model_prefix", "model")
    return getattr(base, prefix), base


def response_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Final hidden states (B, T, D) at the positions that predict each response token (index P−1 … P+T−2).

    Position ids follow the attention mask (as ``generate`` does under left padding)."""
    body, _ = _backbone(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = body(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
               position_ids=position_ids[:, :-1], use_cache=False)
    return out.last_hidden_state[:, prompt_len - 1:]


def shared_prompt_response_hidden(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                  prompt_len: int) -> torch.Tensor:
    """``response_hidden`` for rows that share one prompt (the same ids and mask in columns < P, e.g. one group):
    the prompt runs once and its KV cache is shared, so the cost is P + B·T tokens instead of B·(P + T)."""
    from ..inference.generate import cache_kwargs, output_cache, select_cache

    B, P = input_ids.shape[0], prompt_len
    if not (torch.equal(input_ids[:, :P], input_ids[:1, :P].expand(B, -1))
            and torch.equal(attention_mask[:, :P], attention_mask[:1, :P].expand(B, -1))):
        raise ValueError("shared_prompt_response_hidden: the rows do not share their prompt columns")
    body, _ = _backbone(model)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    first = body(input_ids=input_ids[:1, :P], attention_mask=attention_mask[:1, :P], position_ids=position_ids[:1, :P],
                 use_cache=True)
    last = first.last_hidden_state[:, -1:].expand(B, -1, -1)  # predicts response token 0
    if input_ids.shape[1] - 1 <= P:
        return last
    cache = select_cache(output_cache(first), torch.zeros(B, dtype=torch.long))
    rest = body(input_ids=input_ids[:, P:-1], attention_mask=attention_mask[:, :-1],
                position_ids=position_ids[:, P:-1], use_cache=True, **cache_kwargs(body, cache))
    return torch.cat([last, rest.last_hidden_state], 1)


def lm_head(model) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    head = model.get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def policy_logprobs_entropy(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int,
                            response_ids: torch.Tensor, temperature: float, chunk_size: int = 1024
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """log π(y_t | x, y_<t) and H_t of softmax(z/T) for every response token, (B, T) each, differentiable.

    Assumes logits = h·Wᵀ (+ b) (true of Llama/Qwen/Mistral/SmolLM heads; not of models with logit soft-capping).
    """
    hidden = response_hidden(model, input_ids, attention_mask, prompt_len)
    weight, bias = lm_head(model)
    return fused_logprobs_entropy(hidden, weight, response_ids, temperature=temperature, chunk_size=chunk_size,
                                  bias=bias)

"""The policy forward of the native engine: final hidden states at the positions that predict each response token,
and per-token log-probs and entropies of the sampling distribution with the fused kernel (hidden states × LM-head
weight in token chunks, never all logits)."""

from __future__ import annotations

from typing import Optional

import torch

from ..generation.decoder import cache_kwargs, output_cache, select_cache
from ..ops.entropy import fused_logprobs_entropy


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

"""Plain sampling with Hugging Face ``generate`` (KV cache, left padding): ``n`` responses per prompt as a
``Generation``; the response mask ends at the first EOS (included)."""

from __future__ import annotations

from typing import Sequence

import torch

from .rows import Generation


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
def hf_generate(model, tokenizer, prompts: Sequence[str], n: int, temperature: float, top_p: float,
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



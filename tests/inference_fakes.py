"""A scripted fake causal LM and a tiny tokenizer for the inference tests.

``ScriptedLM`` implements the slice of the Hugging Face causal-LM call interface that ``entrolab.inference`` relies
on: ``model(input_ids=, attention_mask=, position_ids=, past_key_values=, use_cache=True)`` returning ``.logits``
(N, L, V) and ``.past_key_values``. Its "KV cache" stores token ids per row, so forking (row selection) and growth work
as with a real cache, and the logits at each position come from ``script(history)``, a function of the real (unpadded)
token history. Tests script the distributions — hence the entropies — step by step.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Callable, Optional, Sequence

import torch

SPECIALS = ["<pad>", "<eos>", "<sep>", "</think>", "\n\n"]
CHARS = [chr(c) for c in range(32, 127)] + ["\n"]


class CharTokenizer:
    """Specials + printable ASCII, one token each; greedy longest match on encode."""

    def __init__(self, extra: Sequence[str] = ()):
        self.vocab = list(SPECIALS) + list(extra) + CHARS
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.pad_token_id = self.index["<pad>"]
        self.eos_token_id = self.index["<eos>"]
        self._by_len = sorted(self.vocab, key=len, reverse=True)

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for tok in self._by_len:
                if text.startswith(tok, i):
                    ids.append(self.index[tok])
                    i += len(tok)
                    break
            else:
                raise ValueError(f"cannot encode {text[i]!r}")
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        out = []
        for i in ids:
            t = self.vocab[int(i)]
            if skip_special_tokens and t in ("<pad>", "<eos>", "<sep>"):
                continue
            out.append(t)
        return "".join(out)

    def tok(self, s: str) -> int:
        return self.index[s]


class _Layer:
    def __init__(self, n: int):
        self.keys = torch.zeros((n, 0), dtype=torch.long)
        self.mask = torch.zeros((n, 0), dtype=torch.long)

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        self.keys = self.keys[idx]
        self.mask = self.mask[idx]


class FakeCache:
    def __init__(self, n: int):
        self.layers = [_Layer(n)]

    def batch_select_indices(self, idx: torch.Tensor) -> None:
        for layer in self.layers:
            layer.batch_select_indices(idx)

    def get_seq_length(self) -> int:
        return int(self.layers[0].keys.shape[1])


class ScriptedLM(torch.nn.Module):
    """``script(history: list[int]) -> logits (V,)`` decides the next-token logits after each real-token history."""

    def __init__(self, script: Callable[[list[int]], torch.Tensor], vocab_size: int, eos_token_id: int):
        super().__init__()
        self.script = script
        self.vocab_size = vocab_size
        self.generation_config = SimpleNamespace(eos_token_id=eos_token_id)
        self._dummy = torch.nn.Parameter(torch.zeros(1))
        self.tokens_processed = 0
        self.calls = 0

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, **kw):
        n, length = input_ids.shape
        cache = past_key_values if past_key_values is not None else FakeCache(n)
        layer = cache.layers[0]
        layer.keys = torch.cat([layer.keys, input_ids.cpu()], dim=1)
        layer.mask = attention_mask.cpu().clone() if attention_mask is not None else torch.ones_like(layer.keys)
        assert layer.mask.shape == layer.keys.shape, "attention mask must cover past and new tokens"
        self.tokens_processed += int(input_ids.numel())
        self.calls += 1
        past = layer.keys.shape[1] - length
        logits = torch.zeros((n, length, self.vocab_size))
        for r in range(n):
            for j in range(length):
                upto = past + j + 1
                hist = [int(t) for t, m in zip(layer.keys[r, :upto].tolist(), layer.mask[r, :upto].tolist()) if m]
                logits[r, j] = self.script(hist)
        return SimpleNamespace(logits=logits, past_key_values=cache)


# --- distributions ----------------------------------------------------------------------------------------------------

NEG = -1e4


def peaked(vocab: int, tok: int, margin: float = 40.0) -> torch.Tensor:
    """Essentially one-hot on ``tok`` (entropy ≈ 0)."""
    z = torch.zeros(vocab)
    z[tok] = margin
    return z


def from_probs(vocab: int, probs: dict[int, float], rest: float = 0.0,
               rest_tokens: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Logits of the distribution ``probs`` (token → p), with mass ``rest`` spread evenly over ``rest_tokens`` and
    every other token at probability ≈ 0."""
    z = torch.full((vocab,), NEG)
    for t, p in probs.items():
        z[t] = math.log(p)
    if rest > 0:
        others = [t for t in (rest_tokens or range(vocab)) if t not in probs]
        for t in others:
            z[t] = math.log(rest / len(others))
    return z


def uniform(vocab: int, tokens: Sequence[int]) -> torch.Tensor:
    return from_probs(vocab, {t: 1.0 / len(tokens) for t in tokens})


def after_sep(hist: list[int], sep: int) -> list[int]:
    """The generated part of a history: the tokens after the first <sep>."""
    return hist[hist.index(sep) + 1:] if sep in hist else []

"""Evaluation on the held-out split: greedy accuracy, mean@n and unbiased pass@k of the current policy, sampled
with the engine's plain generation path (the tool on a tool task)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["evaluate", "pass_at_k"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al., 2107.03374): 1 − C(n−c, k)/C(n, k) for c correct of n samples."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@torch.no_grad()
def evaluate(engine: Any, examples: Sequence[Any], n_samples: int, k: int) -> dict[str, float]:
    """``eval/accuracy`` (greedy), ``eval/mean_at_n`` and ``eval/pass_at_k`` (``n_samples`` at the rollout
    temperature) on ``examples``."""
    prompts = [engine.format(ex) for ex in examples]
    greedy = engine.generation.plain(prompts, 1, greedy=True)
    sampled = engine.generation.plain(prompts, n_samples)
    g_ok = engine.score(engine.generation.decode(greedy), list(examples))[1]
    texts = engine.generation.decode(sampled)
    oks = engine.score(texts, [examples[i // n_samples] for i in range(len(texts))])[1]
    per_q = [sum(oks[i * n_samples:(i + 1) * n_samples]) for i in range(len(examples))]
    return {
        "eval/accuracy": float(np.mean(g_ok)),
        "eval/mean_at_n": float(np.mean(oks)),
        "eval/pass_at_k": float(np.mean([pass_at_k(n_samples, c, k) for c in per_q])),
    }

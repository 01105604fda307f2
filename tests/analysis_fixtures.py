"""A synthetic trainer run directory with known ground truth, for the analysis tests.

Entropy decays exponentially, H_t = H_end + (H0 − H_end)·exp(−t/τ); accuracy follows the law R = −a·exp(H) + b plus
Gaussian noise; the dynamics metrics are consistent with it (−lr·cov_mean ≈ ΔH; predicted ΔH ≈ actual ΔH).
The files and keys are those the trainer writes (metrics.jsonl, samples.jsonl, config.yaml, checkpoints/).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

WORDS = ["The", "Ġanswer", "Ġis", "Ġ4", "2", ".", "Ċ", "ĠLet", "Ġme", "Ġthink", ":", "Ġ3", "Ġ+", "Ġ5", "Ġ=", "Ġ8",
         "Ġso", "Ġwe", "Ġget", "Ġ\\boxed{", "8", "}", "<tag>", "Ġ&", "Ġ\"q\""]


def make_run(path, *, steps: int = 80, a: float = 0.12, b: float = 0.85, H0: float = 1.6, H_end: float = 0.15,
             tau: float = 20.0, noise: float = 0.01, eval_every: int = 4, samples_every: int = 20,
             n_samples: int = 4, measure_delta_h: bool = True, lr: float = 1e-3, seed: int = 0,
             drop: Iterable[str] = (), with_samples: bool = True, method: str = "grpo",
             cov_negative_steps: Iterable[int] = (), cov_missing_steps: Iterable[int] = ()) -> Path:
    """Write a run directory at ``path``; ``drop`` removes every metric whose key starts with one of its prefixes.
    ``cov_negative_steps``: steps whose ``dynamics/cov_mean`` is negated (entropy rising there);
    ``cov_missing_steps``: steps that log ``dynamics/cov_mean`` as NaN (not measured)."""
    rng = np.random.default_rng(seed)
    out = Path(path)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    t = np.arange(steps + 1, dtype=np.float64)
    H = H_end + (H0 - H_end) * np.exp(-t / tau)
    drop = tuple(drop)
    neg, missing = set(cov_negative_steps), set(cov_missing_steps)
    recs = []
    for s in range(steps):
        h = float(H[s])
        dH = float(H[s + 1] - H[s])
        cov = -dH / lr * (1.0 + 0.1 * rng.standard_normal()) * (-1.0 if s in neg else 1.0)
        r = {
            "step": s, "time/step_s": 1.0 + 0.05 * rng.random(), "lr": lr,
            "reward/accuracy": float(-a * math.exp(h) + b + noise * rng.standard_normal()),
            "response/length_mean": 120.0 - 40.0 * s / steps,
            "entropy/mean": h, "entropy/p10": 0.02 * h, "entropy/p50": 0.3 * h, "entropy/p90": 2.5 * h,
            "entropy/high_token_frac": 0.2 * h / H0,
            "dynamics/cov_mean": cov, "dynamics/predicted_delta_H_npg": -lr * cov,
            "dynamics/cov_top_0.02pct": 1900 * cov, "dynamics/cov_top_0.2pct": 1000 * cov,
            "dynamics/cov_top_2pct": 450 * cov, "dynamics/cov_top_20pct": 120 * cov,
            "clip/frac_low": 0.01, "clip/frac_high": 0.02 * h, "clip/frac_cov": 0.0002,
            "kl/ref": 0.001 * s, "update/grad_norm": 0.5 + 0.1 * rng.random(), "perf/tokens_per_s": 900.0,
        }
        r["reward/mean"] = r["reward/accuracy"]
        if s in missing:
            r["dynamics/cov_mean"] = float("nan")
        if measure_delta_h:
            r["dynamics/actual_delta_H"] = dH
            r["dynamics/predicted_delta_H"] = dH * (1.0 + 0.05 * rng.standard_normal())
        if s % eval_every == 0 or s == steps - 1:
            acc = float(-a * math.exp(h) + b + noise * rng.standard_normal())
            r.update({"eval/accuracy": acc, "eval/mean_at_n": acc - 0.02, "eval/pass_at_k": min(1.0, acc + 0.1)})
        recs.append({k: v for k, v in r.items() if k == "step" or not k.startswith(drop)})
    with open(out / "metrics.jsonl", "w", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    if with_samples:
        with open(out / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in range(0, steps, samples_every):
                for i in range(n_samples):
                    n_tok = int(rng.integers(8, 24))
                    toks = ["<tag>"] + [WORDS[j] for j in rng.integers(0, len(WORDS), n_tok - 1)]  # HTML to escape
                    ent = rng.exponential(float(H[s]), n_tok).round(4).tolist()
                    correct = bool(rng.random() < 0.5)
                    f.write(json.dumps({"step": s, "id": f"{s}-{i}", "prompt": "What is 3 + 5? <b>bold?</b>",
                                        "response": "".join(toks), "tokens": toks, "entropy": ent,
                                        "reward": float(correct), "correct": correct}) + "\n")
    config = {"algorithm": {"method": method}, "optim": {"lr": lr}, "seed": seed}
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out

"""EGL: Entropy-Guided Loop (Correa & de Matos, arXiv 2509.00079).

1. Draft one response, recording per token t its probability p_t = π(a_t | ·) and the entropy of the top-k
   renormalised distribution,  H^k_t = −Σ_{j∈top-k} p̃_j log p̃_j,  p̃_j = p_j / Σ_{i∈top-k} p_i.
2. Uncertainty metrics: PPL = exp(−(1/n) Σ_t log p_t),  max_t H^k_t,  and  #{t : p_t < τ_conf}.
3. OR-trigger: refine when PPL > τ₁ or max_t H^k_t > τ₂ or #{t : p_t < τ_conf} ≥ τ₃.
4. If triggered, write an *uncertainty report* — the least confident tokens (up to ``report_tokens``), each with its
   probability, the top alternatives and its local context — and run exactly one refinement pass that sees the
   question, the draft and the report. The refined response's answer replaces the draft's (the draft's is kept when
   the refinement gives none).

Defaults: the paper's k and τ₁–τ₃ were not recovered (evidence `[paper abstract]`). k = 20, τ₁ = 1.4, τ₂ = 1.5 nats,
τ₃ = 3 and τ_conf = 0.3 are project choices, to be calibrated per model (``info`` reports the three metrics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from ..generation.decoder import StepView, Trace, top_k_entropy
from ..registry import check_range
from .base import (
    STRATEGIES,
    GenerationSettings,
    Strategy,
    StrategyResult,
    refine_request,
    uncertainty_info,
)

__all__ = ["EGL", "egl_metrics"]


def egl_metrics(trace: Trace, confidence_threshold: float) -> dict[str, float]:
    """PPL, max top-k entropy and low-confidence count of a trace recorded with EGL's hook."""
    lps = trace.logprobs
    hk = trace.extra.get("topk_entropy", [])
    n = max(len(lps), 1)
    return {
        "ppl": math.exp(-sum(lps) / n) if lps else float("nan"),
        "max_topk_entropy": max(hk) if hk else float("nan"),
        "low_confidence": float(sum(1 for lp in lps if math.exp(lp) < confidence_threshold)),
    }


@STRATEGIES.register("egl")
@dataclass
class EGL(GenerationSettings, Strategy):
    """Entropy-guided loop: draft, uncertainty report, one refinement when triggered (arXiv 2509.00079)."""

    arxiv = "2509.00079"

    top_k: int = 20
    """k of the top-k entropy and of the alternatives considered (project choice)."""
    ppl_threshold: float = 1.4
    """τ₁ on the draft's perplexity (project choice)."""
    entropy_threshold: float = 1.5
    """τ₂ on the maximum top-k token entropy, nats (project choice)."""
    count_threshold: int = 3
    """τ₃ on the number of low-confidence tokens (project choice)."""
    confidence_threshold: float = 0.3
    """τ_conf: a token is low-confidence when p_t < τ_conf (project choice)."""
    report_tokens: int = 8
    """Most uncertain tokens listed in the report."""
    alternatives: int = 3
    """Alternatives shown per reported token."""
    context_tokens: int = 6
    """Tokens of context shown on each side of a reported token."""
    max_new_tokens: int = 512
    """Maximum tokens of the draft and of the refinement, each."""

    def __post_init__(self) -> None:
        super().__post_init__()
        o = type(self).__name__
        check_range(o, "top_k", self.top_k, lo=1)
        check_range(o, "count_threshold", self.count_threshold, lo=1)
        check_range(o, "confidence_threshold", self.confidence_threshold, lo=0.0, hi=1.0)
        check_range(o, "report_tokens", self.report_tokens, lo=1)
        check_range(o, "alternatives", self.alternatives, lo=1)
        check_range(o, "context_tokens", self.context_tokens, lo=0)

    def triggered(self, m: dict[str, float]) -> bool:
        """The OR-trigger: PPL > τ₁ or max H^k > τ₂ or low-confidence count ≥ τ₃."""
        return (m["ppl"] > self.ppl_threshold or m["max_topk_entropy"] > self.entropy_threshold
                or m["low_confidence"] >= self.count_threshold)

    def _record(self, view: StepView) -> None:
        hk = top_k_entropy(view.logprobs, self.top_k).tolist()
        vals, idx = torch.topk(view.logprobs, min(self.alternatives + 1, view.logprobs.shape[-1]), dim=-1)
        for row, tr in enumerate(view.traces):
            tr.extra.setdefault("topk_entropy", []).append(hk[row])
            tr.extra.setdefault("top_alternatives", []).append(list(zip(idx[row].tolist(), vals[row].exp().tolist())))

    def report(self, trace: Trace, decode: Any) -> str:
        """The uncertainty report of a drafted trace (least confident tokens first, listed in text order)."""
        lps = trace.logprobs
        low = sorted(range(len(lps)), key=lambda i: lps[i])[: self.report_tokens]
        low = sorted(i for i in low if math.exp(lps[i]) < max(self.confidence_threshold, 1e-12)
                     or trace.extra["topk_entropy"][i] > self.entropy_threshold)
        if not low:
            low = sorted(sorted(range(len(lps)), key=lambda i: lps[i])[: self.report_tokens])
        lines = ["Uncertainty report: the attempt was written with low confidence at these tokens:"]
        for i in low:
            tok = trace.token_ids[i]
            alts = [(t, p) for t, p in trace.extra["top_alternatives"][i] if t != tok][: self.alternatives]
            ctx = decode(trace.token_ids[max(0, i - self.context_tokens): i + self.context_tokens + 1],
                         skip_special_tokens=True)
            alt_s = ", ".join(f"{decode([t])!r} {p:.2f}" for t, p in alts)
            lines.append(f"- {decode([tok])!r} (p={math.exp(lps[i]):.2f}; alternatives: {alt_s}) in {ctx!r}")
        return "\n".join(lines)

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        dec = self.decoder(model, tokenizer, generator)
        dec.prefill(self._encode(tokenizer, prompt_fn, questions))
        drafts = {t.group: t for t in dec.run(self._record)}
        metrics = {g: egl_metrics(drafts[g], self.confidence_threshold) for g in drafts}
        todo = [g for g in range(len(questions)) if self.triggered(metrics[g])]
        reports = {g: self.report(drafts[g], dec.decode) for g in todo}
        refined: dict[int, Trace] = {}
        if todo:
            dec2 = self.decoder(model, tokenizer, generator)
            requests = [refine_request(questions[g], drafts[g].text, reports[g]) for g in todo]
            dec2.prefill(self._encode(tokenizer, prompt_fn, requests), groups=todo)
            refined = {t.group: t for t in dec2.run()}
        out = []
        for g, q in enumerate(questions):
            d = drafts[g]
            r = refined.get(g)
            draft_answer = answer_fn(d.text)
            answer = draft_answer
            chosen = d
            if r is not None:
                ra = answer_fn(r.text)
                chosen = r
                answer = ra if ra is not None else draft_answer
            info = {"triggered": r is not None, **metrics[g], "draft_answer": draft_answer,
                    "draft_tokens": d.num_tokens, "report": reports.get(g, ""), **uncertainty_info(chosen)}
            spent = d.num_tokens + (r.num_tokens if r is not None else 0)
            out.append(StrategyResult(q, answer, chosen.text, spent, [d] + ([r] if r else []), chosen, info))
        return out

"""DTS: Decoding Tree Sketching (Xu et al., arXiv 2511.00640; authors' code ZichengXu/Decoding-Tree-Sketching).

Decode a tree. At step t of a hypothesis, with H_t and V_t the entropy and varentropy of softmax(z_t / T_H)
(T_H = ``entropy_temperature``), the branch rule is

    rule = "varentropy" (current code, "decision tokens"):  H_t ≤ τ_H  and  V_t > τ_V
    rule = "entropy"    (v1 code, Oct 2025):                H_t > τ_H

When it fires, the hypothesis expands into the top-K tokens of π_t, K children sharing the prefix's KV cache (copied
rows, no recompute); otherwise it samples one token at temperature T. At most M hypotheses are active per question:
a branch is trimmed to fit, and once a question's tree reaches M it stops branching for good (as the code's "frozen"
flag). Decoding stops when the first ``num_traces`` hypotheses finish (EOS or stop string): DTS-Greedy
(``num_traces`` = 1) answers with the first — "the shortest trajectory wins"; DTS-Stable majority-votes the
``num_traces`` earliest.

Defaults `[code]` (README): τ_H = 2.5, K = 3, M = 12, T = 0.6, ``num_traces`` = 1; current code τ_V = 1.5 and
T_H = 0.6. (The v1 code's τ default was 3.5.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..generation.decoder import StepView, entropy_varentropy
from ..registry import check_range
from .aggregate import majority_vote
from .base import (
    STRATEGIES,
    GenerationSettings,
    Strategy,
    StrategyResult,
    group_tokens,
    uncertainty_info,
)

__all__ = ["DTS"]

RULES = ("varentropy", "entropy")


@STRATEGIES.register("dts")
@dataclass
class DTS(GenerationSettings, Strategy):
    """Decoding Tree Sketching (arXiv 2511.00640); see the module docstring for the rule and defaults."""

    arxiv = "2511.00640"
    budget_field = "max_active"

    rule: str = "varentropy"
    """Branch rule: "varentropy" (H ≤ τ_H and V > τ_V, current code) or "entropy" (H > τ_H, v1 code)."""
    entropy_threshold: float = 2.5
    """τ_H (nats)."""
    varentropy_threshold: float = 1.5
    """τ_V (nats²), used by the "varentropy" rule."""
    top_k: int = 3
    """K, children per branch."""
    max_active: int = 12
    """M, cap on active hypotheses per question."""
    num_traces: int = 1
    """Stop when this many hypotheses have finished; their answers are majority-voted."""
    entropy_temperature: float = 0.6
    """T_H, temperature of the distribution the rule reads."""
    top_p: float = 1.0
    """Nucleus mass for the non-branching steps (the code samples the full distribution)."""
    equivalence: str = "math"
    """Answer clustering for the vote over finished traces."""

    def __post_init__(self) -> None:
        super().__post_init__()
        o = type(self).__name__
        if self.rule not in RULES:
            raise ConfigError(f"DTS.rule = {self.rule!r}; valid rules: {', '.join(RULES)}")
        check_range(o, "top_k", self.top_k, lo=2)
        check_range(o, "max_active", self.max_active, lo=1)
        check_range(o, "num_traces", self.num_traces, lo=1)
        check_range(o, "entropy_temperature", self.entropy_temperature, lo=0.0, lo_open=True)

    def fires(self, h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The branch rule on entropies ``h`` and varentropies ``v`` (nats), elementwise."""
        if self.rule == "varentropy":
            return (h <= self.entropy_threshold) & (v > self.varentropy_threshold)
        return h > self.entropy_threshold

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        dec = self.decoder(model, tokenizer, generator)
        frozen: set[int] = set()
        branch_events: dict[int, int] = {}
        done_count: dict[int, int] = {}

        def hook(view: StepView) -> None:
            for tr in view.decoder.finished:  # count natural finishes per question
                if tr.finish_reason in ("eos", "stop") and not tr.extra.get("dts_counted"):
                    tr.extra["dts_counted"] = True
                    done_count[tr.group] = done_count.get(tr.group, 0) + 1
            if abs(self.entropy_temperature - dec.temperature) < 1e-12:
                h, v, logp = view.entropy, view.varentropy, view.logprobs
            else:
                h, v, logp = entropy_varentropy(view.logits, self.entropy_temperature)
            fire = self.fires(h, v).tolist()
            active: dict[int, int] = {}
            for tr in view.traces:
                active[tr.group] = active.get(tr.group, 0) + 1
            for row, tr in enumerate(view.traces):
                g = tr.group
                if done_count.get(g, 0) >= self.num_traces:
                    view.stop(row, "halted")
                    continue
                if g not in frozen and active[g] >= self.max_active:
                    frozen.add(g)
                if g in frozen or not fire[row]:
                    continue
                k = min(self.top_k, self.max_active - active[g] + 1)
                if k < 2:
                    frozen.add(g)
                    continue
                toks = torch.topk(logp[row], k).indices.tolist()
                view.fork(row, toks)
                active[g] += k - 1
                branch_events[g] = branch_events.get(g, 0) + 1
                tr.extra.setdefault("dts_branch_steps", []).append(view.step)

        def until(d) -> bool:  # every remaining hypothesis belongs to a finished question: stop without a forward
            counts: dict[int, int] = {}
            for tr in d.finished:
                if tr.finish_reason in ("eos", "stop"):
                    counts[tr.group] = counts.get(tr.group, 0) + 1
            return all(counts.get(tr.group, 0) >= self.num_traces for tr in d.live)

        dec.prefill(self._encode(tokenizer, prompt_fn, questions))
        traces = dec.run(hook, until)
        out = []
        for g, q in enumerate(questions):
            ts = [t for t in traces if t.group == g]  # finishing order
            natural = [t for t in ts if t.finish_reason in ("eos", "stop")][: self.num_traces]
            pool = natural or ts
            answers = [answer_fn(t.text) for t in pool]
            vote = majority_vote(answers, equivalence=self.equivalence)
            chosen = pool[vote.index] if vote.index is not None else (pool[0] if pool else None)
            info = {"hypotheses": len(ts), "branch_events": branch_events.get(g, 0),
                    "finished_naturally": len([t for t in ts if t.finish_reason in ("eos", "stop")]),
                    "voted": len(pool), "answers": answers, **uncertainty_info(chosen)}
            out.append(StrategyResult(q, vote.answer if vote.answer is not None else (answers[0] if answers else None),
                                      chosen.text if chosen else "", group_tokens(ts), ts, chosen, info,
                                      samples=list(pool), sample_answers=answers))
        return out

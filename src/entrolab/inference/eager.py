"""EAGer: Entropy-Aware GEneRation (Scalena et al., arXiv 2510.11170; authors' code DanielSc4/EAGer).

Start one sequence per prompt. At each step t of a sequence, compute the top-K entropy of the sampling distribution,

    p̃_{t,j} = p_{t,j} / Σ_{i∈top-K} p_{t,i},      H^K_t = −Σ_{j∈top-K} p̃_{t,j} log p̃_{t,j},

and when H^K_t > θ and the prompt still has budget (fewer than M sequences), branch: the sequence splits into two that
share its prefix (KV cache rows copied, no recompute) and continue independently. Confident prompts therefore use
fewer than M sequences; the saved budget is M − (sequences used), reported per prompt ("EAGer-init"). The answer is
the majority vote over the prompt's sequences.

Defaults: θ = 2.2, M = 32 and T = 0.6 are the values in the authors' README example (it suggests θ ≈ 2.0 for
EAGer-init and ≈ 2.4 for full EAGer). K was not recovered: K = 20 (the usual top-logprobs width of serving APIs) is a
project choice, `[unverified]`.

Departures: (1) at a branch the two continuations take two *distinct* tokens drawn without replacement from the
(top-p) distribution — a project choice so a branch always diverges; (2) the reallocation of saved budget to hard
prompts (EAGer-adapt / full EAGer) is not implemented: its label-free criterion was not recovered. ``saved_budget``
in the result is what such a scheduler would have to spend.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..generation.decoder import StepView, top_k_entropy
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

__all__ = ["EAGer"]


@STRATEGIES.register("eager")
@dataclass
class EAGer(GenerationSettings, Strategy):
    """Entropy-aware branching with a per-prompt sequence budget (arXiv 2510.11170); see the module docstring."""

    arxiv = "2510.11170"
    budget_field = "max_sequences"

    entropy_threshold: float = 2.2
    """θ (nats): branch when the top-K entropy exceeds it (authors' README example)."""
    top_k: int = 20
    """K of the top-K entropy (`[unverified]`, project choice)."""
    max_sequences: int = 32
    """M, per-prompt sequence budget (authors' README example)."""
    top_p: float = 1.0
    """Nucleus mass (1.0: the full distribution)."""
    equivalence: str = "math"
    """Answer clustering for the majority vote."""

    def __post_init__(self) -> None:
        super().__post_init__()
        o = type(self).__name__
        check_range(o, "top_k", self.top_k, lo=2)
        check_range(o, "max_sequences", self.max_sequences, lo=1)

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        dec = self.decoder(model, tokenizer, generator)
        used = {g: 1 for g in range(len(questions))}
        branch_steps: dict[int, list[int]] = {g: [] for g in range(len(questions))}

        def hook(view: StepView) -> None:
            hk = top_k_entropy(view.logprobs, self.top_k).tolist()
            for row, tr in enumerate(view.traces):
                g = tr.group
                if hk[row] > self.entropy_threshold and used[g] < self.max_sequences:
                    toks = dec.sample_distinct(view.logprobs[row], 2)
                    if len(toks) < 2:
                        continue
                    view.fork(row, toks)
                    used[g] += 1
                    branch_steps[g].append(view.step)

        dec.prefill(self._encode(tokenizer, prompt_fn, questions))
        traces = dec.run(hook)
        out = []
        for g, q in enumerate(questions):
            ts = sorted((t for t in traces if t.group == g), key=lambda t: t.id)
            answers = [answer_fn(t.text) for t in ts]
            vote = majority_vote(answers, equivalence=self.equivalence)
            chosen = ts[vote.index] if vote.index is not None else (ts[0] if ts else None)
            info = {"sequences": len(ts), "budget": self.max_sequences, "saved_budget": self.max_sequences - len(ts),
                    "branch_steps": branch_steps[g], "winner_share": vote.share, "answers": answers,
                    **uncertainty_info(chosen)}
            text = chosen.text if chosen else ""
            out.append(StrategyResult(q, vote.answer, text, group_tokens(ts), ts, chosen, info, samples=list(ts),
                                      sample_answers=answers))
        return out

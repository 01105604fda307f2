"""Per-response uncertainty scores (higher = less confident) and how well they separate right from wrong answers.

- Trace length (Devic et al., arXiv 2510.10409): confidence = −(number of tokens in the reasoning trace), so the
  uncertainty score is the length itself. Zero-shot and black-box; the paper finds it competitive with verbalised
  confidence after reasoning post-training (their combination rule with verbalised confidence was not recovered).
- Mean token entropy: U = H̄ = (1/n) Σ_t H_t, the average entropy (nats) of the sampling distribution over the
  response's generated tokens (forced tokens excluded), the quantity inverse-entropy voting (arXiv 2511.02309) and
  min-entropy path selection weigh by.

``auroc(scores, correct)`` is the probability that a random wrong response scores higher than a random right one
(ties count ½): 1.0 means the score ranks every wrong answer above every right one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..generation.decoder import Trace

__all__ = ["MeanTokenEntropy", "TraceLength", "UNCERTAINTY_SCORES", "auroc"]


@dataclass
class TraceLength:
    """Uncertainty = number of generated tokens (trace-length confidence, arXiv 2510.10409)."""

    name: ClassVar[str] = "trace_length"
    arxiv: ClassVar[str] = "2510.10409"

    def score(self, trace: Trace) -> float:
        return float(trace.num_tokens)


@dataclass
class MeanTokenEntropy:
    """Uncertainty = mean token entropy H̄ (nats) of the response."""

    name: ClassVar[str] = "mean_entropy"
    arxiv: ClassVar[str] = ""

    include_forced: bool = False
    """Count tokens a strategy forced (e.g. EAT's end-of-thinking marker)."""

    def score(self, trace: Trace) -> float:
        return trace.mean_entropy(self.include_forced)


UNCERTAINTY_SCORES = {c.name: c for c in (TraceLength, MeanTokenEntropy)}


def auroc(scores: Sequence[float], correct: Sequence[bool]) -> float:
    """AUROC of ``scores`` as a detector of wrong answers; NaN when all answers are right or all wrong."""
    if len(scores) != len(correct):
        raise ValueError(f"{len(scores)} scores for {len(correct)} labels")
    wrong = [s for s, c in zip(scores, correct) if not c]
    right = [s for s, c in zip(scores, correct) if c]
    if not wrong or not right:
        return float("nan")
    wins = sum(1.0 if w > r else 0.5 if w == r else 0.0 for w in wrong for r in right)
    return wins / (len(wrong) * len(right))

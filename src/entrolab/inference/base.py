"""Inference strategies: the registry, the result type, and the two plain baselines (sampling and voting).

A strategy is a small dataclass whose fields are its hyperparameters (paper defaults written once, in the field) and
whose ``run(model, tokenizer, questions)`` returns one :class:`StrategyResult` per question. Strategies register by
name in :data:`STRATEGIES`; the CLI and the docs list them from there.

Prompts go through ``prompt_fn(tokenizer, question)`` (default: :func:`entrolab.env.tasks.format_prompt`, the chat
template asking for a ``\\boxed{}`` answer) and answers come out through ``answer_fn(text)`` (default:
:func:`entrolab.env.rewards.extract_boxed`). ``tokens_spent`` counts every token the model generated for the
question (a prefix shared by forked branches counts once) plus tokens run only to probe (EAT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch

from ..errors import ConfigError
from ..generation.decoder import Decoder, Trace
from ..knobs.base import Component, component_registry
from ..registry import Registry, check_range
from .aggregate import inverse_entropy_vote, majority_vote, min_entropy_path

__all__ = [
    "STRATEGIES",
    "AnswerFn",
    "GenerationSettings",
    "PromptFn",
    "SampleStrategy",
    "Strategy",
    "StrategyResult",
    "VoteStrategy",
    "ANSWER_FNS",
    "boxed_or_last_number",
    "build_strategy",
    "default_answer_fn",
    "default_prompt_fn",
    "refine_request",
    "strategy_names",
]

PromptFn = Callable[[Any, str], str]
AnswerFn = Callable[[str], Optional[str]]

STRATEGIES: Registry["Strategy"] = component_registry("inference strategy", kind="inference strategy")


def default_prompt_fn(tokenizer: Any, question: str) -> str:
    """The trainer's prompt template (:func:`entrolab.env.tasks.format_prompt`)."""
    from ..env.tasks import format_prompt

    return format_prompt(tokenizer, question)


def default_answer_fn(text: str) -> Optional[str]:
    """The last ``\\boxed{...}`` of the text (:func:`entrolab.env.rewards.extract_boxed`), or None."""
    from ..env.rewards import extract_boxed

    ans = extract_boxed(text)
    return ans if ans is None or str(ans).strip() else None


_NUMBER_RE = None


def boxed_or_last_number(text: str) -> Optional[str]:
    """The last ``\\boxed{}`` answer, else the last number in the text (for models that rarely box, e.g. SmolLM2)."""
    global _NUMBER_RE
    boxed = default_answer_fn(text)
    if boxed is not None:
        return boxed
    import re

    if _NUMBER_RE is None:
        _NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
    found = _NUMBER_RE.findall(text or "")
    return found[-1].replace(",", "") if found else None


ANSWER_FNS: dict[str, AnswerFn] = {"boxed": default_answer_fn, "boxed_or_last_number": boxed_or_last_number}


def refine_request(question: str, previous: str, note: str = "") -> str:
    """The user turn of a refinement pass (EGL, SEAT rounds > 0): the question, the previous attempt, an optional note
    (EGL's uncertainty report), and the request to correct it and box the final answer."""
    parts = [question.strip(), "", "Here is a previous attempt:", previous.strip()]
    if note:
        parts += ["", note.strip()]
    parts += ["", "Check the attempt, correct any mistake, and give the final answer in \\boxed{}."]
    return "\n".join(parts)


@dataclass
class StrategyResult:
    """One question's outcome: the answer, the response it came from (``chosen``), every trace generated, the
    tokens spent, and strategy-specific details in ``info``. Strategies that aggregate several answers also record
    the responses they aggregated (``samples``) and their answers (``sample_answers``), which the answer-distribution
    uncertainty measures read (:mod:`entrolab.inference.uncertainty`); both stay empty for a strategy that answers
    from one response."""

    question: str
    answer: Optional[str]
    text: str
    tokens_spent: int
    traces: list[Trace] = field(default_factory=list)
    chosen: Optional[Trace] = None
    info: dict[str, Any] = field(default_factory=dict)
    samples: list[Trace] = field(default_factory=list)
    sample_answers: list[Optional[str]] = field(default_factory=list)

    @property
    def entropy_trace(self) -> list[float]:
        """Per-token entropy (nats) of the chosen response."""
        return list(self.chosen.entropies) if self.chosen is not None else []

    def summary(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "tokens_spent": self.tokens_spent,
                "num_traces": len(self.traces), "response_tokens": self.chosen.num_tokens if self.chosen else 0,
                "mean_entropy": self.chosen.mean_entropy() if self.chosen else float("nan"),
                **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool, type(None)))}}


class Strategy(Component):
    """Base of every inference strategy. ``budget_field`` names the field the CLI's ``--budget`` sets;
    ``sweep_field`` the knob ``entrolab evaluate`` sweeps for its accuracy-vs-tokens curve (default: the budget)."""

    arxiv: ClassVar[str] = ""
    budget_field: ClassVar[str] = "max_new_tokens"
    sweep_field: ClassVar[Optional[str]] = None

    @classmethod
    def sweep_knob(cls) -> str:
        """The field ``entrolab evaluate`` sweeps: ``sweep_field``, else ``budget_field``."""
        return cls.sweep_field or cls.budget_field

    def default_sweep(self) -> list[Any]:
        """Default settings of :meth:`sweep_knob` for the accuracy-vs-tokens curve, the current value included:
        a count knob v ≤ 4 → 1…v; a larger one (and ``max_new_tokens``) → v/4, v/2, v; a float knob → v/4, v, 4v."""
        knob = self.sweep_knob()
        v = getattr(self, knob)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return [v]
        if isinstance(v, int):
            if knob != "max_new_tokens" and v <= 4:
                return list(range(1, v + 1))
            return sorted({max(1, math.ceil(v / 4)), max(1, math.ceil(v / 2)), v})
        return sorted({v / 4, v, v * 4})

    def run(self, model: Any, tokenizer: Any, questions: Sequence[str], *,
            generator: Optional[torch.Generator] = None, prompt_fn: Optional[PromptFn] = None,
            answer_fn: Optional[AnswerFn] = None) -> list[StrategyResult]:
        raise NotImplementedError

    # -- shared helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _fns(prompt_fn: Optional[PromptFn], answer_fn: Optional[AnswerFn]) -> tuple[PromptFn, AnswerFn]:
        return prompt_fn or default_prompt_fn, answer_fn or default_answer_fn

    @staticmethod
    def _encode(tokenizer: Any, prompt_fn: PromptFn, questions: Sequence[str]) -> list[list[int]]:
        return [list(tokenizer.encode(prompt_fn(tokenizer, q), add_special_tokens=False)) for q in questions]


@dataclass
class GenerationSettings:
    """The sampling settings every sampling strategy shares: response length, temperature and nucleus, validated once
    (:meth:`check_generation`, run by ``__post_init__``) and turned into a :class:`Decoder` by :meth:`decoder`.

    A strategy inherits it (``class X(GenerationSettings, Strategy)``) and overrides a field only where its paper
    default differs (``dts`` and ``eager`` sample the full distribution, ``top_p = 1.0``) or where the field means
    more there (EAT's ``max_new_tokens`` also covers the forced answer). Subclasses with their own ``__post_init__``
    call ``super().__post_init__()``.
    """

    max_new_tokens: int = 512
    """Maximum tokens per response."""
    temperature: float = 0.6
    """Sampling temperature T."""
    top_p: float = 0.95
    """Nucleus mass."""

    def __post_init__(self) -> None:
        self.check_generation()

    def check_generation(self) -> None:
        """ConfigError naming ``Owner.field`` unless max_new_tokens ≥ 1, T > 0 and 0 < top_p ≤ 1."""
        owner = type(self).__name__
        check_range(owner, "max_new_tokens", self.max_new_tokens, lo=1)
        check_range(owner, "temperature", self.temperature, lo=0.0, lo_open=True)
        check_range(owner, "top_p", self.top_p, lo=0.0, hi=1.0, lo_open=True)

    def decoder(self, model: Any, tokenizer: Any, generator: Optional[torch.Generator],
                max_new_tokens: Optional[int] = None) -> Decoder:
        """A :class:`Decoder` sampling at these settings (``max_new_tokens`` overrides the field for this call)."""
        return Decoder(model, tokenizer, max_new_tokens=max_new_tokens or self.max_new_tokens,
                       temperature=self.temperature, top_p=self.top_p, generator=generator)


def group_tokens(traces: Sequence[Trace]) -> int:
    """Tokens generated for a set of traces from one decoder, a shared (forked) prefix counted once."""
    return sum(t.num_tokens - (t.fork_step or 0) for t in traces)


def uncertainty_info(trace: Optional[Trace]) -> dict[str, float]:
    """Trace-length confidence (arXiv 2510.10409) and mean token entropy of the chosen response."""
    if trace is None:
        return {}
    return {"trace_length": float(trace.num_tokens), "mean_entropy": trace.mean_entropy()}


def strategy_names() -> list[str]:
    """Every registered strategy (the package's ``__init__`` imports every strategy module)."""
    return STRATEGIES.names()


def build_strategy(name: str, **params: Any) -> "Strategy":
    """Instantiate a registered strategy by name; unknown names and parameters raise ConfigError listing valid ones."""
    return STRATEGIES.build(name, params)


# ---------------------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------------------


@STRATEGIES.register("sample")
@dataclass
class SampleStrategy(GenerationSettings, Strategy):
    """One sampled response per question: a ~ softmax(z/T) restricted to the top-p nucleus. The reference point."""

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        dec = self.decoder(model, tokenizer, generator)
        dec.prefill(self._encode(tokenizer, prompt_fn, questions))
        by_group = {t.group: t for t in dec.run()}
        out = []
        for g, q in enumerate(questions):
            t = by_group[g]
            out.append(StrategyResult(q, answer_fn(t.text), t.text, t.num_tokens, [t], t,
                                      {"finish_reason": t.finish_reason, **uncertainty_info(t)}))
        return out


@dataclass
class VoteStrategy(GenerationSettings, Strategy):
    """n sampled responses per question, aggregated by ``aggregation`` (set by the registered subclasses)."""

    aggregation: ClassVar[str] = "majority"
    budget_field: ClassVar[str] = "n"

    n: int = 8
    """Responses sampled per question."""
    equivalence: str = "math"
    """How answers are clustered (entrolab.env.equivalence modes: math, exact, embedding)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(type(self).__name__, "n", self.n, lo=1)

    def run(self, model, tokenizer, questions, *, generator=None, prompt_fn=None, answer_fn=None):
        prompt_fn, answer_fn = self._fns(prompt_fn, answer_fn)
        dec = self.decoder(model, tokenizer, generator)
        dec.prefill(self._encode(tokenizer, prompt_fn, questions), num_return_sequences=self.n)
        traces = dec.run()
        out = []
        for g, q in enumerate(questions):
            ts = sorted((t for t in traces if t.group == g), key=lambda t: t.id)
            out.append(self.aggregate(q, ts, answer_fn))
        return out

    def aggregate(self, question: str, traces: list[Trace], answer_fn: AnswerFn) -> StrategyResult:
        answers = [answer_fn(t.text) for t in traces]
        ents = [t.mean_entropy() for t in traces]
        if self.aggregation == "majority":
            vote = majority_vote(answers, equivalence=self.equivalence)
            idx, answer, share = vote.index, vote.answer, vote.share
        elif self.aggregation == "inverse_entropy":
            vote = inverse_entropy_vote(answers, ents, equivalence=self.equivalence)
            idx, answer, share = vote.index, vote.answer, vote.share
        elif self.aggregation == "min_entropy":
            answered = [i for i, a in enumerate(answers) if a is not None]
            pool = answered or list(range(len(traces)))
            k = min_entropy_path([ents[i] for i in pool])
            idx = pool[k]
            answer, share = answers[idx], float("nan")
        else:  # pragma: no cover - guarded by the registered subclasses
            raise ConfigError(f"unknown aggregation {self.aggregation!r}")
        chosen = traces[idx] if idx is not None else (traces[0] if traces else None)
        info = {"aggregation": self.aggregation, "n": len(traces), "winner_share": share,
                "answers": answers, "mean_entropies": ents, **uncertainty_info(chosen)}
        return StrategyResult(question, answer, chosen.text if chosen else "", group_tokens(traces), traces,
                              chosen, info, samples=list(traces), sample_answers=answers)


@STRATEGIES.register("vote:majority")
@dataclass
class MajorityVote(VoteStrategy):
    """Self-consistency: sample n responses, answer with the most frequent answer cluster."""

    aggregation: ClassVar[str] = "majority"


@STRATEGIES.register("vote:inverse_entropy")
@dataclass
class InverseEntropyVote(VoteStrategy):
    """Inverse-entropy weighted vote (arXiv 2511.02309): â = argmax_a Σ_i 𝟙[a_i = a] / (H̄_i + ε), H̄_i the mean token
    entropy of response i (`[secondary]`: the paper's exact H_i was not recovered). The paper runs its chains
    sequentially, each refining the last; here they are parallel samples (the aggregation rule is the same)."""

    aggregation: ClassVar[str] = "inverse_entropy"
    arxiv: ClassVar[str] = "2511.02309"


@STRATEGIES.register("vote:min_entropy")
@dataclass
class MinEntropyPath(VoteStrategy):
    """Min-entropy path selection (STaR-style; ST-CoT arXiv 2412.10827 is the closest published match,
    `[unverified identification]`): answer with the response of lowest mean token entropy among those that gave an
    answer, k* = argmin_k H̄_k."""

    aggregation: ClassVar[str] = "min_entropy"
    arxiv: ClassVar[str] = "2412.10827"


def finite_mean(xs: Sequence[float]) -> float:
    vals = [x for x in xs if math.isfinite(x)]
    return sum(vals) / len(vals) if vals else float("nan")

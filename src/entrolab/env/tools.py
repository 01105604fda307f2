"""The calculator tool of agentic tasks, as text: the call format, the sandbox run, the observation written back, and
the tool task.

**Tool-call format.** The model writes ``<tool>PROGRAM</tool>``; ``PROGRAM`` is restricted Python (an arithmetic
expression, or a few lines with assignments, loops and the functions listed in :mod:`entrolab.env.sandbox`). The
program runs in the sandbox and the observation

    <result>VALUE</result>          (or <result>error: ...</result>, refused: ..., limit: ..., timeout: ...)

comes back to the model. Errors, refusals and timeouts are observations; nothing a model writes can stop a run. How
observations are forced into a decoding sequence (attended, not trained) is :mod:`entrolab.generation.tools`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from .rewards import math_score
from .sandbox import ISOLATIONS, SandboxLimits, ToolResult, run_programs
from .tasks import (
    DEFAULT_HELDOUT_FRACTION,
    TASKS,
    Example,
    TaskError,
    _draw,
    _evaluate_checked,
    _SyntheticTask,
)

__all__ = ["TOOL_OPEN", "TOOL_CLOSE", "RESULT_OPEN", "RESULT_CLOSE", "ToolEnvironment", "ToolArithmeticTask",
           "TOOL_ARITHMETIC_LEVELS"]

TOOL_OPEN, TOOL_CLOSE = "<tool>", "</tool>"
RESULT_OPEN, RESULT_CLOSE = "<result>", "</result>"
_RESULT_BLOCK = re.compile(re.escape(RESULT_OPEN) + r".*?(?:" + re.escape(RESULT_CLOSE) + r"|$)", re.DOTALL)


@dataclass
class ToolEnvironment:
    """The calculator tool: call format, sandbox limits, and the per-response call budget.

    ``max_calls`` = 5 is ARPO's ``tools.call_limit`` default (2507.19849 code; AEPO's config uses 6).
    ``isolation``: ``"process"`` runs calls in a resource-limited subprocess, where one call's crash, kill or
    overrun is only that call's result (:func:`entrolab.env.sandbox.run_programs`); ``"inline"`` runs them in this
    process with the interpreter's limits only (no memory cap, no kill): for scripted, trusted programs in tests,
    never for model output — the tool task accepts only ``"process"``.
    """

    max_calls: int = 5
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    isolation: str = "process"

    def __post_init__(self) -> None:
        if self.max_calls < 0:
            raise ValueError(f"ToolEnvironment.max_calls must be >= 0, got {self.max_calls}")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"ToolEnvironment.isolation must be one of {ISOLATIONS}, got {self.isolation!r}")

    @staticmethod
    def extract_call(text: str) -> Optional[str]:
        """The program of the last ``<tool>...</tool>`` ending ``text``; None when ``text`` holds no opening tag
        before its last ``</tool>``."""
        end = text.rfind(TOOL_CLOSE)
        if end < 0:
            return None
        start = text.rfind(TOOL_OPEN, 0, end)
        if start < 0:
            return None
        return text[start + len(TOOL_OPEN):end].strip()

    def execute(self, programs: Sequence[Optional[str]]) -> list[ToolResult]:
        """Run a batch of calls (None = a ``</tool>`` without ``<tool>``); one result per call."""
        real = [i for i, p in enumerate(programs) if p]
        out: list[ToolResult] = [ToolResult("refused", "refused: write <tool>PROGRAM</tool>") if p is None
                                 else ToolResult("refused", "refused: empty program") for p in programs]
        if real:
            for i, r in zip(real, run_programs([programs[i] for i in real], self.limits, self.isolation)):
                out[i] = r
        return out

    @staticmethod
    def observation(result: ToolResult) -> str:
        return f"{RESULT_OPEN}{result.text}{RESULT_CLOSE}"

    @staticmethod
    def strip_observations(text: str) -> str:
        """``text`` without its ``<result>...</result>`` blocks: what the model itself wrote."""
        return _RESULT_BLOCK.sub("", text)



# ----------------------------------------------------------------------------------------------------- the task
TOOL_SYSTEM_PROMPT = (
    "Solve the arithmetic problem. You may use a calculator: write <tool>EXPRESSION</tool> (Python arithmetic) and "
    "its value comes back as <result>VALUE</result>. Put the final answer in \\boxed{}."
)
TOOL_FEWSHOT: tuple[tuple[str, str], ...] = (
    ("Compute 1234 * 5678 - 91011.", "<tool>1234 * 5678 - 91011</tool><result>6915641</result>\n\\boxed{6915641}"),
)
# Difficulty levels: operand digit counts and operators ("*" binds tighter; no negative intermediate results).
TOOL_ARITHMETIC_LEVELS: dict[int, tuple[tuple[int, ...], str, str]] = {
    1: ((3, 3), "*", "3-digit * 3-digit"),
    2: ((4, 4, 4), "+-*", "three 4-digit operands with +, -, *"),
    3: ((5, 4, 3, 2), "+-*", "four operands (5, 4, 3, 2 digits) with +, -, *"),
}
DEFAULT_TOOL_DIFFICULTY = 2


@TASKS.register("tool_arithmetic")
class ToolArithmeticTask(_SyntheticTask):
    """Multi-step arithmetic with large numbers that calls for the calculator: ``"Compute 4821 * 9127 - 3829."``.

    Exact integer answers, verified from the last ``\\boxed{}`` of the text the *model* wrote (observations are
    stripped first, so a boxed value inside a tool result earns nothing). Train and held-out questions partition the
    question space by a stable hash, as for the other synthetic tasks (``env/tasks.py``). ``tools`` is the task's
    :class:`ToolEnvironment` (``max_tool_calls`` calls per response, ``tool_isolation``); the trainer runs tool
    rollouts for every method on such a task. Registered as ``data.task=tool_arithmetic``.
    """

    name = "tool_arithmetic"

    def __init__(self, difficulty: int = DEFAULT_TOOL_DIFFICULTY, seed: int = 0,
                 heldout_fraction: float = DEFAULT_HELDOUT_FRACTION, max_tool_calls: int = 5,
                 tool_isolation: str = "process", system_prompt: Optional[str] = TOOL_SYSTEM_PROMPT,
                 fewshot: Optional[Sequence[tuple[str, str]]] = TOOL_FEWSHOT):
        if difficulty not in TOOL_ARITHMETIC_LEVELS:
            raise TaskError(f"tool_arithmetic difficulty must be one of {sorted(TOOL_ARITHMETIC_LEVELS)}, "
                            f"got {difficulty!r}")
        if not 0.0 < heldout_fraction < 1.0:
            raise TaskError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        if tool_isolation != "process":
            raise TaskError(f"tool_arithmetic: tool_isolation must be 'process' (model-written programs run only in "
                            f"the resource-limited subprocess), got {tool_isolation!r}")
        try:
            self.tools = ToolEnvironment(max_calls=int(max_tool_calls), isolation=tool_isolation)
        except ValueError as e:
            raise TaskError(f"tool_arithmetic: {e}") from None
        self.difficulty = int(difficulty)
        self.seed = int(seed)
        self.heldout_fraction = float(heldout_fraction)
        self.system_prompt = system_prompt
        self.fewshot = fewshot

    def _key(self) -> str:
        return f"tool-arithmetic-L{self.difficulty}"

    def _generate(self, rng: random.Random) -> tuple[str, str, str, dict]:
        digits, ops, _ = TOOL_ARITHMETIC_LEVELS[self.difficulty]
        while True:
            nums = [_draw(rng, d) for d in digits]
            chosen = [rng.choice(ops) for _ in range(len(nums) - 1)]
            value = _evaluate_checked(nums, chosen)
            if value is not None:
                break
        expr = " ".join(f"{n} {o}" for n, o in zip(nums, chosen)) + f" {nums[-1]}"
        return expr, f"Compute {expr}.", str(value), {"difficulty": self.difficulty, "expression": expr}

    def score(self, completion: str, example: Example, format_weight: float = 0.0) -> tuple[float, bool]:
        """``(reward, correct)`` from the last ``\\boxed{}`` of the model's own text (observations stripped)."""
        return math_score(ToolEnvironment.strip_observations(completion), example, format_weight)

    def describe(self) -> dict:
        return {"name": self.name, "difficulty": self.difficulty, "level": TOOL_ARITHMETIC_LEVELS[self.difficulty][2],
                "seed": self.seed, "heldout_fraction": self.heldout_fraction, "max_tool_calls": self.tools.max_calls,
                "tool_isolation": self.tools.isolation}

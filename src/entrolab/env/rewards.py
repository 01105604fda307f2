"""Verifiable rewards: answer extraction, math verification, Countdown checking, user rewards.

A reward for one completion is ``correctness (1 or 0) + format_weight * has_box`` where
``has_box`` says whether the completion contains a complete ``\\boxed{...}``.  Math tasks
check correctness with :func:`verify_math` (math-verify, plus an exact integer fast path
that also serves as the fallback); the Countdown task evaluates the boxed expression with
a small safe parser (:func:`eval_expression`) -- nothing the model writes is ever passed to
Python's ``eval``.

User rewards are plain functions ``fn(completion: str, example: Example) -> float`` named by
an import path ``"package.module:function"`` (or ``"path/to/file.py:function"``).
:class:`RewardFunction` wraps any scorer so that a raising or non-finite reward becomes 0
for that sample, is logged with the sample id (logger ``entrolab.rewards``) and counted,
and training goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import re
import sys
import threading
from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from entrolab.env.tasks import Example, Task

logger = logging.getLogger("entrolab.rewards")

__all__ = [
    "extract_boxed",
    "parse_int",
    "verify_math",
    "math_score",
    "ExpressionError",
    "eval_expression",
    "check_countdown",
    "countdown_score",
    "load_reward_fn",
    "RewardFunction",
    "build_reward",
]

_BOX_RE = re.compile(r"\\boxed\s*\{")

# Inputs longer than this are not handed to math-verify / sympy (they can be very slow).
_MAX_VERIFY_CHARS = 400


# --------------------------------------------------------------------------- extraction
def extract_boxed(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}`` in ``text``, or None.

    Braces inside the box are balanced (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``).
    A box left unclosed (e.g. by truncation) is ignored, so the last *complete* box wins.
    The content is stripped of surrounding whitespace.
    """
    if not text:
        return None
    found: str | None = None
    for m in _BOX_RE.finditer(text):
        depth = 1
        i = m.end()
        while i < len(text):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    found = text[m.end() : i].strip()
                    break
            i += 1
    return found


def extract_answer(text: str) -> str | None:
    """A response's final answer for answer-level comparisons (clusters, votes): the last complete ``\\boxed{}``
    content, or None when there is none or it is empty."""
    boxed = extract_boxed(text)
    return boxed if boxed else None


_INT_CLEAN_RE = re.compile(r"\\[,;:! ]|\{,\}|\\text\{\s*\}|[\s,_$]")
_INT_RE = re.compile(r"[+-]?\d+(?:\.0*)?")


def parse_int(text: Any) -> int | None:
    """Parse a plain integer such as ``"1,234"``, ``"1 234"``, ``"-7"``, ``"$42$"`` or ``"12.0"``.

    Thousands separators (commas, spaces, LaTeX thin spaces, ``{,}``), ``$`` and a trailing
    period are ignored; anything else that is not an integer gives None.  This is the
    simple fallback parser used when math-verify is unavailable or fails.
    """
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if text is None:
        return None
    s = str(text).strip().rstrip(".")
    if len(s) > 64:
        return None
    s = _INT_CLEAN_RE.sub("", s).replace("\u2212", "-")
    if not _INT_RE.fullmatch(s):
        return None
    return int(s.split(".")[0])


# --------------------------------------------------------------------------- math verify
_MATH_VERIFY: tuple[Callable, Callable] | None | bool = False  # False = not tried yet


def _math_verify_api() -> tuple[Callable, Callable] | None:
    """Import math-verify lazily; None when it is not installed."""
    global _MATH_VERIFY
    if _MATH_VERIFY is False:
        try:
            from math_verify import parse, verify

            _MATH_VERIFY = (parse, verify)
        except Exception:  # pragma: no cover - depends on the environment
            logger.warning("math-verify is not available; using the integer fallback only")
            _MATH_VERIFY = None
    return _MATH_VERIFY  # type: ignore[return-value]


def _as_answer_text(text: str) -> str:
    """The answer part of ``text``: boxed content when there is a box, else the text."""
    boxed = extract_boxed(text)
    answer = boxed if boxed is not None else text.strip()
    return answer.strip("$ ")


def verify_math(pred_text: str, gold: Any) -> bool:
    """True when the predicted answer is mathematically equal to ``gold``.

    ``pred_text`` may be a bare answer (``"0.5"``) or text containing ``\\boxed{...}`` (its
    last box is used); ``gold`` likewise (str or number).  Two plain integers are compared
    exactly (fast, and the fallback); otherwise math-verify's ``parse`` + ``verify`` decide
    (``"1/2"``, ``"0.5"`` and ``"\\frac{1}{2}"`` are all equal).  When math-verify is missing
    or raises, the integer comparison is the answer.
    """
    if pred_text is None or gold is None:
        return False
    pred = _as_answer_text(str(pred_text))
    gold_s = _as_answer_text(str(gold))
    if not pred:
        return False
    p_int, g_int = parse_int(pred), parse_int(gold_s)
    if p_int is not None and g_int is not None:
        return p_int == g_int
    api = _math_verify_api()
    if api is None or len(pred) > _MAX_VERIFY_CHARS or len(gold_s) > _MAX_VERIFY_CHARS:
        return p_int is not None and p_int == g_int
    parse, verify = api
    # math-verify's timeouts use SIGALRM, which only works in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    try:
        g = parse("\\boxed{" + gold_s + "}", parsing_timeout=timeout)
        p = parse("\\boxed{" + pred + "}", parsing_timeout=timeout)
        if not g or not p:
            return False
        return bool(verify(g, p, timeout_seconds=timeout))
    except Exception as exc:  # math-verify failed: fall back to integers
        logger.debug("math-verify failed on %r vs %r: %s", pred, gold_s, exc)
        return p_int is not None and p_int == g_int


def math_score(completion: str, example: "Example", format_weight: float = 0.0) -> tuple[float, bool]:
    """Score a math completion: ``(correct + format_weight * has_box, correct)``.

    Only the last ``\\boxed{...}`` counts as the answer; a completion without one is wrong.
    """
    boxed = extract_boxed(completion)
    correct = boxed is not None and verify_math(boxed, example.answer)
    reward = float(correct) + (float(format_weight) if boxed is not None else 0.0)
    return reward, correct


# --------------------------------------------------------------------------- countdown
class ExpressionError(ValueError):
    """An arithmetic expression that the safe parser rejects."""


_MAX_EXPR_CHARS = 200
_MAX_DEPTH = 32
_MAX_INT_DIGITS = 12
_OPS = {"+": "+", "-": "-", "\u2212": "-", "*": "*", "\u00d7": "*", "x": "*", "/": "/", "\u00f7": "/"}
_TOKEN_RE = re.compile(r"\s*(?:(\d+)|(\\times|\\cdot|\\div|[-+*/()\u2212\u00d7\u00f7x]))")
_LATEX_OPS = {"\\times": "*", "\\cdot": "*", "\\div": "/"}


def _tokenize(expr: str) -> list[str]:
    """Split an expression into integer literals, operators and parentheses."""
    tokens: list[str] = []
    pos = 0
    expr = expr.rstrip()
    while pos < len(expr):
        m = _TOKEN_RE.match(expr, pos)
        if not m:
            raise ExpressionError(f"unexpected character {expr[pos:].lstrip()[:1]!r} at position {pos}")
        num, op = m.group(1), m.group(2)
        if num is not None:
            if len(num) > _MAX_INT_DIGITS:
                raise ExpressionError(f"number too long: {num[:16]}...")
            tokens.append(num)
        else:
            tokens.append(_LATEX_OPS.get(op, _OPS.get(op, op)))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive-descent parser for ``+ - * /`` and parentheses over integer literals.

    Grammar: ``expr := term (('+'|'-') term)*``, ``term := atom (('*'|'/') atom)*``,
    ``atom := INT | '(' expr ')'``.  No unary operators, names, calls or attributes.
    Values are exact :class:`fractions.Fraction`.
    """

    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.i = 0
        self.numbers: list[int] = []

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ExpressionError("unexpected end of expression")
        self.i += 1
        return tok

    def expr(self, depth: int) -> Fraction:
        if depth > _MAX_DEPTH:
            raise ExpressionError("expression nested too deeply")
        value = self.term(depth)
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self, depth: int) -> Fraction:
        value = self.atom(depth)
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.atom(depth)
            if op == "*":
                value = value * rhs
            else:
                if rhs == 0:
                    raise ExpressionError("division by zero")
                value = value / rhs
        return value

    def atom(self, depth: int) -> Fraction:
        tok = self.take()
        if tok == "(":
            value = self.expr(depth + 1)
            if self.take() != ")":
                raise ExpressionError("missing ')'")
            return value
        if tok.isdigit():
            self.numbers.append(int(tok))
            return Fraction(int(tok))
        raise ExpressionError(f"unexpected token {tok!r}")


def eval_expression(expr: str) -> tuple[Fraction, list[int]]:
    """Safely evaluate an integer arithmetic expression; return ``(value, numbers_used)``.

    Accepts integers, ``+ - * /`` (also ``× ÷ −``, ``x``, ``\\times``, ``\\cdot``, ``\\div``) and
    parentheses; the value is an exact Fraction.  Anything else -- names, calls, quotes,
    unary minus, division by zero, over-long input -- raises :class:`ExpressionError`.
    """
    if not isinstance(expr, str):
        raise ExpressionError("expression must be a string")
    if len(expr) > _MAX_EXPR_CHARS:
        raise ExpressionError(f"expression longer than {_MAX_EXPR_CHARS} characters")
    tokens = _tokenize(expr)
    if not tokens:
        raise ExpressionError("empty expression")
    parser = _Parser(tokens)
    value = parser.expr(0)
    if parser.peek() is not None:
        raise ExpressionError(f"unexpected token {parser.peek()!r}")
    return value, parser.numbers


def _strip_equation(expr: str, target: int) -> str:
    """Drop a leading ``target =`` or trailing ``= target`` around a Countdown answer."""
    parts = [p.strip() for p in expr.split("=")]
    if len(parts) == 1:
        return expr
    if len(parts) == 2:
        if parse_int(parts[1]) == target:
            return parts[0]
        if parse_int(parts[0]) == target:
            return parts[1]
    raise ExpressionError("the answer must be one expression (at most '= target' after it)")


def check_countdown(expr: str, numbers: Sequence[int], target: int) -> tuple[bool, str]:
    """Check a Countdown answer: ``(ok, reason)``.

    ``expr`` must evaluate (safely, exactly) to ``target`` using each given number at most
    once (numbers may repeat in ``numbers``; each copy can be used once).  Intermediate
    results may be fractions.  ``reason`` explains a failure ("ok" on success).
    """
    try:
        expr = _strip_equation(expr, int(target))
        value, used = eval_expression(expr)
    except ExpressionError as exc:
        return False, f"invalid expression: {exc}"
    available = Counter(int(n) for n in numbers)
    over = Counter(used) - available
    if over:
        bad = sorted(over)
        missing = [n for n in bad if n not in available]
        if missing:
            return False, f"uses numbers that are not given: {missing}"
        return False, f"uses numbers more often than given: {bad}"
    if value != target:
        return False, f"evaluates to {value}, not {target}"
    return True, "ok"


def countdown_score(completion: str, example: "Example", format_weight: float = 0.0) -> tuple[float, bool]:
    """Score a Countdown completion: the last ``\\boxed{expr}`` must reach the target."""
    boxed = extract_boxed(completion)
    correct = False
    if boxed is not None:
        correct, _ = check_countdown(boxed, example.meta["numbers"], int(example.meta["target"]))
    reward = float(correct) + (float(format_weight) if boxed is not None else 0.0)
    return reward, correct


# --------------------------------------------------------------------------- user rewards
def load_reward_fn(spec: str | Callable) -> Callable[[str, "Example"], float]:
    """Resolve ``"module:function"`` (or ``"path/to/file.py:function"``) to a callable.

    The function must have the signature ``fn(completion: str, example: Example) -> float``.
    A callable is returned unchanged.  Errors name the spec and what went wrong.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"reward function must be given as 'module:function', got {spec!r}")
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise ValueError(f"reward function must be given as 'module:function', got {spec!r}")
    if module_name.endswith(".py"):
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise ImportError(f"reward function {spec!r}: file {path} does not exist")
        mod_id = "entrolab_user_reward_" + re.sub(r"\W", "_", path)
        file_spec = importlib.util.spec_from_file_location(mod_id, path)
        if file_spec is None or file_spec.loader is None:  # pragma: no cover
            raise ImportError(f"reward function {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_id] = module
        file_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"reward function {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"reward function {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"reward function {spec!r} is not callable (got {type(obj).__name__})")
    return obj


class RewardFunction:
    """A fault-tolerant reward: ``score(completion, example) -> (reward, correct)``.

    ``fn`` returns either a float or a ``(float, bool)`` pair.  ``correct_fn`` (optional)
    decides correctness for logging when ``fn`` returns only a float; without it a sample
    is "correct" when its reward is > 0.  If ``fn`` raises or returns something that is not
    a finite number, the sample gets reward 0 (not correct), the error is logged with the
    sample id on logger ``entrolab.rewards`` and counted in :attr:`errors`; scoring goes on.
    ``format_weight`` adds a bonus for a present ``\\boxed{}`` on top of a float-only ``fn``.
    """

    def __init__(
        self,
        fn: Callable[[str, "Example"], Any],
        name: str | None = None,
        correct_fn: Callable[[str, "Example"], bool] | None = None,
        format_weight: float = 0.0,
    ):
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.correct_fn = correct_fn
        self.format_weight = float(format_weight)
        self.errors = 0
        self.calls = 0
        self.last_error: str | None = None

    def score(self, completion: str, example: "Example") -> tuple[float, bool]:
        """Reward and correctness of one completion (0, False on any reward error)."""
        self.calls += 1
        try:
            out = self.fn(completion, example)
            if isinstance(out, tuple):
                reward, correct = float(out[0]), bool(out[1])
            else:
                if isinstance(out, (str, bytes)) or not hasattr(out, "__float__"):
                    raise TypeError(f"reward must be a number, got {type(out).__name__}")
                reward = float(out)
                correct = bool(self.correct_fn(completion, example)) if self.correct_fn else reward > 0
                if self.format_weight and extract_boxed(completion) is not None:
                    reward += self.format_weight
            if not math.isfinite(reward):
                raise ValueError(f"reward is not finite: {reward}")
            return reward, correct
        except Exception as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            sample_id = getattr(example, "id", "?")
            logger.error(
                "reward %s failed on sample %s (error %d, reward set to 0): %s",
                self.name, sample_id, self.errors, self.last_error,
                exc_info=self.errors == 1,
            )
            return 0.0, False

    def __call__(self, completion: str, example: "Example") -> float:
        """The reward of one completion (see :meth:`score`)."""
        return self.score(completion, example)[0]

    def score_batch(self, completions: Iterable[str], examples: Iterable["Example"]) -> list[tuple[float, bool]]:
        """Score completions paired with their examples, in order."""
        return [self.score(c, e) for c, e in zip(completions, examples, strict=True)]

    def __repr__(self) -> str:
        return f"RewardFunction({self.name!r}, errors={self.errors})"


def build_reward(task: "Task", format_weight: float = 0.0, custom: str | Callable | None = None) -> RewardFunction:
    """The reward for ``task``: its built-in verifier, or a user function.

    Built-in: ``correct (1/0) + format_weight * has_box`` (Countdown uses its own checker).
    ``custom`` (``"module:function"`` or a callable ``fn(completion, example) -> float``)
    replaces the correctness term; ``format_weight`` is still added for a present box, and
    the task's verifier still decides the logged correctness.
    """
    if format_weight < 0:
        raise ValueError(f"format_weight must be >= 0, got {format_weight}")
    if custom is None:
        fw = float(format_weight)
        return RewardFunction(
            lambda c, e: task.score(c, e, format_weight=fw),
            name=f"{getattr(task, 'name', type(task).__name__)}-verifier",
        )
    fn = load_reward_fn(custom)
    name = custom if isinstance(custom, str) else getattr(fn, "__qualname__", repr(fn))
    return RewardFunction(
        fn,
        name=name,
        correct_fn=lambda c, e: task.score(c, e)[1],
        format_weight=format_weight,
    )

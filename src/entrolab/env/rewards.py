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

Untrusted input. A completion is written by the policy being trained, which learns whatever
raises its reward, so everything here treats it as hostile (``docs/security.md``):

- extraction (:func:`extract_boxed`, :func:`extract_answer`) is linear in the text;
- at most :data:`MAX_ANSWER_CHARS` characters of an answer reach math-verify / sympy, and
  answers that would build huge objects are refused before they are built
  (:func:`answer_guard` on the LaTeX, :func:`expression_guard` on the parsed expression);
- :class:`RewardFunction` scores in a pool of worker processes (:mod:`entrolab.env.workers`)
  with a wall-clock limit and a memory cap per completion; a completion that hits a limit
  gets reward 0 and is counted (``timeouts``, ``oom``) and logged, and the step goes on.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
import pickle
import re
import sys
import threading
from collections import Counter
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

from ..errors import ConfigError
from ..files import compile_python
from .workers import DEFAULT_LIMIT_S, DEFAULT_MEMORY_MB, Call, Context, Outcome, shared_pool

if TYPE_CHECKING:  # pragma: no cover
    from entrolab.env.tasks import Example, Task

logger = logging.getLogger("entrolab.rewards")

__all__ = [
    "MAX_ANSWER_CHARS",
    "answer_guard",
    "expression_guard",
    "extract_boxed",
    "extract_answer",
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
_BRACE_RE = re.compile(r"[{}]")

MAX_ANSWER_CHARS = 400
"""Longest answer (after extraction) handed to math-verify / sympy. Parsing and comparing cost grows fast with the
length of a LaTeX expression; real final answers are far shorter. A longer answer is compared as an integer when it
is one, else it is wrong (rewards) or compared as a string (equivalence)."""
_MAX_VERIFY_CHARS = MAX_ANSWER_CHARS  # the former private name


# --------------------------------------------------------------------------- extraction
def extract_boxed(text: str) -> str | None:
    """Return the content of the last complete ``\\boxed{...}`` in ``text``, or None.

    Braces inside the box are balanced (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``).
    A box left unclosed (e.g. by truncation) is ignored, so the last *complete* box wins
    (the one that opens last among those that close). The content is stripped of
    surrounding whitespace.

    Linear in ``len(text)``: one pass matches every brace with a stack (a ``{`` closes at
    the first ``}`` after it that brings the depth counted from it back to 0, which is the
    stack match), so ``"\\boxed{" * 10**5`` costs one pass, not one scan per box.
    """
    if not text:
        return None
    starts = {m.end() - 1 for m in _BOX_RE.finditer(text)}  # positions of the boxes' opening braces
    if not starts:
        return None
    best = -1
    best_end = -1
    stack: list[int] = []
    for m in _BRACE_RE.finditer(text, min(starts)):
        pos = m.start()
        if text[pos] == "{":
            stack.append(pos)
        elif stack:
            open_pos = stack.pop()
            if open_pos in starts and open_pos > best:
                best, best_end = open_pos, pos
    if best < 0:
        return None
    return text[best + 1 : best_end].strip()


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


# --------------------------------------------------------------------------- guards
_MATRIX_BUILDERS_RE = re.compile(r"\\operatorname\s*\{\s*(?:eye|zeros|ones|diag|hstack|vstack)\s*\}")
_BIG_SIZE_RE = re.compile(r"\d{3,}|\^|!|\*|\\cdot|\\times")
MAX_MATRIX_LITERAL = 64
MAX_RESULT_BITS = 1 << 20
"""Largest number (in bits, ≈ 315,000 digits) a parsed answer may denote through powers, factorials or binomials
before it is refused: sympy computes such values exactly, and ``2^{10^{10}}`` costs 1 GB and 15 s."""
MAX_SYMBOLIC_EXPONENT = 10_000
"""Largest exponent of a symbolic base (``(x+1)^{10^5}`` is expanded term by term)."""
MAX_SERIES_TERMS = 10_000
"""Most terms of a ``\\sum`` / ``\\prod`` with numeric bounds (``\\prod_{k=1}^{10^6} k`` took 11 s)."""

_refusals = [0]  # answers refused by the guards in this process (a worker reports its delta per call)
_IN_WORKER = [False]  # set in a pool worker: the pool's own timer bounds the call, math-verify's timers stay off


def answer_guard(answer: str) -> str | None:
    """Why ``answer`` (LaTeX) must not reach the parser, or None. Refused: more than :data:`MAX_ANSWER_CHARS`
    characters; matrix constructors (``\\operatorname{eye|zeros|ones|diag|hstack|vstack}``), which the parser
    evaluates at once, unless every size is a literal of at most 2 digits (so at most
    ``MAX_MATRIX_LITERAL``-ish) with no arithmetic (``\\operatorname{eye}(20000)`` is a 3.1 GB matrix)."""
    if len(answer) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    if _MATRIX_BUILDERS_RE.search(answer) and _BIG_SIZE_RE.search(_MATRIX_BUILDERS_RE.sub(" ", answer)):
        return "matrix constructor with a large or computed size"
    return None


def _bits_bound(e: Any, memo: dict) -> float | None:
    """An upper bound of the size in bits of the exact value of a numeric sympy expression (None: not numeric, or
    not a form bounded here). Only arithmetic, powers, factorials and binomials are followed."""
    key = id(e)
    if key in memo:
        return memo[key]
    out: float | None = None
    try:
        import sympy

        if isinstance(e, sympy.Integer):
            out = float(max(abs(int(e)), 1).bit_length())
        elif isinstance(e, sympy.Rational):
            out = float(abs(int(e.p)).bit_length() + int(e.q).bit_length())
        elif isinstance(e, sympy.Float):
            out = 64.0 + abs(math.log2(abs(float(e)))) if e != 0 and math.isfinite(float(e)) else 64.0
        elif isinstance(e, sympy.NumberSymbol) or e is sympy.I:
            out = 2.0
        elif isinstance(e, (sympy.Add, sympy.Mul)):
            parts = [_bits_bound(a, memo) for a in e.args]
            if all(p is not None for p in parts):
                total = sum(parts)  # type: ignore[arg-type]
                out = total + len(parts) if isinstance(e, sympy.Add) else total
        elif isinstance(e, sympy.Pow):
            b, x = e.args
            bb, bx = _bits_bound(b, memo), _bits_bound(x, memo)
            if bb is not None and bx is not None:
                trivial = b in (sympy.Integer(0), sympy.Integer(1), sympy.Integer(-1))
                out = 1.0 if trivial else bb * _value_bound(bx)
        elif isinstance(e, sympy.factorial):
            bn = _bits_bound(e.args[0], memo)
            if bn is not None:
                n = _value_bound(bn)
                out = n * max(1.0, math.log2(max(n, 2.0)))
        elif isinstance(e, sympy.binomial):
            bn = _bits_bound(e.args[0], memo)
            if bn is not None:
                out = _value_bound(bn)
    except (TypeError, ValueError, OverflowError, AttributeError):
        out = None
    memo[key] = out
    return out


def _value_bound(bits: float) -> float:
    return math.inf if bits > 1000 else 2.0 ** bits


def expression_guard(parsed: Any) -> str | None:
    """Why a parsed answer (math-verify's ``parse`` output) must not be compared, or None. The parser leaves powers,
    factorials, sums and products unevaluated; comparing them makes sympy evaluate them, so these are refused first:
    a number over :data:`MAX_RESULT_BITS` bits, a symbolic base to an exponent over :data:`MAX_SYMBOLIC_EXPONENT`,
    a sum or product of more than :data:`MAX_SERIES_TERMS` numeric terms."""
    try:
        import sympy
    except ImportError:  # pragma: no cover - math-verify needs sympy
        return None
    memo: dict = {}
    for item in parsed if isinstance(parsed, (list, tuple)) else [parsed]:
        if not isinstance(item, sympy.Basic):
            continue
        for node in sympy.preorder_traversal(item):
            if isinstance(node, (sympy.Pow, sympy.factorial, sympy.binomial)):
                bits = _bits_bound(node, memo)
                if bits is not None and bits > MAX_RESULT_BITS:
                    return f"a number of more than {MAX_RESULT_BITS} bits ({str(node)[:40]})"
            if isinstance(node, sympy.Basic) and type(node).__name__ in ("Pow", "MatPow") and len(node.args) == 2:
                base, x = node.args
                bx = _bits_bound(x, memo)
                symbolic = not getattr(base, "is_number", False) or isinstance(base, sympy.MatrixBase)
                if symbolic and bx is not None and _value_bound(bx) > MAX_SYMBOLIC_EXPONENT:
                    return f"a symbolic power with an exponent over {MAX_SYMBOLIC_EXPONENT} ({str(node)[:40]})"
            if isinstance(node, (sympy.Sum, sympy.Product)):
                for lim in node.limits:
                    if len(lim) == 3:
                        lo, hi = _bits_bound(lim[1], memo), _bits_bound(lim[2], memo)
                        if lo is not None and hi is not None and \
                                _value_bound(lo) + _value_bound(hi) > MAX_SERIES_TERMS:
                            return f"a sum or product of more than {MAX_SERIES_TERMS} terms"
    return None


def _refuse(why: str, text: str) -> None:
    _refusals[0] += 1
    logger.debug("answer refused before parsing (%s): %r", why, text[:80])


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


def math_verify_timeout() -> int | None:
    """Seconds for math-verify's own (SIGALRM) timeouts: 5 in a main thread, None (off) in other threads, where
    SIGALRM cannot be used, and None in a pool worker, whose own timer bounds the whole call (math-verify's alarm
    would cancel it)."""
    if _IN_WORKER[0]:
        return None
    return 5 if threading.current_thread() is threading.main_thread() else None


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

    Bounds: answers over :data:`MAX_ANSWER_CHARS` characters, and answers refused by
    :func:`answer_guard` / :func:`expression_guard`, never reach the comparison (False
    unless both are equal plain integers). In this process the time bound is math-verify's
    timeouts (:func:`math_verify_timeout`: off outside the main thread); scoring through
    :class:`RewardFunction` runs this in a worker with a hard wall-clock and memory limit.
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
    if api is None:
        return p_int is not None and p_int == g_int
    why = answer_guard(pred) or answer_guard(gold_s)
    if why:
        _refuse(why, pred)
        return p_int is not None and p_int == g_int
    parse, verify = api
    timeout = math_verify_timeout()
    try:
        g = parse("\\boxed{" + gold_s + "}", parsing_timeout=timeout)
        p = parse("\\boxed{" + pred + "}", parsing_timeout=timeout)
        if not g or not p:
            return False
        why = expression_guard(g) or expression_guard(p)
        if why:
            _refuse(why, pred)
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
class RewardFnError(ConfigError):
    """A user reward ``module:function`` cannot be used: a malformed spec, a module that does not import (missing,
    a syntax error, raising at import), a missing or non-callable function; the message names the spec."""


def check_reward_spec(key: str, spec: str) -> None:
    """A cheap check of a ``module:function`` spec before anything loads (config validation): its form, and that
    the file or the top-level module exists. :func:`load_reward_fn` does the rest."""
    module_name, attr = _split_spec(key, spec)
    if module_name.endswith(".py"):
        if not os.path.isfile(os.path.abspath(module_name)):
            raise RewardFnError(f"{key} = {spec!r}: file {module_name} does not exist")
        return
    top = module_name.split(".")[0]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise RewardFnError(f"{key} = {spec!r}: no module named {top!r} on the Python path; give the file "
                            "instead (path/to/file.py:function) or add its directory to PYTHONPATH")


def _split_spec(key: str, spec: Any) -> tuple[str, str]:
    if isinstance(spec, str) and ":" in spec:
        module_name, _, attr = spec.rpartition(":")
        if module_name.strip() and attr.strip():
            return module_name, attr
    raise RewardFnError(f"{key} = {spec!r} must look like 'module:function' or 'path/to/file.py:function'")


def _import_failure(key: str, spec: str, what: str, exc: BaseException) -> RewardFnError:
    if isinstance(exc, SyntaxError):
        return RewardFnError(f"{exc.filename} line {exc.lineno}: syntax error: {exc.msg} ({key} = {spec!r})")
    return RewardFnError(f"{key} = {spec!r}: importing {what} raised {type(exc).__name__}: {exc}")


def load_reward_fn(spec: str | Callable, key: str = "reward function") -> Callable[[str, "Example"], float]:
    """Resolve ``"module:function"`` (or ``"path/to/file.py:function"``) to a callable.

    The function must have the signature ``fn(completion: str, example: Example) -> float``.
    A callable is returned unchanged. Every failure is a :class:`RewardFnError` naming ``key`` and the spec: a
    malformed spec, a module that is missing, has a syntax error (with its file and line) or raises at import, and
    a missing or non-callable function.
    """
    if callable(spec):
        return spec
    module_name, attr = _split_spec(key, spec)
    if module_name.endswith(".py"):
        path = os.path.abspath(module_name)
        if not os.path.isfile(path):
            raise RewardFnError(f"{key} = {spec!r}: file {path} does not exist")
        code = compile_python(path)  # not UTF-8, or a syntax error: names the file and line
        mod_id = "entrolab_user_reward_" + re.sub(r"\W", "_", path)
        file_spec = importlib.util.spec_from_file_location(mod_id, path)
        if file_spec is None:  # pragma: no cover
            raise RewardFnError(f"{key} = {spec!r}: cannot import {path}")
        module = importlib.util.module_from_spec(file_spec)
        sys.modules[mod_id] = module
        try:
            exec(code, module.__dict__)
        except Exception as exc:  # noqa: BLE001 — the user's module failed: say so, naming it
            sys.modules.pop(mod_id, None)
            raise _import_failure(key, spec, path, exc) from None
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                raise RewardFnError(f"{key} = {spec!r}: no module named {exc.name!r} on the Python path; give the "
                                    "file instead (path/to/file.py:function) or add its directory to PYTHONPATH"
                                    ) from None
            raise _import_failure(key, spec, f"module {module_name!r}", exc) from None
        except Exception as exc:  # noqa: BLE001 — the user's module failed: say so, naming it
            raise _import_failure(key, spec, f"module {module_name!r}", exc) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise RewardFnError(f"{key} = {spec!r}: {module_name!r} has no function {attr!r}"
                                + (f"; it defines: {', '.join(names)}" if names else ""))
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardFnError(f"{key} = {spec!r} is not callable (got {type(obj).__name__})")
    return obj


class _SpecFunction:
    """A user reward named ``"module:function"`` / ``"path/to/file.py:function"``, loaded on first call in whatever
    process calls it (a pool worker imports it there; the spec, not the function, is what gets pickled)."""

    _loaded: dict[str, Callable] = {}

    def __init__(self, spec: str):
        module_name, _, attr = spec.rpartition(":")
        if module_name.endswith(".py"):
            spec = f"{os.path.abspath(module_name)}:{attr}"  # the worker may not share a later cwd
        self.spec = spec

    def __call__(self, completion: str, example: "Example") -> Any:
        fn = self._loaded.get(self.spec)
        if fn is None:
            fn = self._loaded[self.spec] = load_reward_fn(self.spec)
        return fn(completion, example)

    def __repr__(self) -> str:
        return f"_SpecFunction({self.spec!r})"


class _TaskScore:
    """``task.score(completion, example, format_weight)``: the built-in verifier, picklable with its task."""

    def __init__(self, task: "Task", format_weight: float = 0.0):
        self.task, self.format_weight = task, float(format_weight)

    def __call__(self, completion: str, example: "Example") -> tuple[float, bool]:
        return self.task.score(completion, example, format_weight=self.format_weight)


class _TaskCorrect:
    """The task verifier's correctness (for logging beside a user reward)."""

    def __init__(self, task: "Task"):
        self.task = task

    def __call__(self, completion: str, example: "Example") -> bool:
        return self.task.score(completion, example)[1]


class _Scorer:
    """What a :class:`RewardFunction` computes for one completion: ``(reward, correct)``, raising on a bad reward.
    Picklable when its functions are, so that pool workers can run it."""

    def __init__(self, fn: Callable, correct_fn: Optional[Callable], format_weight: float):
        self.fn, self.correct_fn, self.format_weight = fn, correct_fn, float(format_weight)

    def __call__(self, completion: str, example: "Example") -> tuple[float, bool]:
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


def _score_in_worker(scorer: _Scorer, completion: str, example: "Example") -> list:
    """(Runs in a pool worker.) ``[reward, correct, answers refused by the guards]``."""
    _IN_WORKER[0] = True
    before = _refusals[0]
    reward, correct = scorer(completion, example)
    return [reward, correct, _refusals[0] - before]


ISOLATIONS = ("process", "inline")
COUNTERS = ("errors", "timeouts", "oom", "refused")


class RewardFunction:
    """A fault-tolerant, bounded reward: ``score(completion, example) -> (reward, correct)`` and
    ``score_batch(completions, examples)``.

    ``fn`` returns either a float or a ``(float, bool)`` pair.  ``correct_fn`` (optional)
    decides correctness for logging when ``fn`` returns only a float; without it a sample
    is "correct" when its reward is > 0.  If ``fn`` raises or returns something that is not
    a finite number, the sample gets reward 0 (not correct), the error is logged with the
    sample id on logger ``entrolab.rewards`` and counted in :attr:`errors`; scoring goes on.
    ``format_weight`` adds a bonus for a present ``\\boxed{}`` on top of a float-only ``fn``.

    Bounds (``isolation="process"``, the default): each completion is scored in a worker of
    :func:`entrolab.env.workers.shared_pool` (``workers`` processes, each capped at ``memory_mb``
    MB of address space) and gets at most ``limit_s`` seconds of wall clock. A completion
    that runs out of time or memory gets reward 0, not correct, and is counted in
    :attr:`timeouts` / :attr:`oom` and logged; :attr:`refused` counts answers the parser
    guards refused (they score as wrong answers). :meth:`score_batch` scores in parallel and
    returns within ``ceil(len / workers) × limit_s`` seconds (plus a worker restart, ≈ 0.4 s,
    per round in which one was killed). Functions that cannot be pickled for the workers
    (lambdas, closures) are scored in this process, unbounded, with a warning; give them as
    ``"module:function"`` to get the bounds. ``isolation="inline"`` scores in this process:
    for trusted scorers in tests.
    """

    def __init__(
        self,
        fn: Callable[[str, "Example"], Any],
        name: str | None = None,
        correct_fn: Callable[[str, "Example"], bool] | None = None,
        format_weight: float = 0.0,
        *,
        limit_s: float = DEFAULT_LIMIT_S,
        memory_mb: int = DEFAULT_MEMORY_MB,
        workers: int | None = None,
        isolation: str = "process",
    ):
        if isolation not in ISOLATIONS:
            raise ValueError(f"RewardFunction.isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if not (isinstance(limit_s, (int, float)) and math.isfinite(limit_s) and limit_s > 0):
            raise ValueError(f"RewardFunction.limit_s must be a number of seconds > 0, got {limit_s!r}")
        if not isinstance(memory_mb, int) or memory_mb < 64:
            raise ValueError(f"RewardFunction.memory_mb must be an integer >= 64 (MB per worker), got {memory_mb!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"RewardFunction.workers must be an integer >= 1 (or None: automatic), got {workers!r}")
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)
        self.correct_fn = correct_fn
        self.format_weight = float(format_weight)
        self.limit_s = float(limit_s)
        self.memory_mb = memory_mb
        self.workers = workers
        self.isolation = isolation
        self.errors = 0
        self.timeouts = 0
        self.oom = 0
        self.refused = 0
        self.calls = 0
        self.last_error: str | None = None
        self._context: Context | None = None
        self._inline_reason: str | None = None
        self._reported = dict.fromkeys(COUNTERS, 0)

    # -- scoring -------------------------------------------------------------------------------------------------------
    def _scorer(self) -> _Scorer:
        return _Scorer(self.fn, self.correct_fn, self.format_weight)

    def score(self, completion: str, example: "Example") -> tuple[float, bool]:
        """Reward and correctness of one completion (0, False on any reward error or limit)."""
        return self.score_batch([completion], [example])[0]

    def __call__(self, completion: str, example: "Example") -> float:
        """The reward of one completion (see :meth:`score`)."""
        return self.score(completion, example)[0]

    def score_batch(self, completions: Iterable[str], examples: Iterable["Example"]) -> list[tuple[float, bool]]:
        """Score completions paired with their examples, in order, in parallel on the worker pool; each completion
        is bounded by ``limit_s`` seconds and ``memory_mb`` MB (see the class docstring)."""
        pairs = list(zip(completions, examples, strict=True))
        if not pairs:
            return []
        ctx = self._pool_context()
        if ctx is None:
            scorer = self._scorer()
            return [self._score_here(scorer, c, e) for c, e in pairs]
        pool = shared_pool(self.workers, self.memory_mb)
        outcomes = pool.run([Call("entrolab.env.rewards:_score_in_worker", (c, e), ctx) for c, e in pairs],
                            self.limit_s)
        if any(o.status == "error" and o.reason.startswith("context:") for o in outcomes):
            self._go_inline(next(o.reason for o in outcomes if o.reason.startswith("context:")))
            return self.score_batch([c for c, _ in pairs], [e for _, e in pairs])
        out = []
        for (c, e), o in zip(pairs, outcomes):
            self.calls += 1
            out.append(self._result(o, e))
        return out

    def _pool_context(self) -> Context | None:
        """The scorer as a worker context; None when scoring runs here (inline, or not picklable)."""
        if self.isolation == "inline" or self._inline_reason is not None:
            return None
        if self._context is None:
            try:
                self._context = Context(self._scorer())
            except Exception as e:  # lambdas, closures, objects holding locks or models
                self._go_inline(f"it cannot be pickled for the worker pool ({type(e).__name__}: {e})")
                return None
        return self._context

    def _go_inline(self, why: str) -> None:
        self._inline_reason = why
        self._context = None
        logger.warning("reward %s is scored in the trainer's process WITHOUT time or memory limits: %s. Give it as "
                       "'module:function' importable by a fresh Python (on sys.path) to score it in the bounded "
                       "worker pool.", self.name, why)

    def _score_here(self, scorer: _Scorer, completion: str, example: "Example") -> tuple[float, bool]:
        self.calls += 1
        before = _refusals[0]
        try:
            result = scorer(completion, example)
            self.refused += _refusals[0] - before
            return result
        except Exception as exc:
            self._failed("error", example, f"{type(exc).__name__}: {exc}", exc_info=self.errors == 0)
            return 0.0, False

    def _result(self, o: Outcome, example: "Example") -> tuple[float, bool]:
        if o.ok:
            try:
                reward, correct, refused = o.value
                self.refused += int(refused)
                return float(reward), bool(correct)
            except (TypeError, ValueError) as exc:  # pragma: no cover - protocol guard
                self._failed("error", example, f"malformed worker result {o.value!r}: {exc}")
                return 0.0, False
        trace = f"\nworker traceback:\n{o.trace}" if o.trace and self.errors == 0 and o.status == "error" else ""
        self._failed(o.status, example, o.reason + trace, seconds=o.seconds)
        return 0.0, False

    def _failed(self, status: str, example: "Example", why: str, exc_info: bool = False,
                seconds: float | None = None) -> None:
        sample_id = getattr(example, "id", "?")
        if status == "timeout":
            self.timeouts += 1
            logger.warning("reward %s timed out on sample %s after %.3g s (limit %g s; timeout %d, reward set to 0): "
                           "%s", self.name, sample_id, seconds or 0.0, self.limit_s, self.timeouts, why)
            return
        if status == "oom":
            self.oom += 1
            logger.warning("reward %s ran out of memory on sample %s (cap %d MB; oom %d, reward set to 0): %s",
                           self.name, sample_id, self.memory_mb, self.oom, why)
            return
        self.errors += 1
        self.last_error = why.split("\n", 1)[0]
        logger.error("reward %s failed on sample %s (error %d, reward set to 0): %s", self.name, sample_id,
                     self.errors, why, exc_info=exc_info)

    # -- counters and lifecycle ------------------------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        """Cumulative counts: ``errors``, ``timeouts``, ``oom``, ``refused`` (and ``calls``)."""
        return {"errors": self.errors, "timeouts": self.timeouts, "oom": self.oom, "refused": self.refused,
                "calls": self.calls}

    def step_metrics(self) -> dict[str, float]:
        """Counts since the previous call, as metrics ``reward/errors``, ``reward/timeouts``, ``reward/oom``,
        ``reward/refused`` (log once per step)."""
        now = self.counters()
        out = {f"reward/{k}": float(now[k] - self._reported[k]) for k in COUNTERS}
        self._reported = {k: now[k] for k in COUNTERS}
        return out

    def start(self, wait: bool = False) -> "RewardFunction":
        """Start the worker pool now, in the background (or, with ``wait``, until it is ready: ≈ 1 s), so that the
        first step does not wait for it."""
        if self._pool_context() is not None:
            shared_pool(self.workers, self.memory_mb).start(wait=wait)
        return self

    def close(self) -> None:
        """End the worker pool this reward uses (it restarts if the reward is used again)."""
        if self.isolation == "process":
            shared_pool(self.workers, self.memory_mb).close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_context"] = None
        return state

    def __repr__(self) -> str:
        return f"RewardFunction({self.name!r}, errors={self.errors}, timeouts={self.timeouts}, oom={self.oom})"


def build_reward(task: "Task", format_weight: float = 0.0, custom: str | Callable | None = None, *,
                 limit_s: float = DEFAULT_LIMIT_S, memory_mb: int = DEFAULT_MEMORY_MB, workers: int | None = None,
                 isolation: str = "process") -> RewardFunction:
    """The reward for ``task``: its built-in verifier, or a user function.

    Built-in: ``correct (1/0) + format_weight * has_box`` (Countdown uses its own checker).
    ``custom`` (``"module:function"`` or a callable ``fn(completion, example) -> float``)
    replaces the correctness term; ``format_weight`` is still added for a present box, and
    the task's verifier still decides the logged correctness. A ``"module:function"`` is
    imported here once (so a bad spec fails now, naming it) and again in each worker.
    ``limit_s``, ``memory_mb``, ``workers``, ``isolation``: see :class:`RewardFunction`.
    """
    if not (isinstance(format_weight, (int, float)) and math.isfinite(format_weight) and format_weight >= 0):
        raise ConfigError(f"data.format_reward = {format_weight!r} must be a finite number >= 0")
    bounds = {"limit_s": limit_s, "memory_mb": memory_mb, "workers": workers, "isolation": isolation}
    if custom is None:
        return RewardFunction(_TaskScore(task, format_weight),
                              name=f"{getattr(task, 'name', type(task).__name__)}-verifier", **bounds)
    fn = load_reward_fn(custom, key="data.reward_fn")
    name = custom if isinstance(custom, str) else getattr(fn, "__qualname__", repr(fn))
    return RewardFunction(_SpecFunction(custom) if isinstance(custom, str) else fn, name=name,
                          correct_fn=_TaskCorrect(task), format_weight=format_weight, **bounds)

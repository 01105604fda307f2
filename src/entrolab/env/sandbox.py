"""A sandboxed calculator for agentic rollouts: a small interpreter of restricted Python, never ``eval``/``exec``.

The model's tool call is parsed with ``ast.parse`` and *interpreted node by node* by :class:`Interpreter`; only the
node types below exist in the language, everything else is refused before anything runs:

- statements: expression, assignment to names (``x = ...``, ``a, b = ...``), augmented assignment (``x += ...``),
  ``for`` / ``while`` / ``if`` / ``break`` / ``continue`` / ``pass``;
- expressions: int / float / bool / None literals, names, ``+ - * / // % ** << >> & | ^ ~ not and or``, comparisons,
  ``a if c else b``, lists and tuples, indexing and slicing, list comprehensions and generator expressions, calls of
  the whitelisted functions in :data:`FUNCTIONS` (``abs min max sum len range round int float pow divmod sorted
  sqrt isqrt log exp gcd factorial comb ...``) and the constants ``pi``, ``e``.

No imports, no attribute access (``x.y``), no names starting with ``_``, no strings, no function or class
definitions, no ``lambda``, ``with``, ``try`` or ``del``: there is no path to files, the network, modules or object
internals. The program's value is the value of its last expression statement (like a REPL cell), or of ``x`` when
it ends with ``x = ...``.

Limits (:class:`SandboxLimits`, per program): a wall-clock deadline (``timeout_s``, checked every few interpreter
steps), a step budget (``max_steps`` evaluated nodes), integers of at most ``max_int_bits`` bits (checked *before*
``**``, ``*``, ``<<``, ``factorial``, ``comb``, ``perm`` compute a too-large result, so ``10**10**10`` is refused
instantly), sequences of at most ``max_seq_len`` items, a cumulative allocation budget (``max_alloc_bytes``), and an
output cut at ``max_output_chars``. With ``isolation="process"`` (the default of :func:`run_programs`) the
programs run in a fresh ``python -I -S`` subprocess (no environment, no site packages, cwd a temporary directory)
that first lowers its own resource limits — address space ``memory_mb``, CPU seconds, file size 0, no new file
descriptors, no child processes — and is killed when the whole batch overruns its wall-clock budget.

Every failure is a :class:`ToolResult` with ``kind`` ``"refused"`` (not in the language), ``"error"`` (a Python
error such as division by zero), ``"limit"`` (a size, step or memory limit) or ``"timeout"``; nothing raises out of
:func:`run_programs`. This module imports only the standard library: it is also the subprocess worker
(``python -I -S sandbox.py`` reads a JSON request on stdin and writes JSON results on stdout).
"""

from __future__ import annotations

import ast
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Optional, Sequence

__all__ = ["FUNCTIONS", "CONSTANTS", "Interpreter", "SandboxLimits", "ToolResult", "check_program", "run_program",
           "run_programs", "ISOLATIONS"]

ISOLATIONS = ("process", "inline")
RESULT_KINDS = ("ok", "refused", "error", "limit", "timeout")


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits of the calculator (see the module docstring)."""

    timeout_s: float = 1.0
    max_steps: int = 10_000_000
    max_int_bits: int = 8192
    max_seq_len: int = 10_000
    max_alloc_bytes: int = 32 * 2**20
    max_output_chars: int = 256
    max_source_chars: int = 4000
    memory_mb: int = 256

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_steps", "max_int_bits", "max_seq_len", "max_alloc_bytes", "max_output_chars",
                     "max_source_chars", "memory_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class ToolResult:
    """Outcome of one program: ``kind`` in ``ok | refused | error | limit | timeout`` and the text shown to the
    model (the value, or ``"<kind>: <message>"``)."""

    kind: str
    text: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


class SandboxError(Exception):
    kind = "error"


class Refused(SandboxError):
    kind = "refused"


class LimitExceeded(SandboxError):
    kind = "limit"


class Timeout(SandboxError):
    kind = "timeout"


# --------------------------------------------------------------------------------------------------------- the language
_STMTS = (ast.Expr, ast.Assign, ast.AugAssign, ast.For, ast.While, ast.If, ast.Break, ast.Continue, ast.Pass)
_EXPRS = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp, ast.Call, ast.List,
          ast.Tuple, ast.Subscript, ast.Slice, ast.ListComp, ast.GeneratorExp)
_CONTEXT = (ast.Load, ast.Store, ast.comprehension, ast.Module, ast.operator, ast.unaryop, ast.boolop, ast.cmpop)
_REFUSED_WHY = {
    ast.Import: "imports are not available", ast.ImportFrom: "imports are not available",
    ast.Attribute: "attribute access (x.y) is not available", ast.Lambda: "lambda is not available",
    ast.FunctionDef: "function definitions are not available", ast.ClassDef: "classes are not available",
    ast.With: "with is not available", ast.Try: "try is not available", ast.Delete: "del is not available",
    ast.Global: "global is not available", ast.Nonlocal: "nonlocal is not available",
    ast.JoinedStr: "strings are not available", ast.Dict: "dicts are not available",
    ast.Set: "sets are not available", ast.Starred: "* unpacking is not available",
}


def _isqrt(n: int) -> int:
    return math.isqrt(n)


# name → (function, kind of size check)
FUNCTIONS: dict[str, Any] = {
    "abs": abs, "min": min, "max": max, "sum": sum, "len": len, "range": range, "round": round, "int": int,
    "float": float, "bool": bool, "pow": pow, "divmod": divmod, "sorted": sorted, "list": list, "all": all,
    "any": any, "sqrt": math.sqrt, "isqrt": _isqrt, "exp": math.exp, "log": math.log, "log2": math.log2,
    "log10": math.log10, "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "floor": math.floor, "ceil": math.ceil, "gcd": math.gcd,
    "lcm": math.lcm, "factorial": math.factorial, "comb": math.comb, "perm": math.perm, "hypot": math.hypot,
    "fabs": math.fabs, "trunc": math.trunc,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
_ITERABLE_ARGS = {"min", "max", "sum", "len", "sorted", "list", "all", "any"}


def check_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ast.Module:
    """Parse ``source`` and refuse anything outside the language (raises :class:`Refused`)."""
    if len(source) > limits.max_source_chars:
        raise Refused(f"program longer than {limits.max_source_chars} characters")
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as e:
        raise Refused(f"syntax error: {e.msg}") from None
    except (ValueError, MemoryError, RecursionError) as e:  # null bytes, absurd nesting
        raise Refused(f"cannot parse: {type(e).__name__}") from None
    if not tree.body:
        raise Refused("empty program")
    for node in ast.walk(tree):
        if isinstance(node, tuple(_REFUSED_WHY)):
            raise Refused(_REFUSED_WHY[type(node)])
        if isinstance(node, ast.Constant) and not (node.value is None or isinstance(node.value, (int, float, bool))):
            raise Refused(f"{type(node.value).__name__} literals are not available")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise Refused(f"names starting with '_' are not available ({node.id})")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else "this expression"
                raise Refused(f"{what} is not a callable function here; available: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise Refused("keyword arguments are not available")
        if isinstance(node, ast.stmt) and not isinstance(node, _STMTS):
            raise Refused(f"{type(node).__name__} statements are not available")
        if isinstance(node, ast.expr) and not isinstance(node, _EXPRS):
            raise Refused(f"{type(node).__name__} expressions are not available")
        if isinstance(node, (ast.For, ast.While)) and node.orelse:
            raise Refused("for/while ... else is not available")
        if isinstance(node, ast.comprehension) and node.is_async:
            raise Refused("async comprehensions are not available")
        if isinstance(node, ast.Assign):
            for t in node.targets:
                _check_target(t)
        if isinstance(node, (ast.AugAssign,)) and not isinstance(node.target, ast.Name):
            raise Refused("augmented assignment only to a name")
        if isinstance(node, (ast.For, ast.comprehension)):
            _check_target(node.target)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            raise Refused("@ is not available")
        if isinstance(node, ast.Compare) and any(isinstance(o, (ast.Is, ast.IsNot)) for o in node.ops):
            raise Refused("'is' is not available; use ==")
    return tree


def _check_target(t: ast.AST) -> None:
    if isinstance(t, ast.Name):
        return
    if isinstance(t, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Name) for e in t.elts):
        return
    raise Refused("assignments only to names (x = ... or a, b = ...)")


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Interpreter:
    """Evaluates a checked program under ``limits``; ``run(source) -> str`` (the formatted value) or raises a
    :class:`SandboxError`."""

    def __init__(self, limits: SandboxLimits = SandboxLimits()):
        self.limits = limits
        self.env: dict[str, Any] = {}
        self.steps = 0
        self.alloc = 0
        self.deadline = 0.0

    # -- bookkeeping ---------------------------------------------------------------------------------------------------
    def _tick(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(f"step budget of {self.limits.max_steps} exceeded")
        if self.steps & 255 == 0 and time.monotonic() > self.deadline:
            raise Timeout(f"no result within {self.limits.timeout_s:g} s")

    def _charge(self, nbytes: int) -> None:
        self.alloc += nbytes
        if self.alloc > self.limits.max_alloc_bytes:
            raise LimitExceeded(f"allocation budget of {self.limits.max_alloc_bytes} bytes exceeded")

    def _value(self, v: Any) -> Any:
        """Check a freshly computed value against the size limits (and charge its memory)."""
        if isinstance(v, bool) or v is None:
            return v
        if isinstance(v, int):
            bits = v.bit_length()
            if bits > self.limits.max_int_bits:
                raise LimitExceeded(f"integer larger than {self.limits.max_int_bits} bits")
            if bits > 64:
                self._charge(bits // 8 + 28)
            return v
        if isinstance(v, float):
            return v
        if isinstance(v, (list, tuple)):
            if len(v) > self.limits.max_seq_len:
                raise LimitExceeded(f"sequence longer than {self.limits.max_seq_len} items")
            self._charge(8 * len(v) + 56)
            return v
        if isinstance(v, range):
            return v
        raise SandboxError(f"unsupported value of type {type(v).__name__}")

    def _seq_len_ok(self, n: int) -> None:
        if n > self.limits.max_seq_len:
            raise LimitExceeded(f"sequence longer than {self.limits.max_seq_len} items")

    # -- entry point ---------------------------------------------------------------------------------------------------
    def run(self, source: str) -> str:
        tree = check_program(source, self.limits)
        self.deadline = time.monotonic() + self.limits.timeout_s
        result: Any = _NO_VALUE
        for stmt in tree.body:
            if isinstance(stmt, ast.Expr):
                result = self._eval(stmt.value)
                continue
            try:
                self._exec(stmt)
            except (_Break, _Continue):
                raise SandboxError("break/continue outside a loop") from None
            # A program ending in `x = ...` answers with x (models often write `result = ...`).
            single = isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            result = self.env[stmt.targets[0].id] if single else _NO_VALUE  # type: ignore[union-attr]
        if result is _NO_VALUE:
            raise SandboxError("no value: end the program with an expression, e.g. `x`")
        return self.format(result)

    def format(self, v: Any) -> str:
        text = _format(v)
        cap = self.limits.max_output_chars
        return text if len(text) <= cap else text[: cap - 3] + "..."

    # -- statements ----------------------------------------------------------------------------------------------------
    def _exec_body(self, body: Sequence[ast.stmt]) -> None:
        for s in body:
            self._exec(s)

    def _exec(self, node: ast.stmt) -> None:
        self._tick()
        if isinstance(node, ast.Expr):
            self._eval(node.value)
        elif isinstance(node, ast.Assign):
            value = self._eval(node.value)
            for t in node.targets:
                self._assign(t, value)
        elif isinstance(node, ast.AugAssign):
            name = node.target.id  # type: ignore[attr-defined]
            if name not in self.env:
                raise SandboxError(f"name '{name}' is not defined")
            self.env[name] = self._binop(node.op, self.env[name], self._eval(node.value))
        elif isinstance(node, ast.If):
            self._exec_body(node.body if self._truth(self._eval(node.test)) else node.orelse)
        elif isinstance(node, ast.While):
            while self._truth(self._eval(node.test)):
                self._tick()
                try:
                    self._exec_body(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        elif isinstance(node, ast.For):
            for item in self._iterate(self._eval(node.iter)):
                self._tick()
                self._assign(node.target, item)
                try:
                    self._exec_body(node.body)
                except _Break:
                    break
                except _Continue:
                    continue
        elif isinstance(node, ast.Break):
            raise _Break
        elif isinstance(node, ast.Continue):
            raise _Continue
        elif isinstance(node, ast.Pass):
            return
        else:  # pragma: no cover - check_program refuses these
            raise Refused(f"{type(node).__name__} is not available")

    def _assign(self, target: ast.AST, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.env[target.id] = value
            return
        items = list(self._iterate(value))
        elts = target.elts  # type: ignore[attr-defined]
        if len(items) != len(elts):
            raise SandboxError(f"cannot unpack {len(items)} values into {len(elts)} names")
        for t, v in zip(elts, items):
            self.env[t.id] = v

    def _iterate(self, value: Any) -> Iterable[Any]:
        if isinstance(value, (list, tuple, range)):
            return value
        raise SandboxError(f"cannot iterate over {type(value).__name__}")

    @staticmethod
    def _truth(v: Any) -> bool:
        return bool(v)

    # -- expressions ---------------------------------------------------------------------------------------------------
    def _eval(self, node: ast.expr) -> Any:
        self._tick()
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in ("True", "False", "None"):  # pragma: no cover - parsed as constants
                return {"True": True, "False": False, "None": None}[node.id]
            raise SandboxError(f"name '{node.id}' is not defined")
        if isinstance(node, ast.BinOp):
            return self._binop(node.op, self._eval(node.left), self._eval(node.right))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand)
            op = node.op
            if isinstance(op, ast.Not):
                return not v
            _numeric(v, type(op).__name__)
            if isinstance(op, ast.USub):
                return self._value(-v)
            if isinstance(op, ast.UAdd):
                return self._value(+v)
            return self._value(~_need_int(v, "~"))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                v: Any = True
                for e in node.values:
                    v = self._eval(e)
                    if not v:
                        return v
                return v
            v = False
            for e in node.values:
                v = self._eval(e)
                if v:
                    return v
            return v
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp)
                if not self._compare(op, left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._truth(self._eval(node.test)) else self._eval(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            self._seq_len_ok(len(node.elts))
            items = [self._eval(e) for e in node.elts]
            return self._value(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.Subscript):
            seq = self._eval(node.value)
            if not isinstance(seq, (list, tuple, range)):
                raise SandboxError(f"{type(seq).__name__} is not indexable")
            if isinstance(node.slice, ast.Slice):
                parts = [None if p is None else _need_int(self._eval(p), "slice bound")
                         for p in (node.slice.lower, node.slice.upper, node.slice.step)]
                try:
                    out = seq[slice(*parts)]
                except ValueError as e:
                    raise SandboxError(str(e)) from None
                return self._value(list(out) if isinstance(out, range) else out)
            idx = _need_int(self._eval(node.slice), "index")
            try:
                return seq[idx]
            except IndexError:
                raise SandboxError(f"index {idx} out of range") from None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            out: list[Any] = []
            self._comprehend(node.generators, 0, node.elt, out)
            return self._value(out)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise Refused(f"{type(node).__name__} is not available")  # pragma: no cover

    def _comprehend(self, gens: list[ast.comprehension], i: int, elt: ast.expr, out: list) -> None:
        if i == len(gens):
            out.append(self._eval(elt))
            self._seq_len_ok(len(out))
            return
        g = gens[i]
        for item in self._iterate(self._eval(g.iter)):
            self._tick()
            self._assign(g.target, item)
            if all(self._truth(self._eval(c)) for c in g.ifs):
                self._comprehend(gens, i + 1, elt, out)

    def _compare(self, op: ast.cmpop, a: Any, b: Any) -> bool:
        try:
            if isinstance(op, ast.Eq):
                return a == b
            if isinstance(op, ast.NotEq):
                return a != b
            if isinstance(op, ast.Lt):
                return a < b
            if isinstance(op, ast.LtE):
                return a <= b
            if isinstance(op, ast.Gt):
                return a > b
            if isinstance(op, ast.GtE):
                return a >= b
            if isinstance(op, ast.In):
                return a in self._iterate(b)
            if isinstance(op, ast.NotIn):
                return a not in self._iterate(b)
        except TypeError as e:
            raise SandboxError(str(e)) from None
        raise Refused(f"{type(op).__name__} is not available")

    def _binop(self, op: ast.operator, a: Any, b: Any) -> Any:
        L = self.limits.max_int_bits
        # sequence concatenation / repetition
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            if isinstance(op, ast.Add) and type(a) is type(b):
                self._seq_len_ok(len(a) + len(b))
                return self._value(a + b)
            if isinstance(op, ast.Mult):
                seq, k = (a, b) if isinstance(a, (list, tuple)) else (b, a)
                k = _need_int(k, "repetition count")
                self._seq_len_ok(len(seq) * max(k, 0))
                return self._value(seq * k)
            raise SandboxError(f"unsupported operand types for {type(op).__name__}: {type(a).__name__}, "
                               f"{type(b).__name__}")
        _numeric(a, type(op).__name__)
        _numeric(b, type(op).__name__)
        both_int = isinstance(a, int) and isinstance(b, int)
        if both_int:  # predict the size of expensive integer results before computing them
            if isinstance(op, ast.Pow) and b > 0 and abs(a) > 1 and (abs(a).bit_length() - 1) * b >= L:
                raise LimitExceeded(f"integer larger than {L} bits")
            if isinstance(op, ast.Mult) and a.bit_length() + b.bit_length() > L + 1:
                raise LimitExceeded(f"integer larger than {L} bits")
            if isinstance(op, ast.LShift) and b > 0 and a != 0 and a.bit_length() + b > L:
                raise LimitExceeded(f"integer larger than {L} bits")
        try:
            if isinstance(op, ast.Add):
                r = a + b
            elif isinstance(op, ast.Sub):
                r = a - b
            elif isinstance(op, ast.Mult):
                r = a * b
            elif isinstance(op, ast.Div):
                r = a / b
            elif isinstance(op, ast.FloorDiv):
                r = a // b
            elif isinstance(op, ast.Mod):
                r = a % b
            elif isinstance(op, ast.Pow):
                if not both_int and isinstance(b, (int, float)) and abs(b) > 1e4 and abs(a) > 1:
                    raise OverflowError("result too large")
                r = a ** b
            elif isinstance(op, (ast.LShift, ast.RShift, ast.BitAnd, ast.BitOr, ast.BitXor)):
                x, y = _need_int(a, "bit operation"), _need_int(b, "bit operation")
                r = {ast.LShift: lambda: x << y, ast.RShift: lambda: x >> y, ast.BitAnd: lambda: x & y,
                     ast.BitOr: lambda: x | y, ast.BitXor: lambda: x ^ y}[type(op)]()
            else:
                raise Refused(f"{type(op).__name__} is not available")
        except ZeroDivisionError:
            raise SandboxError("division by zero") from None
        except OverflowError as e:
            raise LimitExceeded(f"overflow: {e}") from None
        except (ValueError, TypeError) as e:
            raise SandboxError(str(e)) from None
        if isinstance(r, complex):
            raise SandboxError("complex results are not available")
        return self._value(r)

    def _call(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        args = [self._eval(a) for a in node.args]
        L = self.limits.max_int_bits
        if name in _ITERABLE_ARGS and len(args) == 1 and isinstance(args[0], range):
            self._seq_len_ok(len(args[0]))  # sum(range(10**9)) would loop in C
            self._tick(len(args[0]))
        elif name in _ITERABLE_ARGS and len(args) == 1 and isinstance(args[0], (list, tuple)):
            self._tick(len(args[0]))
        if name == "range":
            if len(args) > 3 or not args:
                raise SandboxError("range takes 1 to 3 arguments")
            return range(*[_need_int(a, "range argument") for a in args])
        if name == "list" and len(args) == 1:
            return self._value(list(self._iterate(args[0])))
        if name in ("pow",) and len(args) == 2:
            return self._binop(ast.Pow(), args[0], args[1])
        if name == "factorial" and args and isinstance(args[0], int) and args[0] > 1:
            n = args[0]
            if n * max(1.0, math.log2(n)) > 1.5 * L + 64:
                raise LimitExceeded(f"factorial({n}) is larger than {L} bits")
        if name == "comb" and len(args) == 2 and isinstance(args[0], int) and args[0] > L:
            raise LimitExceeded(f"comb({args[0]}, ...) may be larger than {L} bits")
        if name == "perm" and args and isinstance(args[0], int) and args[0] > 1:
            k = args[1] if len(args) > 1 and isinstance(args[1], int) else args[0]
            if k * args[0].bit_length() > L + 64:
                raise LimitExceeded(f"perm{tuple(args)} may be larger than {L} bits")
        if name in ("int", "round") and args and isinstance(args[0], float) and math.isfinite(args[0]):
            if abs(args[0]) >= 2.0 ** L:
                raise LimitExceeded(f"integer larger than {L} bits")
        if name == "isqrt" and args and isinstance(args[0], float):
            args[0] = _need_int(args[0], "isqrt argument")
        if name == "pow" and len(args) == 3:
            args = [_need_int(a, "pow argument") for a in args]
        try:
            out = FUNCTIONS[name](*args)
        except (TypeError, ValueError, ZeroDivisionError) as e:
            raise SandboxError(f"{name}: {e}") from None
        except OverflowError as e:
            raise LimitExceeded(f"{name}: overflow ({e})") from None
        if isinstance(out, (map, filter)) or hasattr(out, "__next__"):  # pragma: no cover - none in FUNCTIONS
            out = list(out)
        return self._value(out)


class _NoValue:
    pass


_NO_VALUE = _NoValue()


def _numeric(v: Any, what: str) -> None:
    if not isinstance(v, (int, float)):
        raise SandboxError(f"unsupported operand type for {what}: {type(v).__name__}")


def _need_int(v: Any, what: str) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise SandboxError(f"{what} must be an integer, got {v!r}")


def _format(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return format(v, ".12g")
    if isinstance(v, range):
        return f"range({v.start}, {v.stop}, {v.step})"
    if isinstance(v, list):
        return "[" + ", ".join(_format(x) for x in v) + "]"
    if isinstance(v, tuple):
        return "(" + ", ".join(_format(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


# ------------------------------------------------------------------------------------------------------------ running
def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ToolResult:
    """Run one program in this process (no OS-level limits; the interpreter's own limits still hold)."""
    t0 = time.monotonic()
    try:
        text = Interpreter(limits).run(source)
        return ToolResult("ok", text, time.monotonic() - t0)
    except SandboxError as e:
        return ToolResult(e.kind, f"{e.kind}: {e}", time.monotonic() - t0)
    except MemoryError:
        return ToolResult("limit", "limit: out of memory", time.monotonic() - t0)
    except RecursionError:
        return ToolResult("limit", "limit: expression nested too deeply", time.monotonic() - t0)


def run_programs(sources: Sequence[str], limits: SandboxLimits = SandboxLimits(),
                 isolation: str = "process") -> list[ToolResult]:
    """Run a batch of programs; one :class:`ToolResult` per program, in order. Never raises for a bad program.

    ``isolation="process"``: programs that pass the static check run in one fresh, resource-limited subprocess
    (module docstring), killed after ``len × timeout_s + 5`` s; ``"inline"``: in this process, interpreter limits
    only. Programs refused by the static check never reach a subprocess.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    results: list[Optional[ToolResult]] = [None] * len(sources)
    todo: list[int] = []
    for i, src in enumerate(sources):
        try:
            check_program(src, limits)
            todo.append(i)
        except Refused as e:
            results[i] = ToolResult("refused", f"refused: {e}")
    if todo and isolation == "inline":
        for i in todo:
            results[i] = run_program(sources[i], limits)
    elif todo:
        for i, r in zip(todo, _run_in_subprocess([sources[i] for i in todo], limits)):
            results[i] = r
    return [r for r in results if r is not None]


def _run_in_subprocess(sources: list[str], limits: SandboxLimits) -> list[ToolResult]:
    import subprocess
    import tempfile

    budget = len(sources) * limits.timeout_s + 5.0
    request = json.dumps({"programs": sources, "limits": asdict(limits)})
    with tempfile.TemporaryDirectory(prefix="entrolab-sandbox-") as cwd:
        try:
            proc = subprocess.run([sys.executable, "-I", "-S", "-B", os.path.abspath(__file__)], input=request,
                                  capture_output=True, text=True, timeout=budget, cwd=cwd, env={}, close_fds=True)
        except subprocess.TimeoutExpired:
            return [ToolResult("timeout", f"timeout: the sandbox process overran {budget:g} s and was killed")
                    for _ in sources]
        except OSError as e:
            return [ToolResult("error", f"error: the sandbox could not start ({e})") for _ in sources]
    try:
        rows = json.loads(proc.stdout)
        out = [ToolResult(str(k), str(t), float(s)) for k, t, s in rows]
        if len(out) == len(sources):
            return out
    except (ValueError, TypeError):
        pass
    why = "killed by a resource limit" if proc.returncode and proc.returncode < 0 else f"exit {proc.returncode}"
    return [ToolResult("limit", f"limit: the sandbox process failed ({why})") for _ in sources]


def _apply_rlimits(limits: SandboxLimits, n_programs: int) -> None:
    """Lower this (worker) process's own limits; called before any program is read."""
    try:
        import resource
    except ImportError:  # pragma: no cover - non-POSIX: interpreter limits only
        return

    def lower(which: int, value: int) -> None:
        soft, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(which, (value, value))
        except (ValueError, OSError):  # pragma: no cover - a limit this platform does not allow
            pass

    lower(resource.RLIMIT_AS, limits.memory_mb * 2**20)
    lower(resource.RLIMIT_CPU, int(math.ceil(n_programs * limits.timeout_s)) + 1)
    lower(resource.RLIMIT_FSIZE, 0)
    if hasattr(resource, "RLIMIT_NPROC"):
        lower(resource.RLIMIT_NPROC, 0)
    lower(resource.RLIMIT_NOFILE, 3)  # stdin, stdout, stderr are open already; no new descriptors


def _worker() -> None:
    request = json.loads(sys.stdin.read())
    limits = SandboxLimits(**request["limits"])
    programs = list(request["programs"])
    _apply_rlimits(limits, len(programs))
    rows = []
    for src in programs:
        r = run_program(src, limits)
        rows.append([r.kind, r.text, r.seconds])
    sys.stdout.write(json.dumps(rows))
    sys.stdout.flush()


if __name__ == "__main__":
    _worker()

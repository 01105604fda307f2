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
``**``, ``*``, ``<<``, ``factorial``, ``comb``, ``perm``, ``round`` and three-argument ``pow`` compute a too-large
or too-slow result, and on literals, so ``10**10**10`` or a 4000-digit hex literal is refused instantly), sequences
of at most ``max_seq_len`` items, values of at most ``max_value_items`` items counted through nesting and
``max_nesting`` levels deep (so printing, comparing or copying any value is linear in a bounded size), a cumulative
allocation budget (``max_alloc_bytes``), and an output cut at ``max_output_chars`` (formatting stops there instead
of building the whole text). Sizes are computed *before* anything is materialised: ``len``/``sum``/``sorted`` of a
``range``, ``range`` slices, ``x in range(...)`` (answered arithmetically), repetition and unpacking never build a
huge object first. Any other Python exception a program raises is that program's ``error``.

Isolation. ``isolation="process"`` (the default of :func:`run_programs`, and the only mode for model-generated
programs) runs the batch in a fresh ``python -I -S`` subprocess (no environment, no site packages, cwd a temporary
directory) that first lowers its own resource limits — address space ``memory_mb``, CPU seconds, file size 0, no
new file descriptors, no child processes — and writes one result line per program as it finishes. The parent kills
the subprocess when one program overruns ``timeout_s + kill_grace_s``; a program whose subprocess is killed or dies
(a CPU or memory limit, a crash) gets that failure as *its own* result, and the programs after it are re-run in a
fresh subprocess, so one hostile call never costs its neighbours their results. ``isolation="inline"`` runs in the
calling process with the interpreter's limits only (no memory cap, and a deadline that cannot interrupt one long C
call): for trusted programs in tests, never for model output.

Why a hand-written interpreter. Libraries such as asteval or simpleeval also evaluate restricted Python, but both run
in the caller's process on top of Python's own evaluator, and each has a history of sandbox escapes through object
internals. This module is an allow-list: a node type, name or function that is not listed does not exist in the
language, there are no strings or attributes to walk, and the whole run sits in a resource-limited process.

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
    """Per-program limits of the calculator (see the module docstring).

    ``timeout_s``: wall-clock seconds per program (interpreter deadline); ``kill_grace_s``: how much longer the parent
    waits for a process-isolated program before it kills the subprocess (a long C call the deadline cannot
    interrupt). ``max_int_bits``: largest integer. ``max_seq_len``: items of one list or tuple. ``max_value_items`` /
    ``max_nesting``: items of a value counted through nested lists, and its depth — they bound the time to format,
    compare or copy any value. ``max_alloc_bytes``: cumulative bytes a program may allocate. ``max_output_chars``:
    length of the shown result. ``max_source_chars``: program length. ``memory_mb``: address-space cap of the
    subprocess (``RLIMIT_AS``). Sizes stay small on purpose: the tool is a calculator, not a compute service.
    """

    timeout_s: float = 1.0
    max_steps: int = 10_000_000
    max_int_bits: int = 8192
    max_seq_len: int = 10_000
    max_alloc_bytes: int = 32 * 2**20
    max_output_chars: int = 256
    max_source_chars: int = 4000
    memory_mb: int = 256
    max_value_items: int = 100_000
    max_nesting: int = 32
    kill_grace_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("timeout_s", "max_steps", "max_int_bits", "max_seq_len", "max_alloc_bytes", "max_output_chars",
                     "max_source_chars", "memory_mb", "max_value_items", "max_nesting", "kill_grace_s"):
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
    """Parse ``source`` and refuse anything outside the language (raises :class:`Refused`, or
    :class:`LimitExceeded` for an integer literal over ``max_int_bits``)."""
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
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and \
                node.value.bit_length() > limits.max_int_bits:  # hex/octal/binary literals skip Python's digit limit
            raise LimitExceeded(f"integer literal larger than {limits.max_int_bits} bits")
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
        # id -> (sequence, items counted through nesting, depth) of every list/tuple this run created: the sequence is
        # kept so that its id is not reused; all of them were charged to the allocation budget, which bounds this.
        self._shapes: dict[int, tuple[Any, int, int]] = {}

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
            items, depth = len(v), 1
            for x in v:
                if isinstance(x, (list, tuple)):
                    n, d = self._shape(x)
                    items += n
                    depth = max(depth, d + 1)
                elif not isinstance(x, (int, float, range)) and x is not None:
                    raise SandboxError(f"unsupported value of type {type(x).__name__}")
            self._items_ok(items, depth)
            self._shapes[id(v)] = (v, items, depth)
            return v
        if isinstance(v, range):
            return v
        raise SandboxError(f"unsupported value of type {type(v).__name__}")

    def _shape(self, seq: Any) -> tuple[int, int]:
        """(items counted through nesting, depth) of a list/tuple; every sequence of a run passed :meth:`_value`."""
        known = self._shapes.get(id(seq))
        if known is not None and known[0] is seq:
            return known[1], known[2]
        self._value(seq)  # pragma: no cover - defensive: a sequence that did not come through _value
        return self._shapes[id(seq)][1:]  # pragma: no cover

    def _items_ok(self, items: int, depth: int) -> None:
        if items > self.limits.max_value_items:
            raise LimitExceeded(f"value with more than {self.limits.max_value_items} items (nested lists count "
                                f"every item)")
        if depth > self.limits.max_nesting:
            raise LimitExceeded(f"lists nested more than {self.limits.max_nesting} deep")

    def _seq_len_ok(self, n: int) -> None:
        if n > self.limits.max_seq_len:
            raise LimitExceeded(f"sequence longer than {self.limits.max_seq_len} items")

    def _length(self, v: Any) -> int:
        """len(v) of a list, tuple or range, computed without ``len`` for ranges (no C ssize_t overflow)."""
        return _range_len(v) if isinstance(v, range) else len(v)

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
        """The shown value, at most ``max_output_chars`` characters; formatting stops once past the cap."""
        cap = self.limits.max_output_chars
        parts: list[str] = []
        _format_into(v, parts, [cap + 1])
        text = "".join(parts)
        return text if len(text) <= cap else text[: max(cap - 3, 0)] + "..."

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
        elts = target.elts  # type: ignore[attr-defined]
        n = self._length(self._iterate(value))  # checked before a range is materialised
        if n != len(elts):
            raise SandboxError(f"cannot unpack {n} values into {len(elts)} names")
        items = list(self._iterate(value))
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
            return self._value(node.value) if isinstance(node.value, int) else node.value
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
                if isinstance(out, range):  # a slice of a range is a range: size it before building the list
                    self._seq_len_ok(_range_len(out))
                    out = list(out)
                return self._value(out)
            idx = _need_int(self._eval(node.slice), "index")
            try:
                return seq[idx]
            except IndexError:
                raise SandboxError(f"index {idx} out of range") from None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            out: list[Any] = []
            self._comprehend(node.generators, 0, node.elt, out, [0])
            return self._value(out)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise Refused(f"{type(node).__name__} is not available")  # pragma: no cover

    def _comprehend(self, gens: list[ast.comprehension], i: int, elt: ast.expr, out: list, items: list[int]) -> None:
        """Append the comprehension's elements to ``out``, counting their items (``items[0]``, through nesting) as
        they come, so that a result too large is refused at the element that crosses the limit, not after all of
        them were built."""
        if i == len(gens):
            v = self._eval(elt)
            out.append(v)
            self._seq_len_ok(len(out))
            items[0] += 1 + (self._shape(v)[0] if isinstance(v, (list, tuple)) else 0)
            self._items_ok(items[0], 1)
            return
        g = gens[i]
        for item in self._iterate(self._eval(g.iter)):
            self._tick()
            self._assign(g.target, item)
            if all(self._truth(self._eval(c)) for c in g.ifs):
                self._comprehend(gens, i + 1, elt, out, items)

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
            if isinstance(op, (ast.In, ast.NotIn)):
                b = self._iterate(b)
                found = _in_range(a, b) if isinstance(b, range) else a in b
                return found if isinstance(op, ast.In) else not found
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
                if isinstance(k, (list, tuple)):
                    raise SandboxError("can't multiply a sequence by a sequence")
                k = _need_int(k, "repetition count")
                if k <= 0 or not seq:  # [] * 10**30 is [] (Python would first overflow an index)
                    return self._value(type(seq)())
                self._seq_len_ok(len(seq) * k)
                items, depth = self._shape(seq)
                self._items_ok(items * k, depth)
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
                if not both_int and abs(b) > 1e4 and abs(a) > 1:
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
        except (ValueError, TypeError, ArithmeticError) as e:
            raise SandboxError(str(e)) from None
        if isinstance(r, complex):
            raise SandboxError("complex results are not available")
        return self._value(r)

    def _call(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        args = [self._eval(a) for a in node.args]
        L = self.limits.max_int_bits
        if name in _ITERABLE_ARGS:
            # sum(range(10**30)), sum(range(10**9), 5), len(range(10**30)) would loop or overflow in C: size first
            for a in args:
                if isinstance(a, (list, tuple, range)):
                    n = self._length(a)
                    if name != "len":
                        self._seq_len_ok(n)
                        self._tick(n)
            if name == "sum" and args and isinstance(args[0], (list, tuple)) and \
                    any(isinstance(x, (list, tuple, range)) for x in args[0]):
                raise SandboxError("sum adds numbers only")
            if name == "len" and len(args) == 1 and isinstance(args[0], range):
                return self._value(_range_len(args[0]))
        if name == "range":
            if len(args) > 3 or not args:
                raise SandboxError("range takes 1 to 3 arguments")
            bounds = [_need_int(a, "range argument") for a in args]
            if len(bounds) == 3 and bounds[2] == 0:
                raise SandboxError("range() step must not be zero")
            return range(*bounds)
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
            # every finite float is below 2**1024; 2.0 ** L itself overflows for L >= 1024
            if L < 1024 and abs(args[0]) >= 2.0 ** L:
                raise LimitExceeded(f"integer larger than {L} bits")
        if name == "round" and len(args) == 2:
            nd = _need_int(args[1], "round digits")
            if abs(nd) > _MAX_ROUND_DIGITS:  # round(5, -10**8) would compute 10**(10**8) in C
                raise LimitExceeded(f"round: ndigits must be within ±{_MAX_ROUND_DIGITS}, got {nd}")
            args[1] = nd
        if name == "isqrt" and args and isinstance(args[0], float):
            args[0] = _need_int(args[0], "isqrt argument")
        if name == "pow" and len(args) == 3:
            args = [_need_int(a, "pow argument") for a in args]
            # modular exponentiation costs ~ bits(exponent) * bits(modulus)**1.6 in C, with no deadline check inside
            if abs(args[1]).bit_length() * max(abs(args[2]).bit_length(), 1) ** 1.6 > _MAX_MODPOW_COST:
                raise LimitExceeded("pow(a, b, m): exponent and modulus too large to compute in time")
        try:
            out = FUNCTIONS[name](*args)
        except OverflowError as e:
            raise LimitExceeded(f"{name}: overflow ({e})") from None
        except (TypeError, ValueError, ArithmeticError) as e:
            raise SandboxError(f"{name}: {e}") from None
        if isinstance(out, (map, filter)) or hasattr(out, "__next__"):  # pragma: no cover - none in FUNCTIONS
            out = list(out)
        return self._value(out)


_MAX_ROUND_DIGITS = 400  # round(x, n): |n| beyond a float's 309 digits and 8192-bit integers changes nothing
_MAX_MODPOW_COST = 2 ** 30  # pow(a, b, m): about 0.05 s of C time; an 8000-bit b and m (~1.4e10) took 0.85 s


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


def _range_len(r: range) -> int:
    """Length of a range by arithmetic (``len`` raises OverflowError past 2**63 items)."""
    if r.step > 0:
        return max(0, (r.stop - r.start + r.step - 1) // r.step)
    return max(0, (r.start - r.stop - r.step - 1) // -r.step)


def _in_range(x: Any, r: range) -> bool:
    """``x in r`` in constant time (Python scans the whole range for a float such as 0.5)."""
    if isinstance(x, bool):
        x = int(x)
    if isinstance(x, float):
        if not x.is_integer():
            return False
        x = int(x)
    if not isinstance(x, int):
        return False  # a list, tuple or range is never an item of a range
    if _range_len(r) == 0:
        return False
    if r.step > 0 and not r.start <= x < r.stop or r.step < 0 and not r.stop < x <= r.start:
        return False
    return (x - r.start) % r.step == 0


_MAX_STR_BITS = 13_000  # str() of an int is quadratic in its digits, and Python refuses more than 4300 digits


def _format_into(v: Any, out: list[str], budget: list[int]) -> None:
    """Append the text of ``v`` to ``out`` until ``budget[0]`` characters are written (then stop early): formatting
    a large value costs no more than the shown prefix."""
    if budget[0] <= 0:
        return
    if isinstance(v, (list, tuple)):
        out.append("[" if isinstance(v, list) else "(")
        budget[0] -= 1
        for k, x in enumerate(v):
            if budget[0] <= 0:
                return
            if k:
                out.append(", ")
                budget[0] -= 2
            _format_into(x, out, budget)
        text = "]" if isinstance(v, list) else ("," if len(v) == 1 else "") + ")"
    else:
        text = _format_atom(v)
    out.append(text)
    budget[0] -= len(text)


def _format_atom(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        if v.bit_length() > _MAX_STR_BITS:
            return f"<integer of {v.bit_length()} bits>"
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e16:
            return str(int(v))
        return format(v, ".12g")
    if isinstance(v, range):
        return f"range({v.start}, {v.stop}, {v.step})"
    return f"<{type(v).__name__}>"


def _format(v: Any) -> str:
    """The full text of a value (no cap; :meth:`Interpreter.format` is the bounded one)."""
    parts: list[str] = []
    _format_into(v, parts, [1 << 62])
    return "".join(parts)


# ------------------------------------------------------------------------------------------------------------ running
def run_program(source: str, limits: SandboxLimits = SandboxLimits()) -> ToolResult:
    """Run one program in this process with the interpreter's limits (no OS-level limits: see the module docstring).
    Never raises for a bad program: every exception is this program's result."""
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
    except Exception as e:  # anything the checks above missed is still only this program's error
        return ToolResult("error", f"error: {type(e).__name__}: {e}"[:limits.max_output_chars],
                          time.monotonic() - t0)


def run_programs(sources: Sequence[str], limits: SandboxLimits = SandboxLimits(),
                 isolation: str = "process") -> list[ToolResult]:
    """Run a batch of programs; one :class:`ToolResult` per program, in order. Never raises for a bad program.

    ``isolation="process"`` (use it for anything a model wrote): programs that pass the static check run in a
    fresh, resource-limited subprocess, each killed after ``timeout_s + kill_grace_s``; when the subprocess is killed
    or dies, that program gets the failure and the programs after it run again in a new subprocess (module
    docstring). ``"inline"``: in this process, interpreter limits only — trusted programs (tests) only. Programs
    refused by the static check never reach a subprocess.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
    results: list[Optional[ToolResult]] = [None] * len(sources)
    todo: list[int] = []
    for i, src in enumerate(sources):
        try:
            check_program(src, limits)
            todo.append(i)
        except SandboxError as e:
            results[i] = ToolResult(e.kind, f"{e.kind}: {e}")
    if todo and isolation == "inline":
        for i in todo:
            results[i] = run_program(sources[i], limits)
    elif todo:
        for i, r in zip(todo, _run_isolated([sources[i] for i in todo], limits)):
            results[i] = r
    return [r for r in results if r is not None]


_STARTUP_S = 10.0  # how long a sandbox subprocess may take to start (python -I -S: ~30 ms when the machine is idle)


def _run_isolated(sources: list[str], limits: SandboxLimits) -> list[ToolResult]:
    """Run ``sources`` in subprocesses: one per batch, plus a new one for the survivors after each kill or death."""
    out: list[ToolResult] = []
    while len(out) < len(sources):
        done, failure = _run_one_subprocess(sources[len(out):], limits)
        out.extend(done)
        if failure is not None and len(out) < len(sources):
            out.append(failure)  # the program that was running when the subprocess was killed or died
    return out


def _run_one_subprocess(sources: list[str], limits: SandboxLimits) -> tuple[list[ToolResult], Optional[ToolResult]]:
    """Results of the programs that finished, in order, and the failure of the one running when the subprocess was
    killed or died (None when all finished)."""
    import selectors
    import signal
    import subprocess
    import tempfile

    request = json.dumps({"programs": sources, "limits": asdict(limits)}).encode()
    done: list[ToolResult] = []
    with tempfile.TemporaryDirectory(prefix="entrolab-sandbox-") as cwd:
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", os.path.abspath(__file__)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    cwd=cwd, env={}, close_fds=True)
        except OSError as e:
            return done, ToolResult("error", f"error: the sandbox could not start ({e})")
        try:
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(request)
                proc.stdin.close()
            except OSError:  # died before reading: reported below from its exit status
                pass
            sel = selectors.DefaultSelector()
            sel.register(proc.stdout, selectors.EVENT_READ)
            buf = b""
            ready = False
            deadline = time.monotonic() + _STARTUP_S
            started = time.monotonic()
            while len(done) < len(sources):
                wait = deadline - time.monotonic()
                if wait <= 0 or not sel.select(wait):
                    proc.kill()
                    proc.wait()
                    if not ready:
                        return done, ToolResult("error", f"error: the sandbox did not start within {_STARTUP_S:g} s")
                    spent = time.monotonic() - started
                    return done, ToolResult("timeout", f"timeout: no result within {limits.timeout_s:g} s (the "
                                                       f"sandbox process was killed)", spent)
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:  # EOF: the subprocess died
                    code = proc.wait()
                    if code < 0 and -code == getattr(signal, "SIGXCPU", -1):
                        why = "limit: CPU time limit"
                    elif code < 0:
                        why = f"limit: the sandbox process was killed by signal {-code} (likely a resource limit)"
                    else:
                        why = f"error: the sandbox process exited with status {code}"
                    return done, ToolResult(why.split(":")[0], why, time.monotonic() - started)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not ready:
                        ready = line == b"ready"
                    else:
                        try:
                            kind, text, seconds = json.loads(line)
                            done.append(ToolResult(str(kind), str(text), float(seconds)))
                        except (ValueError, TypeError):
                            proc.kill()
                            proc.wait()
                            return done, ToolResult("error", "error: the sandbox process wrote an unreadable result")
                    started = time.monotonic()
                    deadline = started + limits.timeout_s + limits.kill_grace_s
            proc.wait()
            return done, None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout):
                if f is not None:
                    try:
                        f.close()
                    except OSError:
                        pass


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
    # a backstop for the parent's per-program wall-clock kill: CPU seconds of the whole batch
    lower(resource.RLIMIT_CPU, int(math.ceil(n_programs * (limits.timeout_s + limits.kill_grace_s))) + 1)
    lower(resource.RLIMIT_FSIZE, 0)
    if hasattr(resource, "RLIMIT_NPROC"):
        lower(resource.RLIMIT_NPROC, 0)
    lower(resource.RLIMIT_NOFILE, 3)  # stdin, stdout, stderr are open already; no new descriptors


def _worker() -> None:
    """The subprocess: read the request, lower the limits, write ``ready`` and then one JSON line per program."""
    request = json.loads(sys.stdin.buffer.read())
    limits = SandboxLimits(**request["limits"])
    programs = list(request["programs"])
    _apply_rlimits(limits, len(programs))
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for src in programs:
        r = run_program(src, limits)
        out.write(json.dumps([r.kind, r.text, r.seconds]) + "\n")
        out.flush()


if __name__ == "__main__":
    _worker()

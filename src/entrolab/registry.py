"""One registry type for everything chosen by name: knob components, tasks, reward sources, inference strategies.

A ``Registry`` maps a name to a class or factory. Registration rejects duplicates; a lookup of an unknown name lists
the valid ones; ``build(name, params)`` instantiates with validated parameters. For dataclasses (every knob component
and strategy) the fields are the parameters: unknown ones are errors listing the allowed ones, values of a clearly
wrong type are refused naming ``owner.field``, and each field's one-line doc is the string literal written right under
it (:func:`field_docs`), as in ``train/config.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from typing import Any, Callable, Generic, Iterator, Mapping, Optional, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class FieldError(ConfigError):
    """A parameter's value is wrong: ``owner.field = value`` and why. Callers that know the key a user typed (the
    methods' resolver: ``clip.ratio``, ``algorithm.overrides.clip.ratio``) re-raise it under that key."""

    def __init__(self, owner: str, field: str, value: Any, reason: str):
        self.owner, self.field, self.value, self.reason = owner, field, value, reason
        super().__init__(f"{owner}.{field} = {value!r} {reason}")


class Registry(Generic[T]):
    """Name → class or factory of one kind (``kind`` names it in messages: "clip", "task", ...).

    ``on_register(name, obj)`` runs at registration (knob registries stamp ``name`` and ``knob`` on the class)."""

    def __init__(self, kind: str, on_register: Optional[Callable[[str, Any], None]] = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._on_register = on_register

    # ------------------------------------------------------------------------------------------------ registration
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name")``."""

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries:
            raise ConfigError(f"{self.kind} {name!r} is already registered by {self._entries[name]!r}")
        if self._on_register is not None:
            self._on_register(name, obj)
        self._entries[name] = obj

    def remove(self, name: str) -> T:
        """Unregister ``name`` (tests and plugins that register temporarily)."""
        return self._entries.pop(self.get(name) and name)

    # ------------------------------------------------------------------------------------------------ lookup
    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {', '.join(self.names())}")
        return self._entries[name]

    # ------------------------------------------------------------------------------------------------ building
    def build(self, name: str, params: Optional[Mapping[str, Any]] = None) -> Any:
        """Instantiate ``name`` with ``params``; unknown parameters are errors listing the allowed ones."""
        obj: Any = self.get(name)
        params = dict(params or {})
        if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
            try:
                return obj(**params)
            except ConfigError:
                raise
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{self.kind} {name!r}: {e}") from e
        fields = init_fields(obj)
        unknown = sorted(set(params) - set(fields))
        if unknown:
            allowed = ", ".join(sorted(fields)) or "(none)"
            raise ConfigError(f"{self.kind} {name!r} has no parameter {', '.join(map(repr, unknown))}; "
                              f"its parameters are: {allowed}")
        hints = typing.get_type_hints(obj)
        checked = {k: check_type(name, k, v, hints.get(k)) for k, v in params.items()}
        try:
            return obj(**checked)
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{self.kind} {name!r}: {e}") from e

    def defaults(self, name: str) -> dict[str, Any]:
        """Parameter → default of a dataclass entry (every parameter has one)."""
        out = {}
        for f in init_fields(self.get(name)).values():
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
        return out

    def docs(self, name: str) -> dict[str, str]:
        """Parameter → its one-line doc (:func:`field_docs`)."""
        cls = self.get(name)
        docs = field_docs(cls)  # type: ignore[arg-type]
        return {k: docs.get(k, "") for k in init_fields(cls)}


def init_fields(cls: Any) -> dict[str, dataclasses.Field]:
    """The dataclass fields a user may set (``init=True``)."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def check_type(owner: str, name: str, value: Any, hint: Any) -> Any:
    """Coerce ints to floats for float fields; refuse a value of a clearly wrong type, or a non-finite number, naming
    ``owner.name``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    allowed = args if origin in (typing.Union, getattr(types, "UnionType", ())) else (hint,)
    if value is None and type(None) in allowed:
        return None
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for a in allowed:
        if a in (int, float, str, bool) and isinstance(value, a) and not (a is int and isinstance(value, bool)):
            return value
    if any(a in (int, float, str, bool) for a in allowed):
        names = " or ".join(getattr(a, "__name__", str(a)) for a in allowed)
        raise FieldError(owner, name, value, f"has the wrong type; expected {names}")
    return value


def check_range(owner: str, name: str, value: float, lo: Optional[float] = None, hi: Optional[float] = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ConfigError naming ``owner.name`` unless lo ≤ value ≤ hi (open ends when asked); NaN is always refused."""
    bad = isinstance(value, float) and math.isnan(value)
    if lo is not None:
        bad |= value <= lo if lo_open else value < lo
    if hi is not None:
        bad |= value >= hi if hi_open else value > hi
    if bad:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        rng = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{rb}"
        raise FieldError(owner, name, value, f"is out of range; allowed: {rng}")


def field_docs(cls: type) -> dict[str, str]:
    """Field name → the string literal written right under the field in the class body, whitespace-joined; fields
    of base classes included (a subclass's own doc wins)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        out.update(_own_field_docs(klass))
    return out


_DOC_CACHE: dict[type, dict[str, str]] = {}


def _own_field_docs(cls: type) -> dict[str, str]:
    if cls in _DOC_CACHE:
        return _DOC_CACHE[cls]
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                    and isinstance(nxt.value.value, str):
                out[node.target.id] = " ".join(nxt.value.value.split())
    _DOC_CACHE[cls] = out
    return out

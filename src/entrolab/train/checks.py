"""Declarative checks of the config fields: every field states what it accepts next to its default, and one function
checks any section against those statements, whatever the config came from (YAML, overrides, ``--resume``).

    n: int = setting(4, lo=1)
    \"\"\"Responses sampled per prompt.\"\"\"

A section class is decorated with :func:`checked`, which refuses at import a field whose type needs a check
(numbers: a range; strings: choices, text or a path) but declares none, so a new field cannot be added unchecked.
Numbers must be finite. Messages name the key as the user typed it, the bad value and what is allowed:
``optim.lr = inf is not a finite number; allowed: (0, 1]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

from ..errors import ConfigError
from ..files import check_dir_path

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class Check:
    """What one field accepts (beyond its type, which the annotation gives)."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    choices: Union[Sequence[str], Callable[[], Sequence[str]], None] = None
    """Allowed strings, or a function returning them (a registry's names)."""
    text: bool = False
    """Any string (``nonempty`` refuses a blank one)."""
    nonempty: bool = False
    path: Optional[str] = None
    """``exists`` (a file or directory must exist), ``parent`` (no existing file on the way to it: a directory that
    may still be created)."""
    delegated: Optional[str] = None
    """Checked elsewhere (named here, e.g. the methods' resolver)."""

    def allowed_choices(self) -> list[str]:
        c = self.choices() if callable(self.choices) else self.choices
        return list(c or ())

    def range_text(self, integer: bool) -> str:
        def fmt(x: Optional[float], inf: str) -> str:
            if x is None:
                return inf
            return str(int(x)) if integer and float(x).is_integer() else f"{x:g}"

        lb = "(" if self.lo_open or self.lo is None else "["
        rb = ")" if self.hi_open or self.hi is None else "]"
        return f"{lb}{fmt(self.lo, '-inf')}, {fmt(self.hi, 'inf')}{rb}"

    def describe(self, hint: Any) -> str:
        """What is allowed, in words (the config reference's ``allowed`` column)."""
        base = _base_type(hint)
        optional = type(None) in typing.get_args(hint)
        out = ""
        if base in (int, float):
            out = ("integer in " if base is int else "number in ") + self.range_text(base is int)
        elif typing.get_origin(base) is list:
            out = "a non-empty list of names" if self.nonempty else "a list of names"
        elif self.choices is not None:
            out = " \\| ".join(self.allowed_choices())
        elif self.path == "exists":
            out = "an existing path"
        elif self.path == "parent":
            out = "a directory path"
        elif self.delegated:
            out = self.delegated
        elif self.text:
            out = "non-empty text" if self.nonempty else "text"
        return out + (" or null" if optional else "")


def setting(default: Any = _MISSING, *, factory: Optional[Callable[[], Any]] = None, **check: Any) -> Any:
    """A config field with its default and its :class:`Check` (keyword arguments)."""
    meta = {"check": Check(**check)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(hint: Any) -> Any:
    """``Optional[X]`` → X; other hints unchanged."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Union and len(args) == 1:
        return args[0]
    return hint


def field_check(f: dataclasses.Field) -> Optional[Check]:
    return f.metadata.get("check")


def checked(cls: type) -> type:
    """Class decorator (on a config dataclass): every field that is not a section or a bool must declare a check
    whose kind fits its type."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        base = _base_type(hint)
        if dataclasses.is_dataclass(base) or base is bool:
            continue
        c = field_check(f)
        where = f"{cls.__name__}.{f.name}"
        if c is None:
            raise TypeError(f"config field {where} declares no check: write it as `{f.name}: ... = setting(default, "
                            "...)` with its range, choices, text or path (train/checks.py)")
        if base in (int, float) and c.lo is None and c.hi is None:
            raise TypeError(f"config field {where} is a number without a range (lo=/hi=)")
        if base is str and c.choices is None and not c.text and c.path is None and c.delegated is None:
            raise TypeError(f"config field {where} is a string without choices, text=True, path= or delegated=")
    return cls


def check_value(key: str, value: Any, hint: Any, c: Optional[Check]) -> Any:
    """The value, type-checked (ints become floats for float fields) and checked against ``c``; ``ConfigError``
    naming ``key`` otherwise."""
    value = coerce(key, value, hint)
    if value is None or c is None:
        return value
    base = _base_type(hint)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and base in (int, float, Union[int, float]):
        _check_range(key, value, c, base is int)
    elif isinstance(value, str):
        _check_string(key, value, c)
    elif isinstance(value, list) and c.nonempty and not value:
        raise ConfigError(f"{key} = [] is empty; give at least one item")
    elif isinstance(value, list) and c.text:
        for i, v in enumerate(value):
            if isinstance(v, str) and not v.strip():
                raise ConfigError(f"{key}[{i}] is empty; give a non-empty string")
    return value


def _check_range(key: str, value: float, c: Check, integer: bool) -> None:
    rng = c.range_text(integer)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key} = {value!r} is not a finite number; allowed: {rng}")
    bad = False
    if c.lo is not None:
        bad |= value <= c.lo if c.lo_open else value < c.lo
    if c.hi is not None:
        bad |= value >= c.hi if c.hi_open else value > c.hi
    if bad:
        raise ConfigError(f"{key} = {value!r} is out of range; allowed: {rng}")


def _check_string(key: str, value: str, c: Check) -> None:
    if c.choices is not None:
        allowed = c.allowed_choices()
        if value not in allowed:
            raise ConfigError(f"{key} = {value!r} is not allowed; choose one of: {', '.join(allowed)}")
        return
    if (c.nonempty or c.path) and not value.strip():
        raise ConfigError(f"{key} is empty; give a non-empty {'path' if c.path else 'string'}")
    if c.path == "exists" and not os.path.exists(os.path.expanduser(value)):
        raise ConfigError(f"{key} = {value!r}: no such file or directory")
    if c.path == "parent":
        check_dir_path(key, value)


def _looks_number(raw: str) -> bool:
    try:
        float(raw)
        return True
    except ValueError:
        return False


def coerce(key: str, value: Any, hint: Any) -> Any:
    """``value`` as the annotation ``hint`` wants it, or ``ConfigError`` naming ``key``, the value and the type.
    A float field also takes a number written as a string (YAML reads ``1e-5`` as one)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) > 1:
            kinds = " or ".join(_type_word(a) for a in args if a is not type(None))
            return _wrong(key, value, kinds + (" or null" if type(None) in args else ""))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        return _wrong(key, value, "true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return _wrong(key, value, "an integer (write it without a decimal point)")
        return _wrong(key, value, "an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _looks_number(value.strip()):
            return float(value)
        return _wrong(key, value, "a number")
    if hint is str:
        if isinstance(value, str):
            return value
        return _wrong(key, value, "a string")
    if origin is list:
        if isinstance(value, list):
            return [coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)] if args else value
        return _wrong(key, value, "a list")
    if origin is dict:
        if isinstance(value, dict):
            return dict(value)
        return _wrong(key, value, "a mapping")
    return value


def _type_word(hint: Any) -> str:
    o = typing.get_origin(hint)
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        hint, {list: "a list", dict: "a mapping"}.get(o, str(hint)))


def _wrong(key: str, value: Any, expected: str) -> Any:
    raise ConfigError(f"{key} = {value!r} has the wrong type; expected {expected}")


def check_section(obj: Any, prefix: str) -> None:
    """Type- and range-check every field of a config section in place (ints stored as floats for float fields)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        if dataclasses.is_dataclass(_base_type(hints[f.name])):
            continue
        value = check_value(prefix + f.name, getattr(obj, f.name), hints[f.name], field_check(f))
        object.__setattr__(obj, f.name, value)


__all__ = ["Check", "check_section", "check_value", "checked", "coerce", "field_check",
           "setting"]

"""The config reference, generated from ``config.py``: each field's docstring is written once, under the field, and
what it accepts once, in its ``setting(...)`` (``train/checks.py``)."""

from __future__ import annotations

import dataclasses
import typing

from ..registry import field_docs
from . import config as cfg_mod
from .checks import field_check

SECTIONS = ("model", "data", "rollout", "algorithm", "optim", "eval", "diagnostics", "logging", "checkpoint", "critic")


def _allowed(cls: type, f: dataclasses.Field) -> str:
    hint = typing.get_type_hints(cls)[f.name]
    c = field_check(f)
    if c is None:
        return "true \\| false" if hint is bool else ""
    return c.describe(hint)


def markdown_reference() -> str:
    default = cfg_mod.TrainConfig()
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for section in SECTIONS:
        obj = getattr(default, section)
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            rows.append(f"| `{section}.{f.name}` | `{value!r}` | {_allowed(type(obj), f)} | {docs.get(f.name, '')} |")
    seed = next(f for f in dataclasses.fields(default) if f.name == "seed")
    rows.append(f"| `seed` | `{default.seed!r}` | {_allowed(cfg_mod.TrainConfig, seed)} | "
                f"{field_docs(cfg_mod.TrainConfig).get('seed', '')} |")
    return "\n".join(rows)

"""The config reference, generated from ``config.py``: each field's docstring is written once, under the field."""

from __future__ import annotations

import dataclasses

from ..registry import field_docs
from . import config as cfg_mod

SECTIONS = ("model", "data", "rollout", "algorithm", "optim", "eval", "diagnostics", "logging", "checkpoint", "critic")


def markdown_reference() -> str:
    default = cfg_mod.TrainConfig()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for section in SECTIONS:
        obj = getattr(default, section)
        docs = field_docs(type(obj))
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            rows.append(f"| `{section}.{f.name}` | `{value!r}` | {docs.get(f.name, '')} |")
    rows.append(f"| `seed` | `{default.seed!r}` | {field_docs(cfg_mod.TrainConfig).get('seed', '')} |")
    return "\n".join(rows)

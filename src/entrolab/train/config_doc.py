"""The config reference, generated from ``config.py``: each field's docstring is written once, under the field."""

from __future__ import annotations

import ast
import dataclasses
import inspect

from . import config as cfg_mod

SECTIONS = ("model", "data", "rollout", "algorithm", "optim", "eval", "diagnostics", "logging", "checkpoint")


def field_docs(cls: type) -> dict[str, str]:
    """Field name → the string literal right under it in the class body."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out: dict[str, str] = {}
    for node, nxt in zip(body, body[1:] + [None]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant) \
                    and isinstance(nxt.value.value, str):
                out[node.target.id] = " ".join(nxt.value.value.split())
    return out


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

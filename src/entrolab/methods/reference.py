"""The hyperparameter reference of the knob components, from one source: each component's dataclass fields (their
defaults) and the one-line doc written under each field (``registry.field_docs``).

Two renderings: :func:`text_table` (``entrolab methods show NAME``: the method's resolved values, marking those its
preset sets) and :func:`markdown_section` (the generated "Hyperparameters" section of each ``docs/methods-*.md``
page, between marker lines; ``scripts/gen_methods_doc.py`` rewrites them, ``--check`` and the tests compare).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Optional

from ..knobs.advantage.base import ADVANTAGES
from ..knobs.clip.base import CLIPS
from ..knobs.kl.base import KLS
from ..knobs.objective.base import TERMS
from ..knobs.sampling.base import SAMPLINGS
from ..registry import Registry

KNOB_REGISTRIES: dict[str, Registry] = {
    "sampling": SAMPLINGS,
    "advantage": ADVANTAGES,
    "clip": CLIPS,
    "kl": KLS,
    "objective": TERMS,
}

# Components documented on the agentic page rather than their knob's page.
AGENTIC: dict[str, tuple[str, ...]] = {
    "sampling": ("arpo", "aepo_dong"),
    "advantage": ("arpo_attribution", "aepo_entropy_aware"),
}

# docs/ page → the knobs whose components it documents (all of them, less the agentic ones, except on the agentic
# page, which documents only those).
PAGES: dict[str, tuple[str, ...]] = {
    "methods-sampling.md": ("sampling",),
    "methods-advantage.md": ("advantage",),
    "methods-clip-kl.md": ("clip", "kl"),
    "methods-objective.md": ("objective",),
    "methods-agentic.md": ("sampling", "advantage"),
}

START, END = "<!-- hyperparameters:start -->", "<!-- hyperparameters:end -->"


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter of a component: its value (the component default unless given), default and doc."""

    name: str
    value: Any
    default: Any
    doc: str

    @property
    def preset(self) -> bool:
        """True when the value differs from the component's own default (a method's preset set it)."""
        return bool(self.value != self.default)


def parameters(registry: Registry, name: str, values: Optional[Mapping[str, Any]] = None) -> list[Parameter]:
    """The init fields of component ``name`` in declaration order, with ``values`` (e.g. a resolved method spec)
    overriding the defaults."""
    defaults = registry.defaults(name)
    docs = registry.docs(name)
    values = values or {}
    return [Parameter(k, values.get(k, d), d, docs.get(k, "")) for k, d in defaults.items()]


def page_components(page: str) -> list[tuple[str, str]]:
    """(knob, component name) pairs documented on ``page`` (a key of :data:`PAGES`), knob by knob, sorted."""
    agentic = page == "methods-agentic.md"
    out = []
    for knob in PAGES[page]:
        names = KNOB_REGISTRIES[knob].names()
        out += [(knob, n) for n in names if (n in AGENTIC.get(knob, ())) == agentic]
    return out


# ------------------------------------------------------------------------------------------------ text (CLI)
def text_table(params: list[Parameter], indent: int = 4, width: int = 118) -> list[str]:
    """Aligned ``field  default  doc`` lines (docs wrapped under their column; a preset value is marked ``*`` and its
    component default given first in the doc)."""
    if not params:
        return []
    values = [repr(p.value) + (" *" if p.preset else "") for p in params]
    w_name = max(len("field"), *(len(p.name) for p in params))
    w_val = max(len("default"), *(len(v) for v in values))
    pad = " " * indent
    lead = indent + w_name + 2 + w_val + 2
    doc_width = max(40, width - lead)
    lines = [f"{pad}{'field':<{w_name}}  {'default':<{w_val}}  doc"]
    for p, v in zip(params, values):
        doc = (f"(component default {p.default!r}) " if p.preset else "") + (p.doc or "(undocumented)")
        wrapped = textwrap.wrap(doc, doc_width, break_long_words=False, break_on_hyphens=False) or [""]
        lines.append(f"{pad}{p.name:<{w_name}}  {v:<{w_val}}  {wrapped[0]}")
        lines += [" " * lead + more for more in wrapped[1:]]
    return lines


# ------------------------------------------------------------------------------------------------ Markdown (docs)
def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_component(knob: str, name: str) -> str:
    """The heading and field table of one component (one with parameters)."""
    registry = KNOB_REGISTRIES[knob]
    cls = registry.get(name)
    where = cls.__module__.replace("entrolab.", "", 1).replace(".", "/") + ".py"
    head = f"### `{name}` ({knob}: `{cls.__qualname__}` in `{where}`)"
    params = parameters(registry, name)
    rows = ["| field | default | doc |", "|---|---|---|"]
    rows += [f"| `{p.name}` | `{_cell(repr(p.default))}` | {_cell(p.doc)} |" for p in params]
    return head + "\n\n" + "\n".join(rows)


def markdown_section(page: str) -> str:
    """The generated reference of ``page``: one table per component, from the registries and field docs."""
    intro = ("Generated from the components' field docs by `python scripts/gen_methods_doc.py` (do not edit by "
             "hand; a test fails when it is stale). A method's preset may set other values: "
             "`entrolab methods show NAME` prints them.")
    parts = ["## Hyperparameters", intro]
    bare = []
    for knob, name in page_components(page):
        if parameters(KNOB_REGISTRIES[knob], name):
            parts.append(markdown_component(knob, name))
        else:
            bare.append(f"`{name}` ({knob})")
    if bare:
        parts.append("Without hyperparameters: " + ", ".join(bare) + ".")
    return "\n\n".join(parts)


def replace_section(text: str, body: str) -> str:
    """``text`` with the part between the marker lines replaced by ``body`` (exactly one pair of markers)."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"expected exactly one {START} … {END} pair")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{body}\n{END}{tail}"


def section_of(text: str) -> str:
    """The current content between the marker lines of ``text``."""
    return text.split(START, 1)[1].split(END, 1)[0].strip("\n")


__all__ = ["AGENTIC", "END", "KNOB_REGISTRIES", "PAGES", "START", "Parameter", "markdown_component",
           "markdown_section", "page_components", "parameters", "replace_section", "section_of", "text_table"]

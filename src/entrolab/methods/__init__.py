"""The method catalog: each method is a named, documented preset of knob components (``registry.py`` holds the
mechanism — composition, resolution, building — and ``catalog/`` the entries, one module per knob; importing this
package registers them all)."""

from .registry import (BASELINE, COMPONENT_SLOTS, METHODS, SLOTS, ComponentSpec, Method, ObjectiveSpec, anchors_table,
                       build, canonical_overrides, get_method, markdown_table, method_names, register_method, resolve,
                       resolve_spec)
from . import catalog  # noqa: E402,F401  (registers every entry)

__all__ = ["BASELINE", "COMPONENT_SLOTS", "METHODS", "SLOTS", "ComponentSpec", "Method", "ObjectiveSpec", "anchors_table", "build",
           "canonical_overrides", "get_method", "markdown_table", "method_names", "register_method", "resolve",
           "resolve_spec"]

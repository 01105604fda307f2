"""Catalog entries of the clip knob."""

from ..methods import Method, register_method  # noqa: F401

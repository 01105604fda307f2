"""Catalog entries of the objective knob."""

from ..methods import Method, register_method  # noqa: F401

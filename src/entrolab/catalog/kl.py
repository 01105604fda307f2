"""Catalog entries of the kl knob."""

from ..methods import Method, register_method  # noqa: F401

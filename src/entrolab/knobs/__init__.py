"""Knob components: one subpackage per knob of the unified objective (``sampling``, ``advantage``, ``clip``, ``kl``,
``objective``), each with its registry in ``base.py``; shared mechanisms in ``controllers.py`` (entropy controllers)
and ``token_select.py`` (token subsets and weights). Importing this package registers every component."""

from . import advantage, clip, kl, objective, sampling  # noqa: F401

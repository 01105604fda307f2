"""The user-facing error of every layer: a name or value a user wrote is invalid, and the message says which and how
to fix it. The command line prints it as one line (``entrolab: error: …``) and exits 2, never with a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A method, component, parameter, file or config value is invalid; the message names it and the fix."""


class TrainingError(RuntimeError):
    """A run cannot go on (its data ran out; three steps in a row with non-finite losses); the message says why and
    what to change. The last checkpoint is intact."""

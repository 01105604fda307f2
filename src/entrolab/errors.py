"""The user-facing errors of every layer: a name, value or file a user gave is invalid, or a run cannot go on, and the
message says which and how to fix it. The command line prints them as one line (``entrolab: error: …``) and exits
non-zero, never with a traceback; any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class EntrolabError(Exception):
    """Base of entrolab's own errors (the command line's one handler catches exactly these)."""

    exit_code = 1


class ConfigError(EntrolabError, ValueError):
    """A method, component, parameter, file or config value is invalid; the message names it and the fix."""

    exit_code = 2


class TrainingError(EntrolabError, RuntimeError):
    """A run cannot go on (its data ran out; too many steps in a row with non-finite updates); the message says why
    and what to change. The last checkpoint is intact."""

"""The environment: tasks (prompts with verifiable answers), answer extraction and rewards, answer equivalence,
reward sources, and the calculator tool with its sandbox. Text in, numbers out: no model code.

Importing the package registers every task (``tool_arithmetic`` comes from ``tools.py``)."""

from . import tasks, tools  # noqa: F401  (registers every task)

"""The environment: tasks (prompts with verifiable answers), answer extraction and rewards, answer equivalence,
reward sources, and the calculator tool with its sandbox. Text in, numbers out: no model code. Model output is
untrusted: rewards and answer checking run in the bounded worker pool of ``workers.py`` (``docs/security.md``).

Importing the package registers every task (``tool_arithmetic`` comes from ``tools.py``)."""

from . import tasks, tools  # noqa: F401  (registers every task)

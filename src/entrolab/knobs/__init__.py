"""Knob components, one module per knob; importing this package registers the components of the modules that
register into another knob's registry (``advantage_entropy`` adds estimators to ``advantage.ADVANTAGES``)."""

from . import advantage_entropy  # noqa: F401
from . import sampling_agentic  # noqa: F401  (ARPO / AEPO-Dong: sampling, advantage and clip components)

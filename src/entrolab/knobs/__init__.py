"""Knob components, one module per knob; importing this package registers the components of the modules that
register into another knob's registry (``advantage_entropy`` adds estimators to ``advantage.ADVANTAGES``, the
``sampling_*`` modules strategies to ``sampling.SAMPLINGS``, ...), so every catalog entry can name any component."""

from . import advantage_entropy  # noqa: F401
from . import rollout_advantage  # noqa: F401  (advantages that read a sampling strategy's rows/trees)
from . import sampling_entropy  # noqa: F401  (temperature control, branching/tree rollouts, curricula, MENTOR)
from . import sampling_agentic  # noqa: F401  (ARPO / AEPO-Dong: sampling, advantage and clip components)
from . import sampling_gec  # noqa: F401  (EDGE-GRPO's Guided Error Correction: the edge_gec sampling strategy)

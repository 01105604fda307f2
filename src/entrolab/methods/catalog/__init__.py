"""The method catalog's entries, one module per knob (plus ``core`` for the baselines and the central paper).
Importing this package registers every entry; ``entrolab.methods`` does so on import."""

from . import core  # noqa: F401  (first: the baselines)
from . import advantage, clip, kl, objective  # noqa: F401
from . import sampling  # noqa: F401
from . import sampling_agentic  # noqa: F401

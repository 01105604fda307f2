"""The method catalog's entries, one module per knob (plus ``core`` for the baselines and the central paper).
Importing this package registers every entry; ``entrolab.methods`` does so on import."""

from . import (  # noqa: F401
    advantage,
    baselines,
    clip,
    core,  # noqa: F401  (first: the baselines)
    kl,
    objective,
    sampling,  # noqa: F401
    sampling_agentic,  # noqa: F401
)

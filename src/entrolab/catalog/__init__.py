"""The method catalog's entries, one module per knob (plus ``core`` for the baselines and the central paper).
Importing this package registers every entry; ``entrolab.methods`` does so on import."""

from . import core  # noqa: F401  (first: the baselines)
from . import clip, kl, objective  # noqa: F401

"""The KL knob: a per-token penalty anchoring the policy to a reference or to the rollout policy.

``base`` holds the registry, no KL and the reference KL; ``penalties`` KL-Cov and the entropy-aware anchors."""

from . import penalties  # noqa: F401  (registers its penalties)
from .base import KLS, KLPenalty, NoKL, ReferenceKL

__all__ = ["KLS", "KLPenalty", "NoKL", "ReferenceKL"]

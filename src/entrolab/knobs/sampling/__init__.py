"""The sampling knob: which prompts are sampled, how trajectories are generated, which groups an update learns from.

``base`` holds the registry, the hooks and the plain strategies; the other modules register temperature control,
tree rollouts, guided rollouts, curricula and agentic (tool) branching."""

from . import agentic, curriculum, guided, temperature, trees  # noqa: F401  (register their strategies)
from .base import (
    SAMPLINGS,
    DynamicSampling,
    RewardStdFilter,
    SamplingStrategy,
    StandardSampling,
)

__all__ = ["SAMPLINGS", "SamplingStrategy", "StandardSampling", "DynamicSampling", "RewardStdFilter"]

"""The objective knob: terms that transform the per-token loss matrix before aggregation.

``base`` holds the registry, the term base and the entropy bonus; ``bonuses`` the controlled entropy bonuses,
``entropy_objectives`` the surrogate-replacing objectives, ``selection`` token selection and reweighting."""

from . import bonuses, entropy_objectives, selection  # noqa: F401  (register their terms)
from .base import TERMS, EntropyBonus, ObjectiveTerm, entropy_with_grad

__all__ = ["TERMS", "EntropyBonus", "ObjectiveTerm", "entropy_with_grad"]

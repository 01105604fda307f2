"""Imports every strategy module so that each registers itself in :data:`entrolab.inference.base.STRATEGIES`."""

from .base import (  # noqa: F401
           STRATEGIES,
           InverseEntropyVote,
           MajorityVote,
           MinEntropyPath,
           SampleStrategy,
)
from .dts import DTS  # noqa: F401
from .eager import EAGer  # noqa: F401
from .eat import EAT  # noqa: F401
from .egl import EGL  # noqa: F401
from .seat import SEAT  # noqa: F401

__all__ = ["DTS", "EAGer", "EAT", "EGL", "SEAT", "InverseEntropyVote", "MajorityVote", "MinEntropyPath",
           "SampleStrategy", "STRATEGIES"]

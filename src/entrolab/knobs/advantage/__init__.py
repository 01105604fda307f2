"""The advantage knob: how a response's reward becomes per-token advantages.

``base`` holds the registry and the baselines (GRPO, Dr. GRPO, RLOO, REINFORCE++-baseline); ``entropy`` the
entropy-shaped estimators, ``rollouts`` those that read a sampling strategy's trees and rows, ``history`` and
``shaping`` the rest; ``estimators`` the remaining estimators of verl (GAE with a value model, REINFORCE++, ReMax,
OPO, the optimal token baseline, pass@k GRPO, GDPO, GPG)."""

from . import entropy, estimators, history, rollouts, shaping  # noqa: F401  (register their estimators)
from .base import (
    ADVANTAGES,
    AdvantageEstimator,
    GRPOAdvantage,
    broadcast_to_tokens,
    group_statistics,
)

__all__ = ["ADVANTAGES", "AdvantageEstimator", "GRPOAdvantage", "broadcast_to_tokens", "group_statistics"]

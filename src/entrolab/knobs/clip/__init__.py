"""The clip knob: the per-token policy-gradient surrogate and its trust region.

``base`` holds the registry, the clip-rule template and the PPO family; ``covariance`` Clip-Cov; ``rules`` the
entropy-aware trust regions."""

from . import covariance, rules  # noqa: F401  (register their rules)
from .base import CLIPS, ClipRule, PPOClip, importance_ratio, ppo_token_loss

__all__ = ["CLIPS", "ClipRule", "PPOClip", "importance_ratio", "ppo_token_loss"]

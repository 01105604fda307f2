"""The clip knob: the per-token policy-gradient surrogate and its trust region.

``base`` holds the registry, the clip-rule template and the PPO family; ``covariance`` Clip-Cov; ``rules`` the
entropy-aware trust regions; ``policy_losses`` the remaining policy losses of verl and TRL (GSPO, CISPO, SAPO,
GMPO, GPG, DPPO, DRO, VESPO)."""

from . import covariance, policy_losses, rules  # noqa: F401  (register their rules)
from .base import CLIPS, ClipRule, PPOClip, importance_ratio, ppo_token_loss

__all__ = ["CLIPS", "ClipRule", "PPOClip", "importance_ratio", "ppo_token_loss"]

"""The verl plugin: importing this module registers, in the importing process,

- a verl policy loss ``entrolab/<method>`` for every catalog method on the ``policy loss`` route (``support.py``),
  selected with ``actor_rollout_ref.actor.policy_loss.loss_mode=entrolab/<method>``;
- a verl advantage estimator ``entrolab/<estimator>`` for every advantage estimator computed from rewards, masks and
  groups alone, selected with ``algorithm.adv_estimator=entrolab/<estimator>``.

verl loads it in every process through the ``verl.plugins`` entry point of entrolab's package metadata (pyproject),
so a ``pip install -e ".[verl]"`` makes the losses available to an unmodified verl, in its Ray workers too.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import numpy as np
import torch

from ... import methods
from ...batch import RolloutBatch
from ..support import driver_advantages, policy_loss_methods
from .losses import policy_loss

PREFIX = "entrolab/"


def _loss_fn(method: str):
    @functools.wraps(policy_loss)
    def fn(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode: str = "token-mean", config=None,
           rollout_is_weights=None):
        return policy_loss(method, old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                           rollout_is_weights)

    fn.__name__ = f"entrolab_{method}_policy_loss"
    fn.__doc__ = f"entrolab's {method} objective as a verl policy loss (entrolab.integrations.verl)."
    return fn


def group_ids_from_index(index: Any, n: int) -> torch.Tensor:
    """(B,) int64 group ids from verl's ``uid`` array (one id per prompt); every row its own group without one."""
    if index is None:
        return torch.arange(n)
    _, inverse = np.unique(np.asarray(index, dtype=object).astype(str), return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


def advantages_from_rewards(estimator: str, token_level_rewards: torch.Tensor, response_mask: torch.Tensor,
                            index: Optional[Any] = None, **params: Any) -> torch.Tensor:
    """entrolab's ``estimator`` on verl's driver-side inputs: the sequence reward is the sum of the token-level
    rewards, the groups are verl's ``uid``s."""
    from ...knobs.advantage.base import ADVANTAGES

    mask = response_mask.to(torch.float32)
    B = mask.shape[0]
    batch = RolloutBatch(response_ids=torch.zeros(mask.shape, dtype=torch.long), response_mask=mask.cpu(),
                         old_logprobs=torch.zeros(mask.shape), rewards=token_level_rewards.float().sum(-1).cpu(),
                         group_ids=group_ids_from_index(index, B))
    adv = ADVANTAGES.build(estimator, params).compute(batch)
    return adv.to(token_level_rewards.device)


def _adv_fn(estimator: str):
    def fn(token_level_rewards, response_mask, index=None, config=None, **_):
        adv = advantages_from_rewards(estimator, token_level_rewards, response_mask, index)
        return adv, adv

    fn.__name__ = f"entrolab_{estimator}_advantage"
    fn.__doc__ = f"entrolab's {estimator} advantage estimator for verl (entrolab.integrations.verl)."
    return fn


def register() -> tuple[list[str], list[str]]:
    """Register every policy loss and advantage estimator; returns their verl names."""
    from verl.trainer.ppo import core_algos

    losses, advs = [], []
    for m in policy_loss_methods():
        core_algos.POLICY_LOSS_REGISTRY[PREFIX + m] = _loss_fn(m)
        losses.append(PREFIX + m)
    for a in driver_advantages():
        name = PREFIX + a
        if name not in core_algos.ADV_ESTIMATOR_REGISTRY:
            core_algos.register_adv_est(name)(_adv_fn(a))
        advs.append(name)
    return losses, advs


assert methods.METHODS  # the catalog is loaded before registration
REGISTERED_LOSSES, REGISTERED_ADVANTAGES = register()

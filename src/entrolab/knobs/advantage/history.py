"""Advantages with memory across steps: DCPO's smooth advantage standardisation over each prompt's history (arXiv 2509.02333).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from ...batch import RolloutBatch
from .base import ADVANTAGES, AdvantageEstimator, broadcast_to_tokens


@ADVANTAGES.register("dcpo_sas")
@dataclass
class DCPOAdvantage(AdvantageEstimator):
    """DCPO smooth advantage standardisation, SAS (2509.02333; lime-RL/DCPO ``compute_dcpo_outcome_advantage``).

    For a prompt seen for the i-th time (``extras['prompt_id']``, stable across steps):
    A_new = (R − μ_step)/σ_step over the current group and A_total = (R − μ_all)/σ_all over the prompt's history,
    each 0 where its σ is 0; SA_new = ((i−1)/i)·A_new + (1/i)·A_total, SA_total = (1/i)·A_new + ((i−1)/i)·A_total;
    A = SA_new if |SA_new| < |SA_total| else SA_total. A group whose rewards are all equal this step still gets
    A_total/i from its history. History (as the code): μ_all is the mean of the per-visit group means and σ_all²
    pools them, σ_k² = [(k−1)·σ_{k−1}² + σ_step² + ((k−1)/k)·(μ_step − μ_{k−1})²]/k, with σ_step the unbiased
    group std (a group of one has σ_step = 0). ``compute`` updates the history, so call it once per rollout
    batch (``PolicyObjective.compute_advantages`` does); the history is checkpointed by ``state_dict``.

    """

    _history: dict = field(init=False, repr=False, compare=False, default=None)  # type: ignore[assignment]
    _warned: bool = field(init=False, repr=False, compare=False, default=False)

    def __post_init__(self) -> None:
        self._history = {}  # prompt id → (visits, mean, var)

    def compute(self, batch: RolloutBatch) -> torch.Tensor:
        if "prompt_id" not in batch.extras:
            # No cross-step identity: every group is a first visit (SAS = the step standardisation A_new) and
            # nothing is remembered. The trainer and the toy always provide prompt_id.
            if not self._warned:
                warnings.warn("advantage 'dcpo_sas': RolloutBatch.extras['prompt_id'] is missing, so no per-prompt "
                              "history is kept (each group is treated as a first visit)", stacklevel=2)
                self._warned = True
            saved, self._history = self._history, {}
            try:
                return self._compute(batch, -1 - torch.unique(batch.group_ids, return_inverse=True)[1])
            finally:
                self._history = saved
        return self._compute(batch, batch.extras["prompt_id"].long())

    def _compute(self, batch: RolloutBatch, pids: torch.Tensor) -> torch.Tensor:
        rewards = batch.rewards.double()
        out = torch.zeros_like(rewards)
        _, inverse = torch.unique(batch.group_ids, return_inverse=True)
        for g in range(int(inverse.max()) + 1 if inverse.numel() else 0):
            idx = torch.nonzero(inverse == g).flatten()
            r = rewards[idx]
            pid = int(pids[idx[0]])
            mu_new = float(r.mean())
            sd_new = float(r.std()) if r.numel() > 1 else 0.0
            k_old, mu_old, var_old = self._history.get(pid, (0, 0.0, 0.0))
            k = k_old + 1
            if k_old == 0:
                mu_all, var_all = mu_new, sd_new**2
            else:
                mu_all = (mu_old * k_old + mu_new) / k
                var_all = (k_old * var_old + sd_new**2 + (k_old / k) * (mu_new - mu_old) ** 2) / k
            self._history[pid] = (k, mu_all, var_all)
            sd_all = var_all**0.5
            a_new = (r - mu_new) / sd_new if sd_new > 0 else torch.zeros_like(r)
            a_tot = (r - mu_all) / sd_all if sd_all > 0 else torch.zeros_like(r)
            sa_new = ((k - 1) / k) * a_new + (1 / k) * a_tot
            sa_tot = (1 / k) * a_new + ((k - 1) / k) * a_tot
            out[idx] = torch.where(sa_new.abs() < sa_tot.abs(), sa_new, sa_tot)
        return broadcast_to_tokens(out.float(), batch.mask)

    def state_dict(self) -> dict[str, Any]:
        if not self._history:
            return {}
        ids = sorted(self._history)
        return {
            "prompt_ids": torch.tensor(ids, dtype=torch.long),
            "visits": torch.tensor([self._history[i][0] for i in ids], dtype=torch.long),
            "mean": torch.tensor([self._history[i][1] for i in ids], dtype=torch.float64),
            "var": torch.tensor([self._history[i][2] for i in ids], dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._history = {}
        if not state:
            return
        for pid, k, mu, var in zip(state["prompt_ids"].tolist(), state["visits"].tolist(), state["mean"].tolist(),
                                   state["var"].tolist()):
            self._history[int(pid)] = (int(k), float(mu), float(var))

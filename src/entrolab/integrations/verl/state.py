"""The driver's side of an entrolab run in verl: the objective's controller state, carried to every rank each step,
saved with verl's checkpoints; entropy-shaped advantages and the covariance monitor, computed on the whole batch.

One step of the recipe (``main_ppo.py``):

    adv, monitor = driver.prepare(batch_fields)      # entrolab's advantages, prepare, entropy/* and dynamics/*
    worker_group.set_loss_fn(driver.loss_fn())       # the whole loss, carrying the state of step t
    ... verl updates the actor; each rank returns its metrics ...
    logged = driver.after_step(reduced_metrics)       # controllers update (on_step_end) on the driver
    driver.save(checkpoint_dir) / driver.load(...)    # beside verl's actor/ and data.pt

No verl import here: the fields are plain tensors (padded, response-aligned) and arrays.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import torch

from ... import methods
from ...batch import RolloutBatch
from ...errors import ConfigError
from ...train.probes import EntropyCovarianceProbe
from ..support import Support, refuse
from .losses import EntrolabLoss

STATE_FILE = "entrolab_state.pt"
NAMESPACES = ("entropy/", "dynamics/", "clip/", "kl/", "loss/", "ratio/", "objective/", "controller/", "adv/")
"""entrolab's metric namespaces; verl prefixes worker metrics with ``actor/``, which the recipe strips for these."""


def entrolab_metrics(metrics: Mapping[str, Any], prefix: str = "actor/") -> dict[str, float]:
    """entrolab's own keys out of verl's (``actor/clip/frac_low`` → ``clip/frac_low``), as floats."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        key = k[len(prefix):] if k.startswith(prefix) else k
        if key.startswith(NAMESPACES):
            val = _mean(v)
            if val is not None:
                out[key] = val
    return out


def _mean(v: Any) -> Optional[float]:
    if isinstance(v, torch.Tensor):
        v = v.detach().float().mean().item()
    elif isinstance(v, (list, tuple, np.ndarray)):
        vals = [x for x in (_mean(u) for u in v) if x is not None]
        return float(np.mean(vals)) if vals else None
    elif hasattr(v, "aggregate") and hasattr(v, "values"):  # verl's Metric
        return _mean(v.aggregate())
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def reduce_rank_metrics(per_rank: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Mean over ranks of each metric (what verl's ``reduce_metrics`` does with data-parallel lists)."""
    acc: dict[str, list[float]] = {}
    for m in per_rank:
        for k, v in m.items():
            val = _mean(v)
            if val is not None:
                acc.setdefault(k, []).append(val)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def prompt_ids_from_tokens(prompts: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B,) int64 stable prompt ids: a hash of each row's prompt tokens (padding dropped), the same across steps."""
    out = []
    for i in range(prompts.shape[0]):
        row = prompts[i] if mask is None else prompts[i][mask[i].bool()]
        digest = hashlib.blake2b(np.asarray(row.tolist(), dtype=np.int64).tobytes(), digest_size=7).digest()
        out.append(int.from_bytes(digest, "little"))
    return torch.tensor(out, dtype=torch.long)


class DriverState:
    """The objective on verl's driver: advantages, the monitor, the state the ranks get, checkpoints."""

    def __init__(self, method: str | list[str], overrides: Optional[Mapping[str, Any]] = None,
                 high_entropy_threshold: float = 0.672):
        self.method = [method] if isinstance(method, str) else list(method)
        self.overrides = dict(overrides or {})
        self.objective = methods.build(self.method, **self.overrides)
        self.support: Support = refuse(self.objective, "verl")
        self.step = 0
        self._loss = EntrolabLoss(self.method, self.overrides)
        self._probe = EntropyCovarianceProbe(high_entropy_threshold)

    # ------------------------------------------------------------------ per rollout batch
    def batch(self, fields: Mapping[str, Any]) -> RolloutBatch:
        """A ``RolloutBatch`` from verl's padded fields: ``response_mask``, ``old_log_probs``, ``token_level_rewards``
        (summed per response), ``uid`` (groups), optional ``entropy`` (the rollout policy's), ``advantages``,
        ``prompts``/``prompt_mask`` (stable prompt ids), ``responses``."""
        from .plugin import group_ids_from_index

        mask = torch.as_tensor(fields["response_mask"]).float().cpu()
        B = mask.shape[0]
        rewards = torch.as_tensor(fields["token_level_rewards"]).float().cpu()
        rewards = rewards.sum(-1) if rewards.dim() == 2 else rewards
        extras: dict[str, torch.Tensor] = {}
        if fields.get("prompts") is not None:
            extras["prompt_id"] = prompt_ids_from_tokens(torch.as_tensor(fields["prompts"]).cpu(),
                                                         fields.get("prompt_mask"))
        get = (lambda k: None if fields.get(k) is None else torch.as_tensor(fields[k]).float().cpu())
        responses = fields.get("responses")
        return RolloutBatch(
            response_ids=(torch.as_tensor(responses).long().cpu() if responses is not None
                          else torch.zeros(mask.shape, dtype=torch.long)),
            response_mask=mask, old_logprobs=get("old_log_probs"), rewards=rewards,
            group_ids=group_ids_from_index(fields.get("uid"), B), old_entropy=get("entropy"),
            advantages=get("advantages"), extras=extras, step=self.step,
        )

    def prepare(self, fields: Mapping[str, Any], lr: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Once per rollout batch, on the whole batch: entrolab's advantages (B, T) (entropy-shaped ones read the
        batch's ``entropy``), the objective's ``prepare`` (controllers observe the step's entropy here, as in the
        native trainer), and the monitor — the native trainer's ``entropy/*`` and ``dynamics/*`` statistics
        (2505.22617 Eq. 10 covariance, its mean and top-tail means)."""
        batch = self.batch(fields)
        if "old_entropy" in self.objective.requires and batch.old_entropy is None:
            raise ConfigError(f"{'+'.join(self.method)} needs the rollout policy's entropies (the batch's 'entropy' "
                              "field, which verl writes when it recomputes old log-probs)")
        batch = self.objective.compute_advantages(batch)
        self.objective.prepare(batch)
        monitor = self._probe.before_update(SimpleNamespace(batch=batch, lr=lr)) if batch.old_entropy is not None \
            else {}
        return batch.advantages, monitor

    # ------------------------------------------------------------------ per step
    def loss_fn(self) -> EntrolabLoss:
        """The whole loss carrying the driver's prepared objective and state of this step (send it to every rank
        with ``set_loss_fn`` after :meth:`prepare`)."""
        return self._loss.with_objective(self.objective, self.step)

    def after_step(self, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Advance the controllers with the step's (rank-reduced) metrics; returns entrolab's metrics to log,
        the controllers' values included."""
        own = entrolab_metrics(metrics)
        self.objective.on_step_end(own)
        self.step += 1
        return {**own, **self.controller_values()}

    def controller_values(self) -> dict[str, float]:
        """Scalar state of the components (adaptive coefficients, EMAs) as ``controller/<slot>/<key>``."""
        out: dict[str, float] = {}
        for slot, st in self.objective.state_dict().items():
            for k, v in _flat(st):
                out[f"controller/{slot}/{k}"] = v
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method, "overrides": self.overrides, "step": self.step,
                "objective": self.objective.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("method", [])) != self.method:
            raise ConfigError(f"entrolab state was saved for {state.get('method')}, this run is {self.method}")
        self.step = int(state.get("step", 0))
        self.objective.load_state_dict(state.get("objective", {}))

    def save(self, checkpoint_dir: str | os.PathLike) -> Path:
        """Write ``entrolab_state.pt`` into verl's ``global_step_N`` folder, atomically."""
        d = Path(checkpoint_dir)
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".entrolab_state.", suffix=".tmp")
        os.close(fd)
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, d / STATE_FILE)
        return d / STATE_FILE

    def load(self, checkpoint_dir: str | os.PathLike) -> bool:
        """Restore from a ``global_step_N`` folder; False when it holds no entrolab state."""
        path = Path(checkpoint_dir) / STATE_FILE
        if not path.is_file():
            return False
        self.load_state_dict(torch.load(path, weights_only=False))
        return True


def _flat(state: Any, prefix: str = "") -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    if isinstance(state, Mapping):
        for k, v in state.items():
            out += _flat(v, f"{prefix}{k}/")
    elif isinstance(state, (int, float)) and not isinstance(state, bool):
        out.append((prefix.rstrip("/"), float(state)))
    elif isinstance(state, torch.Tensor) and state.numel() == 1 and state.is_floating_point():
        out.append((prefix.rstrip("/"), float(state)))
    return out

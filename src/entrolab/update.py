"""The policy update shared by every engine here (the toy policy and the HF trainer): PPO epochs × mini-batches,
gradient accumulation over micro-batches with exact loss normalisation, gradient-norm clipping, and a guard that
never applies a non-finite gradient: an optimizer step whose loss, gradient norm or clipped gradients are not finite
is skipped (the weights stay as they were) and counted; weights made non-finite by the step itself (an overflow in
the optimizer) stop the run.

Auxiliary models (:class:`AuxiliaryUpdate`) train on the same micro-batches in the same loop, with their own
optimizer and gradient clip: PPO's value model (:class:`ValueLearner`, the engine's ``values`` primitive), whose
clipped value loss is added to the policy loss of each micro-batch before the one backward pass (their parameters
are disjoint), and whose optimizer steps with the policy's — or not at all when either gradient is non-finite.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from .batch import BatchError, RolloutBatch
from .errors import TrainingError
from .objective import PolicyObjective
from .ops.masked import masked_mean
from .ops.value import clipped_value_loss, explained_variance

# forward(micro_batch) -> (logprobs (b, T) with grad, entropy (b, T) or None)
ForwardFn = Callable[[RolloutBatch], tuple[torch.Tensor, Optional[torch.Tensor]]]


@dataclass
class UpdateSettings:
    """How one rollout batch is consumed: ``ppo_epochs`` passes, each split into ``mini_batches`` optimizer steps,
    each accumulated over micro-batches of at most ``micro_batch_size`` sequences (0 = the whole mini-batch)."""

    ppo_epochs: int = 1
    mini_batches: int = 1
    micro_batch_size: int = 0
    grad_clip: Optional[float] = 1.0

    @property
    def updates_per_rollout(self) -> int:
        return self.ppo_epochs * self.mini_batches


class AuxiliaryUpdate:
    """A model trained alongside the policy on the same micro-batches (the critic). :func:`policy_update` calls
    ``begin(batch)`` once per rollout batch (metrics), ``zero_grad()`` and, per micro-batch, ``loss(micro)`` (added to
    the policy loss before the backward pass; its metrics are token-weighted means, ``loss/`` ones summed), then
    ``clip_grad()`` (its gradient norm, after clipping) and ``step()`` with the policy's optimizer step."""

    name: str = "aux"

    def begin(self, batch: RolloutBatch) -> dict[str, float]:
        return {}

    def loss(self, micro: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def zero_grad(self) -> None:
        raise NotImplementedError

    def clip_grad(self) -> float:
        raise NotImplementedError

    def step(self) -> None:
        raise NotImplementedError


class ValueLearner(AuxiliaryUpdate):
    """A value model V(s_t) trained with PPO's clipped value loss (``ops.value.clipped_value_loss``) on the targets
    ``extras['returns']``, its rollout-time predictions ``extras['values']`` anchoring the clip (both written by the
    advantage component that asked for the ``values`` primitive, e.g. ``gae``). Subclasses implement
    :meth:`predict` (per-token predictions with gradient) and own the parameters ``optimizer`` steps.

    Metrics: ``critic/value_mean`` and ``critic/returns_mean`` (the rollout's values and targets on valid tokens),
    ``critic/vf_explained_var`` (1 − Var(G − V)/Var(G) over the rollout batch), per update ``critic/vf_loss``,
    ``critic/vf_clipfrac`` (tokens where the clipped term is the larger) and ``critic/grad_norm``.
    """

    name = "critic"

    def __init__(self, optimizer: torch.optim.Optimizer, clip: Optional[float] = 0.5,
                 grad_clip: Optional[float] = 1.0):
        self.optimizer, self.clip, self.grad_clip = optimizer, clip, grad_clip
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def predict(self, micro: RolloutBatch) -> torch.Tensor:
        """(b, T) value predictions for the micro-batch's response positions, with gradient."""
        raise NotImplementedError

    @staticmethod
    def targets(batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        missing = [k for k in ("values", "returns") if k not in batch.extras]
        if missing:
            raise BatchError(f"the value model trains on batch.extras['values'] and ['returns'], which the advantage "
                             f"component asking for the `values` primitive writes (e.g. gae); missing {missing}")
        return batch.extras["values"].float(), batch.extras["returns"].float()

    def begin(self, batch: RolloutBatch) -> dict[str, float]:
        values, returns = self.targets(batch)
        return {"critic/value_mean": float(masked_mean(values, batch.mask)),
                "critic/returns_mean": float(masked_mean(returns, batch.mask)),
                "critic/vf_explained_var": explained_variance(values, returns, batch.mask)}

    def loss(self, micro: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        values, returns = self.targets(micro)
        vpreds = self.predict(micro)
        loss, frac = clipped_value_loss(vpreds, values, returns, micro.mask, self.clip, micro.global_num_tokens)
        with torch.no_grad():
            local, _ = clipped_value_loss(vpreds, values, returns, micro.mask, self.clip)
        return loss, {"critic/vf_loss": float(local), "critic/vf_clipfrac": float(frac),
                      "critic/vpred_mean": float(masked_mean(vpreds.detach(), micro.mask))}

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def clip_grad(self) -> float:
        if not any(p.grad is not None for p in self.params):
            return 0.0
        return float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip or float("inf")))

    def step(self) -> None:
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def split_indices(n: int, parts: int, generator: Optional[torch.Generator]) -> list[torch.Tensor]:
    """A (shuffled when a generator is given) partition of range(n) into ``parts`` near-equal index tensors."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    parts = max(1, min(parts, n))
    return [c for c in torch.tensor_split(order, parts) if c.numel()]


def _check_weights(params: list[torch.nn.Parameter], step: int) -> None:
    """After an optimizer step from finite gradients the weights are finite unless the optimizer's arithmetic
    overflowed (half precision); stop then, before any checkpoint can hold them."""
    if params and not bool(torch.isfinite(torch.nn.utils.get_total_norm([p.detach() for p in params]))):
        raise TrainingError(f"optimizer step {step} of this update made the weights non-finite although the gradients "
                            "were finite (an overflow in the optimizer); stopping before any checkpoint holds them. "
                            "Lower optim.lr or use model.dtype=float32; the last checkpoint is intact")


def policy_update(
    objective: PolicyObjective,
    batch: RolloutBatch,
    forward: ForwardFn,
    optimizer: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    settings: UpdateSettings,
    generator: Optional[torch.Generator] = None,
    aux: Sequence[AuxiliaryUpdate] = (),
) -> dict[str, float]:
    """Run the update on a rollout batch that already carries advantages (and ``objective.prepare``'s extras).

    Returns token-weighted means of the objective's metrics plus ``update/grad_norm`` (mean over optimizer steps),
    ``update/steps`` and ``update/skipped`` (optimizer steps skipped for a non-finite loss or gradient), and those of
    the auxiliary models trained in the same loop (``aux``: e.g. the critic's ``critic/...``).
    """
    objective.check_update_regime(settings.updates_per_rollout)
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)
    grad_norms: list[float] = []
    aux_norms: dict[str, list[float]] = {a.name: [] for a in aux}
    begin: dict[str, float] = {}
    for a in aux:
        begin.update(a.begin(batch))
    skipped = 0
    steps = 0
    for _ in range(settings.ppo_epochs):
        for mb_idx in split_indices(batch.batch_size, settings.mini_batches, generator):
            mini = batch.select(mb_idx)
            n_tok = float(mini.mask.sum())
            n_seq = float((mini.mask.sum(-1) > 0).sum())
            size = settings.micro_batch_size or mini.batch_size
            optimizer.zero_grad(set_to_none=True)
            for a in aux:
                a.zero_grad()
            finite = True
            for start in range(0, mini.batch_size, size):
                micro = mini.select(torch.arange(start, min(start + size, mini.batch_size)))
                micro = micro.replace(global_num_tokens=n_tok, global_num_seqs=n_seq)
                logp, ent = forward(micro)
                valid = micro.mask > 0
                if not bool(torch.isfinite(logp.detach()[valid]).all()) or (
                        ent is not None and not bool(torch.isfinite(ent.detach()[valid]).all())):
                    finite = False  # a non-finite forward pass: skip this optimizer step, never apply it
                    break
                micro = micro.replace(logprobs=logp, entropy=ent if ent is not None else micro.entropy)
                loss, metrics = objective(micro)
                for a in aux:
                    aux_loss, aux_metrics = a.loss(micro)
                    loss = loss + aux_loss
                    metrics = {**metrics, **aux_metrics}
                if not torch.isfinite(loss):
                    finite = False
                    break
                loss.backward()
                w = float(micro.mask.sum())
                for k, v in metrics.items():
                    if k.startswith("loss/"):
                        sums[k] += v  # normalised by the mini-batch, so summing micro-batches gives its loss
                    elif math.isfinite(v):
                        sums[k] += v * w
                        weights[k] += w
            if finite:
                grads = [p.grad for p in params if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(
                    params, settings.grad_clip if settings.grad_clip else float("inf")
                ) if grads else torch.tensor(0.0)
                finite = bool(torch.isfinite(norm))
                if finite and grads and settings.grad_clip:  # the clipped gradients, as the optimizer will see them
                    finite = bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))
                extra = {a.name: a.clip_grad() for a in aux}
                finite = finite and all(math.isfinite(v) for v in extra.values())
                if finite:
                    optimizer.step()
                    grad_norms.append(float(norm))
                    _check_weights(params, steps)
                    for a in aux:
                        a.step()
                        aux_norms[a.name].append(extra[a.name])
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                for a in aux:
                    a.zero_grad()
                skipped += 1
            steps += 1
    out = {}
    for k, v in sums.items():
        if k.startswith("loss/"):
            out[k] = v / max(1, steps)  # mean over optimizer steps of the mini-batch loss
        else:
            out[k] = v / max(weights[k], 1e-12)
    out["update/grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    for name, norms in aux_norms.items():
        out[f"{name}/grad_norm"] = sum(norms) / len(norms) if norms else float("nan")
    out.update(begin)
    out["update/steps"] = float(steps)
    out["update/skipped"] = float(skipped)
    return out

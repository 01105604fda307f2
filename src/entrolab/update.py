"""The policy update shared by every engine here (the toy policy and the HF trainer): PPO epochs × mini-batches,
gradient accumulation over micro-batches with exact loss normalisation, gradient-norm clipping, and a guard that
never applies a non-finite gradient: an optimizer step whose loss, gradient norm or clipped gradients are not finite
is skipped (the weights stay as they were) and counted; weights made non-finite by the step itself (an overflow in
the optimizer) stop the run.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .batch import RolloutBatch
from .errors import TrainingError
from .objective import PolicyObjective

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
) -> dict[str, float]:
    """Run the update on a rollout batch that already carries advantages (and ``objective.prepare``'s extras).

    Returns token-weighted means of the objective's metrics plus ``update/grad_norm`` (mean over optimizer steps),
    ``update/steps`` and ``update/skipped`` (optimizer steps skipped for a non-finite loss or gradient).
    """
    objective.check_update_regime(settings.updates_per_rollout)
    sums: dict[str, float] = defaultdict(float)
    weights: dict[str, float] = defaultdict(float)
    grad_norms: list[float] = []
    skipped = 0
    steps = 0
    for _ in range(settings.ppo_epochs):
        for mb_idx in split_indices(batch.batch_size, settings.mini_batches, generator):
            mini = batch.select(mb_idx)
            n_tok = float(mini.mask.sum())
            n_seq = float((mini.mask.sum(-1) > 0).sum())
            size = settings.micro_batch_size or mini.batch_size
            optimizer.zero_grad(set_to_none=True)
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
                if finite:
                    optimizer.step()
                    grad_norms.append(float(norm))
                    _check_weights(params, steps)
            if not finite:
                optimizer.zero_grad(set_to_none=True)
                skipped += 1
            steps += 1
    out = {}
    for k, v in sums.items():
        if k.startswith("loss/"):
            out[k] = v / max(1, steps)  # mean over optimizer steps of the mini-batch loss
        else:
            out[k] = v / max(weights[k], 1e-12)
    out["update/grad_norm"] = sum(grad_norms) / len(grad_norms) if grad_norms else float("nan")
    out["update/steps"] = float(steps)
    out["update/skipped"] = float(skipped)
    return out

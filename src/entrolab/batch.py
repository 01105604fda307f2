"""``RolloutBatch``: the one currency between sampling, advantage estimation, the policy objective and diagnostics.

All per-token tensors are response-aligned ``(B, T)``: position t holds the t-th generated token of response i,
``response_mask`` is 1 on real response tokens and 0 on padding. Per-sequence tensors are ``(B,)``.
The batch validates itself on construction (shapes, dtypes, finite values on valid tokens) and every error names
the field and says what was expected.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

_TOKEN_FIELDS = ("old_logprobs", "logprobs", "ref_logprobs", "entropy", "old_entropy", "advantages")
_SEQ_FIELDS = ("rewards", "group_ids")


class BatchError(ValueError):
    """A RolloutBatch field is missing, misshapen or holds invalid values."""


@dataclass
class RolloutBatch:
    """Tensors of one RL step.

    Required: ``response_ids`` (B, T) int, ``response_mask`` (B, T) bool/float, ``old_logprobs`` (B, T) — log-probs
    of the sampled tokens under the rollout policy π_old —, ``rewards`` (B,), ``group_ids`` (B,) int (responses to
    the same prompt share an id). Optional: ``logprobs`` (current policy, carries grad during the update),
    ``ref_logprobs`` (frozen reference), ``entropy`` (current policy, full-vocabulary), ``old_entropy``,
    ``advantages`` (B, T), ``extras`` (name → tensor with leading dim B, sliced with the batch),
    ``step`` (the RL step), and the mini-batch loss normalisers ``global_num_tokens`` / ``global_num_seqs``
    used by ``aggregate_loss`` under gradient accumulation.
    """

    response_ids: torch.Tensor
    response_mask: torch.Tensor
    old_logprobs: torch.Tensor
    rewards: torch.Tensor
    group_ids: torch.Tensor
    logprobs: Optional[torch.Tensor] = None
    ref_logprobs: Optional[torch.Tensor] = None
    entropy: Optional[torch.Tensor] = None
    old_entropy: Optional[torch.Tensor] = None
    advantages: Optional[torch.Tensor] = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    step: int = 0
    global_num_tokens: Optional[float] = None
    global_num_seqs: Optional[float] = None

    def __post_init__(self) -> None:
        ids = self.response_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            raise BatchError(
                f"RolloutBatch.response_ids: expected a (B, T) integer tensor, got "
                f"{type(ids).__name__}{'' if not isinstance(ids, torch.Tensor) else tuple(ids.shape)}"
            )
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise BatchError(f"RolloutBatch.response_ids: expected an integer dtype, got {ids.dtype}")
        B, T = ids.shape
        self._check_shape("response_mask", (B, T))
        mask = self.response_mask
        if mask.dtype != torch.bool:
            if not mask.is_floating_point() and mask.dtype not in (torch.int64, torch.int32, torch.uint8):
                raise BatchError(f"RolloutBatch.response_mask: expected bool or float, got {mask.dtype}")
            if not torch.all((mask == 0) | (mask == 1)):
                raise BatchError("RolloutBatch.response_mask: values must be 0 or 1")
        self.response_mask = mask.to(torch.float32)
        valid = self.response_mask > 0
        for name in _TOKEN_FIELDS:
            if getattr(self, name) is not None:
                self._check_shape(name, (B, T))
                self._check_float_finite(name, valid)
        for name in _SEQ_FIELDS:
            self._check_shape(name, (B,))
        if self.group_ids.is_floating_point():
            raise BatchError(f"RolloutBatch.group_ids: expected an integer dtype, got {self.group_ids.dtype}")
        self._check_float_finite("rewards", None)
        for name in ("old_logprobs", "logprobs", "ref_logprobs"):
            t = getattr(self, name)
            if t is not None and bool(((t.detach() > 1e-4) & valid).any()):
                raise BatchError(f"RolloutBatch.{name}: log-probabilities must be <= 0 on valid tokens")
        for key, t in self.extras.items():
            if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != B:
                raise BatchError(f"RolloutBatch.extras[{key!r}]: expected a tensor with leading dimension B={B}")

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        t = getattr(self, name)
        if not isinstance(t, torch.Tensor):
            raise BatchError(f"RolloutBatch.{name}: expected a tensor of shape {shape}, got {type(t).__name__}")
        if tuple(t.shape) != shape:
            raise BatchError(
                f"RolloutBatch.{name}: expected shape {shape} (like response_ids), got {tuple(t.shape)}"
            )

    def _check_float_finite(self, name: str, valid: Optional[torch.Tensor]) -> None:
        t = getattr(self, name)
        if not t.is_floating_point():
            raise BatchError(f"RolloutBatch.{name}: expected a floating dtype, got {t.dtype}")
        vals = t.detach() if valid is None else t.detach()[valid]
        if not bool(torch.isfinite(vals).all()):
            where = "" if valid is None else " on valid tokens"
            raise BatchError(f"RolloutBatch.{name}: holds NaN or inf{where}")

    # ------------------------------------------------------------------ views
    @property
    def batch_size(self) -> int:
        return self.response_ids.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        """The response mask as float32 (B, T)."""
        return self.response_mask

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def replace(self, **changes: Any) -> "RolloutBatch":
        """A new, re-validated batch with some fields replaced (tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def select(self, index: torch.Tensor) -> "RolloutBatch":
        """The sub-batch of rows ``index`` (a LongTensor of row indices or a (B,) bool mask)."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                changes[f.name] = v[index]
        changes["extras"] = {k: v[index] for k, v in self.extras.items()}
        changes["global_num_tokens"] = None
        changes["global_num_seqs"] = None
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        changes = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        changes["extras"] = {k: v.to(device) for k, v in self.extras.items()}
        return dataclasses.replace(self, **changes)

    def require(self, *names: str, who: str = "this component") -> None:
        """Raise a clear error if any of the named optional fields is None."""
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise BatchError(f"{who} needs RolloutBatch.{', '.join(missing)}, which the batch does not carry")

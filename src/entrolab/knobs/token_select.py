"""Token selection and reweighting: one mechanism for every method that trains on a chosen subset of tokens or
weights tokens differently (forking tokens, D³S, DART-GUI, STEER, SimKO, UloRL, EntroPIC).

A method supplies a per-token weight w ≥ 0 (a 0/1 mask for a selection); the shared code does the rest:

- **selection** ``top_fraction(score, mask, ρ)``: the top ⌈ρ·N⌉ valid units by score, where a unit is a token,
  or a group of tokens sharing a ``units`` id within a response (DART-GUI's steps; the unit's score is the mean of
  its tokens'), counted over the whole batch (``within="batch"``) or per response (``within="sequence"``).
  ``rule="quantile"`` keeps instead the units strictly above the (1−ρ)-quantile (linear interpolation, SimKO's
  per-response rule). Padding is never selected and never counts in N.
- **normaliser** ``normalise(w, mask, normalizer)``: with ``"all"`` the loss is Σ w·ℓ / N_all (the aggregation's
  own denominator: unselected tokens still count, e.g. UloRL's token-mean over every token); with ``"selected"``
  the weights are rescaled by N_all / Σ w, so that under token-mean aggregation the loss is Σ w·ℓ / Σ w — the mean
  over the selected tokens (forking tokens' reference code). Under the other aggregation modes the same scalar
  rescaling is applied (it keeps the gradient scale comparable; it is not a per-sequence renormalisation).
- **scope** (``TokenWeighting`` mixin): ``"batch"`` computes the weights once on the whole rollout batch in
  ``prepare`` — from the rollout policy's values (``old_logprobs``, ``old_entropy``), which equal the current ones
  at the first update — and stores them in ``batch.extras``, which mini-/micro-batching slices; the normaliser is
  then the rollout batch's (exact for a single mini-batch, a batch-level constant otherwise). ``"micro"`` computes
  them per micro-batch from the current policy's (detached) values, with the micro-batch's counts, as per-micro-
  batch reference implementations do.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch

from ..batch import RolloutBatch
from ..errors import ConfigError
from ..ops.masked import masked_mean
from ..registry import check_range

NORMALIZERS = ("all", "selected")
SCOPES = ("batch", "micro")
WITHIN = ("batch", "sequence")
RULES = ("count", "quantile")


def check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{name} = {value!r} is unknown; choose one of {', '.join(choices)}")


# --------------------------------------------------------------------------------------------- pure functions
def unit_ids(mask: torch.Tensor, units: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, T) int64 global unit id per token: ``units`` ids made unique per response (row); each token its own
    unit when ``units`` is None. Padding gets −1."""
    B, T = mask.shape
    valid = mask > 0
    if units is None:
        ids = torch.arange(B * T, device=mask.device).view(B, T)
    else:
        if units.shape != mask.shape:
            raise ValueError(f"units: expected shape {tuple(mask.shape)} like the mask, got {tuple(units.shape)}")
        u = units.long()
        if bool((u[valid] < 0).any()):
            raise ValueError("units: ids must be >= 0 on valid tokens")
        span = int(u[valid].max()) + 1 if bool(valid.any()) else 1
        ids = torch.arange(B, device=mask.device)[:, None] * span + u
    return torch.where(valid, ids, torch.full_like(ids, -1))


def unit_mean(values: torch.Tensor, mask: torch.Tensor, units: Optional[torch.Tensor]) -> torch.Tensor:
    """Each valid token's unit mean of ``values`` (detached), e.g. DART-GUI's step entropy; 0 on padding."""
    ids = unit_ids(mask, units)
    valid = ids >= 0
    flat_ids = ids[valid]
    uniq, inv = torch.unique(flat_ids, return_inverse=True)
    vals = values.detach().float()[valid]
    sums = torch.zeros(len(uniq), dtype=torch.float32, device=values.device).index_add_(0, inv, vals)
    cnts = torch.zeros(len(uniq), dtype=torch.float32, device=values.device).index_add_(0, inv, torch.ones_like(vals))
    out = torch.zeros_like(values, dtype=torch.float32)
    out[valid] = (sums / cnts)[inv]
    return out


def _select_flat(scores: torch.Tensor, ratio: float, rule: str) -> torch.Tensor:
    """Bool over a 1-D vector of unit scores: the top ⌈ρ·n⌉ (``count``) or those > the (1−ρ)-quantile."""
    n = scores.numel()
    out = torch.zeros(n, dtype=torch.bool, device=scores.device)
    if n == 0 or ratio <= 0:
        return out
    if rule == "count":
        k = min(n, max(1, math.ceil(ratio * n - 1e-9)))
        out[torch.topk(scores, k).indices] = True
        return out
    q = torch.quantile(scores.float(), 1.0 - ratio)
    return scores > q


def top_fraction(score: torch.Tensor, mask: torch.Tensor, ratio: float, *, within: str = "batch",
                 rule: str = "count", units: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Bool (B, T): the valid tokens of the top-ρ units by ``score`` (see the module docstring).

    With ``units`` the unit score is the mean of its tokens' scores and every token of a chosen unit is chosen.
    """
    check_range("top_fraction", "ratio", ratio, lo=0.0, hi=1.0)
    check_choice("top_fraction", "within", within, WITHIN)
    check_choice("top_fraction", "rule", rule, RULES)
    if score.shape != mask.shape:
        raise ValueError(f"score: expected shape {tuple(mask.shape)} like the mask, got {tuple(score.shape)}")
    ids = unit_ids(mask, units)
    s = unit_mean(score, mask, units) if units is not None else score.detach().float()
    chosen = torch.zeros_like(mask, dtype=torch.bool)
    rows = [slice(None)] if within == "batch" else [slice(i, i + 1) for i in range(mask.shape[0])]
    for r in rows:
        rid, rs = ids[r], s[r]
        valid = rid >= 0
        if not bool(valid.any()):
            continue
        uniq, first = _first_index(rid[valid])
        picked = _select_flat(rs[valid][first], ratio, rule)
        chosen[r] |= torch.isin(rid, uniq[picked]) & valid
    return chosen


def _first_index(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unique ids (sorted) and, for each, the index of one of its occurrences in ``ids``."""
    uniq, inv = torch.unique(ids, return_inverse=True)
    first = torch.full((len(uniq),), -1, dtype=torch.long, device=ids.device)
    first.scatter_(0, inv, torch.arange(len(ids), device=ids.device))
    return uniq, first


def normalise(weights: torch.Tensor, mask: torch.Tensor, normalizer: str) -> torch.Tensor:
    """``all``: w unchanged; ``selected``: w·N_all/Σ_valid w (0 everywhere if Σ w = 0). Padding → 0."""
    check_choice("normalise", "normalizer", normalizer, NORMALIZERS)
    valid = mask > 0
    w = torch.where(valid, weights.float(), torch.zeros((), dtype=torch.float32, device=weights.device))
    if normalizer == "all":
        return w
    total = float(w.sum())
    if total <= 0:
        return torch.zeros_like(w)
    return w * (float(valid.sum()) / total)


# --------------------------------------------------------------------------------------------- mixin
class TokenWeighting:
    """Mixin for objective terms that multiply the per-token loss by weights: ℓ' = w̃·ℓ, w̃ = normalise(w).

    Subclasses (dataclasses) declare fields ``scope`` and ``normalizer`` and implement
    ``token_weights(batch, current) -> (w (B, T), metrics)`` — ``current`` False at batch scope (use ``old_*``
    values), True at micro scope (use the current policy's values, detached).
    """

    extras_key: ClassVar[str] = ""
    scope: str
    normalizer: str

    def _check_selection_fields(self) -> None:
        check_choice(self.name, "scope", self.scope, SCOPES)  # type: ignore[attr-defined]
        check_choice(self.name, "normalizer", self.normalizer, NORMALIZERS)  # type: ignore[attr-defined]

    def token_weights(self, batch: RolloutBatch, current: bool) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _key(self) -> str:
        return self.extras_key or f"{self.name}_weight"  # type: ignore[attr-defined]

    def prepare(self, batch: RolloutBatch) -> RolloutBatch:
        if self.scope != "batch":
            return batch
        w, _ = self.token_weights(batch, current=False)
        w = normalise(w, batch.mask, self.normalizer)
        return batch.replace(extras={**batch.extras, self._key(): w.detach()})

    def weights_for(self, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The normalised weights of this (micro-)batch: from ``prepare``'s extras at batch scope."""
        if self.scope == "batch":
            key = self._key()
            if key not in batch.extras:
                raise ConfigError(f"objective term {self.name!r} with scope='batch' needs PolicyObjective.prepare() "  # type: ignore[attr-defined]
                                  "on the rollout batch before the update")
            w = batch.extras[key].float()
            metrics: dict[str, float] = {}
        else:
            w, metrics = self.token_weights(batch, current=True)
            w = normalise(w, batch.mask, self.normalizer)
        w = torch.where(batch.mask > 0, w, torch.zeros_like(w))
        metrics[f"select/{self.name}_frac"] = float(masked_mean((w > 0).float(), batch.mask))  # type: ignore[attr-defined]
        return w, metrics

    def apply(self, loss: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, dict[str, float]]:
        w, metrics = self.weights_for(batch)
        return loss * w.to(loss.dtype), metrics


def current_or_old(batch: RolloutBatch, name: str, current: bool) -> torch.Tensor:
    """``batch.<name>`` (detached) when ``current``, else ``batch.old_<name>`` — e.g. ``entropy``/``old_entropy``,
    ``logprobs``/``old_logprobs`` — with a clear error when the field is absent."""
    field_name = name if current else f"old_{name}"
    batch.require(field_name, who="token selection")
    return getattr(batch, field_name).detach().float()


__all__ = ["NORMALIZERS", "ENTROPY_SOURCES", "check_entropy_source", "check_quantile", "high_entropy_mask", "token_entropy", "SCOPES", "WITHIN", "RULES", "top_fraction", "unit_ids", "unit_mean", "normalise",
           "TokenWeighting", "current_or_old", "check_choice"]


# ------------------------------------------------------------------ entropy-based selection (clip and KL rules)
ENTROPY_SOURCES = ("current", "old")


def check_entropy_source(owner: str, source: str) -> None:
    if source not in ENTROPY_SOURCES:
        raise ConfigError(f"{owner}.entropy = {source!r} is unknown; choose one of {', '.join(ENTROPY_SOURCES)}")


def token_entropy(batch: RolloutBatch, source: str, who: str) -> torch.Tensor:
    """The detached per-token entropy a selection rule reads: ``current`` (π_θ, ``batch.entropy``, what the Archer
    and ASPO code use) or ``old`` (π_old, ``batch.old_entropy``, fixed for the whole rollout batch)."""
    name = "entropy" if source == "current" else "old_entropy"
    batch.require(name, who=who)
    return getattr(batch, name).detach().float()


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float = 0.8) -> torch.Tensor:
    """Bool (B, T): the valid tokens whose entropy is *above* their own response's ``quantile``-quantile (linear
    interpolation over the response's valid tokens, ``torch.nanquantile``) — the top 20 % "forking" tokens of
    Archer (2507.15778), ASPO (2510.06062) and ESPO (2512.00499) at the default 0.8. Ties at the quantile count
    as low-entropy, as in the reference code (``H > q80``)."""
    valid = mask > 0
    ent = torch.where(valid, entropy.detach().float(), torch.full_like(entropy, float("nan"), dtype=torch.float32))
    q = torch.nanquantile(ent, quantile, dim=-1, keepdim=True)  # (B, 1); NaN for an empty response
    return (ent > q) & valid


def check_quantile(owner: str, q: float) -> None:
    check_range(owner, "quantile", q, lo=0.0, hi=1.0)

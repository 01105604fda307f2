"""Entropy controllers: one feedback mechanism shared by every method that steers entropy toward a target.

A controller turns a measured entropy H_k (one number per RL step) into an actuator value u_k — an entropy-bonus
coefficient (Skywork-OR1's adaptive entropy, AER, AEnt), a loss weight (Jin et al.'s positive-advantage weight
λ, EntroPIC's α) or a gate (UloRL's "entropy below σ").

Error, with a dead band [H_low, H_high] (H_low = H_high = H* for a point target):

    e_k = min(0, H_k − H_low) + max(0, H_k − H_high)        (> 0: entropy too high, < 0: too low, 0 inside)

``law`` shapes the error before the gains: ``linear`` f(e) = e, ``sign`` f(e) = sign(e) (bang-bang steps).
Two update forms:

- ``positional`` (a textbook PI controller; EntroPIC, 2511.15248):
      u_k = clip(u₀ + K_p·f(e_k) + K_i·I_{k−1}, lo, hi),   I_k = I_{k−1} + f(e_k)
- ``incremental`` (velocity form: the output integrates, so clipping it is the anti-windup; Skywork-OR1
  2505.22312, AEnt 2509.03493, Jin et al. 2511.05993):
      u_{k+1} = clip(u_k + K_p·(f(e_k) − f(e_{k−1})) + K_i·f(e_k) − leak·(u_k − u₀), lo, hi)

Gains are signed: K_i < 0 raises u while entropy is too low (a bonus coefficient), K_i > 0 lowers it (a weight on
entropy-lowering tokens). ``anchor`` = ρ sets the target from the first measurement, H* = ρ·H₀ (AER's
"initial-anchored" target); ``warmup`` = W keeps u = u₀ for the first W committed steps (AEnt).

Timing, identical for every component: ``observe(H_k)`` when the step's entropy is known (in ``prepare`` from the
rollout batch's entropy, or in ``on_step_end`` from a quantity measured during the update), ``value()`` is the
actuator for the step's update, and ``commit()`` (in ``on_step_end``) folds the step's error into the state. The
state (u, I, previous error, step count, anchored target) round-trips through ``state_dict``, so a resumed run
continues the same control trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..batch import RolloutBatch
from ..errors import ConfigError
from ..ops.masked import masked_mean
from ..registry import check_range

LAWS = ("linear", "sign")
FORMS = ("positional", "incremental")


@dataclass
class EntropyController:
    """Band/point-target P·I controller of one scalar actuator; see the module docstring for the equations."""

    low: float
    """H_low: lower edge of the target band, in the measured entropy's units (nats per token); = high for a point."""
    high: float
    """H_high: upper edge of the target band (≥ low); e = 0 while H_k lies inside [low, high]."""
    kp: float = 0.0
    """K_p: proportional gain on f(e), signed like K_i."""
    ki: float = 0.0
    """K_i: integral gain on f(e) (signed: K < 0 raises u while entropy is too low)."""
    init: float = 0.0
    """u₀: the actuator's initial value, held during warm-up and the leak's anchor."""
    lo: float = -math.inf
    """Lower clip of the actuator u."""
    hi: float = math.inf
    """Upper clip of the actuator u."""
    law: str = "linear"
    """Error shaping before the gains: 'linear' f(e) = e or 'sign' f(e) = sign(e) (bang-bang steps)."""
    form: str = "incremental"
    """'positional' (textbook PI on u₀) or 'incremental' (velocity form; clipping the output is the anti-windup)."""
    leak: float = 0.0
    """Pull of u back toward u₀ per step, −leak·(u − u₀) (incremental form)."""
    warmup: int = 0
    """W: committed steps with u = u₀ before the controller acts."""
    anchor: Optional[float] = None
    """ρ: set the point target from the first measurement, H* = ρ·H₀ (AER); None = use low/high."""
    owner: str = "controller"
    """Name used in error messages (the owning component's)."""
    # state
    _u: float = field(init=False, default=0.0)
    _integral: float = field(init=False, default=0.0)
    _prev: float = field(init=False, default=0.0)
    _steps: int = field(init=False, default=0)
    _anchored: Optional[float] = field(init=False, default=None)
    _pending: Optional[float] = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.law not in LAWS:
            raise ConfigError(f"{self.owner}: control law {self.law!r} is unknown; choose one of {', '.join(LAWS)}")
        if self.form not in FORMS:
            raise ConfigError(f"{self.owner}: controller form {self.form!r} is unknown; choose one of "
                              f"{', '.join(FORMS)}")
        if self.anchor is None and not self.low <= self.high:
            raise ConfigError(f"{self.owner}: target band low ({self.low}) must be <= high ({self.high})")
        if not self.lo <= self.hi:
            raise ConfigError(f"{self.owner}: bounds lo ({self.lo}) must be <= hi ({self.hi})")
        if not self.lo <= self.init <= self.hi:
            raise ConfigError(f"{self.owner}: initial value {self.init} is outside its bounds [{self.lo}, {self.hi}]")
        if self.anchor is not None:
            check_range(self.owner, "anchor", self.anchor, lo=0.0, lo_open=True)
        check_range(self.owner, "leak", self.leak, lo=0.0, hi=1.0)
        if self.warmup < 0:
            raise ConfigError(f"{self.owner}.warmup = {self.warmup} must be >= 0")
        self._u = float(self.init)

    # ------------------------------------------------------------------ the law
    @property
    def band(self) -> tuple[float, float]:
        """(H_low, H_high); with an anchor, ρ·H₀ twice (NaN before the first measurement)."""
        if self.anchor is not None:
            h = float("nan") if self._anchored is None else self.anchor * self._anchored
            return h, h
        return self.low, self.high

    def error(self, measured: float) -> float:
        """e = min(0, H − H_low) + max(0, H − H_high); 0 before an anchored target exists."""
        lo, hi = self.band
        if math.isnan(lo):
            lo = hi = self.anchor * measured  # type: ignore[operator]
        return min(0.0, measured - lo) + max(0.0, measured - hi)

    def _f(self, e: float) -> float:
        if self.law == "sign":
            return float((e > 0) - (e < 0))
        return e

    def _clip(self, u: float) -> float:
        return min(self.hi, max(self.lo, u))

    # ------------------------------------------------------------------ per step
    def observe(self, measured: float) -> float:
        """Record this step's measurement (the last call before ``commit`` wins); returns its error."""
        measured = float(measured)
        if not math.isfinite(measured):
            raise ValueError(f"{self.owner}: measured entropy must be finite, got {measured}")
        if self.anchor is not None and self._anchored is None:
            self._anchored = measured
        self._pending = measured
        return self.error(measured)

    @property
    def pending(self) -> Optional[float]:
        return self._pending

    def value(self) -> float:
        """The actuator for this step's update: u₀ during warm-up; positional: clip(u₀ + K_p·f(e_k) + K_i·I);
        incremental: the current state u_k (the update from e_k happens at ``commit``)."""
        if self._steps < self.warmup:
            return float(self.init)
        if self.form == "positional":
            e = 0.0 if self._pending is None else self._f(self.error(self._pending))
            return self._clip(self.init + self.kp * e + self.ki * self._integral)
        return self._u

    def commit(self) -> None:
        """Fold the observed error into the state (once per RL step); no-op if nothing was observed."""
        if self._pending is None:
            return
        f = self._f(self.error(self._pending))
        if self._steps >= self.warmup:
            if self.form == "positional":
                self._integral += f
            else:
                du = self.kp * (f - self._prev) + self.ki * f - self.leak * (self._u - self.init)
                self._u = self._clip(self._u + du)
            self._prev = f
        self._steps += 1
        self._pending = None

    def metrics(self, prefix: str) -> dict[str, float]:
        out = {f"{prefix}/value": self.value()}
        if self._pending is not None:
            out[f"{prefix}/error"] = self.error(self._pending)
        lo, hi = self.band
        if not math.isnan(lo):
            out[f"{prefix}/target"] = 0.5 * (lo + hi)
        return out

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"u": self._u, "integral": self._integral, "prev": self._prev, "steps": self._steps,
                "anchored": self._anchored}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        missing = {"u", "integral", "prev", "steps", "anchored"} - set(state)
        if missing:
            raise ConfigError(f"{self.owner}: controller state lacks {sorted(missing)}")
        self._u = float(state["u"])
        self._integral = float(state["integral"])
        self._prev = float(state["prev"])
        self._steps = int(state["steps"])
        self._anchored = None if state["anchored"] is None else float(state["anchored"])
        self._pending = None


def batch_entropy(batch: RolloutBatch, field_name: str = "old_entropy") -> float:
    """The step's measured entropy: token-mean of ``batch.<field_name>`` over the valid tokens of the whole
    rollout batch (the same quantity the trainer logs as ``entropy/mean``)."""
    batch.require(field_name, who="entropy controller")
    return float(masked_mean(getattr(batch, field_name).detach().float(), batch.mask))


class TokenMeanMeter:
    """Token-weighted mean of a per-token quantity over every micro-batch of one RL step (for controllers that
    measure something only the update's forward pass produces, e.g. AEnt's clamped entropy)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0.0

    def add(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        m = mask.float()
        self.total += float((values.detach().float() * m).sum())
        self.count += float(m.sum())

    def pop(self) -> Optional[float]:
        """The mean since the last pop (None if nothing was added)."""
        if self.count <= 0:
            return None
        out = self.total / self.count
        self.total, self.count = 0.0, 0.0
        return out


__all__ = ["EntropyController", "LAWS", "FORMS", "batch_entropy", "TokenMeanMeter"]

"""entrolab's objective as verl losses.

Two shapes, both computing exactly ``PolicyObjective.__call__`` on a ``RolloutBatch`` built from verl's tensors:

- :func:`policy_loss` — verl's policy-loss signature ``(old_log_prob, log_prob, advantages, response_mask,
  loss_agg_mode, config, rollout_is_weights) -> (loss, metrics)``, registered per method as ``entrolab/<method>``
  (``plugin.py``) for the methods whose loss needs nothing else (``support.py``: the ``policy loss`` route).
- :class:`EntrolabLoss` — the whole per-micro-batch loss ``loss_fn(model_output, data, dp_group)`` that replaces
  verl's ``workers/utils/losses.py:ppo_loss`` through ``ActorRolloutRefWorker.set_loss_fn``. It maps verl's fields to
  the engine contract: ``model_output["log_probs"]``/``["entropy"]`` → ``logprobs``/``entropy`` (current policy, with
  gradient), ``old_log_probs`` → ``old_logprobs``, the batch's ``entropy`` (verl stores the rollout policy's
  entropies there when it recomputes old log-probs) → ``old_entropy``, ``ref_log_prob`` → ``ref_logprobs``,
  ``advantages``, ``response_mask``. It carries the controller state the driver sends each step.

Scaling under data parallelism is verl's ``agg_loss``: the mini-batch's global token count (``batch_num_tokens``) and
sequence count (``global_batch_size``) normalise each micro-batch, and the loss is multiplied by ``dp_size`` because
FSDP averages gradients across ranks — so the summed gradient is that of the global mini-batch loss.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Mapping, Optional

import torch

from ... import methods
from ...batch import RolloutBatch
from ...errors import ConfigError
from ...objective import PolicyObjective
from ..support import refuse

OVERRIDES_ENV = "ENTROLAB_OVERRIDES"
"""JSON object, method → its dotted overrides (``{"clip_cov": {"clip.ratio": 1e-3}}``), read by the
``entrolab/<method>`` policy losses in every process (set it in Ray's runtime env; the recipe passes overrides
itself)."""

_OBJECTIVES: dict[tuple, PolicyObjective] = {}
_WARNED: set[str] = set()


def env_overrides(method: str) -> dict[str, Any]:
    """``method``'s overrides from :data:`OVERRIDES_ENV` (none when unset or not named there)."""
    raw = os.environ.get(OVERRIDES_ENV, "").strip()
    if not raw:
        return {}
    example = '{"clip_cov": {"clip.ratio": 0.001}}'
    try:
        out = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{OVERRIDES_ENV} is not valid JSON ({e.msg}); give an object such as {example}") from None
    if not isinstance(out, dict) or not all(isinstance(v, dict) for v in out.values()):
        raise ConfigError(f"{OVERRIDES_ENV} must map method names to objects of dotted overrides, e.g. {example}")
    return dict(out.get(method, {}))


def objective_for(method: str | list[str], overrides: Optional[Mapping[str, Any]] = None) -> PolicyObjective:
    """The process's objective for ``method`` with ``overrides`` (built once per process)."""
    names = [method] if isinstance(method, str) else list(method)
    ov = dict(overrides or {})
    key = (tuple(names), json.dumps(ov, sort_keys=True, default=str))
    if key not in _OBJECTIVES:
        _OBJECTIVES[key] = methods.build(names, **ov)
    return _OBJECTIVES[key]


def _warn_once(key: str, msg: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(msg, stacklevel=3)


def _global_batch_info(config: Any) -> dict[str, Any]:
    info = getattr(config, "global_batch_info", None) if config is not None else None
    return dict(info or {})


def _num(x: Any) -> Optional[float]:
    if x is None:
        return None
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def objective_loss(objective: PolicyObjective, batch: RolloutBatch, *, dp_size: int = 1,
                   loss_scale_factor: Optional[float] = None, prepare: bool = True
                   ) -> tuple[torch.Tensor, dict[str, float]]:
    """``objective(prepare(batch))`` scaled like verl's ``agg_loss`` (× ``dp_size``); ``loss_scale_factor`` is the
    constant length of ``seq-mean-token-sum-norm`` when the method leaves it unset. ``prepare=False`` when the
    driver has prepared the objective on the whole rollout batch (the recipe)."""
    if objective.norm_length is None and loss_scale_factor is not None:
        objective.norm_length = float(loss_scale_factor)
    loss, metrics = objective(objective.prepare(batch) if prepare else batch)
    return loss * dp_size, metrics


def _check_agg(name: str, objective: PolicyObjective, loss_agg_mode: Optional[str]) -> None:
    if loss_agg_mode and loss_agg_mode != objective.aggregation:
        _warn_once(f"agg:{name}", f"entrolab/{name} aggregates the loss with {objective.aggregation} (its method's "
                                  f"setting); verl's loss_agg_mode={loss_agg_mode} is not used. Set "
                                  f'{OVERRIDES_ENV}=\'{{"{name}": {{"aggregation": "{loss_agg_mode}"}}}}\' to change it.')


def policy_loss(method: str, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Any = None,
                rollout_is_weights: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
    """verl policy loss ``entrolab/<method>``: entrolab's objective on verl's micro-batch tensors."""
    if rollout_is_weights is not None:
        raise ConfigError(f"entrolab/{method} does not apply verl's rollout-correction weights; unset "
                          "algorithm.rollout_correction or run the method through the native trainer")
    objective = objective_for(method, env_overrides(method))
    _check_agg(method, objective, loss_agg_mode)
    info = _global_batch_info(config)
    mask = response_mask.to(torch.float32)
    B = mask.shape[0]
    batch = RolloutBatch(
        response_ids=torch.zeros(mask.shape, dtype=torch.long, device=mask.device), response_mask=mask,
        old_logprobs=old_log_prob.detach(), rewards=torch.zeros(B, device=mask.device),
        group_ids=torch.arange(B, device=mask.device), logprobs=log_prob, advantages=advantages.detach(),
        global_num_tokens=_num(info.get("batch_num_tokens")), global_num_seqs=_num(info.get("global_batch_size")),
    )
    return objective_loss(objective, batch, dp_size=int(_num(info.get("dp_size")) or 1),
                          loss_scale_factor=info.get("loss_scale_factor"))


# --------------------------------------------------------------------------------------------- whole loss
def _padded(data: Any, key: str, like: torch.Tensor) -> Optional[torch.Tensor]:
    """A response-aligned field of verl's micro-batch as a padded (B, T) tensor, or None when absent."""
    if key not in data.keys():
        return None
    t = data[key]
    if getattr(t, "is_nested", False):
        t = torch.nested.to_padded_tensor(t, 0.0)
    if t.shape != like.shape:
        out = torch.zeros_like(like, dtype=t.dtype)
        b, n = min(t.shape[0], out.shape[0]), min(t.shape[1], out.shape[1])
        out[:b, :n] = t[:b, :n]
        t = out
    return t


def _output(model_output: Mapping[str, Any], key: str, data: Any) -> Optional[torch.Tensor]:
    t = model_output.get(key) if hasattr(model_output, "get") else None
    if t is None:
        return None
    if getattr(t, "is_nested", False) or t.dim() == 1:
        from verl.workers.utils.padding import no_padding_2_padding

        return no_padding_2_padding(t, data)
    return t


def _scalar(data: Any, key: str) -> Optional[float]:
    try:
        v = data[key]
    except (KeyError, AttributeError):
        return None
    return _num(v)


class EntrolabLoss:
    """verl whole loss (``set_loss_fn``): entrolab's objective on one micro-batch. Picklable; the recipe sends a new
    one to every rank each step carrying the driver's objective after its ``prepare`` on the whole rollout batch
    (controllers have observed the step's entropy, state is the driver's), so every rank computes the loss with the
    same controller values. Without a snapshot a rank builds the method's objective once and loads ``state``."""

    def __init__(self, method: str | list[str], overrides: Optional[Mapping[str, Any]] = None,
                 state: Optional[Mapping[str, Any]] = None, step: int = 0):
        self.method = [method] if isinstance(method, str) else list(method)
        self.overrides = dict(overrides or {})
        self.state = dict(state or {})
        self.step = step
        self.snapshot: Optional[bytes] = None
        refuse(methods.build(self.method, **self.overrides), "verl")

    def with_objective(self, objective: PolicyObjective, step: int) -> "EntrolabLoss":
        """The same loss carrying ``objective`` (pickled) and its state after ``step``: what the ranks get."""
        import pickle

        out = EntrolabLoss.__new__(EntrolabLoss)
        out.method, out.overrides, out.step = self.method, self.overrides, step
        out.state = objective.state_dict()
        out.snapshot = pickle.dumps(objective)
        return out

    def objective(self) -> PolicyObjective:
        """This rank's objective for the loss's step (unpickled once per step)."""
        import pickle

        key = (tuple(self.method), json.dumps(self.overrides, sort_keys=True, default=str), "step", self.step,
               self.snapshot is not None)
        if key not in _OBJECTIVES:
            for k in [k for k in _OBJECTIVES if len(k) > 2]:  # keep one step's snapshot per process
                del _OBJECTIVES[k]
            if self.snapshot is not None:
                _OBJECTIVES[key] = pickle.loads(self.snapshot)
            else:
                obj = methods.build(self.method, **self.overrides)
                obj.load_state_dict(self.state)
                _OBJECTIVES[key] = obj
        return _OBJECTIVES[key]

    def __call__(self, model_output: Mapping[str, Any], data: Any, dp_group: Any = None, config: Any = None
                 ) -> tuple[torch.Tensor, dict[str, Any]]:
        objective = self.objective()
        log_prob = _output(model_output, "log_probs", data)
        if log_prob is None:
            raise ConfigError("verl's model output has no log_probs; entrolab's loss needs them")
        entropy = _output(model_output, "entropy", data)
        if objective.needs_entropy_grad and entropy is None:
            raise ConfigError(f"{'+'.join(self.method)} needs the policy's entropy with gradient: set "
                              "actor_rollout_ref.actor.calculate_entropy=True")
        mask = _padded(data, "response_mask", log_prob)
        if mask is None:
            raise ConfigError("verl's micro-batch has no response_mask")
        mask = mask.to(torch.float32)
        B = mask.shape[0]
        old = _padded(data, "old_log_probs", log_prob)
        adv = _padded(data, "advantages", log_prob)
        ref = _padded(data, "ref_log_prob", log_prob)
        old_entropy = _padded(data, "entropy", log_prob)
        if objective.needs_reference and ref is None:
            raise ConfigError(f"{'+'.join(self.method)} needs the reference policy's log-probs: enable verl's "
                              "reference model (actor_rollout_ref.actor.use_kl_loss=True with kl_loss_coef=0)")
        if "old_entropy" in objective.requires and old_entropy is None:
            raise ConfigError(f"{'+'.join(self.method)} needs the rollout policy's entropies (the batch's 'entropy' "
                              "field that verl writes when it recomputes old log-probs)")
        responses = _padded(data, "responses", log_prob)
        batch = RolloutBatch(
            response_ids=(responses.long() if responses is not None
                          else torch.zeros(mask.shape, dtype=torch.long, device=mask.device)),
            response_mask=mask, old_logprobs=old.detach().float(), rewards=torch.zeros(B, device=mask.device),
            group_ids=torch.arange(B, device=mask.device), logprobs=log_prob.float(),
            entropy=None if entropy is None else entropy.float(),
            old_entropy=None if old_entropy is None else old_entropy.detach().float(),
            ref_logprobs=None if ref is None else ref.detach().float(), advantages=adv.detach().float(),
            step=self.step, global_num_tokens=_scalar(data, "batch_num_tokens"),
            global_num_seqs=_scalar(data, "global_batch_size"),
        )
        loss, metrics = objective_loss(objective, batch, dp_size=int(_scalar(data, "dp_size") or 1),
                                       loss_scale_factor=getattr(config, "loss_scale_factor", None), prepare=False)
        try:
            from verl.utils.metric import AggregationType, Metric

            wrapped: dict[str, Any] = Metric.from_dict(metrics, aggregation=AggregationType.MEAN)
        except ImportError:  # the loss is also usable without verl's metric types
            wrapped = dict(metrics)
        return loss, wrapped

"""Print the anchors' numbers for catalog V (issue 15): verl 0.9.1's and TRL 1.16's own loss, gradient and advantage
functions on the fixed inputs of ``tests/anchor_inputs.py``. ``tests/test_methods_baselines.py`` holds the printed
numbers, so CI checks entrolab against them without installing either anchor. Nothing here is imported by entrolab.

Run it in a scratch environment (never entrolab's own), e.g.::

    python3 -m venv /tmp/venv-anchor --system-site-packages
    /tmp/venv-anchor/bin/pip install -c constraints.txt --no-deps verl==0.9.1 trl==1.16.0
    /tmp/venv-anchor/bin/pip install -c constraints.txt omegaconf codetiming tensordict
    /tmp/venv-anchor/bin/python scripts/anchor_numbers.py

verl's package ``__init__`` starts Ray; only ``verl.trainer.ppo.core_algos`` is needed, so the package is entered
without running its ``__init__`` and Ray's modules are stubbed (nothing here uses them).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections import defaultdict
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import anchor_inputs as I  # noqa: E402


def load_verl():
    root = Path(importlib.util.find_spec("trl").origin).parent.parent / "verl"
    pkg = types.ModuleType("verl")
    pkg.__path__ = [str(root)]
    sys.modules["verl"] = pkg
    for name in ("ray", "ray.util", "ray.actor", "ray.util.placement_group", "ray.util.scheduling_strategies",
                 "ray.experimental", "ray.experimental.state", "ray.experimental.state.api", "ray._private",
                 "ray.runtime_env"):
        sys.modules[name] = mock.MagicMock()
    from verl.trainer.ppo import core_algos
    from verl.workers.config import ActorConfig
    return core_algos, ActorConfig


def r(t, nd=7):
    return np.round(t.detach().double().numpy(), nd).tolist() if isinstance(t, torch.Tensor) else round(float(t), nd)


def loss_inputs():
    mask = (torch.arange(4)[None] < torch.tensor(I.LENGTHS)[:, None]).float()
    old = torch.tensor(I.OLD_LOGPROBS)
    logp = (old + torch.tensor(I.LOG_RATIO)).requires_grad_(True)
    adv = torch.tensor(I.SEQ_ADVANTAGES)[:, None] * mask
    return old, logp, adv, mask


def verl_losses(core, ActorConfig) -> dict:
    from verl.workers.config.actor import PolicyLossConfig

    out = {}
    base = dict(strategy="fsdp", rollout_n=1, ppo_micro_batch_size_per_gpu=1)
    cases = {
        "gspo": ("gspo", "seq-mean-token-mean", dict(clip_ratio_low=3e-4, clip_ratio_high=4e-4)),
        "gspo_eps02": ("gspo", "seq-mean-token-mean", dict(clip_ratio_low=0.2, clip_ratio_high=0.2)),
        "cispo": ("cispo", "token-mean", dict(clip_ratio_low=1.0, clip_ratio_high=4.0)),
        "cispo_eps02": ("cispo", "token-mean", dict(clip_ratio_low=0.2, clip_ratio_high=0.2)),
        "sapo": ("sapo", "seq-mean-token-mean", dict()),
        "gmpo": ("geo_mean", "token-mean", dict(clip_ratio=0.4, clip_ratio_low=0.4, clip_ratio_high=0.4)),
        "gpg": ("gpg", "token-mean", dict()),
        "dppo_tv": ("dppo_tv", "token-mean", dict(clip_ratio=0.15, clip_ratio_low=0.15, clip_ratio_high=0.15,
                                                  clip_ratio_c=20.0)),
        "dppo_kl": ("dppo_kl", "token-mean", dict(clip_ratio=0.05, clip_ratio_low=0.05, clip_ratio_high=0.05,
                                                  clip_ratio_c=20.0)),
        "dro": ("dro", "token-mean", dict()),
    }
    for key, (mode, agg, kw) in cases.items():
        if mode == "dro":
            kw = {**kw, "policy_loss": PolicyLossConfig(loss_mode="dro", dro_beta=0.05)}
        cfg = ActorConfig(**base, **kw)
        old, logp, adv, mask = loss_inputs()
        loss, metrics = core.get_policy_loss_fn(mode)(old_log_prob=old, log_prob=logp, advantages=adv,
                                                       response_mask=mask, loss_agg_mode=agg, config=cfg)
        loss.backward()
        out[key] = {"loss": r(loss), "grad": r(logp.grad * mask), **{k: r(v) for k, v in metrics.items()}}
    return out


class FakeAccelerator:
    num_processes = 1

    def reduce(self, t, reduction="sum"):
        return t

    def gather(self, t):
        return t

    gather_for_metrics = gather


def trl_loss(loss_type: str, level: str = "token", rows=None, accumulation: int = 1, **args) -> tuple:
    from trl.trainer.grpo_trainer import GRPOTrainer

    old, logp, adv, mask = loss_inputs()
    rows = list(range(len(I.LENGTHS))) if rows is None else rows
    old, mask = old[rows], mask[rows]
    logp_rows = logp[rows]
    seq_adv = torch.tensor(I.SEQ_ADVANTAGES)[rows]
    settings = dict(delta=None, sapo_temperature_pos=1.0, sapo_temperature_neg=1.05, vespo_k_pos=2.0,
                    vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0, use_bias_correction_kl=False,
                    steps_per_generation=accumulation)
    settings.update(args)
    fake = types.SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level=level, beta=0.0,
        loss_type=loss_type, epsilon_low=settings.pop("epsilon_low", 0.2),
        epsilon_high=settings.pop("epsilon_high", 0.2),
        args=types.SimpleNamespace(**settings), use_vllm=False, model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=accumulation, accelerator=FakeAccelerator(), _entropy_bonus_enabled=False,
        aux_loss_enabled=False, _metrics=defaultdict(lambda: defaultdict(list)), max_completion_length=4,
        get_off_policy_mask=GRPOTrainer.get_off_policy_mask, get_gamma_weights=GRPOTrainer.get_gamma_weights,
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp_rows, torch.zeros_like(logp_rows), None),
    )
    inputs = {"prompt_ids": torch.zeros(len(rows), 1, dtype=torch.long), "prompt_mask": torch.ones(len(rows), 1),
              "completion_ids": torch.zeros(len(rows), 4, dtype=torch.long), "completion_mask": mask,
              "advantages": seq_adv, "old_per_token_logps": old,
              "num_items_in_batch": torch.tensor(float(sum(I.LENGTHS)))}
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    return loss, logp, mask


def trl_losses() -> dict:
    out = {}
    cases = {
        "gspo_eps02": ("grpo", "sequence", {}),
        "luspo_eps02": ("luspo", "sequence", {}),
        "cispo": ("cispo", "token", {"epsilon_high": 5.0}),
        "sapo": ("sapo", "token", {}),
        "vespo": ("vespo", "token", {}),
    }
    for key, (lt, level, kw) in cases.items():
        loss, logp, mask = trl_loss(lt, level, **kw)
        loss.backward()
        out[key] = {"loss": r(loss), "grad": r(logp.grad * (torch.arange(4)[None] < torch.tensor(I.LENGTHS)[:, None]))}
    # bnpo: two micro-batches of two rows each (gradient accumulation 2): the step's loss is the sum of both
    total, grad = 0.0, None
    for rows in ([0, 1], [2, 3]):
        loss, logp, _ = trl_loss("bnpo", "token", rows=rows, accumulation=2)
        loss.backward()
        total += float(loss)
        grad = logp.grad if grad is None else grad + logp.grad
    mask = (torch.arange(4)[None] < torch.tensor(I.LENGTHS)[:, None]).float()
    out["bnpo_2x2"] = {"loss": r(torch.tensor(total)), "grad": r(grad * mask)}
    return out


def verl_advantages(core) -> dict:
    T = 4
    mask = (torch.arange(T)[None] < torch.tensor(I.ADV_LENGTHS)[:, None]).float()
    rewards = torch.tensor(I.ADV_REWARDS)
    last = torch.tensor(I.ADV_LENGTHS) - 1
    token_rewards = torch.zeros(len(rewards), T)
    token_rewards[torch.arange(len(rewards)), last] = rewards
    index = np.array(I.ADV_GROUPS)
    out = {}
    values = torch.tensor(I.VALUES)
    for key, g, lam in (("gae", 1.0, 1.0), ("gae_g095_l09", 0.95, 0.9)):
        adv, ret = core.compute_gae_advantage_return(token_rewards, values, mask, torch.tensor(g), torch.tensor(lam))
        out[key] = {"advantages": r(adv * mask), "returns": r(ret * mask)}
    for key, g in (("reinforce_pp", 1.0), ("reinforce_pp_g09", 0.9)):
        adv, _ = core.compute_reinforce_plus_plus_outcome_advantage(token_rewards, mask,
                                                                     config=types.SimpleNamespace(gamma=g))
        out[key] = r(adv * mask)
    adv, _ = core.compute_remax_outcome_advantage(token_rewards, torch.tensor(I.GREEDY_REWARDS), mask)
    out["remax"] = r(adv * mask)
    out["opo"] = r(core.compute_opo_outcome_advantage(token_rewards, mask, index)[0] * mask)
    out["gpg"] = r(core.compute_gpg_outcome_advantage(token_rewards.clone(), mask, index)[0] * mask)
    out["grpo_passk"] = r(core.compute_grpo_passk_outcome_advantage(
        token_rewards, mask, index, config={"norm_adv_by_std_in_grpo": True})[0] * mask)
    out["grpo_passk_nostd"] = r(core.compute_grpo_passk_outcome_advantage(
        token_rewards, mask, index, config={"norm_adv_by_std_in_grpo": False})[0] * mask)
    for key, zero_tail in (("optimal_token_baseline", True), ("optimal_token_baseline_no_tail", False)):
        adv, _ = core.compute_optimal_token_baseline_advantage(
            token_rewards, mask, index, old_log_probs=torch.tensor(I.ADV_OLD_LOGPROBS),
            sum_pi_squared=torch.tensor(I.SUM_PI_SQUARED), handle_zero_tail=zero_tail)
        out[key] = r(adv * mask)
    P = 2
    batch = {"prompts": torch.zeros(len(rewards), P, dtype=torch.long),
             "attention_mask": torch.cat([torch.ones(len(rewards), P), mask], 1).long()}
    for key, weights in (("gdpo", None), ("gdpo_w", [1.0, 0.5])):
        cfg = {"gdpo_reward_keys": ["correct", "format"], "gdpo_reward_weights": weights}
        adv, _ = core.compute_gdpo_outcome_advantage(token_rewards, mask, index, config=cfg, batch=batch,
                                                     non_tensor_batch={"correct": I.CORRECT, "format": I.FORMAT})
        out[key] = r(adv * mask)
    vpreds = torch.tensor(I.VPREDS).requires_grad_(True)
    _, returns = core.compute_gae_advantage_return(token_rewards, values, mask, torch.tensor(1.0), torch.tensor(1.0))
    loss, frac = core.compute_value_loss(vpreds, returns, values, mask, cliprange_value=0.5)
    loss.backward()
    out["value_loss"] = {"loss": r(loss), "clipfrac": r(frac), "grad": r(vpreds.grad * mask)}
    return out


def main() -> None:
    core, ActorConfig = load_verl()
    import trl
    import verl  # noqa: F401

    out = {"versions": {"trl": trl.__version__},
           "verl_losses": verl_losses(core, ActorConfig), "trl_losses": trl_losses(),
           "verl_advantages": verl_advantages(core)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

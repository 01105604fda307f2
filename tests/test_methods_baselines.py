"""Method catalog V (issue 15): every policy loss and advantage estimator of verl 0.9.1 and TRL 1.16 the catalog
lacked, including PPO with a value model. For each: its formula on a hand-computed case, equality with its anchor
on the fixed inputs of ``anchor_inputs.py`` (loss, gradient, advantages — the anchors' numbers below were computed
once by ``scripts/anchor_numbers.py`` from the installed verl 0.9.1 and TRL 1.16; CI never installs them), its
entropy direction against GRPO on the toy, selection by name and composition with another knob.
"""

from __future__ import annotations

import json
import math
import warnings
from functools import lru_cache
from pathlib import Path

import anchor_inputs as I
import pytest
import torch
from batches import make_batch

from entrolab import methods
from entrolab.batch import BatchError, RolloutBatch
from entrolab.cli import main
from entrolab.engine.native import NativeEngine
from entrolab.errors import ConfigError
from entrolab.knobs.advantage.base import ADVANTAGES
from entrolab.knobs.clip.base import CLIPS
from entrolab.knobs.extras import RolloutContext
from entrolab.ops.masked import aggregate_loss
from entrolab.ops.value import clipped_value_loss, gae, outcome_token_rewards
from entrolab.toy import TabularPolicy, ToySettings, train_toy

DOCS = Path(__file__).resolve().parent.parent / "docs"
LOSS_METHODS = ["gspo", "luspo", "cispo", "sapo", "gmpo", "gpg", "dppo_tv", "dppo_kl", "dro", "vespo", "bnpo"]
ADVANTAGE_METHODS = ["gae", "ppo", "reinforce_pp", "remax", "opo", "optimal_token_baseline", "grpo_passk", "gdpo"]
NEW_METHODS = LOSS_METHODS + ADVANTAGE_METHODS

VERL_LOSSES = {  # verl 0.9.1 core_algos policy losses: aggregated loss and its gradient w.r.t. log π
    'gspo': (0.0246951,
     [[0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0]]),
    'gspo_eps02': (-0.0755541,
     [[0.0, 0.0, 0.0, 0.0],
      [0.0515649, 0.0515649, 0.0515649, 0.0],
      [-0.0525636, -0.0525636, 0.0, 0.0],
      [0.0662196, 0.0662196, 0.0662196, 0.0662196]]),
    'cispo': (-0.1454624,
     [[-0.1336428, -0.067032, -0.5, -0.1648721],
      [0.0326593, 0.0625603, 0.0527799, 0.0],
      [-0.0560652, -0.0186625, 0.0, 0.0],
      [0.0935145, 0.1142188, 0.0464379, 0.0889537]]),
    'cispo_eps02': (-0.3262821,
     [[-0.12, -0.08, -0.12, -0.12],
      [0.0430769, 0.0625603, 0.0527799, 0.0],
      [-0.0369231, -0.0246154, 0.0, 0.0],
      [0.0935145, 0.1015385, 0.0676923, 0.0889537]]),
    'sapo': (-0.2366261,
     [[-0.1055693, -0.05301, 0.0, -0.1207975],
      [0.0339131, 0.0672868, 0.0571721, 0.0],
      [-0.0772933, -0.0291824, 0.0, 0.0],
      [0.0757493, 0.089741, 0.0356905, 0.0722225]]),
    'gmpo': (-0.0429142,
     [[-0.0965471, -0.0965471, 0.0, 0.0],
      [0.0, 0.0533127, 0.0533127, 0.0],
      [0.0, -0.0475615, 0.0, 0.0],
      [0.0696148, 0.0696148, 0.0, 0.0696148]]),
    'gpg': (-0.3316154,
     [[-0.1, -0.1, -0.1, -0.1],
      [0.0538462, 0.0538462, 0.0538462, 0.0],
      [-0.0307692, -0.0307692, 0.0, 0.0],
      [0.0846154, 0.0846154, 0.0846154, 0.0846154]]),
    'dppo_tv': (-0.3074997,
     [[0.0, -0.067032, 0.0, 0.0],
      [0.0, 0.0625603, 0.0527799, 0.0],
      [-0.0560652, -0.0186625, 0.0, 0.0],
      [0.0935145, 0.1142188, 0.0, 0.0889537]]),
    'dppo_kl': (-0.2393419,
     [[-0.1336428, -0.067032, 0.0, 0.0],
      [0.0, 0.0625603, 0.0527799, 0.0],
      [-0.0560652, -0.0186625, 0.0, 0.0],
      [0.0935145, 0.1142188, 0.0, 0.0889537]]),
    'dro': (-0.3083856,
     [[-0.0988846, -0.1015385, -0.0876923, -0.0980769],
      [0.0519231, 0.0544231, 0.0537692, 0.0],
      [-0.0284615, -0.0326923, 0.0, 0.0],
      [0.085, 0.0857692, 0.0823077, 0.0848077]]),
}
TRL_LOSSES = {  # TRL 1.16 GRPOTrainer._compute_loss: loss and its gradient w.r.t. log π
    'gspo_eps02': (-0.0755541,
     [[0.0, 0.0, 0.0, 0.0],
      [0.0515649, 0.0515649, 0.0515649, 0.0],
      [-0.0525636, -0.0525636, 0.0, 0.0],
      [0.0662196, 0.0662196, 0.0662196, 0.0662196]]),
    'luspo_eps02': (-0.2466568,
     [[0.0, 0.0, 0.0, 0.0],
      [0.1546946, 0.1546946, 0.1546946, 0.0],
      [-0.1051271, -0.1051271, 0.0, 0.0],
      [0.2648785, 0.2648785, 0.2648785, 0.2648785]]),
    'cispo': (-0.1454624,
     [[-0.1336428, -0.067032, -0.5, -0.1648721],
      [0.0326593, 0.0625603, 0.0527799, 0.0],
      [-0.0560652, -0.0186625, 0.0, 0.0],
      [0.0935145, 0.1142188, 0.0464379, 0.0889537]]),
    'sapo': (-0.2366262,
     [[-0.1055693, -0.05301, 0.0, -0.1207975],
      [0.0339131, 0.0672868, 0.0571721, 0.0],
      [-0.0772933, -0.0291824, 0.0, 0.0],
      [0.0757493, 0.089741, 0.0356905, 0.0722225]]),
    'vespo': (-0.391758,
     [[0.0, 0.0, 0.0, 0.0],
      [0.0329392, 0.0329392, 0.0329392, 0.0],
      [-0.0274126, -0.0274126, 0.0, 0.0],
      [0.071286, 0.071286, 0.071286, 0.071286]]),
    'bnpo_2x2': (0.0850985,
     [[0.0, -0.062244, 0.0, 0.0],
      [0.0, 0.0580917, 0.0490099, 0.0],
      [0.0, -0.0202177, 0.0, 0.0],
      [0.1013073, 0.1237371, 0.0, 0.0963665]]),
}
VERL_ADVANTAGES = {  # verl 0.9.1 core_algos advantage estimators (advantages on valid tokens)
    'gae': [[2.245893, 1.557962, 1.213996, 0.5260651],
      [-0.8497973, 0.1820994, -1.537728, 0.0],
      [-0.8497973, -0.5058317, 0.0, 0.0],
      [-0.161866, 0.1820994, 0.0101166, -0.3338489],
      [-1.537728, 0.0, 0.0, 0.0],
      [0.1820994, 0.0101167, -0.3338489, 0.0]],
    'gae_returns': [[1, 1, 1, 1],
      [0.0, 0.0, 0.0, 0.0],
      [0.5, 0.5, 0.0, 0.0],
      [1, 1, 1, 1],
      [0.0, 0.0, 0.0, 0.0],
      [0.25, 0.25, 0.25, 0.0]],
    'gae_g095_l09': [[1.891408, 1.407079, 1.349547, 0.846028],
      [-0.7894039, 0.5497184, -1.640486, 0.0],
      [-0.9152528, -0.3972289, 0.0, 0.0],
      [-0.6622806, -0.02865, -0.002495, -0.1900194],
      [-1.640486, 0.0, 0.0, 0.0],
      [0.2596303, 0.1529122, -0.1900194, 0.0]],
    'gae_g095_l09_returns': [[0.752252, 0.8353825, 0.9215, 1],
      [0.0053675, 0.0285, 0.0, 0.0],
      [0.475, 0.5, 0.0, 0.0],
      [0.8360426, 0.8889387, 0.94525, 1],
      [0.0, 0.0, 0.0, 0.0],
      [0.2085012, 0.23275, 0.25, 0.0]],
    'reinforce_pp': [[0.9695661, 0.9695661, 0.9695661, 0.9695661],
      [-1.303899, -1.303899, -1.303899, 0.0],
      [-0.1671666, -0.1671666, 0.0, 0.0],
      [0.9695661, 0.9695661, 0.9695661, 0.9695661],
      [-1.303899, 0.0, 0.0, 0.0],
      [-0.7355329, -0.7355329, -0.7355329, 0.0]],
    'reinforce_pp_g09': [[0.5971696, 0.8086945, 1.043722, 1.304864],
      [-1.306554, -1.306554, -1.306554, 0.0],
      [-0.1314158, -0.0008449, 0.0, 0.0],
      [0.5971696, 0.8086945, 1.043722, 1.304864],
      [-1.306554, 0.0, 0.0, 0.0],
      [-0.7777418, -0.7189848, -0.6536994, 0.0]],
    'remax': [[0.5, 0.5, 0.5, 0.5],
      [-0.5, -0.5, -0.5, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [0.75, 0.75, 0.75, 0.75],
      [-0.25, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0]],
    'opo': [[0.4444444, 0.4444444, 0.4444444, 0.4444444],
      [-0.5555556, -0.5555556, -0.5555556, 0.0],
      [-0.0555556, -0.0555556, 0.0, 0.0],
      [0.40625, 0.40625, 0.40625, 0.40625],
      [-0.59375, 0.0, 0.0, 0.0],
      [-0.34375, -0.34375, -0.34375, 0.0]],
    'gpg': [[0.75, 0.75, 0.75, 0.75],
      [-0.75, -0.75, -0.75, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [0.8750001, 0.8750001, 0.8750001, 0.8750001],
      [-0.625, 0.0, 0.0, 0.0],
      [-0.25, -0.25, -0.25, 0.0]],
    'grpo_passk': [[0.999998, 0.999998, 0.999998, 0.999998],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [1.441151, 1.441151, 1.441151, 1.441151],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0]],
    'grpo_passk_nostd': [[0.5, 0.5, 0.5, 0.5],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0],
      [0.75, 0.75, 0.75, 0.75],
      [0.0, 0.0, 0.0, 0.0],
      [0.0, 0.0, 0.0, 0.0]],
    'optimal_token_baseline': [[0.6752875, 0.4702434, 0.5116562, 1],
      [-0.3247125, -0.5297566, -0.4883438, 0.0],
      [0.1752875, -0.0297566, 0.0, 0.0],
      [0.9294797, 0.4495777, 0.3073961, 1],
      [-0.0705203, 0.0, 0.0, 0.0],
      [0.1794797, -0.3004223, -0.4426039, 0.0]],
    'optimal_token_baseline_no_tail': [[0.6752875, 0.4702434, 0.5116562, 0.0],
      [-0.3247125, -0.5297566, -0.4883438, 0.0],
      [0.1752875, -0.0297566, 0.0, 0.0],
      [0.9294797, 0.4495777, 0.3073961, 0.0],
      [-0.0705203, 0.0, 0.0, 0.0],
      [0.1794797, -0.3004223, -0.4426039, 0.0]],
    'gdpo': [[1.469988, 1.469988, 1.469988, 1.469988],
      [-0.1959984, -0.1959984, -0.1959984, 0.0],
      [-1.861985, -1.861985, 0.0, 0.0],
      [-0.1959984, -0.1959984, -0.1959984, -0.1959984],
      [-0.1959984, 0.0, 0.0, 0.0],
      [-0.1959984, -0.1959984, -0.1959984, 0.0]],
    'gdpo_w': [[1.406603, 1.406603, 1.406603, 1.406603],
      [-0.5860845, -0.5860845, -0.5860845, 0.0],
      [-1.582428, -1.582428, 0.0, 0.0],
      [0.4102592, 0.4102592, 0.4102592, 0.4102592],
      [-0.5860845, 0.0, 0.0, 0.0],
      [-0.5860845, -0.5860845, -0.5860845, 0.0]],
}
VERL_VALUE_LOSS = (0.1181618, 0.0588235,  # compute_value_loss: loss, clipfrac, gradient
                   [[0.0, -0.0529412, -0.0058824, -0.0235294],
                    [0.0, 0.0235294, -0.0294118, 0.0],
                    [-0.0176471, 0.0529412, 0.0, 0.0],
                    [0.0117647, -0.0176471, -0.0411765, 0.0],
                    [0.0529412, 0.0, 0.0, 0.0],
                    [-0.0088235, -0.0147059, 0.0205882, 0.0]])


# ============================================================================================ inputs
def loss_batch(rows=None) -> tuple[RolloutBatch, torch.Tensor]:
    """The fixed policy-loss inputs as a batch (current log-probs with gradient)."""
    mask = (torch.arange(4)[None] < torch.tensor(I.LENGTHS)[:, None]).float()
    old = torch.tensor(I.OLD_LOGPROBS)
    logp = (old + torch.tensor(I.LOG_RATIO)).requires_grad_(True)
    adv = torch.tensor(I.SEQ_ADVANTAGES)[:, None] * mask
    b = RolloutBatch(response_ids=torch.zeros(4, 4, dtype=torch.long), response_mask=mask, old_logprobs=old,
                     rewards=torch.zeros(4), group_ids=torch.arange(4), logprobs=logp, advantages=adv)
    return b, logp


def advantage_batch(**extras) -> RolloutBatch:
    """The fixed advantage inputs (two groups of three) with the given extras."""
    mask = (torch.arange(4)[None] < torch.tensor(I.ADV_LENGTHS)[:, None]).float()
    return RolloutBatch(response_ids=torch.zeros(6, 4, dtype=torch.long), response_mask=mask,
                        old_logprobs=torch.tensor(I.ADV_OLD_LOGPROBS), rewards=torch.tensor(I.ADV_REWARDS),
                        group_ids=torch.tensor(I.ADV_GROUPS), extras=extras)


def method_loss(name: str, **overrides) -> tuple[float, torch.Tensor]:
    """The method's aggregated loss on the fixed inputs and its gradient w.r.t. log π (masked)."""
    b, logp = loss_batch()
    loss, _ = methods.build(name, **overrides)(b)
    loss.backward()
    return float(loss.detach()), logp.grad * b.mask


def assert_anchor(got: tuple[float, torch.Tensor], anchor: tuple) -> None:
    loss, grad = got
    assert loss == pytest.approx(anchor[0], rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, torch.tensor(anchor[1]), rtol=1e-5, atol=1e-6)


# ============================================================================================ the catalog
@pytest.mark.parametrize("name", NEW_METHODS)
def test_catalog_entry_is_complete_and_names_its_anchor(name):
    m = methods.get_method(name)
    assert m.arxiv and m.entropy_effect and m.anchor and m.evidence == "exact"
    assert "|" not in m.entropy_effect and "|" not in m.anchor
    obj = methods.build(name)
    for slot in ("clip", "advantage"):
        if slot in m.sets:  # the component's docstring has the formula and the paper (or, without one, the anchor)
            doc = type(getattr(obj, slot)).__doc__
            assert m.arxiv in doc or (m.arxiv == "—" and "verl" in doc), (slot, doc)
    if name == "bnpo":
        assert "bnpo" in aggregate_loss.__doc__


def test_the_docs_name_each_methods_anchor():
    """docs/methods-baselines.md carries the generated anchors table (scripts/gen_methods_doc.py) and a section per
    method."""
    page = (DOCS / "methods-baselines.md").read_text()
    table = page.split("<!-- anchors-table:start -->", 1)[1].split("<!-- anchors-table:end -->", 1)[0].strip("\n")
    assert table == methods.anchors_table(), "docs/methods-baselines.md is stale: run python scripts/gen_methods_doc.py"
    for name in NEW_METHODS:
        assert f"| `{name}` |" in table and f"### `{name}`" in page, name


def test_entrolab_methods_lists_every_new_name(capsys):
    assert main(["methods", "--format", "json"]) == 0
    cards = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    for name in NEW_METHODS:
        assert name in cards and cards[name]["anchor"] == methods.get_method(name).anchor


@pytest.mark.parametrize("name", NEW_METHODS)
def test_selectable_in_entrolab_train_and_composes(name):
    """The native engine provides every primitive; each method composes with a method of another knob and runs two
    toy steps (GDPO, which reads texts, on a toy that supplies its reward components)."""
    methods.build(name).check_engine("entrolab train", NativeEngine.PROVIDES)
    knobs = set(methods.get_method(name).knobs)
    other = next(o for o in ("rloo", "clip_cov", "entropy_bonus") if not knobs & set(methods.get_method(o).knobs))
    obj = methods.build([name, other])
    assert obj.methods == (name, other)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_toy(obj, toy_policy(name, 0), ToySettings(steps=2, seed=0))
    assert all(math.isfinite(h["entropy"]) for h in hist) and hist[0]["update/skipped"] == 0


def test_ppo_and_gae_differ_only_in_setting_the_clip():
    assert methods.build("ppo").describe() == methods.build("gae").describe() | {"methods": ["ppo"]}
    assert methods.build(["gae", "cispo"]).clip.name == "cispo"
    with pytest.raises(ConfigError, match="clip"):
        methods.build(["ppo", "cispo"])


# ============================================================================================ anchors: policy losses
EPS02 = {"clip.eps_low": 0.2, "clip.eps_high": 0.2}


@pytest.mark.parametrize("name, overrides, anchor", [
    ("gspo", {}, VERL_LOSSES["gspo"]),
    ("gspo", EPS02, VERL_LOSSES["gspo_eps02"]),
    ("gspo", EPS02, TRL_LOSSES["gspo_eps02"]),
    ("luspo", EPS02, TRL_LOSSES["luspo_eps02"]),
    ("cispo", {}, VERL_LOSSES["cispo"]),  # verl with clip_ratio_low = 1 (no lower bound), clip_ratio_high = 4
    ("cispo", {}, TRL_LOSSES["cispo"]),  # TRL with epsilon_high = 5: the same cap
    ("cispo", EPS02, VERL_LOSSES["cispo_eps02"]),
    ("sapo", {}, VERL_LOSSES["sapo"]),
    ("sapo", {}, TRL_LOSSES["sapo"]),
    ("gmpo", {}, VERL_LOSSES["gmpo"]),
    ("gpg", {}, VERL_LOSSES["gpg"]),
    ("dppo_tv", {}, VERL_LOSSES["dppo_tv"]),
    ("dppo_kl", {}, VERL_LOSSES["dppo_kl"]),
    ("dro", {}, VERL_LOSSES["dro"]),
    ("vespo", {}, TRL_LOSSES["vespo"]),
])
def test_policy_loss_equals_its_anchor(name, overrides, anchor):
    assert_anchor(method_loss(name, **overrides), anchor)


def test_bnpo_equals_trl_over_two_micro_batches():
    """TRL's bnpo with gradient accumulation 2: each micro-batch's own token mean, halved. The update passes the
    mini-batch's sequence count; two micro-batches of two rows each."""
    obj = methods.build("bnpo")
    b, logp = loss_batch()
    total = 0.0
    for rows in ([0, 1], [2, 3]):
        micro = b.select(torch.tensor(rows)).replace(global_num_tokens=float(b.mask.sum()), global_num_seqs=4.0)
        loss, _ = obj(micro)
        loss.backward()
        total += float(loss.detach())
    assert_anchor((total, logp.grad * b.mask), TRL_LOSSES["bnpo_2x2"])


def test_dppo_tv_and_kl_differ_where_the_divergences_do():
    # token (0, 0): π 0.449 → 0.601, TV 0.151 > 0.15 (dropped) but binary KL 0.0465 ≤ 0.05 (kept)
    assert VERL_LOSSES["dppo_tv"][1][0][0] == 0.0 and VERL_LOSSES["dppo_kl"][1][0][0] != 0.0
    _, tv = method_loss("dppo_tv")
    _, kl = method_loss("dppo_kl")
    assert tv[0, 0] == 0 and kl[0, 0] != 0


# ============================================================================================ anchors: advantages
def test_gae_equals_verl_advantages_and_returns():
    values = torch.tensor(I.VALUES)
    for params, key in (({}, "gae"), ({"gamma": 0.95, "lam": 0.9}, "gae_g095_l09")):
        est = ADVANTAGES.build("gae", params)
        b = advantage_batch(values=values)
        torch.testing.assert_close(est.compute(b), torch.tensor(VERL_ADVANTAGES[key]), rtol=1e-5, atol=1e-6)
        returns = est.prepare(b).extras["returns"]
        torch.testing.assert_close(returns, torch.tensor(VERL_ADVANTAGES[key + "_returns"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, params, extras, key", [
    ("reinforce_pp", {}, {}, "reinforce_pp"),
    ("reinforce_pp", {"gamma": 0.9}, {}, "reinforce_pp_g09"),
    ("remax", {}, {"greedy_reward": I.GREEDY_REWARDS}, "remax"),
    ("opo", {}, {}, "opo"),
    ("gpg", {}, {}, "gpg"),
    ("grpo_passk", {}, {}, "grpo_passk"),
    ("grpo_passk", {"norm_by_std": False}, {}, "grpo_passk_nostd"),
    ("optimal_token_baseline", {}, {"sum_pi_squared": I.SUM_PI_SQUARED}, "optimal_token_baseline"),
    ("optimal_token_baseline", {"zero_tail": False}, {"sum_pi_squared": I.SUM_PI_SQUARED},
     "optimal_token_baseline_no_tail"),
    ("gdpo", {}, {"reward_components": list(zip(I.CORRECT, I.FORMAT))}, "gdpo"),
    ("gdpo", {"weights": (1.0, 0.5)}, {"reward_components": list(zip(I.CORRECT, I.FORMAT))}, "gdpo_w"),
])
def test_advantage_equals_its_anchor(name, params, extras, key):
    b = advantage_batch(**{k: torch.tensor(v) for k, v in extras.items()})
    torch.testing.assert_close(ADVANTAGES.build(name, params).compute(b), torch.tensor(VERL_ADVANTAGES[key]),
                               rtol=1e-5, atol=1e-6)


def test_clipped_value_loss_equals_verl():
    mask = advantage_batch().mask
    values = torch.tensor(I.VALUES)
    _, returns = gae(outcome_token_rewards(torch.tensor(I.ADV_REWARDS), mask), values, mask)
    vpreds = torch.tensor(I.VPREDS).requires_grad_(True)
    loss, clipfrac = clipped_value_loss(vpreds, values, returns, mask, clip=0.5)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(VERL_VALUE_LOSS[0], rel=1e-5)
    assert float(clipfrac) == pytest.approx(VERL_VALUE_LOSS[1], rel=1e-5)
    torch.testing.assert_close(vpreds.grad * mask, torch.tensor(VERL_VALUE_LOSS[2]), rtol=1e-5, atol=1e-6)


# ============================================================================================ hand-computed cases
def one_row(log_ratio, adv, old=-3.0, **fields):
    """One response: log π_old = ``old``, log r = ``log_ratio``, advantage ``adv`` on every token."""
    lr = torch.tensor([log_ratio], dtype=torch.float32)
    old_t = torch.full_like(lr, old)
    logp = (old_t + lr).requires_grad_(True)
    b = make_batch([lr.shape[1]], old_logprobs=old_t, rewards=[0.0], group_ids=[0], logprobs=logp,
                   advantages=torch.full_like(lr, float(adv)), **fields)
    return b, logp


def per_token(rule, b, logp):
    out, metrics = CLIPS.build(rule[0], rule[1]).pg_loss(b) if isinstance(rule, tuple) else CLIPS.build(rule).pg_loss(b)
    (grad,) = torch.autograd.grad(out.sum(), logp)
    return out.detach()[0].tolist(), grad[0].tolist(), metrics


def test_gspo_clips_the_sequence_ratio():
    # log r = 0.1, 0.3 → s = e^0.2 = 1.2214 on both tokens. A = +1, ε = 0.2: past 1.2, clipped → ℓ = −1.2, no gradient
    b, logp = one_row([0.1, 0.3], 1.0)
    loss, grad, m = per_token(("gspo", {"eps_low": 0.2, "eps_high": 0.2}), b, logp)
    assert loss == pytest.approx([-1.2, -1.2]) and grad == [0.0, 0.0] and m["clip/frac_high"] == 1.0
    # A = −1: ℓ = max(s, 1.2) = s; each token's gradient is s (value s_i, gradient s_i·∇log π_t)
    b, logp = one_row([0.1, 0.3], -1.0)
    loss, grad, _ = per_token(("gspo", {"eps_low": 0.2, "eps_high": 0.2}), b, logp)
    assert loss == pytest.approx([math.exp(0.2)] * 2, rel=1e-6) and grad == pytest.approx([math.exp(0.2)] * 2)


def test_cispo_keeps_a_capped_gradient_on_every_token():
    # r = 0.5 and 6 (log π_old = −3), A = +1: weights 0.5 and 5 (the cap), ℓ = −w·log π, ∂ℓ/∂log π = −w
    b, logp = one_row([math.log(0.5), math.log(6.0)], 1.0)
    loss, grad, m = per_token("cispo", b, logp)
    assert loss == pytest.approx([1.8465736, 6.0412027], rel=1e-6) and grad == pytest.approx([-0.5, -5.0])
    assert m["clip/frac_high"] == 0.5
    # PPO drops the second token's gradient entirely
    assert per_token("ppo", b, logp)[1][1] == 0.0


def test_sapo_gate():
    # r = 1: f = σ(0)·4/τ = 2/τ, gradient exactly the policy gradient −A
    b, logp = one_row([0.0], 1.0)
    loss, grad, _ = per_token("sapo", b, logp)
    assert loss == pytest.approx([-2.0]) and grad == pytest.approx([-1.0])
    # r = 2, A = +1, τ = 1: ℓ = −4σ(1) = −2.92423, ∂ℓ/∂log π = −4σ'(1)·r = −1.57290
    b, logp = one_row([math.log(2.0)], 1.0)
    loss, grad, _ = per_token("sapo", b, logp)
    assert loss == pytest.approx([-2.9242343], rel=1e-6) and grad == pytest.approx([-1.5728955], rel=1e-5)
    # r = 2, A = −1, τ_neg = 1.05: ℓ = 4σ(1.05)/1.05 = 2.82200, gradient 4σ'(1.05)·2 = 1.53622
    b, logp = one_row([math.log(2.0)], -1.0)
    loss, grad, _ = per_token("sapo", b, logp)
    assert loss == pytest.approx([2.8219996], rel=1e-6) and grad == pytest.approx([1.5362196], rel=1e-5)


def test_gmpo_geometric_mean_with_log_space_clip():
    # log r = 0.5, −0.1, A = +1, ε = 0.4: min(log r, clip) = 0.4, −0.1 → R = e^0.15 = 1.16183 on both tokens;
    # token 0 is clipped (no gradient), token 1 carries dR/dlog π_1 = R/2 from each of the two tokens' −A·R
    b, logp = one_row([0.5, -0.1], 1.0)
    loss, grad, m = per_token("gmpo", b, logp)
    assert loss == pytest.approx([-1.1618342] * 2, rel=1e-6) and grad == pytest.approx([0.0, -1.1618342], rel=1e-5)
    assert m["clip/frac_high"] == 0.5
    # with seq-mean-token-mean the loss is −Â·R
    assert float(methods.build("gmpo")(b)[0]) == pytest.approx(-1.1618342, rel=1e-6)


def test_gpg_and_dro_log_likelihood_losses():
    b, logp = one_row([0.4], 2.0, old=-1.4)  # log π = −1, log r = 0.4, A = 2
    loss, grad, _ = per_token("gpg", b, logp)
    assert loss == pytest.approx([2.0]) and grad == pytest.approx([-2.0])
    # DRO, β = 0.05: ℓ = −(A·log π − ½β(log r)²) = 2 + 0.004, ∂ℓ/∂log π = −A + β·log r = −1.98
    loss, grad, _ = per_token("dro", b, logp)
    assert loss == pytest.approx([2.004], rel=1e-6) and grad == pytest.approx([-1.98], rel=1e-6)
    # the penalty acts on A = 0 tokens too: it pulls them back to π_old
    b0, logp0 = one_row([0.4], 0.0, old=-1.4)
    assert per_token("dro", b0, logp0)[1] == pytest.approx([0.02])


def test_dppo_trust_regions():
    # A = +1; π_old = ½ → π = 0.6 (TV 0.1, KL 0.0204: kept), 0.7 (TV 0.2, KL 0.0872: dropped), 0.4 (moves down,
    # against A: kept by both); kept tokens get ℓ = −A·min(r, 20)·log π, e.g. −1.2·log 0.6 = 0.61299
    old = math.log(0.5)
    for rule in ("dppo_tv", "dppo_kl"):
        b, logp = one_row([math.log(1.2), math.log(1.4), math.log(0.8)], 1.0, old=old)
        loss, grad, m = per_token(rule, b, logp)
        assert loss[0] == pytest.approx(0.6129907, rel=1e-5) and loss[1] == 0.0 and loss[2] > 0
        assert grad == pytest.approx([-1.2, 0.0, -0.8], rel=1e-5) and m["clip/frac_divergence"] == pytest.approx(1 / 3)
    # truncation: r = e^3.2 ≈ 24.5 gets weight 20
    b, logp = one_row([3.2], 1.0, old=-3.5)
    assert per_token("dppo_kl", b, logp)[1] == pytest.approx([0.0])  # π 0.03 → 0.74: far outside the region
    assert per_token(("dppo_kl", {"delta_high": 10.0}), b, logp)[1] == pytest.approx([-20.0])


def test_vespo_gamma_weight():
    # Σ log r = 0.3, w = e^0.3, A ≥ 0 → k = 2, λ = 3: φ = exp(3 + 2·0.3 − 3w) = 0.63790; ∂ℓ/∂log π_t = −φ·A
    b, logp = one_row([0.1, 0.2], 1.0)
    _, grad, m = per_token("vespo", b, logp)
    assert grad == pytest.approx([-0.6378983] * 2, rel=1e-5) and m["vespo/phi_mean"] == pytest.approx(0.6378983)
    b, logp = one_row([0.0, 0.0], -1.0)  # w = 1: φ(1) = 1 for either sign
    assert per_token("vespo", b, logp)[1] == pytest.approx([1.0, 1.0])


def test_token_mean_local_aggregation():
    # a micro-batch of 2 rows (1 and 3 tokens, ℓ = 1) out of a mini-batch of 4 sequences: local mean 1 × 2/4
    loss = torch.ones(2, 3)
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    assert float(aggregate_loss(loss, mask, "token-mean-local", num_tokens=9.0, num_seqs=4.0)) == pytest.approx(0.5)
    # without micro-batching it is token-mean
    ell = torch.tensor([[1.0, 5.0, 0.0], [2.0, 2.0, 2.0]])
    assert float(aggregate_loss(ell, mask, "token-mean-local")) == pytest.approx(float(aggregate_loss(ell, mask)))


def B(lengths, rewards, groups=None, T=None, **extras):
    return make_batch(lengths, T, rewards=rewards, group_ids=groups or [0] * len(lengths),
                      extras={k: torch.tensor(v) for k, v in extras.items()})


def test_gae_hand_case():
    # R = 1 on the last of 3 tokens, V = 0.5 0.6 0.8. γ = λ = 1: Â = R − V_t = 0.5 0.4 0.2, returns 1 1 1
    b = B([3], [1.0], values=[[0.5, 0.6, 0.8]])
    est = ADVANTAGES.build("gae", {"whiten": False})
    torch.testing.assert_close(est.compute(b), torch.tensor([[0.5, 0.4, 0.2]]))
    # γ = 0.9, λ = 0.5: δ = 0.04, 0.12, 0.2; Â_2 = 0.2, Â_1 = 0.12 + 0.45·0.2 = 0.21, Â_0 = 0.04 + 0.45·0.21 = 0.1345
    est = ADVANTAGES.build("gae", {"gamma": 0.9, "lam": 0.5, "whiten": False})
    torch.testing.assert_close(est.compute(b), torch.tensor([[0.1345, 0.21, 0.2]]))
    torch.testing.assert_close(est.prepare(b).extras["returns"], torch.tensor([[0.6345, 0.81, 1.0]]))
    # a masked hole (a tool observation) is skipped: the next valid token's value bootstraps across it
    holed = b.replace(response_mask=torch.tensor([[1.0, 0.0, 1.0]]))
    torch.testing.assert_close(ADVANTAGES.build("gae", {"whiten": False}).compute(holed),
                               torch.tensor([[0.5, 0.0, 0.2]]))


def test_baselines_hand_cases():
    # REINFORCE++ (γ = 1): returns 1 1 | 0 over 3 tokens, whitened: mean 2/3, unbiased std √(1/3)
    hi, lo = (1 / 3) / math.sqrt(1 / 3), (-2 / 3) / math.sqrt(1 / 3)
    torch.testing.assert_close(ADVANTAGES.build("reinforce_pp").compute(B([2, 1], [1.0, 0.0], [0, 1])),
                               torch.tensor([[hi, hi], [lo, 0.0]]), rtol=1e-5, atol=1e-5)
    # ReMax: R − R(greedy) = 1 − 0.5, 0 − 0.5
    torch.testing.assert_close(ADVANTAGES.build("remax").compute(B([1, 1], [1.0, 0.0], greedy_reward=[0.5, 0.5])),
                               torch.tensor([[0.5], [-0.5]]))
    # OPO: lengths 1, 3, rewards 1, 0 → b = (1·1 + 3·0)/4 = 0.25
    torch.testing.assert_close(ADVANTAGES.build("opo").compute(B([1, 3], [1.0, 0.0])),
                               torch.tensor([[0.75, 0, 0], [-0.25, -0.25, -0.25]]))
    # pass@k: group (1, 0.5, 0), unbiased std 0.5 → the best gets (1 − 0.5)/0.5 = 1; a tied best group gets 0
    a = ADVANTAGES.build("grpo_passk").compute(B([1] * 6, [1.0, 0.5, 0.0, 1.0, 1.0, 0.0], [0, 0, 0, 1, 1, 1]))
    torch.testing.assert_close(a.flatten(), torch.tensor([1.0, 0, 0, 0, 0, 0]), atol=1e-5, rtol=0)
    # GPG: group (1, 0, 0, 1): α = 4/#(R ≠ 0) = 2 → 2·(R − ½); the paper's α = B/(B − M) = 1 here
    b = B([1] * 4, [1.0, 0.0, 0.0, 1.0])
    torch.testing.assert_close(ADVANTAGES.build("gpg").compute(b).flatten(), torch.tensor([1.0, -1, -1, 1]))
    torch.testing.assert_close(ADVANTAGES.build("gpg", {"alpha": "valid_group"}).compute(b).flatten(),
                               torch.tensor([0.5, -0.5, -0.5, 0.5]))


def test_optimal_token_baseline_hand_case():
    # w = 1 − 2π + Σπ²: row a π = ½ ½, Σπ² = ½ ½ → w = ½ ½, W = ½ 1; row b π = 0.8 0.2, Σπ² = 0.68 0.5 →
    # w = 0.08 1.1, W = 0.08 1.18. R = 1, 0 → B_0 = ½/0.58 = 0.86207, B_1 = 1/2.18 = 0.45872
    b = B([2, 2], [1.0, 0.0], sum_pi_squared=[[0.5, 0.5], [0.68, 0.5]])
    b = b.replace(old_logprobs=torch.tensor([[0.5, 0.5], [0.8, 0.2]]).log())
    torch.testing.assert_close(ADVANTAGES.build("optimal_token_baseline").compute(b),
                               torch.tensor([[1 - 0.8620690, 1 - 0.4587156], [-0.8620690, -0.4587156]]))


def test_gdpo_normalises_each_reward_before_summing():
    # correct (1, 0, 0, 0): std ½ → 1.5 −0.5 −0.5 −0.5; format (1, 1, 0, 0): std 0.57735 → ±0.86603;
    # sum 2.366 0.366 −1.366 −1.366, whitened → 1.3321 0.2061 −0.7691 −0.7691. GRPO on the summed reward (2, 1, 0, 0)
    # gives 1.3056 0.2611 −0.7833 −0.7833: the format component counts for more in GDPO, its std being larger.
    comps = [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]]
    b = B([1] * 4, [2.0, 1.0, 0.0, 0.0], reward_components=comps)
    torch.testing.assert_close(ADVANTAGES.build("gdpo").compute(b).flatten(),
                               torch.tensor([1.3321, 0.2061, -0.7691, -0.7691]), atol=1e-4, rtol=0)
    torch.testing.assert_close(ADVANTAGES.build("grpo").compute(b).flatten(),
                               torch.tensor([1.3056, 0.2611, -0.7833, -0.7833]), atol=1e-4, rtol=0)
    # the components come from texts: correctness and a \boxed{} answer
    ctx = RolloutContext(batch=b, texts=["\\boxed{1}", "no box", "\\boxed{2}", "x"], examples=[None] * 4,
                         correct=[True, False, False, True])
    out = ADVANTAGES.build("gdpo").rollout_extras(ctx)["reward_components"]
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))


def test_estimators_name_their_missing_primitive_and_check_parameters():
    b = B([2, 2], [1.0, 0.0])
    for name, extra, primitive in (("gae", "values", "values"), ("remax", "greedy_reward", "greedy_rollout"),
                                   ("optimal_token_baseline", "sum_pi_squared", "rollout_logits"),
                                   ("gdpo", "reward_components", "texts")):
        with pytest.raises(BatchError, match=f"{extra}.*{primitive}"):
            ADVANTAGES.build(name).compute(b)
    for registry, name, params in ((ADVANTAGES, "gae", {"lam": 1.5}), (ADVANTAGES, "gpg", {"alpha": "paper"}),
                                   (ADVANTAGES, "gdpo", {"components": ("correct", "style")}),
                                   (ADVANTAGES, "gdpo", {"weights": (1.0,)}), (CLIPS, "sapo", {"tau_neg": 0.0}),
                                   (CLIPS, "dro", {"beta": 0.0}), (CLIPS, "dppo_tv", {"trunc": 1.0}),
                                   (CLIPS, "cispo", {"eps_low": 1.5}), (CLIPS, "gmpo", {"log_eps_low": -0.1})):
        with pytest.raises(ConfigError, match=name):
            registry.build(name, params)


def test_group_free_estimators_work_with_one_response_per_prompt():
    b = B([2, 2, 2], [1.0, 0.0, 0.5], [0, 1, 2], values=[[0.2, 0.2]] * 3, greedy_reward=[0.5, 0.5, 0.5])
    for name in ("gae", "remax", "reinforce_pp"):
        assert not ADVANTAGES.get(name).groupwise
        assert ADVANTAGES.build(name).compute(b).abs().sum() > 0


# ============================================================================================ the toy
class TwoRewardPolicy(TabularPolicy):
    """The toy with two reward components for GDPO (which reads texts in the trainer): the first and the second
    half's fraction of correct positions, in place of correctness and format. Their sum is twice the toy's reward."""

    PROVIDES = frozenset()

    def rollout(self, prompts, group_size, generator, step=0, reference=None):
        b = super().rollout(prompts, group_size, generator, step, reference)
        hit = self.correct[b.extras["prompt_id"]].gather(-1, b.response_ids[..., None]).squeeze(-1).float()
        comps = torch.stack([hit[:, :2].mean(-1), hit[:, 2:].mean(-1)], -1)
        return b.replace(extras={**b.extras, "reward_components": comps})


def toy_policy(name: str, seed: int) -> TabularPolicy:
    return TwoRewardPolicy(seed=seed) if name == "gdpo" else TabularPolicy(seed=seed)


@lru_cache(maxsize=None)
def toy_run(name: str, seed: int) -> tuple[tuple[float, ...], float]:
    """(exact entropy before each step and after the last, final expected reward) of 30 toy steps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_toy(methods.build(name), toy_policy(name, seed), ToySettings(seed=seed))
    return tuple(h["entropy"] for h in hist), hist[-1]["reward"]


def final_entropy(name: str, seed: int) -> float:
    return toy_run(name, seed)[0][-1]


def first_half_entropy(name: str, seed: int) -> float:
    return sum(toy_run(name, seed)[0][1:16]) / 15


# Toy observations when these tests were written (30 steps, seeds 0–7; ΔH = H_method − H_GRPO, final / mean over
# steps 1–15; GRPO's final entropy 0.305 0.408 0.373 0.419 0.342 0.444 0.384 0.325, reward 0.950; docs/methods-
# baselines.md has the table):
#   higher than GRPO on 8/8 seeds at the end: gspo +0.463 (it clips 29 % of tokens — every sequence whose ratio left
#   1 ± 4e-4 — and learns slower: reward 0.835), grpo_passk +0.440 (reward 0.685), remax +0.210 (0.903), opo +0.057,
#   gpg +0.060; ppo +0.052 on 7/8 (seed 1: −0.020);
#   lower during the first half on 8/8: cispo −0.048, sapo −0.048, dppo_tv −0.048, dppo_kl −0.048, gmpo −0.049,
#   dro −0.030 — none of them clips on the toy (PPO's clip acts on 2.6 % of GRPO's tokens), so each learns like the
#   unclipped surrogate, a little faster than GRPO (reward 0.950–0.956), and ends within noise of it (mean final
#   ΔH −0.014 … −0.026, 2–3/8 above). CISPO's claim (entropy kept by the gradients on clipped tokens) is not
#   reproduced: with stale data (one rollout reused for 8 epochs × 4 mini-batches) its one-update entropy drop is
#   0.353 against GRPO's 0.043 (8/8 seeds) — the clipped tokens it keeps training are what moves;
#   mixed (not asserted): vespo (final −0.027, 2/8 above), reinforce_pp (+0.021, 6/8), optimal_token_baseline
#   (+0.023, 6/8), gdpo (+0.006, 6/8; on a two-component toy reward).
@pytest.mark.parametrize("name", ["gspo", "grpo_passk", "remax", "opo", "gpg"])
def test_ends_with_more_entropy_than_grpo_on_the_toy(name):
    for seed in (0, 1):
        assert final_entropy(name, seed) > final_entropy("grpo", seed) + 0.002, seed


@pytest.mark.parametrize("name", ["cispo", "sapo", "dppo_tv", "dppo_kl", "gmpo", "dro"])
def test_unclipped_on_the_toy_learns_faster_and_loses_entropy_earlier_than_grpo(name):
    for seed in (0, 1):
        assert first_half_entropy(name, seed) < first_half_entropy("grpo", seed) - 0.01, seed


def test_ppo_with_its_value_table_keeps_more_entropy_than_grpo_on_average():
    diffs = [final_entropy("ppo", s) - final_entropy("grpo", s) for s in range(4)]
    assert sum(diffs) / 4 > 0.02 and sum(d > 0 for d in diffs) >= 3, diffs


def test_cispo_drops_entropy_faster_than_grpo_on_stale_data():
    """The regime CISPO targets (many updates per rollout, where PPO's clip is active): one rollout, 8 epochs × 4
    mini-batches. CISPO keeps training the clipped tokens and its entropy falls far more than GRPO's."""
    from entrolab.toy import one_update_entropy

    for seed in (0, 1):
        drops = {}
        for name in ("grpo", "cispo"):
            before, after = one_update_entropy(methods.build(name), seed=seed, ppo_epochs=8, mini_batches=4)
            drops[name] = before - after
        assert drops["cispo"] > 3 * drops["grpo"] > 0, drops


def test_luspo_and_bnpo_on_the_toy():
    """Every toy response has 4 tokens and there is no micro-batching: LUSPO's per-sequence token sum is GSPO's token
    mean × 4 (Adam makes the updates equal up to its ε), and bnpo's micro-batch token mean is GRPO's token mean."""
    assert toy_run("bnpo", 0) == toy_run("grpo", 0)
    luspo, gspo = toy_run("luspo", 0)[0], toy_run("gspo", 0)[0]
    assert max(abs(a - b) for a, b in zip(luspo, gspo)) < 2e-3

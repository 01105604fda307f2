"""entrolab inside verl (docs/scale-out.md): the registered policy losses equal entrolab's objective and verl's
built-ins, the whole-loss replacement runs on verl's nested micro-batches, the driver's state reaches every Ray
worker, and the refusals name their reason. Needs the `verl` extra (scripts/install.sh dev installs it)."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("verl", reason="the verl extra is not installed (bash scripts/install.sh dev)")

from entrolab import methods  # noqa: E402
from entrolab.batch import RolloutBatch  # noqa: E402
from entrolab.errors import ConfigError  # noqa: E402
from entrolab.integrations import support  # noqa: E402
from entrolab.integrations.verl import losses  # noqa: E402
from entrolab.integrations.verl.smoke import nested_micro_batch  # noqa: E402
from entrolab.integrations.verl.state import DriverState  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(losses.OVERRIDES_ENV, raising=False)
    losses._OBJECTIVES.clear()
    yield
    losses._OBJECTIVES.clear()


def _core():
    import entrolab.integrations.verl.plugin  # noqa: F401  (registers, as verl's entry point does)
    from verl.trainer.ppo import core_algos

    return core_algos


def _inputs(seed=0, B=6, T=7, noise=0.1):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, T)
    for i in range(B):
        mask[i, T - 1 - i % 3:] = 0
    old = -torch.rand(B, T, generator=g) * 3
    lp = (old + noise * torch.randn(B, T, generator=g)).clamp(max=-1e-4)
    adv = torch.randn(B, 1, generator=g).expand(B, T) * mask
    return old, lp, adv, mask


def _entrolab(method, old, lp, adv, mask, **overrides):
    lp = lp.clone().requires_grad_()
    obj = methods.build(method, **overrides)
    batch = RolloutBatch(response_ids=torch.zeros(mask.shape, dtype=torch.long), response_mask=mask,
                         old_logprobs=old, rewards=torch.zeros(mask.shape[0]),
                         group_ids=torch.arange(mask.shape[0]), logprobs=lp, advantages=adv)
    loss, _ = obj(obj.prepare(batch))
    loss.backward()
    return loss.detach(), lp.grad


def _verl(name, old, lp, adv, mask, config=None):
    lp = lp.clone().requires_grad_()
    fn = _core().get_policy_loss_fn(name)
    loss, metrics = fn(old_log_prob=old, log_prob=lp, advantages=adv, response_mask=mask, loss_agg_mode="token-mean",
                       config=config, rollout_is_weights=None)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def _actor_config(**kw):
    from verl.workers.config import FSDPActorConfig
    from verl.workers.config.actor import PolicyLossConfig

    if isinstance(kw.get("policy_loss"), dict):
        kw["policy_loss"] = PolicyLossConfig(**kw["policy_loss"])
    return FSDPActorConfig(strategy="fsdp", rollout_n=4, ppo_micro_batch_size_per_gpu=2, use_dynamic_bsz=False, **kw)


def test_the_policy_loss_route_is_the_stateless_log_prob_methods():
    names = support.policy_loss_methods()
    assert {"grpo", "clip_cov", "kl_cov", "dr_grpo", "clip_low_high"} <= set(names)
    for n in names:  # only log-probs and advantages, no controller, no primitive
        obj = methods.build(n)
        assert obj.requires <= {"logprobs", "advantages"}, n
        assert not obj.engine_primitives and not any(support.is_stateful(c) for c in obj.components().values())
    assert "entropy_bonus" not in names and "adaptive_entropy" not in names


@pytest.mark.parametrize("method", support.policy_loss_methods())
def test_every_registered_policy_loss_equals_entrolabs_objective(method):
    for seed in (0, 1):
        old, lp, adv, mask = _inputs(seed)
        losses._OBJECTIVES.clear()
        want, want_grad = _entrolab(method, old, lp, adv, mask)
        got, got_grad, metrics = _verl(f"entrolab/{method}", old, lp, adv, mask)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-7), (method, got, want)
        assert torch.allclose(got_grad, want_grad, rtol=1e-5, atol=1e-8)
        assert got_grad.abs().sum() > 0
        assert "dynamics/cov_mean" in metrics and "loss/total" in metrics


def test_grpo_equals_verls_vanilla_ppo_loss():
    old, lp, adv, mask = _inputs(3)
    ours, g_ours, _ = _verl("entrolab/grpo", old, lp, adv, mask)
    theirs, g_theirs, _ = _verl("vanilla", old, lp, adv, mask, _actor_config())
    assert torch.allclose(ours, theirs, rtol=1e-6) and torch.allclose(g_ours, g_theirs, rtol=1e-5, atol=1e-8)


def test_clip_cov_equals_verls_clip_cov(monkeypatch):
    # ratio 1 detaches every eligible token (cov in (lb, ub), not clipped), so neither side draws at random
    old, lp, adv, mask = _inputs(4, B=8, T=9)
    adv = adv * 3
    monkeypatch.setenv(losses.OVERRIDES_ENV, json.dumps({"clip_cov": {"clip.ratio": 1.0}}))
    config = _actor_config(policy_loss={"loss_mode": "clip_cov", "clip_cov_ratio": 1.0})
    ours, g_ours, m = _verl("entrolab/clip_cov", old, lp, adv, mask)
    theirs, g_theirs, m_theirs = _verl("clip_cov", old, lp, adv, mask, config)
    assert m_theirs["actor/pg_clipfrac"] > 0.05  # some tokens were detached: the comparison is not vacuous
    assert torch.allclose(ours, theirs, rtol=1e-6) and torch.allclose(g_ours, g_theirs, rtol=1e-5, atol=1e-8)


def test_kl_cov_equals_verls_kl_cov(monkeypatch):
    old, lp, adv, mask = _inputs(5, B=8, T=9, noise=0.3)
    monkeypatch.setenv(losses.OVERRIDES_ENV, json.dumps({"kl_cov": {"kl.k": 0.1}}))
    config = _actor_config(policy_loss={"loss_mode": "kl_cov", "kl_cov_ratio": 0.1, "ppo_kl_coef": 1.0})  # β = 1 (ours)
    ours, g_ours, _ = _verl("entrolab/kl_cov", old, lp, adv, mask)
    theirs, g_theirs, _ = _verl("kl_cov", old, lp, adv, mask, config)
    plain, _, _ = _verl("entrolab/grpo", old, lp, adv, mask)
    assert not torch.allclose(theirs, plain)  # the KL term acted on the selected tokens
    assert torch.allclose(ours, theirs, rtol=1e-6) and torch.allclose(g_ours, g_theirs, rtol=1e-5, atol=1e-8)


def test_data_parallel_scaling_matches_verls_agg_loss():
    """Each rank normalises by the global token count and multiplies by dp_size (FSDP averages gradients)."""
    old, lp, adv, mask = _inputs(6)
    n = float(mask.sum())
    info = {"dp_size": 2, "batch_num_tokens": 3 * n, "global_batch_size": 12, "loss_scale_factor": None}
    config = _actor_config()
    config.global_batch_info.update(info)
    ours, _, _ = _verl("entrolab/grpo", old, lp, adv, mask, config)
    theirs, _, _ = _verl("vanilla", old, lp, adv, mask, config)
    local, _, _ = _verl("entrolab/grpo", old, lp, adv, mask)
    assert torch.allclose(ours, theirs, rtol=1e-6)
    assert torch.allclose(ours, local * 2 / 3, rtol=1e-6)


def test_registered_advantage_estimators_equal_entrolabs():
    from entrolab.knobs.advantage.base import ADVANTAGES

    core = _core()
    g = torch.Generator().manual_seed(0)
    B, T = 8, 5
    mask = torch.ones(B, T)
    mask[1, 3:] = 0
    scores = torch.randint(0, 2, (B,), generator=g).float()
    tlr = torch.zeros(B, T)
    tlr[torch.arange(B), mask.sum(-1).long() - 1] = scores
    index = [f"u{i // 4}" for i in range(B)]
    for name in support.driver_advantages():
        adv, ret = core.get_adv_estimator_fn(f"entrolab/{name}")(token_level_rewards=tlr, response_mask=mask,
                                                                  index=index, config=None)
        batch = RolloutBatch(response_ids=torch.zeros(B, T, dtype=torch.long), response_mask=mask,
                             old_logprobs=torch.zeros(B, T), rewards=scores, group_ids=torch.arange(B) // 4)
        assert torch.allclose(adv, ADVANTAGES.build(name, {}).compute(batch)), name
    theirs, _ = core.get_adv_estimator_fn("grpo")(token_level_rewards=tlr, response_mask=mask,
                                                  index=__import__("numpy").array(index, dtype=object))
    ours, _ = core.get_adv_estimator_fn("entrolab/grpo")(token_level_rewards=tlr, response_mask=mask, index=index)
    assert torch.allclose(ours, theirs, atol=1e-6) and ours.abs().sum() > 0


def test_recipe_methods_are_not_registered_and_refusals_say_why():
    core = _core()
    assert "entrolab/entropy_bonus" not in core.POLICY_LOSS_REGISTRY
    with pytest.raises(ConfigError, match="pear needs texts, tokenizer"):
        losses.EntrolabLoss("pear")
    with pytest.raises(ConfigError, match="trainable parameters"):
        losses.EntrolabLoss("flowrl")
    with pytest.raises(ConfigError, match="scope=batch"):
        losses.EntrolabLoss("clip_cov", {"clip.scope": "batch"})
    with pytest.raises(ConfigError, match="rollout-correction"):
        old, lp, adv, mask = _inputs(0)
        core.get_policy_loss_fn("entrolab/grpo")(old, lp, adv, mask, "token-mean", None, torch.ones_like(old))


def test_whole_loss_on_verls_nested_micro_batch_equals_verls_ppo_loss_with_entropy_bonus():
    from verl.workers.utils.losses import ppo_loss

    coef = methods.resolve("entropy_bonus")["objective"][0]["coef"]
    data, out, theirs_t = nested_micro_batch(0)
    theirs, _ = ppo_loss(_actor_config(entropy_coeff=coef), out, data)
    theirs.backward()
    data, out, t = nested_micro_batch(0)
    loss, metrics = losses.EntrolabLoss("entropy_bonus")(model_output=out, data=data)
    loss.backward()
    assert torch.isfinite(loss) and torch.allclose(loss, theirs, rtol=1e-6)
    assert t["lp"].grad.abs().sum() > 0 and t["ent"].grad.abs().sum() > 0  # the bonus's gradient reaches H
    assert torch.allclose(t["ent"].grad, theirs_t["ent"].grad) and torch.allclose(t["lp"].grad, theirs_t["lp"].grad)
    assert t["ent"].grad[t["mask"] == 0].abs().sum() == 0  # padding gets none
    assert "entropy/mean" in metrics


def test_whole_loss_reads_the_rollout_entropy_and_the_drivers_controller():
    data, out, t = nested_micro_batch(1)
    driver = DriverState("adaptive_entropy")
    B, T = 4, 6
    fields = {"response_mask": torch.ones(B, T), "old_log_probs": -torch.rand(B, T),
              "token_level_rewards": torch.eye(T)[[5, 5, 5, 5]] * torch.tensor([[1.0], [0.0], [1.0], [0.0]]),
              "uid": ["a", "a", "b", "b"], "entropy": torch.full((B, T), 0.01)}
    adv, monitor = driver.prepare(fields)
    assert adv.shape == (B, T) and monitor["entropy/mean"] == pytest.approx(0.01)
    for _ in range(3):  # entropy far below target: the controller raises the bonus coefficient
        driver.after_step({"actor/entropy/mean": 0.01})
        driver.prepare(fields)
    loss_fn = driver.loss_fn()
    assert loss_fn.state == driver.objective.state_dict()
    loss, _ = loss_fn(model_output=out, data=data)
    loss.backward()
    assert t["ent"].grad.abs().sum() > 0


def test_driver_advantages_equal_entrolabs_on_the_whole_batch_and_state_round_trips(tmp_path):
    g = torch.Generator().manual_seed(2)
    B, T = 8, 5
    scores = torch.tensor([1.0, 0, 1, 0, 1, 1, 0, 0])
    tlr = torch.zeros(B, T)
    tlr[:, -1] = scores
    ent = torch.rand(B, T, generator=g)
    fields = {"response_mask": torch.ones(B, T), "old_log_probs": -torch.rand(B, T, generator=g),
              "token_level_rewards": tlr, "uid": [f"q{i // 4}" for i in range(B)], "entropy": ent}
    driver = DriverState("entropy_advantage")
    adv, _ = driver.prepare(fields)
    batch = RolloutBatch(response_ids=torch.zeros(B, T, dtype=torch.long), response_mask=torch.ones(B, T),
                         old_logprobs=fields["old_log_probs"], rewards=scores, group_ids=torch.arange(B) // 4,
                         old_entropy=ent)
    assert torch.allclose(adv, methods.build("entropy_advantage").compute_advantages(batch).advantages)

    a = DriverState("adaptive_entropy")
    fields["entropy"] = torch.full((B, T), 0.02)
    for _ in range(2):
        a.prepare(fields)
        a.after_step({})
    a.save(tmp_path / "global_step_2")
    b = DriverState("adaptive_entropy")
    assert b.load(tmp_path / "global_step_2") and b.step == 2
    assert b.objective.state_dict() == a.objective.state_dict() != DriverState("adaptive_entropy").objective.state_dict()
    assert not DriverState("adaptive_entropy").load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="saved for"):
        DriverState("entropic").load(tmp_path / "global_step_2")


def test_entry_point_is_declared():
    from importlib.metadata import entry_points

    eps = [e for e in entry_points(group="verl.plugins") if e.name == "entrolab"]
    assert eps and eps[0].value == "entrolab.integrations.verl.plugin", (
        "entrolab's verl.plugins entry point is missing: reinstall with `pip install -e .`")


@pytest.mark.slow
def test_ray_cpu_worker_group_gets_the_plugin_and_the_drivers_state():
    """Two CPU Ray workers: verl's entry point registered the plugin in both with no environment variable; the
    whole loss sent each step carries the driver's controller state to both; metrics come back and reduce."""
    pytest.importorskip("ray")
    from entrolab.integrations.verl.smoke import run

    report = run(workers=2, method="adaptive_entropy", steps=2)
    assert [r["rank"] for r in report["plugin"]] == [0, 1]
    for r in report["plugin"]:
        assert r["plugin_loaded"] and "entrolab/clip_cov" in r["losses"] and "entrolab/grpo" in r["advantages"]
        assert r["env"]["VERL_USE_EXTERNAL_MODULES"] is None
    states = [s["sent_state"] for s in report["steps"]]
    assert states[0] != states[1]  # the controller moved between steps on the driver
    for s in report["steps"]:
        assert [r["state"] for r in s["ranks"]] == [s["sent_state"]] * 2
        assert len({r["loss"] for r in s["ranks"]}) == 2  # each rank its own micro-batch
        mean = sum(r["metrics"]["loss/total"] for r in s["ranks"]) / 2
        assert s["reduced"]["loss/total"] == pytest.approx(mean)
        assert any(k.startswith("controller/") for k in s["logged"])
        assert "dynamics/cov_top_0.2pct" in s["monitor"]
    assert report["steps"][1]["ranks"][0]["grad_ent"] > 0  # the raised coefficient reaches the entropy gradient


def test_recipe_config_switches_on_what_the_objective_needs_and_refuses_early():
    from omegaconf import OmegaConf

    from entrolab.integrations.verl.main_ppo import entrolab_settings, prepare_config

    def cfg(method, **over):
        return OmegaConf.create({"entrolab": {"method": method, **over},
                                 "actor_rollout_ref": {"actor": {"calculate_entropy": False, "use_kl_loss": False,
                                                                 "kl_loss_coef": 0.001}},
                                 "trainer": {"use_v1": False, "v1": {"trainer_mode": "separate_async"}}})

    c = cfg("entropy_bonus")
    driver = prepare_config(c)
    assert c.actor_rollout_ref.actor.calculate_entropy and c.trainer.v1.trainer_mode == "sync"
    assert driver.support.route == "recipe"
    c = cfg("archer")  # a KL to the reference: verl must build the reference model
    prepare_config(c)
    assert c.actor_rollout_ref.actor.use_kl_loss and c.actor_rollout_ref.actor.kl_loss_coef == 0.0
    assert entrolab_settings(cfg("dr_grpo,kl_cov", overrides={"kl.k": 0.01})) == (["dr_grpo", "kl_cov"],
                                                                                  {"kl.k": 0.01})
    with pytest.raises(ConfigError, match="verl cannot run treerl"):
        prepare_config(cfg("treerl"))
    with pytest.raises(ConfigError, match=r"\+entrolab.method"):
        prepare_config(OmegaConf.create({"actor_rollout_ref": {}}))


def test_the_verl_reward_function_scores_answers():
    from entrolab.integrations.verl.reward import compute_score

    assert compute_score("gsm8k", "so the total is \\boxed{42}.", "42") == {"score": 1.0, "acc": True}
    assert compute_score("gsm8k", "I think 41", "42")["score"] == 0.0
    assert compute_score("gsm8k", "", "42")["acc"] is False


def test_scale_out_doc_states_the_current_counts():
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "scale-out.md").read_text()
    names = methods.method_names()
    routes = [support.verl_support(methods.build(n)).route for n in names]
    trl = sum(support.trl_support(methods.build(n)).ok for n in names)
    claim = (f"verl runs {routes.count('policy loss')} methods as plain policy losses and {routes.count('recipe')} "
             f"through the recipe, TRL runs {trl} of {len(names)}")
    assert claim in " ".join(text.split()), f"docs/scale-out.md is stale; it should say: {claim}"
    for a in support.driver_advantages():
        assert f"`{a}`" in text, f"docs/scale-out.md does not list the verl advantage estimator {a}"
    route1 = " ".join(text.split("## verl, route 1")[1].split("```")[0].split())
    for m in support.policy_loss_methods():
        assert f"`{m}`" in route1, f"docs/scale-out.md route 1 does not list {m}"

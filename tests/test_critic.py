"""PPO's value model (issue 15): the critic of the native engine (``engine/critic.py``: a value head on the policy's
final hidden states, or a separate critic model), trained with the clipped value loss in the policy's update loop
(``update.ValueLearner``), its metrics, its checkpoint and resume, ``entrolab train --method ppo`` end to end on the
tiny model, and the toy's value table."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import pytest
import torch
from test_trainer import tiny_config

from entrolab import methods
from entrolab.cli import main
from entrolab.engine.critic import Critic, CriticSettings
from entrolab.engine.forward import response_hidden
from entrolab.engine.models import tiny_model
from entrolab.errors import ConfigError
from entrolab.toy import TabularCritic, TabularPolicy, ToySettings, train_toy
from entrolab.train.trainer import Trainer

CRITIC_METRICS = ("critic/value_mean", "critic/vf_explained_var", "critic/vf_clipfrac", "critic/vf_loss",
                  "critic/grad_norm", "critic/returns_mean")


def ppo_config(tmp_path, reward_path, kind="head", **sections):
    return tiny_config(tmp_path, reward_path, algorithm={"method": "ppo"}, critic={"kind": kind, "lr": 1e-3},
                       **sections)


def test_ppo_trains_from_the_command_line_with_a_critic_and_resumes(tmp_path, reward_path):
    """`entrolab train --method ppo` on the default critic (a value head), then --resume from an earlier checkpoint
    reproduces the run's last step."""
    run = tmp_path / "run"
    args = ["train", "--method", "ppo", "model.name=tiny", "data.heldout_size=4", f"data.reward_fn={reward_path}",
            "rollout.n=4", "rollout.max_new_tokens=8", "optim.steps=2", "optim.lr=1e-3", "optim.prompts_per_step=2",
            "optim.micro_batch_size=2", "eval.every=0", f"logging.run_dir={run}", "logging.progress=false",
            "logging.tensorboard=false", "checkpoint.every=1", "diagnostics.law_refit_every=0"]
    assert main(args) == 0
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1]
    for key in CRITIC_METRICS:
        assert key in lines[-1], key
    assert lines[-1]["update/skipped"] == 0 and math.isfinite(lines[-1]["critic/vf_loss"])
    assert (run / "checkpoints" / "step_000002" / "critic.safetensors").is_file()
    state = torch.load(run / "checkpoints" / "step_000002" / "trainer_state.pt", weights_only=False)
    assert state["engine"]["critic"]["optimizer"]["state"]  # the critic's AdamW moments are saved
    shutil.rmtree(run / "checkpoints" / "step_000002")  # as if killed during step 1
    assert main(["train", "--resume", str(run)]) == 0
    resumed = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in resumed] == [0, 1]
    for key in ("critic/value_mean", "critic/vf_loss", "critic/vf_clipfrac", "loss/pg", "update/grad_norm"):
        assert resumed[1][key] == pytest.approx(lines[1][key], rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("kind", ["head", "model"])
def test_resume_restores_the_critic_exactly(tmp_path, reward_path, kind):
    full = Trainer(ppo_config(tmp_path / "a", reward_path, kind, optim={"steps": 3}, checkpoint={"every": 1}))
    full_hist = full.train()
    part = Trainer(ppo_config(tmp_path / "b", reward_path, kind, optim={"steps": 3}, checkpoint={"every": 1}))
    part.step()
    part.step_index = 1
    part.save_checkpoint()
    resumed = Trainer.resume(tmp_path / "b" / "run")
    assert resumed.step_index == 1
    for k, v in resumed.engine.critic.module.state_dict().items():
        torch.testing.assert_close(v, part.engine.critic.module.state_dict()[k])
    hist = resumed.train()
    for key in ("critic/value_mean", "critic/vf_loss", "critic/vpred_mean", "loss/pg", "update/grad_norm"):
        assert hist[-1][key] == pytest.approx(full_hist[-1][key], rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("kind", ["head", "model"])
def test_rollout_values_are_the_critic_at_the_response_positions_and_train_only_the_critic(tmp_path, reward_path,
                                                                                          kind):
    trainer = Trainer(ppo_config(tmp_path, reward_path, kind))
    engine, critic = trainer.engine, trainer.engine.critic
    rollout = engine.rollout(0, 2)
    batch = trainer.objective.prepare(trainer.objective.compute_advantages(rollout.batch))
    values = batch.extras["values"]
    # the value of response token t is V at the state before it: the hidden state that predicts token t
    ids, att = batch.extras["input_ids"], batch.extras["attention_mask"]
    lm = trainer.model if kind == "head" else critic.module.lm
    with torch.no_grad():
        direct = critic.module.head(response_hidden(lm, ids, att, rollout.prompt_len)) if kind == "model" else \
            critic.module(response_hidden(lm, ids, att, rollout.prompt_len))
    torch.testing.assert_close(values, direct * batch.mask, rtol=1e-5, atol=1e-6)
    # the update forward reproduces them before any step (same weights), and the value loss reaches the critic only
    micro = batch.select(torch.arange(2)).replace(global_num_tokens=float(batch.mask[:2].sum()))
    logp, _ = engine.forward(micro)
    torch.testing.assert_close(critic.predict(micro).detach() * micro.mask, values[:2], rtol=1e-4, atol=1e-5)
    trainer.optimizer.zero_grad(set_to_none=True)
    critic.zero_grad()
    loss, metrics = critic.loss(micro)
    loss.backward()
    assert all(p.grad is None for p in trainer.model.parameters())
    assert sum(float(p.grad.abs().sum()) for p in critic.params if p.grad is not None) > 0
    assert metrics["critic/vf_loss"] > 0 and 0 <= metrics["critic/vf_clipfrac"] <= 1


def test_the_head_reads_detached_hidden_states_so_the_policy_update_is_the_methods():
    model, _ = tiny_model(seed=0)
    critic = Critic(model, CriticSettings(kind="head"), seed=0)
    assert [n for n, _ in critic.module.named_parameters()] == ["score.weight", "score.bias"]
    assert critic.module.score.weight.std().item() == pytest.approx(0.02, rel=0.25)  # HF's initializer_range
    assert float(critic.module.score.bias.detach().abs().sum()) == 0.0
    separate = Critic(model, CriticSettings(kind="model"), seed=0)
    assert separate.module.lm is not model and {id(p) for p in separate.params}.isdisjoint(
        {id(p) for p in model.parameters()})


def test_critic_settings_are_checked():
    for kw, key in (({"kind": "shared"}, "critic.kind"), ({"lr": 0.0}, "critic.lr"), ({"clip": -1.0}, "critic.clip"),
                    ({"model": "/x"}, "critic.model")):
        with pytest.raises(ConfigError, match=key):
            CriticSettings(**kw).validate()


def test_no_critic_without_the_values_primitive(tmp_path, reward_path):
    trainer = Trainer(tiny_config(tmp_path, reward_path, algorithm={"method": "grpo"}))
    assert trainer.engine.critic is None and trainer.engine.auxiliary_updates() == []
    assert "critic" not in trainer.engine.checkpoint_models()


def test_the_toy_value_table_learns_the_expected_reward():
    """PPO on the toy: V(p, t) starts at 0 and tracks each prompt's expected reward (the best a state-value can do on
    the toy, whose states do not depend on earlier actions) while the policy learns. Mean |V − E[R | p]| before →
    after 30 steps, seeds 0–2: 0.295 → 0.048, 0.223 → 0.106, 0.226 → 0.064."""
    policy = TabularPolicy(seed=0)
    critic = TabularCritic(policy)
    expected = lambda: (torch.softmax(policy.logits.detach(), -1) * policy.correct).sum(-1).mean(-1)  # noqa: E731
    before = float((critic.table.detach() - expected()[:, None]).abs().mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hist = train_toy(methods.build("ppo"), policy, ToySettings(seed=0), critic=critic)
    assert all(k in hist[0] for k in CRITIC_METRICS)
    after = float((critic.table.detach() - expected()[:, None]).abs().mean())
    assert after < 0.5 * before, (before, after)

"""entrolab inside TRL (docs/scale-out.md): EntrolabGRPOTrainer runs a few steps on the tiny model for one method per
knob and a stateful one, keeps the controller state across a TRL checkpoint, computes TRL's own loss for GRPO, and
refuses what it cannot run. Needs the `trl` extra (scripts/install.sh dev installs it)."""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("trl", reason="the trl extra is not installed (bash scripts/install.sh dev)")

from entrolab import methods  # noqa: E402
from entrolab.engine.models import tiny_model  # noqa: E402
from entrolab.errors import ConfigError  # noqa: E402


def _dataset():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(5)])


def digits_reward(prompts, completions, answer, **_):
    """Graded, so groups differ: the share of the answer's characters found in the completion, plus a length
    term."""
    return [sum(ch in c for ch in a) / len(a) + 0.05 * len(c) for c, a in zip(completions, answer)]


def _trainer(tmp_path, method, steps=2, iterations=1, seed=0, **kw):
    from trl import GRPOConfig

    from entrolab.integrations.trl import EntrolabGRPOTrainer

    model, tok = tiny_model(seed=seed)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=steps, logging_steps=1, save_steps=steps, report_to=[],
                      use_cpu=True, learning_rate=1e-2, beta=0.0, seed=seed, loss_type="dapo", num_iterations=iterations,
                      disable_tqdm=True, gradient_checkpointing=False, **kw)
    objective = methods.build(method) if isinstance(method, str) else method
    return EntrolabGRPOTrainer(model=model, processing_class=tok, reward_funcs=[digits_reward], args=args,
                               train_dataset=_dataset(), objective=objective)


def _logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.mark.parametrize("method,knob_key", [
    ("dapo", "sampling/kept_frac"),            # sampling knob: dynamic sampling's keep-mask
    ("entropy_advantage", "entropy/mean"),     # advantage knob: entropy-shaped, from the rollout entropies
    ("clip_cov", "clip/frac_cov"),             # clip knob
    ("kl_cov", "kl/cov_frac"),                 # KL knob (off-policy: two iterations per generation)
    ("entropy_bonus", "entropy/bonus"),        # objective knob: the current policy's entropy with gradient
    ("seed_grpo", "loss/total"),               # the texts primitive: answer clusters of decoded completions
])
def test_a_few_steps_per_knob(tmp_path, method, knob_key):
    before = {k: v.clone() for k, v in tiny_model(seed=0)[0].state_dict().items()}
    tr = _trainer(tmp_path, method, steps=2, iterations=2 if method == "kl_cov" else 1)
    tr.train()
    assert tr.state.global_step == 2
    assert _logged(tr, knob_key), (knob_key, tr.state.log_history[0].keys())
    for key in ("entropy/mean", "dynamics/cov_mean", "dynamics/cov_top_0.2pct", "loss/total"):
        assert all(math.isfinite(v) for v in _logged(tr, key)), key
    after = tr.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the objective's gradient moved the weights


def test_the_controller_state_survives_a_trl_checkpoint(tmp_path):
    tr = _trainer(tmp_path, "adaptive_entropy", steps=2)
    tr.train()
    saved = tr.objective.state_dict()
    assert saved["objective.0"]["controller"]["steps"] == 2
    ckpt = tmp_path / "checkpoint-2"
    assert (ckpt / "entrolab_state.pt").is_file()
    resumed = _trainer(tmp_path, "adaptive_entropy", steps=3)
    assert resumed.objective.state_dict() != saved  # a fresh objective...
    resumed.train(resume_from_checkpoint=str(ckpt))
    # ...continued from the checkpoint: two restored steps plus the one it ran
    assert resumed.objective.state_dict()["objective.0"]["controller"]["steps"] == 3
    assert any(k.startswith("controller/objective.0/") for h in resumed.state.log_history for k in h)


def test_grpo_objective_equals_trls_own_dapo_loss(tmp_path):
    """On one batch, entrolab's GRPO objective (PPO clip ε = 0.2, token-mean) is TRL's `dapo` loss."""
    from trl import GRPOTrainer

    tr = _trainer(tmp_path, "grpo")
    g = torch.Generator().manual_seed(0)
    B, P, T = 8, 4, 6
    prompt_ids = torch.randint(3, 40, (B, P), generator=g)
    completion_ids = torch.randint(3, 40, (B, T), generator=g)
    completion_mask = torch.ones(B, T, dtype=torch.long)
    completion_mask[::3, 4:] = 0
    with torch.no_grad():
        lp, _, _ = tr._get_per_token_logps_and_entropies(tr.model, torch.cat([prompt_ids, completion_ids], 1),
                                                         torch.ones(B, P + T, dtype=torch.long), T)
    old = lp - 0.3 * torch.rand(B, T, generator=g)  # off-policy, so the clip acts
    adv = torch.randn(B, generator=g)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": torch.ones(B, P, dtype=torch.long),
              "completion_ids": completion_ids, "completion_mask": completion_mask,
              "advantages": adv[:, None] * completion_mask, "old_per_token_logps": old,
              "entrolab_old_logprobs": old, "num_items_in_batch": completion_mask.sum()}
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1  # set by Trainer.train()
    ours = tr._compute_loss(tr.model, dict(inputs))
    theirs = GRPOTrainer._compute_loss(tr, tr.model, {**inputs, "advantages": adv})
    assert torch.allclose(ours, theirs, rtol=1e-5), (ours, theirs)


def test_methods_trl_cannot_run_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="trl cannot run treerl: eptree needs generation"):
        _trainer(tmp_path, "treerl")
    with pytest.raises(ConfigError, match="trainable parameters"):
        _trainer(tmp_path, "flowrl")


def test_entrolab_train_engine_trl_runs_the_config(tmp_path):
    from entrolab.cli import main

    run = tmp_path / "run"
    rc = main(["train", "--engine", "trl", "--method", "clip_cov", "model.name=tiny", "optim.steps=2",
               "optim.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=6", "eval.every=0",
               "logging.tensorboard=false", f"logging.run_dir={run}", "checkpoint.every=2"])
    assert rc == 0
    assert (run / "config.yaml").is_file() and (run / "checkpoint-2" / "entrolab_state.pt").is_file()
    assert main(["train", "--engine", "nope", "model.name=tiny"]) == 2


def test_dynamic_sampling_drops_zero_variance_groups_from_the_loss(tmp_path):
    """DAPO's keep-mask: a reward that is the same for every completion of a prompt leaves no group to learn from."""
    from trl import GRPOConfig

    from entrolab.integrations.trl import EntrolabGRPOTrainer

    model, tok = tiny_model(seed=0)
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=6, max_steps=1, logging_steps=1, save_steps=10, report_to=[],
                      use_cpu=True, beta=0.0, loss_type="dapo", disable_tqdm=True, gradient_checkpointing=False)
    tr = EntrolabGRPOTrainer(model=model, processing_class=tok, args=args, train_dataset=_dataset(),
                             reward_funcs=[lambda prompts, completions, answer, **_: [float(len(a)) for a in answer]],
                             objective=methods.build("dapo"))
    tr.train()
    assert _logged(tr, "sampling/kept_frac") == [0.0]
    assert _logged(tr, "loss/total") == [0.0]

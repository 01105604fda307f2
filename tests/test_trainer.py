"""Trainer tests: config validation, the loop on a tiny in-memory model, resume equality, the non-finite guard,
and one end-to-end step on the packaged SmolLM2 default."""

from __future__ import annotations

import json
import math

import pytest
import torch

from entrolab.cli import main
from entrolab.errors import ConfigError
from entrolab.train.config import config_from_dict, load_config, parse_overrides
from entrolab.train.trainer import Trainer, TrainingError, pass_at_k


def tiny_config(tmp_path, reward_path, **sections):
    cfg = {
        "model": {"name": "tiny"},
        "data": {"task": "arithmetic", "heldout_size": 4, "reward_fn": reward_path},
        "rollout": {"n": 4, "max_new_tokens": 8},
        "optim": {"steps": 2, "lr": 1e-3, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 2},
        "eval": {"every": 0, "size": 2, "n_samples": 2, "k": 2},
        "logging": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False},
        "checkpoint": {"every": 1, "keep_last": 2},
        "diagnostics": {"law_refit_every": 0},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return config_from_dict(cfg)


# ------------------------------------------------------------------------------------------------ config
def test_config_errors_name_the_key_and_allowed_values():
    with pytest.raises(ConfigError, match=r"unknown config key optim\.lrr.*allowed keys under optim: steps, lr"):
        config_from_dict({"optim": {"lrr": 1}})
    with pytest.raises(ConfigError, match=r"rollout\.temperature = 0\.0 is out of range; allowed: \(0, inf\)"):
        config_from_dict({"rollout": {"temperature": 0}})
    with pytest.raises(ConfigError, match=r"optim\.schedule = 'step' is not allowed; choose one of: constant"):
        config_from_dict({"optim": {"schedule": "step"}})
    with pytest.raises(ConfigError, match=r"unknown method 'grpoo'; valid methods: .*clip_cov"):
        config_from_dict({"algorithm": {"method": "grpoo"}})
    with pytest.raises(ConfigError, match=r"no component of this method has a parameter 'ratoi'"):
        config_from_dict({"algorithm": {"method": "clip_cov", "overrides": {"ratoi": 1e-3}}})
    with pytest.raises(ConfigError, match=r"eval\.k \(4\) must be <= eval\.n_samples \(2\)"):
        config_from_dict({"eval": {"k": 4, "n_samples": 2}})


def test_overrides_parse_yaml_values_and_nest():
    out = parse_overrides(["optim.lr=1e-5", "algorithm.method=[dr_grpo, kl_cov]", "algorithm.overrides.kl.coef=2",
                           "logging.tensorboard=false"])
    assert out == {"optim": {"lr": 1e-5}, "algorithm": {"method": ["dr_grpo", "kl_cov"],
                                                         "overrides": {"kl": {"coef": 2}}},
                   "logging": {"tensorboard": False}}
    cfg = load_config(None, ["optim.lr=1e-5", "algorithm.overrides.kl.coef=2"], method="dr_grpo,kl_cov")
    assert cfg.optim.lr == 1e-5 and cfg.algorithm.method == ["dr_grpo", "kl_cov"]
    assert cfg.algorithm.objective().kl.coef == 2.0
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_overrides(["optim.lr"])


def test_one_override_form_yaml_command_line_and_flat_keys_agree(tmp_path):
    """The nested YAML form, the command line and a flat dotted key all set the same parameter, and a bad value's
    error names the key a user types."""
    (tmp_path / "run.yaml").write_text("algorithm:\n  method: clip_cov\n  overrides:\n    clip:\n      ratio: 1.0e-3\n")
    from_yaml = load_config(tmp_path / "run.yaml").algorithm.objective().clip.ratio
    from_cli = load_config(None, ["algorithm.overrides.clip.ratio=1e-3"], method="clip_cov").algorithm.objective()
    flat = config_from_dict({"algorithm": {"method": "clip_cov", "overrides": {"clip.ratio": 1e-3}}})
    assert from_yaml == from_cli.clip.ratio == flat.algorithm.objective().clip.ratio == 1e-3
    with pytest.raises(ConfigError, match=r"^algorithm\.overrides\.clip\.ratio = 2\.0 is out of range"):
        load_config(None, ["algorithm.overrides.clip.ratio=2"], method="clip_cov")
    with pytest.raises(ConfigError, match=r"algorithm\.overrides\.clip\.ratoi: clip component 'clip_cov' has no "
                                          r"parameter 'ratoi'; its parameters are: cov_lb"):
        load_config(None, ["algorithm.overrides.clip.ratoi=2"], method="clip_cov")
    # a config written by --print-config loads back to the same objective
    cfg = load_config(None, ["algorithm.overrides.clip.ratio=1e-3"], method="clip_cov")
    (tmp_path / "again.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "again.yaml").algorithm.objective().clip.ratio == 1e-3


def test_each_component_is_built_once_per_resolution(tmp_path, reward_path, monkeypatch):
    from entrolab import methods
    from entrolab.knobs.clip.covariance import ClipCov

    built = []
    original = ClipCov.__post_init__
    monkeypatch.setattr(ClipCov, "__post_init__", lambda self: (built.append(self), original(self))[1])
    methods.build("clip_cov")
    assert len(built) == 1
    built.clear()
    trainer = Trainer(tiny_config(tmp_path, reward_path, algorithm={"method": "clip_cov"}))
    assert len(built) == 1 and trainer.objective.clip is built[0]  # validation built it; the trainer uses it


def test_dr_grpo_length_is_the_generation_budget_at_resolution():
    cfg = config_from_dict({"algorithm": {"method": "dr_grpo"}, "rollout": {"max_new_tokens": 48}})
    assert cfg.algorithm.spec().norm_length == 48.0 and cfg.algorithm.objective().norm_length == 48.0
    explicit = config_from_dict({"algorithm": {"method": "dr_grpo", "overrides": {"norm_length": 10}}})
    assert explicit.algorithm.objective().norm_length == 10


def test_print_config_is_complete_and_loadable(tmp_path, capsys):
    assert main(["train", "--print-config", "--method", "clip_cov", "optim.steps=3"]) == 0
    text = capsys.readouterr().out
    assert "ratio: 0.0002" in text and "steps: 3" in text
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert load_config(path).optim.steps == 3
    assert main(["train", "--print-config", "optim.bogus=1"]) == 2


def test_pass_at_k_matches_the_combinatorial_definition():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 − C(3,2)/C(4,2)
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)


# ------------------------------------------------------------------------------------------------ the loop
def test_tiny_run_records_every_metric_and_file(tmp_path, reward_path):
    cfg = tiny_config(tmp_path, reward_path, eval={"every": 2}, logging={"tensorboard": True},
                      diagnostics={"law_refit_every": 2})
    trainer = Trainer(cfg)
    history = trainer.train()
    assert len(history) == 2
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1]
    last = lines[-1]
    for key in ("reward/mean", "reward/accuracy", "response/length_mean", "entropy/mean", "entropy/p10",
                "entropy/p50", "entropy/p90", "entropy/high_token_frac", "dynamics/cov_mean",
                "dynamics/cov_top_0.02pct", "dynamics/cov_top_0.2pct", "dynamics/cov_top_2pct",
                "dynamics/predicted_delta_H", "dynamics/actual_delta_H", "dynamics/predicted_delta_H_npg",
                "clip/frac_low", "clip/frac_high", "update/grad_norm", "lr", "perf/tokens_per_s",
                "time/generate_s", "time/old_logprob_s", "time/update_s", "time/diagnostics_s", "time/step_s",
                "eval/accuracy", "eval/mean_at_n", "eval/pass_at_k", "reward/errors"):
        assert key in last, key
        assert last[key] is not None and math.isfinite(last[key]), key
    assert (run / "config.yaml").is_file()
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * cfg.logging.samples_per_step
    assert len(samples[0]["tokens"]) == len(samples[0]["entropy"])
    assert any(p.name.startswith("events") for p in (run / "tensorboard").iterdir())
    ckpts = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert ckpts == ["step_000001", "step_000002"]


def test_plain_progress_shows_the_live_law_ceiling_until_it_is_refit(capsys):
    from entrolab.train.tracking import Progress

    p = Progress(3, 0, "plain", "grpo")
    p.update(0, {"reward/mean": 0.5, "entropy/mean": 1.2})
    p.update(1, {"reward/mean": 0.6, "entropy/mean": 1.1, "law/ceiling": 0.812})
    p.update(2, {"reward/mean": 0.7, "entropy/mean": 1.0})
    lines = capsys.readouterr().out.splitlines()
    assert "ceiling" not in lines[0]
    assert "ceiling 0.812" in lines[1] and "ceiling 0.812" in lines[2]


def test_update_changes_the_weights_and_measured_delta_h_matches_prediction(tmp_path, reward_path):
    cfg = tiny_config(tmp_path, reward_path, optim={"steps": 1, "lr": 1e-5})
    trainer = Trainer(cfg)
    before = [p.detach().clone() for p in trainer.params]
    m = trainer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.params))
    assert m["update/steps"] == 2 and m["update/skipped"] == 0
    # Lemma 1 to first order on the same states: a small step gives a tight token-level match.
    assert m["dynamics/delta_H_token_corr"] > 0.99
    assert m["dynamics/delta_H_token_rel_err"] < 0.1


def test_resume_equals_an_uninterrupted_run(tmp_path, reward_path):
    full = Trainer(tiny_config(tmp_path / "a", reward_path, optim={"steps": 4}, checkpoint={"every": 2}))
    full_hist = full.train()

    class Killed(Exception):
        pass

    cfg_b = tiny_config(tmp_path / "b", reward_path, optim={"steps": 4}, checkpoint={"every": 2})
    broken = Trainer(cfg_b)
    real_step = broken.step

    def step_then_die():
        if broken.step_index == 3:  # killed in the middle of step 3, after checkpoint 2 and one more step
            raise Killed
        return real_step()

    broken.step = step_then_die
    with pytest.raises(Killed):
        broken.train()
    resumed = Trainer.resume(tmp_path / "b" / "run")
    assert resumed.step_index == 2
    resumed.train()
    lines = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [0, 1, 2, 3]
    a, b = full_hist[-1], lines[-1]
    compared = [k for k in a if not k.startswith(("time/", "perf/"))]
    assert len(compared) > 20
    for k in compared:
        if isinstance(a[k], float) and math.isfinite(a[k]):
            assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), k


def test_nonfinite_steps_are_skipped_then_stop_the_run(tmp_path, reward_path):
    trainer = Trainer(tiny_config(tmp_path, reward_path, optim={"steps": 5}))
    real = trainer.objective.__class__.__call__

    def nan_loss(self, batch):
        loss, metrics = real(self, batch)
        return loss * float("nan"), metrics

    trainer.objective.__class__ = type("NaNObjective", (trainer.objective.__class__,), {"__call__": nan_loss})
    before = [p.detach().clone() for p in trainer.params]
    with pytest.raises(TrainingError, match="3 steps in a row"):
        trainer.train()
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.params))
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["update/skipped"] for r in lines] == [2.0, 2.0]  # the third step raised before being recorded


def test_kl_method_builds_a_reference_and_dynamic_sampling_fills_the_batch(tmp_path, reward_path):
    cfg = tiny_config(tmp_path, reward_path, algorithm={"method": "dapo", "overrides": {"kl": "ref_kl"}},
                      optim={"steps": 1})
    trainer = Trainer(cfg)
    assert trainer.reference is not None
    m = trainer.step()
    assert "kl/ref" in m and m["kl/ref"] >= 0
    assert 1 <= m["sampling/gen_batches"] <= cfg.optim.max_gen_batches


def test_bad_inputs_get_clear_errors(tmp_path, reward_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        config_from_dict({"data": {"task": "file"}})
    with pytest.raises(ConfigError, match="no config.yaml there"):
        Trainer.resume(tmp_path)
    assert main(["train", "--resume", str(tmp_path), "optim.lr=1"]) == 2


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_one_step_on_the_packaged_default(tmp_path, smollm2):
    model, tokenizer = smollm2
    cfg = config_from_dict({
        "rollout": {"n": 2, "max_new_tokens": 24},
        "optim": {"steps": 1, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 2, "lr": 1e-6},
        "eval": {"every": 0},
        "logging": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False},
        "checkpoint": {"every": 0},
        "diagnostics": {"law_refit_every": 0},
        "algorithm": {"method": "clip_cov"},
    })
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        trainer = Trainer(cfg, model=model, tokenizer=tokenizer)
        (m,) = trainer.train()
        assert m["update/steps"] == 2
        assert 0 < m["entropy/mean"] < math.log(tokenizer.vocab_size if hasattr(tokenizer, "vocab_size") else 49152)
        assert math.isfinite(m["dynamics/actual_delta_H"]) and "clip/frac_cov" in m
        assert (tmp_path / "run" / "checkpoints" / "step_000001" / "model.safetensors").is_file()
    finally:
        model.load_state_dict(state)  # the fixture is shared: leave the weights as they were


# Every catalog method steps in the trainer in tests/test_behaviour.py (with its recorded metrics).


def test_a_reset_reference_survives_resume(tmp_path, reward_path):
    cfg = tiny_config(tmp_path, reward_path, algorithm={"method": "grpo", "overrides": {"kl": "ref_kl"}},
                      optim={"steps": 2}, checkpoint={"every": 1})
    trainer = Trainer(cfg)
    trainer.step()
    trainer._apply_actions({"reset_reference"}, {})  # what a ProRL-style component requests
    reset_state = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    trainer.step_index = 1
    trainer.save_checkpoint()
    resumed = Trainer.resume(tmp_path / "run")
    for k, v in resumed.reference.state_dict().items():
        torch.testing.assert_close(v, reset_state[k])


def test_shared_prompt_forward_equals_the_full_forward_under_padding():
    """The ΔH check runs a group's shared prompt once (KV cache shared by its rows): same hidden states as running
    each row in full, with a left-padded prompt and right-padded responses of different lengths."""
    from entrolab.engine.forward import response_hidden, shared_prompt_response_hidden
    from entrolab.engine.models import tiny_model

    model, tok = tiny_model(seed=2)
    pad = tok.pad_token_id
    prompt = [pad, pad, 11, 12, 13, 14]
    responses = [[20, 21, 22, 23], [30, 31, pad, pad], [40, pad, pad, pad]]
    ids = torch.tensor([prompt + r for r in responses])
    att = torch.tensor([[0, 0, 1, 1, 1, 1] + [int(t != pad) for t in r] for r in responses])
    with torch.no_grad():
        full = response_hidden(model, ids, att, len(prompt))
        shared = shared_prompt_response_hidden(model, ids, att, len(prompt))
    valid = att[:, len(prompt) - 1:-1] > 0  # positions whose next token is a real response token
    valid[:, 0] = True
    torch.testing.assert_close(shared[valid], full[valid], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not share their prompt"):
        shared_prompt_response_hidden(model, torch.cat([ids[:1], ids[1:].roll(1, 1)]), att, len(prompt))


def test_docs_config_reference_matches_the_config_fields():
    from pathlib import Path

    from entrolab.train.config_doc import markdown_reference

    text = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    table = text.split("<!-- config-reference:start -->")[1].split("<!-- config-reference:end -->")[0]
    assert table.strip() == markdown_reference(), "docs/training.md is stale: run python scripts/gen_config_doc.py"

"""The dynamics check: one real policy-gradient update (SGD or AdamW; random or verifier advantages), Lemma-1
prediction vs. exact ΔH per state."""

import itertools
import json

import numpy as np
import pytest
import torch

from entrolab.analysis.dynamics_check import (
    DEFAULT_PROMPTS,
    _entropy_f64,
    encode_prompt,
    verify_dynamics,
    verify_dynamics_on_task,
)
from entrolab.engine.models import tiny_model
from entrolab.ops.dynamics import exact_entropy

PROMPTS = DEFAULT_PROMPTS[:4]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=0)


def _check(model, tokenizer, **kw):
    kw = {"prompts": PROMPTS, "lr": 1e-3, "max_new_tokens": 16, "group_size": 4, "seed": 0, **kw}
    return verify_dynamics(model, tokenizer, kw.pop("prompts"), **kw)


def test_first_order_prediction_matches_exact_change_on_tiny_model(tiny):
    """The tiny random model is near-uniform (H ≈ 4.6 of log 110 ≈ 4.7), where the first-order change is small and
    the second-order one (∝ lr²) catches up early, so its "small step" is lr = 1e-4 (mean |Δz| ≈ 1e-4)."""
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rep = _check(model, tok, lr=1e-4)
    assert rep.n_states > 50 and rep.n_states == rep.predicted.size == rep.actual.size
    assert rep.n_responses == 16 and rep.n_prompts == 4 and rep.advantage_mode == "random±1"
    assert rep.pearson >= 0.95 and rep.spearman >= 0.95
    assert rep.rel_error_sum < 0.05 and rep.rel_error_states < 0.01 and rep.sign_agreement > 0.9
    assert 0 < rep.mean_abs_delta_logit < 1e-3 and rep.grad_norm > 0
    # The weights are restored exactly and the model is left in eval mode with no gradients.
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training and all(p.grad is None for p in model.parameters())
    d = rep.to_dict()
    assert "predicted" not in d and d["n_states"] == rep.n_states


def test_agreement_is_first_order_in_the_step_size(tiny):
    """The prediction is first order, so the mismatch Σ|pred − exact| shrinks like lr² (measured: ×0.0100)."""
    model, tok = tiny
    big, small = _check(model, tok, lr=1e-3), _check(model, tok, lr=1e-4)
    assert big.n_states == small.n_states  # same samples: sampling does not depend on lr
    err_big = np.abs(big.predicted - big.actual).sum()
    err_small = np.abs(small.predicted - small.actual).sum()
    assert 0.005 * err_big < err_small < 0.02 * err_big
    assert small.rel_error_states < big.rel_error_states


def test_deterministic_and_chunk_independent(tiny):
    model, tok = tiny
    a = _check(model, tok, chunk_tokens=64)
    b = _check(model, tok, chunk_tokens=7)
    # Different chunk shapes round the float32 logits differently; 1e-3 of the largest change is far above that.
    tol = 1e-3 * np.abs(a.actual).max()
    np.testing.assert_allclose(a.predicted, b.predicted, rtol=0, atol=tol)
    np.testing.assert_allclose(a.actual, b.actual, rtol=0, atol=tol)
    again = _check(model, tok, chunk_tokens=64)
    np.testing.assert_array_equal(a.predicted, again.predicted)
    c = _check(model, tok, seed=1)
    assert c.n_states != a.n_states or not np.allclose(c.predicted, a.predicted)


def test_reward_advantages(tiny):
    model, tok = tiny
    rep = _check(model, tok, reward_fn=lambda prompt, resp: sum(ch.isdigit() for ch in resp) + 0.1 * len(set(resp)))
    assert rep.advantage_mode == "reward" and rep.pearson >= 0.95
    with pytest.raises(ValueError, match="advantages are 0"):
        _check(model, tok, reward_fn=lambda prompt, resp: 1.0)


def test_argument_errors(tiny):
    model, tok = tiny
    with pytest.raises(ValueError, match="lr"):
        _check(model, tok, lr=0.0)
    with pytest.raises(ValueError, match="at least one prompt"):
        verify_dynamics(model, tok, [])
    with pytest.raises(ValueError, match="temperature"):
        _check(model, tok, temperature=0.0)


def test_float64_entropy_matches_ops():
    z = torch.randn(5, 300) * 3
    torch.testing.assert_close(_entropy_f64(z, 0.7).float(), exact_entropy(z, 0.7), rtol=1e-5, atol=1e-5)


def test_prompt_encoding_applies_the_chat_template_once(tiny):
    _, tok = tiny
    ids = encode_prompt(tok, "2+2?")
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>user\n2+2?") and text.endswith("<|im_start|>assistant\n")
    assert encode_prompt(tok, text) == ids  # an already-rendered prompt is not wrapped again
    assert tok.decode(encode_prompt(tok, "2+2?", chat_template=False)) == "2+2?"


def test_cli_verify_dynamics_on_a_saved_model(tmp_path, tiny, capsys):
    from analysis_fixtures import make_run

    from entrolab.cli import main

    model, tok = tiny
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    run = make_run(tmp_path / "run", steps=12)
    # the earlier mode: the run's own prompts, random ±1 advantages, one SGD step
    code = main(["analyze", str(run), "--verify-dynamics", "--model", str(tmp_path / "model"), "--lr", "1e-3",
                 "--optimizer", "sgd", "--advantages", "random", "--n-prompts", "2", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dynamics check (prompts from run/samples.jsonl;" in out and "one sgd step" in out and "Pearson" in out
    assert (run / "analysis" / "dynamics_check.png").is_file()
    # the default: a batch of the default task, its verifier's rewards (constant for a random model: say so), AdamW
    code = main(["analyze", str(run), "--verify-dynamics", "--model", str(tmp_path / "model"), "--n-prompts", "2",
                 "--max-new-tokens", "8", "--out", str(tmp_path / "a2")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "arithmetic task" in out and "one adamw step, lr 1e-07" in out
    assert "random±1 (rewards constant in every group) advantages" in out
    summary = json.loads((tmp_path / "a2" / "summary.json").read_text())
    assert summary["dynamics_check"]["optimizer"] == "adamw" and summary["dynamics_check"]["mixed_groups"] == 0


class _ParityTask:
    """A stand-in task whose verifier gives mixed rewards even to a random model: 1 when the response holds an odd
    number of digits. Prompts use the tiny tokenizer's chat template, like a real task's."""

    name = "parity"

    def train_examples(self, start=0):
        from entrolab.env.tasks import Example

        for i in itertools.count(start):
            yield Example(id=f"p{i}", prompt=f"{i} + {2 * i}", answer=str(3 * i))

    def format_prompt(self, tokenizer, example):
        from entrolab.env.tasks import format_prompt

        return format_prompt(tokenizer, example.prompt)

    def score(self, completion, example, format_weight=0.0):
        r = float(sum(ch.isdigit() for ch in completion) % 2)
        return r, r > 0

    def describe(self):
        return {"name": self.name}


def test_real_update_from_verifier_rewards(tiny):
    """The issue's check: a batch of a task's prompts, rewards from its verifier → GRPO group advantages, one AdamW
    step with a small lr; the per-state Lemma-1 prediction must match the exact change."""
    model, tok = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(n_prompts=3, group_size=4, max_new_tokens=12, seed=0, max_batches=1)
    rep = verify_dynamics_on_task(model, tok, _ParityTask(), lr=1e-6, **kw)
    assert rep.advantage_mode == "reward" and rep.optimizer == "adamw"
    assert rep.mixed_groups >= 1 and 0.0 < rep.reward_mean < 1.0
    assert rep.source == "parity task, training examples 0–2" and rep.n_prompts == 3 and rep.n_responses == 12
    assert rep.pearson >= 0.95 and rep.spearman >= 0.95 and rep.rel_error_states < 0.05
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights restored
    # it is an AdamW step: Adam's first step is lr·g/|g| per parameter, far larger than SGD's lr·g on the same
    # (small) gradient, with the same samples and advantages
    sgd = verify_dynamics_on_task(model, tok, _ParityTask(), lr=1e-6, optimizer="sgd", **kw)
    assert sgd.n_states == rep.n_states and sgd.optimizer == "sgd"
    assert rep.mean_abs_delta_logit > 10 * sgd.mean_abs_delta_logit
    assert "one adamw step" in rep.describe() and "mixed rewards" in rep.describe()


def test_constant_verifier_rewards_fall_back_or_fail(tiny):
    """A random model never answers the arithmetic task right: 'verifier' refuses, 'auto' falls back to random ±1
    advantages after max_batches batches and says so."""
    model, tok = tiny
    kw = dict(n_prompts=1, group_size=2, max_new_tokens=4, max_batches=2)
    with pytest.raises(ValueError, match="every group's rewards were equal"):
        verify_dynamics_on_task(model, tok, advantages="verifier", **kw)
    rep = verify_dynamics_on_task(model, tok, advantages="auto", **kw)
    assert rep.advantage_mode == "random±1 (rewards constant in every group)"
    assert rep.mixed_groups == 0 and rep.reward_mean == 0.0
    assert rep.source.startswith("arithmetic task (difficulty 3") and rep.source.endswith("examples 1–1")
    with pytest.raises(ValueError, match="advantages"):
        verify_dynamics_on_task(model, tok, advantages="bogus", **kw)


def test_cli_verify_dynamics_without_a_run(tmp_path, capsys):
    from entrolab.cli import main

    out_dir = tmp_path / "dc"
    code = main(["analyze", "--verify-dynamics", "--model", "tiny", "--n-prompts", "2", "--max-new-tokens", "8",
                 "--out", str(out_dir)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dynamics check (arithmetic task" in out and "one adamw step" in out
    data = json.loads((out_dir / "dynamics_check.json").read_text())
    assert data["n_states"] == len(data["predicted"]) == len(data["actual"]) > 0
    assert data["optimizer"] == "adamw" and data["lr"] == 1e-7 and data["pearson"] >= 0.95
    assert (out_dir / "dynamics_check.png").stat().st_size > 1000
    assert main(["analyze"]) == 2
    assert "needs a RUN_DIR, or --verify-dynamics" in capsys.readouterr().err
    assert main(["analyze", "--verify-dynamics", "--model", "tiny", "--lr", "-1"]) == 2


@pytest.mark.slow
def test_dynamics_on_packaged_smollm2(smollm2):
    """A row of the table in docs/analysis.md: 4 prompts × 4 responses × ≤16 tokens, lr 1e-4, seed 0
    (measured: 246 states, Pearson 0.999993, ΣΔH 0.1488 predicted vs 0.1485 exact)."""
    model, tok = smollm2
    rep = verify_dynamics(model, tok, DEFAULT_PROMPTS[:4], lr=1e-4, max_new_tokens=16, group_size=4, seed=0)
    print(rep.describe())
    assert rep.n_states > 100
    assert rep.pearson >= 0.999 and rep.spearman >= 0.999
    assert rep.rel_error_sum < 0.01 and rep.rel_error_states < 0.01

"""The dynamics check: one real SGD policy-gradient step, Lemma-1 prediction vs. exact ΔH per state."""

import numpy as np
import pytest
import torch

from entrolab.analysis.dynamics_check import DEFAULT_PROMPTS, _entropy_f64, encode_prompt, verify_dynamics
from entrolab.ops.dynamics import exact_entropy
from entrolab.train.models import tiny_model

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
    code = main(["analyze", str(run), "--verify-dynamics", "--model", str(tmp_path / "model"), "--lr", "1e-3",
                 "--n-prompts", "2", "--max-new-tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "dynamics check (" in out and "Pearson" in out
    assert (run / "analysis" / "dynamics_check.png").is_file()


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

"""End to end on the packaged SmolLM2-135M-Instruct: every strategy runs with a small budget (shared model fixture)."""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.inference import build_strategy
from entrolab.inference.generate import generate

pytestmark = pytest.mark.slow

QUESTION = "A shop sells pens at 3 dollars each. How much do 7 pens cost? Think step by step."


def _check(res, model):
    vocab = model.config.vocab_size
    assert res.tokens_spent > 0 and res.chosen is not None
    ent = res.entropy_trace
    assert len(ent) == res.chosen.num_tokens > 0
    assert all(0.0 <= h <= math.log(vocab) + 1e-3 for h in ent)
    assert all(lp <= 1e-5 for lp in res.chosen.logprobs)
    assert res.text == res.chosen.text and isinstance(res.text, str)
    assert res.answer is None or isinstance(res.answer, str)


def _run(smollm2, name, seed=0, **params):
    model, tok = smollm2
    res = build_strategy(name, **params).run(model, tok, [QUESTION], generator=torch.Generator().manual_seed(seed))
    assert len(res) == 1
    _check(res[0], model)
    return res[0]


def test_e2e_greedy_generate_matches_hf(smollm2):
    model, tok = smollm2
    from entrolab.train.tasks import format_prompt

    ids = tok.encode(format_prompt(tok, QUESTION), add_special_tokens=False)
    ours = generate(model, tok, [ids], max_new_tokens=12, greedy=True).traces[0].token_ids
    hf = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        do_sample=False, max_new_tokens=12)
    assert hf[0, len(ids):].tolist()[: len(ours)] == ours


def test_e2e_sample(smollm2):
    res = _run(smollm2, "sample", max_new_tokens=32)
    assert res.tokens_spent == res.chosen.num_tokens


@pytest.mark.parametrize("name", ["vote:majority", "vote:inverse_entropy", "vote:min_entropy"])
def test_e2e_votes(smollm2, name):
    res = _run(smollm2, name, n=3, max_new_tokens=24)
    assert len(res.traces) == 3 and res.tokens_spent == sum(t.num_tokens for t in res.traces)


def test_e2e_eat(smollm2):
    # boundaries at single newlines and no warm-up, so that a short answer still probes and may exit
    res = _run(smollm2, "eat", max_new_tokens=48, answer_tokens=12, boundary="\n", min_distance=0, delta=10.0)
    info = res.info
    assert info["exit_reason"] in ("eat", "budget", "eos")
    assert info["probe_tokens"] == info["boundaries"] * len(smollm2[1].encode("</think>\n\n", add_special_tokens=False))
    assert res.tokens_spent == res.chosen.num_tokens + info["probe_tokens"]
    if info["exit_reason"] == "eat":  # δ = 10 bits² fires at the first boundary after the first
        assert info["exit_boundary"] == 1


def test_e2e_dts(smollm2):
    res = _run(smollm2, "dts", max_new_tokens=32, max_active=3)
    assert 1 <= res.info["hypotheses"] <= 3


def test_e2e_eager(smollm2):
    res = _run(smollm2, "eager", max_new_tokens=32, max_sequences=3, entropy_threshold=1.0)
    assert res.info["sequences"] + res.info["saved_budget"] == 3


def test_e2e_egl(smollm2):
    res = _run(smollm2, "egl", max_new_tokens=24, count_threshold=1, confidence_threshold=1.0)
    assert res.info["triggered"] and len(res.traces) == 2  # p < 1 for some token: always refines


def test_e2e_seat(smollm2):
    res = _run(smollm2, "seat", n=2, max_rounds=2, max_new_tokens=24, threshold=0.0)
    assert res.info["rounds"] == 2 and len(res.traces) == 4  # threshold 0: never converges

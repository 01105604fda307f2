"""End to end on the packaged SmolLM2-135M-Instruct: every strategy runs with a small budget (shared model fixture).

The assertions are properties every run must have, whatever the model samples: the tokens spent add up from the
traces, each trace's per-token lists have one entry per token, the budgets hold, answers come from the traces' text,
and each rule's recorded decisions are the rule applied to the recorded signals.
"""

from __future__ import annotations

import math

import pytest
import torch

from entrolab.generation.decoder import generate
from entrolab.inference import build_strategy
from entrolab.inference.aggregate import inverse_entropy_vote, majority_vote
from entrolab.inference.base import default_answer_fn, group_tokens
from entrolab.inference.eat import ema_variance_stop
from entrolab.inference.egl import egl_metrics

pytestmark = pytest.mark.slow

QUESTION = "A shop sells pens at 3 dollars each. How much do 7 pens cost? Think step by step."
FINISH = {"eos", "stop", "length", "hook", "halted"}


def _eos_ids(model, tok):
    ids = {tok.eos_token_id}
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos])
    return {i for i in ids if i is not None}


def _check_trace(t, model, tok, max_new_tokens):
    """Per-trace invariants: one entropy / varentropy / log-prob / forced flag per token, the length budget, the
    finish reason consistent with the tokens, the text decoded from the tokens."""
    n = t.num_tokens
    assert 1 <= n <= max_new_tokens
    assert len(t.entropies) == len(t.varentropies) == len(t.logprobs) == len(t.forced) == n
    assert all(0.0 <= h <= math.log(model.config.vocab_size) + 1e-3 for h in t.entropies)
    assert all(v >= -1e-3 for v in t.varentropies)
    assert all(lp <= 1e-5 for lp in t.logprobs)
    assert t.finish_reason in FINISH
    if t.finish_reason == "eos":
        assert t.token_ids[-1] in _eos_ids(model, tok)
    if t.finish_reason == "length":
        assert n == max_new_tokens
    assert t.text == tok.decode(t.token_ids, skip_special_tokens=True)


def _run(smollm2, name, seed=0, **params):
    model, tok = smollm2
    strategy = build_strategy(name, **params)
    res = strategy.run(model, tok, [QUESTION], generator=torch.Generator().manual_seed(seed))
    assert len(res) == 1
    res = res[0]
    assert res.question == QUESTION and res.chosen is not None and res.tokens_spent > 0
    assert any(t is res.chosen for t in res.traces)
    for t in res.traces:
        _check_trace(t, model, tok, strategy.max_new_tokens)
    assert res.entropy_trace == res.chosen.entropies and len(res.entropy_trace) == res.chosen.num_tokens
    assert res.text == res.chosen.text
    assert res.info["trace_length"] == res.chosen.num_tokens
    assert res.info["mean_entropy"] == pytest.approx(res.chosen.mean_entropy(), nan_ok=True)
    return strategy, res


def test_e2e_greedy_generate_matches_hf(smollm2):
    model, tok = smollm2
    from entrolab.env.tasks import format_prompt

    ids = tok.encode(format_prompt(tok, QUESTION), add_special_tokens=False)
    ours = generate(model, tok, [ids], max_new_tokens=12, greedy=True).traces[0].token_ids
    hf = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                        do_sample=False, max_new_tokens=12)
    assert hf[0, len(ids):].tolist()[: len(ours)] == ours


def test_e2e_sample(smollm2):
    _, res = _run(smollm2, "sample", max_new_tokens=32)
    assert len(res.traces) == 1 and res.tokens_spent == res.chosen.num_tokens
    assert res.answer == default_answer_fn(res.text)


@pytest.mark.parametrize("name", ["vote:majority", "vote:inverse_entropy", "vote:min_entropy"])
def test_e2e_votes(smollm2, name):
    _, res = _run(smollm2, name, n=3, max_new_tokens=24)
    assert len(res.traces) == 3 and res.tokens_spent == sum(t.num_tokens for t in res.traces)
    answers = [default_answer_fn(t.text) for t in res.traces]
    ents = [t.mean_entropy() for t in res.traces]
    assert res.info["answers"] == answers and res.info["mean_entropies"] == pytest.approx(ents)
    if name == "vote:majority":
        assert res.answer == majority_vote(answers).answer
    elif name == "vote:inverse_entropy":
        assert res.answer == inverse_entropy_vote(answers, ents).answer
    else:  # the lowest mean entropy among the responses that gave an answer (all of them when none did)
        pool = [i for i, a in enumerate(answers) if a is not None] or list(range(3))
        k = min(pool, key=lambda i: (ents[i], i))
        assert res.chosen is res.traces[k] and res.answer == answers[k]


def test_e2e_eat(smollm2):
    model, tok = smollm2
    # boundaries at single newlines and no warm-up, so that a short answer still probes and may exit
    eat, res = _run(smollm2, "eat", max_new_tokens=48, answer_tokens=12, boundary="\n", min_distance=0, delta=10.0)
    info, t = res.info, res.chosen
    probe_ids = tok.encode(eat.probe_suffix, add_special_tokens=False)
    answer_ids = tok.encode(eat.answer_suffix, add_special_tokens=False)
    think_budget = eat.max_new_tokens - eat.answer_tokens - len(answer_ids)
    assert eat.probe_suffix == "\n</think>\n"  # the method card's marker
    # tokens: the response plus every probe, each probe the suffix's length
    n_b = info["boundaries"]
    assert len(info["eat_values"]) == len(info["eat_variances"]) == len(info["boundary_positions"]) == n_b
    assert info["probe_tokens"] == n_b * len(probe_ids)
    assert res.tokens_spent == t.num_tokens + info["probe_tokens"]
    # each probe sits at a boundary of the reasoning, within the reasoning budget
    pos = info["boundary_positions"]
    assert pos == sorted(set(pos)) and all(1 <= p <= think_budget for p in pos)
    assert all(eat.boundary in tok.decode(t.token_ids[max(0, p - 2):p]) for p in pos)
    # the EMA variances and the exit are the rule applied to the recorded EAT values
    stop, variances = ema_variance_stop(info["eat_values"], eat.alpha, eat.delta, eat.min_distance, eat.min_value)
    assert info["eat_variances"] == pytest.approx(variances, abs=1e-9)
    assert info["exit_reason"] in ("eat", "budget", "eos", "length")
    assert info["exit_boundary"] == (stop if info["exit_reason"] == "eat" else None)
    if info["exit_reason"] != "eat":  # the rule is applied right after each probe: had it fired, EAT would exit
        assert stop is None
    # each recorded EAT value is the entropy (bits) after prefix + probe suffix, recomputed by a full forward pass
    prompt = t.prompt_ids
    with torch.no_grad():
        for p, value in zip(pos, info["eat_values"]):
            ids = torch.tensor([prompt + t.token_ids[:p] + probe_ids])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float() / eat.probe_temperature, -1)
            bits = float(-(logp.exp() * logp).sum()) / math.log(2)
            assert value == pytest.approx(bits, abs=5e-3)
    # forced tokens: exactly the answer suffix right before the answer, when reasoning was stopped
    if info["exit_reason"] in ("eat", "budget"):
        start = info["answer_start"]
        assert start - len(answer_ids) <= think_budget
        assert t.token_ids[start - len(answer_ids):start] == answer_ids
        assert [i for i, f in enumerate(t.forced) if f] == list(range(start - len(answer_ids), start))
        assert t.num_tokens - start <= eat.answer_tokens
        assert info["reasoning_tokens"] == start
    else:
        assert not any(t.forced) and info["answer_start"] is None
    assert res.answer == default_answer_fn(t.text)


def test_e2e_dts(smollm2):
    dts, res = _run(smollm2, "dts", max_new_tokens=32, max_active=3)
    info, ts = res.info, res.traces
    assert info["hypotheses"] == len(ts) and 1 <= len(ts) <= dts.max_active
    assert res.tokens_spent == group_tokens(ts) == sum(t.num_tokens - (t.fork_step or 0) for t in ts)
    # every branch adds 1 … K−1 hypotheses; without a branch there is one
    b = info["branch_events"]
    assert 1 + b <= len(ts) <= 1 + (dts.top_k - 1) * b or (b == 0 and len(ts) == 1)
    by_id = {t.id: t for t in ts}
    for t in ts:
        if t.parent is not None and t.parent in by_id:  # a child shares its parent's prefix up to the fork
            assert t.token_ids[: t.fork_step] == by_id[t.parent].token_ids[: t.fork_step]
        # the rule fired where a branch was recorded (entropy temperature = sampling temperature here)
        for step in t.extra.get("dts_branch_steps", []):
            h, v = t.entropies[step], t.varentropies[step]
            assert bool(dts.fires(torch.tensor([h]), torch.tensor([v]))[0]), (step, h, v)
    natural = [t for t in ts if t.finish_reason in ("eos", "stop")]
    assert info["finished_naturally"] == len(natural)
    pool = natural[: dts.num_traces] or ts
    assert info["voted"] == len(pool)
    answers = [default_answer_fn(t.text) for t in pool]
    assert info["answers"] == answers
    vote = majority_vote(answers)
    assert res.answer == (vote.answer if vote.answer is not None else answers[0])


def test_e2e_eager(smollm2):
    eager, res = _run(smollm2, "eager", max_new_tokens=32, max_sequences=3, entropy_threshold=1.0)
    info, ts = res.info, res.traces
    assert info["sequences"] == len(ts) <= 3 and info["saved_budget"] == 3 - len(ts)
    assert len(info["branch_steps"]) == len(ts) - 1  # each branch adds one sequence
    assert res.tokens_spent == group_tokens(ts)
    answers = [default_answer_fn(t.text) for t in ts]
    assert info["answers"] == answers and res.answer == majority_vote(answers).answer


def test_e2e_egl(smollm2):
    egl, res = _run(smollm2, "egl", max_new_tokens=24, count_threshold=1, confidence_threshold=1.0)
    draft = res.traces[0]
    m = egl_metrics(draft, egl.confidence_threshold)
    assert res.info["ppl"] == pytest.approx(math.exp(-sum(draft.logprobs) / draft.num_tokens))
    assert res.info["low_confidence"] == m["low_confidence"] == sum(math.exp(lp) < 1.0 for lp in draft.logprobs)
    assert res.info["triggered"] == egl.triggered(m) is True and len(res.traces) == 2  # p < 1 somewhere: refines
    refined = res.traces[1]
    assert res.chosen is refined and res.info["draft_tokens"] == draft.num_tokens
    assert res.tokens_spent == draft.num_tokens + refined.num_tokens
    assert res.info["report"].startswith("Uncertainty report")
    draft_answer = default_answer_fn(draft.text)
    assert res.info["draft_answer"] == draft_answer
    refined_answer = default_answer_fn(refined.text)
    assert res.answer == (refined_answer if refined_answer is not None else draft_answer)


def test_e2e_seat(smollm2):
    seat, res = _run(smollm2, "seat", n=2, max_rounds=2, max_new_tokens=24, threshold=0.0)
    info = res.info
    assert info["rounds"] == 2 and len(res.traces) == 4  # threshold 0: never converges
    assert info["converged"] is False and len(info["semantic_entropies"]) == 2
    assert res.tokens_spent == sum(t.num_tokens for t in res.traces)
    rounds = [res.traces[:2], res.traces[2:]]
    assert info["answers"] == [[default_answer_fn(t.text) for t in r] for r in rounds]
    assert res.answer == majority_vote(info["answers"][-1]).answer
    assert any(res.chosen is t for t in rounds[-1])

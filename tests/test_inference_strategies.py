"""Each stopping / branching rule on a scripted fake model: the rule fires exactly where it should."""

from __future__ import annotations

import math
import re

import pytest
import torch
from inference_fakes import (
    CharTokenizer,
    ScriptedLM,
    after_sep,
    from_probs,
    peaked,
    uniform,
)

from entrolab.errors import ConfigError
from entrolab.generation.decoder import generate
from entrolab.inference import (
    DTS,
    EAT,
    EGL,
    SEAT,
    EAGer,
    MeanTokenEntropy,
    TraceLength,
    auroc,
    build_strategy,
    entropy_varentropy,
    strategy_names,
)
from entrolab.inference.eat import ema_variance_stop

IDENTITY = dict(prompt_fn=lambda tok, q: q + "<sep>")


def _gen(g):
    return torch.Generator().manual_seed(g)


# --- EAT --------------------------------------------------------------------------------------------------------------


def test_ema_variance_rule_by_hand():
    # α = 1/2, EAT = [0, 2, 2, 2, 2]: m = 0, 1, 1.5, 1.75, 1.875; v = 0, .5, .375, .21875, .1171875
    stop, v = ema_variance_stop([0, 2, 2, 2, 2], alpha=0.5, delta=0.2, min_distance=1)
    assert v == pytest.approx([0.0, 0.5, 0.375, 0.21875, 0.1171875])
    assert stop == 4
    assert ema_variance_stop([0, 2, 2, 2, 2], 0.5, 0.1, 1)[0] is None
    assert ema_variance_stop([1, 1, 1, 1], 0.5, 0.1, 2)[0] == 2  # the warm-up holds the exit back to n = 2
    assert ema_variance_stop([1, 1, 1, 1], 0.5, 0.1, 2, min_value=0.5)[0] is None


def _eat_model(tok, eat_bits):
    """Reasons 'a', 'a', '\\n\\n' forever; after '</think>' the next-token entropy is eat_bits[n] bits at the n-th
    boundary; after a committed '</think>' it answers one token then <eos>."""
    sep, think, nl2, a = (tok.tok(s) for s in ("<sep>", "</think>", "\n\n", "a"))
    answer_tokens = [tok.tok(c) for c in "wxyz"]
    V = len(tok)

    def script(hist):
        g = after_sep(hist, sep)
        if g and g[-1] == think:
            n = g.count(nl2) - 1
            bits = eat_bits[min(n, len(eat_bits) - 1)]
            return peaked(V, answer_tokens[0]) if bits == 0 else uniform(V, answer_tokens[: 2 ** bits])
        if think in g:
            return peaked(V, tok.eos_token_id)
        return peaked(V, nl2 if len(g) % 3 == 2 else a)

    return ScriptedLM(script, V, tok.eos_token_id)


def test_eat_exits_exactly_at_the_hand_computed_boundary():
    tok = CharTokenizer()
    model = _eat_model(tok, [0, 2, 2, 2, 2, 2, 2, 2])
    eat = EAT(alpha=0.5, delta=0.2, min_distance=1, probe_suffix="</think>", answer_suffix="</think>",
              answer_tokens=4, max_new_tokens=60, temperature=1.0, top_p=1.0)
    res = eat.run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t.split("</think>")[-1][:1] or None,
                  **IDENTITY)[0]
    info = res.info
    assert info["exit_reason"] == "eat" and info["exit_boundary"] == 4
    assert info["eat_values"] == pytest.approx([0, 2, 2, 2, 2], abs=1e-4)
    assert info["eat_variances"] == pytest.approx([0, 0.5, 0.375, 0.21875, 0.1171875], abs=1e-4)
    t = res.chosen
    # boundaries complete at tokens 2, 5, 8, 11, 14; the marker is forced right after the 5th (n = 4)
    think = tok.tok("</think>")
    assert t.token_ids.index(think) == 15 and t.forced[15] and not any(t.forced[:15])
    assert info["reasoning_tokens"] == 16  # the answer starts after the forced marker
    assert t.finish_reason == "eos" and res.answer in "wxyz"
    # tokens spent: 15 reasoning + marker + answer + eos, plus one probe token per boundary
    assert res.tokens_spent == t.num_tokens + 5 and info["probe_tokens"] == 5


def test_eat_in_nats_and_budget_exit():
    tok = CharTokenizer()
    model = _eat_model(tok, [1, 1, 1])
    eat = EAT(alpha=0.5, delta=0.0, min_distance=1, entropy_base=math.e, probe_suffix="</think>",
              answer_suffix="</think>", answer_tokens=3, max_new_tokens=14, temperature=1.0, top_p=1.0)
    res = eat.run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: None, **IDENTITY)[0]
    assert res.info["exit_reason"] == "budget"  # δ = 0: the variance never falls below it
    assert res.info["eat_values"][0] == pytest.approx(math.log(2), abs=1e-4)  # 1 bit, reported in nats
    think = tok.tok("</think>")
    assert res.chosen.token_ids.index(think) == 14 - 3 - 1  # forced when reasoning reached its budget
    with pytest.raises(ConfigError):
        EAT(max_new_tokens=10, answer_tokens=64).run(model, tok, ["q"], **IDENTITY)
    with pytest.raises(ConfigError):
        EAT(alpha=0.0)


def test_eat_probes_with_the_method_card_suffix():
    """Card §3.4: at each boundary append "\\n</think>\\n" (uncommitted) and read the next-token entropy there.
    The fake answers with a 2-bit distribution only right after exactly that suffix (0 bits after anything else)."""
    tok = CharTokenizer()
    sep, think, nl2, nl, a = (tok.tok(s) for s in ("<sep>", "</think>", "\n\n", "\n", "a"))
    V = len(tok)

    def script(hist):
        g = after_sep(hist, sep)
        if g[-3:] == [nl, think, nl]:
            return uniform(V, [tok.tok(c) for c in "wxyz"])  # 2 bits
        if think in g:
            return peaked(V, tok.eos_token_id)
        return peaked(V, nl2 if len(g) % 3 == 2 else a)

    eat = EAT(alpha=0.5, delta=0.2, min_distance=1, answer_tokens=4, max_new_tokens=40, temperature=1.0, top_p=1.0)
    assert eat.probe_suffix == "\n</think>\n"  # the card's marker, not "</think>\n\n"
    res = eat.run(ScriptedLM(script, V, tok.eos_token_id), tok, ["q"], generator=_gen(0), answer_fn=lambda t: None,
                  **IDENTITY)[0]
    info = res.info
    assert info["eat_values"] == pytest.approx([2.0, 2.0], abs=1e-4)  # read after the card's suffix
    assert info["exit_reason"] == "eat" and info["exit_boundary"] == 1  # constant EAT: v_1 = 0 < δ at n = 1
    assert info["boundary_positions"] == [3, 6]  # probed after 'a a \n\n' and the next three tokens
    assert info["probe_tokens"] == 3 * info["boundaries"] == 6  # "\n", "</think>", "\n" per probe
    assert not any(t == think for t in res.chosen.token_ids[:6])  # the probes were never committed


# --- DTS --------------------------------------------------------------------------------------------------------------


def _dts_model(tok, branch_step=2, finish_after=None):
    """Peaked on 'a' except at ``branch_step``, where the distribution is a 'decision token': low entropy, high
    varentropy (0.7 on 'a', 0.1 on 'b', 0.08 on 'c', 0.12 spread over 60 others). A hypothesis that took token X at
    the branch ends ``finish_after[X]`` steps later."""
    sep = tok.tok("<sep>")
    V = len(tok)
    a, b, c = tok.tok("a"), tok.tok("b"), tok.tok("c")
    rest = [tok.tok(ch) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&()*+,-./:;<=>?@[]^_`{|}~"][:60]
    decision = from_probs(V, {a: 0.7, b: 0.1, c: 0.08}, rest=0.12, rest_tokens=rest)
    finish_after = finish_after or {a: 6, b: 4, c: 2}

    def script(hist):
        g = after_sep(hist, sep)
        if len(g) == branch_step:
            return decision
        if len(g) > branch_step and len(g) >= branch_step + finish_after.get(g[branch_step], 3):
            return peaked(V, tok.eos_token_id)
        return peaked(V, a)

    return ScriptedLM(script, V, tok.eos_token_id), decision


def test_dts_branches_at_the_decision_token_and_first_finished_wins():
    tok = CharTokenizer()
    model, decision = _dts_model(tok)
    h, v, _ = entropy_varentropy(decision)
    assert h.item() <= 2.5 and v.item() > 1.5  # the scripted step is a decision token…
    hp, vp, _ = entropy_varentropy(peaked(len(tok), tok.tok("a")))
    assert not (hp.item() <= 2.5 and vp.item() > 1.5)  # …and the others are not
    dts = DTS(entropy_temperature=1.0, temperature=1.0, max_new_tokens=30)
    res = dts.run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert res.info["branch_events"] == 1 and res.info["hypotheses"] == 3
    branch_tokens = sorted(t.token_ids[2] for t in res.traces)
    assert branch_tokens == sorted(tok.tok(x) for x in "abc")  # the top-3 tokens of the decision distribution
    assert all(t.fork_step == 2 for t in res.traces if t.parent is not None)
    # 'c' ends first (2 steps after the branch): DTS-Greedy answers with it and halts the others
    assert res.answer == "c" and res.chosen.finish_reason == "eos"
    assert sorted(t.finish_reason for t in res.traces) == ["eos", "halted", "halted"]
    # shared prefix counted once: 2 + 3 hypotheses × 3 tokens each up to the first finish
    assert res.tokens_spent == 2 + 3 * 3


def test_dts_num_traces_vote_and_entropy_rule_and_cap():
    tok = CharTokenizer()
    model, _ = _dts_model(tok)
    res = DTS(entropy_temperature=1.0, temperature=1.0, num_traces=2, max_new_tokens=30).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert res.info["voted"] == 2  # 'c' then 'b' finished; tie → the earlier one
    assert res.answer == "c"
    # v1 rule (H > τ): the decision step has H ≈ 1.43 nats < 2.5, so nothing branches
    res = DTS(rule="entropy", entropy_temperature=1.0, temperature=1.0, max_new_tokens=30).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert res.info["branch_events"] == 0 and len(res.traces) == 1
    res = DTS(rule="entropy", entropy_threshold=1.0, entropy_temperature=1.0, temperature=1.0,
              max_new_tokens=30).run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert res.info["branch_events"] == 1
    # cap M = 2: the 3-way branch is trimmed to 2 children
    res = DTS(max_active=2, entropy_temperature=1.0, temperature=1.0, max_new_tokens=30).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert res.info["hypotheses"] == 2 and res.answer == "b"
    with pytest.raises(ConfigError):
        DTS(rule="nope")


def test_dts_entropy_temperature_changes_what_fires():
    tok = CharTokenizer()
    model, decision = _dts_model(tok)
    h, v, _ = entropy_varentropy(decision, 0.6)
    fires_at_06 = bool(h.item() <= 2.5 and v.item() > 1.5)
    res = DTS(entropy_temperature=0.6, temperature=1.0, max_new_tokens=30).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[2], **IDENTITY)[0]
    assert (res.info["branch_events"] == 1) == fires_at_06


# --- EAGer ------------------------------------------------------------------------------------------------------------


def _eager_model(tok, high_steps=(1, 3), end=5):
    sep = tok.tok("<sep>")
    V = len(tok)
    spread = [tok.tok(ch) for ch in "bcdefghi"]  # uniform over 8 → top-K entropy log 8 ≈ 2.08 nats

    def script(hist):
        g = after_sep(hist, sep)
        if len(g) >= end:
            return peaked(V, tok.eos_token_id)
        if len(g) in high_steps:
            return uniform(V, spread)
        return peaked(V, tok.tok("a"))

    return ScriptedLM(script, V, tok.eos_token_id)


def test_eager_branches_where_topk_entropy_exceeds_threshold_within_budget():
    tok = CharTokenizer()
    model = _eager_model(tok)
    eager = EAGer(entropy_threshold=1.5, top_k=20, max_sequences=32, temperature=1.0, max_new_tokens=20)
    res = eager.run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[1], **IDENTITY)[0]
    # step 1: one sequence → 2; step 3: both branch → 4
    assert res.info["branch_steps"] == [1, 3, 3]
    assert res.info["sequences"] == 4 and res.info["saved_budget"] == 28
    # the two sequences of a branch take distinct tokens
    assert len({t.token_ids[1] for t in res.traces}) == 2
    # tokens: 1 shared + 2 × 2 + 4 × 3 (steps 3, 4 and <eos> at 5)
    assert res.tokens_spent == 1 + 2 * 2 + 4 * 3
    # budget M = 3: only the first sequence at step 3 may branch
    res = EAGer(entropy_threshold=1.5, max_sequences=3, temperature=1.0, max_new_tokens=20).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[1], **IDENTITY)[0]
    assert res.info["sequences"] == 3 and res.info["saved_budget"] == 0 and res.info["branch_steps"] == [1, 3]
    # θ above log 8: never branches, saves M − 1
    res = EAGer(entropy_threshold=2.1, max_sequences=8, temperature=1.0, max_new_tokens=20).run(
        model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[1], **IDENTITY)[0]
    assert res.info["sequences"] == 1 and res.info["saved_budget"] == 7


def test_eager_budget_is_per_prompt():
    tok = CharTokenizer()
    model = _eager_model(tok, high_steps=(1,))
    res = EAGer(entropy_threshold=1.5, max_sequences=2, temperature=1.0, max_new_tokens=20).run(
        model, tok, ["q", "r"], generator=_gen(0), answer_fn=lambda t: t[1], **IDENTITY)
    assert [r.info["sequences"] for r in res] == [2, 2]
    assert all(t.group == i for i, r in enumerate(res) for t in r.traces)


# --- EGL --------------------------------------------------------------------------------------------------------------


def _egl_model(tok, confident: bool):
    sep = tok.tok("<sep>")
    V = len(tok)
    A, C, D, B = (tok.tok(x) for x in "ACDB")
    marker = tok.encode("previous attempt")

    def script(hist):
        g = after_sep(hist, sep)
        refine = any(hist[i:i + len(marker)] == marker for i in range(len(hist)))
        if refine:
            return peaked(V, B) if len(g) < 1 else peaked(V, tok.eos_token_id)
        if len(g) >= 3:
            return peaked(V, tok.eos_token_id)
        return peaked(V, A) if confident else from_probs(V, {A: 0.4, C: 0.3, D: 0.3})

    return ScriptedLM(script, V, tok.eos_token_id)


def _egl_answer(text):
    return "refined" if "B" in text else "draft"


def test_egl_triggers_one_refinement_on_uncertain_draft():
    tok = CharTokenizer()
    egl = EGL(ppl_threshold=100.0, entropy_threshold=100.0, count_threshold=3, confidence_threshold=0.5,
              temperature=1.0, top_p=1.0, max_new_tokens=10)
    res = egl.run(_egl_model(tok, confident=False), tok, ["q"], generator=_gen(0), answer_fn=_egl_answer,
                  **IDENTITY)[0]
    assert res.info["low_confidence"] == 3 and res.info["triggered"]  # only the count clause fires
    assert res.answer == "refined" and res.info["draft_answer"] == "draft"
    assert len(res.traces) == 2 and res.tokens_spent == 4 + 2
    assert res.info["report"].startswith("Uncertainty report") and "alternatives" in res.info["report"]
    # the max-entropy clause alone: top-3 entropy of (0.4, 0.3, 0.3) ≈ 1.089 nats
    res = EGL(ppl_threshold=100.0, entropy_threshold=1.0, count_threshold=99, temperature=1.0, top_p=1.0,
              max_new_tokens=10).run(_egl_model(tok, confident=False), tok, ["q"], generator=_gen(0),
                                     answer_fn=_egl_answer, **IDENTITY)[0]
    assert res.info["max_topk_entropy"] == pytest.approx(-(0.4 * math.log(0.4) + 0.6 * math.log(0.3)), abs=1e-4)
    assert res.info["triggered"]


def test_egl_confident_draft_is_not_refined():
    tok = CharTokenizer()
    res = EGL(temperature=1.0, top_p=1.0, max_new_tokens=10).run(
        _egl_model(tok, confident=True), tok, ["q"], generator=_gen(0), answer_fn=_egl_answer, **IDENTITY)[0]
    assert not res.info["triggered"] and res.answer == "draft" and len(res.traces) == 1
    assert res.info["ppl"] == pytest.approx(1.0, abs=1e-4)


# --- SEAT -------------------------------------------------------------------------------------------------------------


def test_seat_stops_when_round_semantic_entropy_converges():
    tok = CharTokenizer()
    sep = tok.tok("<sep>")
    V = len(tok)
    digits = [tok.tok(d) for d in "1234"]
    marker = tok.encode("previous attempt")

    def script(hist):
        g = after_sep(hist, sep)
        if g:
            return peaked(V, tok.eos_token_id)
        refine = any(hist[i:i + len(marker)] == marker for i in range(len(hist)))
        return peaked(V, digits[0]) if refine else uniform(V, digits)

    model = ScriptedLM(script, V, tok.eos_token_id)
    seat = SEAT(n=4, threshold=0.6, max_rounds=3, equivalence="exact", temperature=1.0, max_new_tokens=5)
    res = seat.run(model, tok, ["q"], generator=_gen(2), answer_fn=lambda t: t[:1], **IDENTITY)[0]
    assert sorted(res.info["answers"][0]) == ["1", "2", "3", "4"]  # round 0: four different answers, SE = ln 4
    assert res.info["semantic_entropies"][0] == pytest.approx(math.log(4))
    assert res.info["rounds"] == 2 and res.info["converged"]  # round 1 refines → all '1' → SE = 0
    assert res.info["semantic_entropies"][1] == 0.0 and res.answer == "1"
    assert res.tokens_spent == 8 * 2
    # a 3–1 split (SE = 0.562 nats) is already below 0.6: one round
    res = seat.run(model, tok, ["q"], generator=_gen(0), answer_fn=lambda t: t[:1], **IDENTITY)[0]
    assert sorted(res.info["answers"][0]) == ["1", "1", "1", "2"]
    assert res.info["semantic_entropies"] == [pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))]
    assert res.info["rounds"] == 1 and res.answer == "1"
    res = SEAT(n=4, threshold=0.6, max_rounds=3, conditioning="none", equivalence="exact", temperature=1.0,
               max_new_tokens=5).run(model, tok, ["q"], generator=_gen(1), answer_fn=lambda t: t[:1], **IDENTITY)[0]
    assert all(se > 0.6 for se in res.info["semantic_entropies"][:-1])  # independent rounds keep disagreeing
    assert res.info["rounds"] == 3 or res.info["semantic_entropies"][-1] < 0.6


# --- uncertainty scores, registry -------------------------------------------------------------------------------------


def test_uncertainty_scores_and_auroc():
    tok = CharTokenizer()
    model = _eager_model(tok, high_steps=(1,), end=4)
    g = generate(model, tok, [tok.encode("q<sep>")], max_new_tokens=10, greedy=True)
    t = g.traces[0]
    assert TraceLength().score(t) == 5.0
    assert MeanTokenEntropy().score(t) == pytest.approx(math.log(8) / 5, abs=1e-4)
    assert auroc([3, 2, 1, 0], [False, False, True, True]) == 1.0
    assert auroc([0, 1], [False, True]) == 0.0
    assert auroc([1, 1], [False, True]) == 0.5
    assert math.isnan(auroc([1, 2], [True, True]))


def test_registry_lists_and_builds_every_strategy():
    assert strategy_names() == ["dts", "eager", "eat", "egl", "sample", "seat", "vote:inverse_entropy",
                                "vote:majority", "vote:min_entropy"]
    for name in strategy_names():
        s = build_strategy(name)
        assert s.name == name and type(s).__doc__
        assert hasattr(s, s.budget_field)
    with pytest.raises(ConfigError, match="valid names"):
        build_strategy("nope")
    with pytest.raises(ConfigError, match="parameters are"):
        build_strategy("dts", tau=1)
    with pytest.raises(ConfigError):
        build_strategy("vote:majority", n=0)


def test_vote_strategies_on_fake_model():
    tok = CharTokenizer()
    sep = tok.tok("<sep>")
    V = len(tok)
    one, two = tok.tok("1"), tok.tok("2")

    def script(hist):  # answer '1' w.p. 0.75 (then two confident tokens), '2' w.p. 0.25 (then two unsure ones)
        g = after_sep(hist, sep)
        if not g:
            return from_probs(V, {one: 0.75, two: 0.25})
        if len(g) >= 3:
            return peaked(V, tok.eos_token_id)
        return peaked(V, tok.tok("a")) if g[0] == one else uniform(V, [tok.tok(x) for x in "xyzw"])

    model = ScriptedLM(script, V, tok.eos_token_id)
    kw = dict(generator=_gen(0), answer_fn=lambda t: t[:1], **IDENTITY)
    maj = build_strategy("vote:majority", n=12, temperature=1.0, top_p=1.0, equivalence="exact").run(
        model, tok, ["q"], **kw)[0]
    answers = maj.info["answers"]
    assert maj.answer == max(set(answers), key=answers.count)
    ie = build_strategy("vote:inverse_entropy", n=12, temperature=1.0, top_p=1.0, equivalence="exact").run(
        model, tok, ["q"], **kw)[0]
    assert ie.answer == "1"
    me = build_strategy("vote:min_entropy", n=12, temperature=1.0, top_p=1.0, equivalence="exact").run(
        model, tok, ["q"], **kw)[0]
    assert me.chosen.mean_entropy() == min(me.info["mean_entropies"])
    assert maj.tokens_spent == sum(t.num_tokens for t in maj.traces)


def test_docs_cover_every_strategy_with_its_arxiv_id():
    import sys
    from pathlib import Path

    from entrolab.inference import STRATEGIES

    doc = (Path(__file__).resolve().parents[1] / "docs" / "inference.md").read_text(encoding="utf-8")
    for name in strategy_names():
        cls = STRATEGIES.get(name)
        assert f"`{name}`" in doc
        if cls.arxiv:  # the id is in the docs page and in the class or module docstring
            assert cls.arxiv in doc
            assert cls.arxiv in (cls.__doc__ or "") + (sys.modules[cls.__module__].__doc__ or "")


def test_every_strategy_shares_one_generation_settings_base():
    """One base holds max_new_tokens / temperature / top_p, their docs and their validation; strategies override a
    default only where their paper's differs (dts, eager: top_p 1.0)."""
    from entrolab.inference import STRATEGIES
    from entrolab.inference.base import GenerationSettings
    from entrolab.registry import field_docs

    for name in strategy_names():
        cls = STRATEGIES.get(name)
        assert issubclass(cls, GenerationSettings), name
        docs = STRATEGIES.docs(name)
        assert all(docs[f] for f in docs), (name, [f for f in docs if not docs[f]])  # every field documented
        d = STRATEGIES.defaults(name)
        assert (d["max_new_tokens"], d["temperature"]) == (512, 0.6)
        assert d["top_p"] == (1.0 if name in ("dts", "eager") else 0.95), name
        for field, bad, shown in (("max_new_tokens", 0, "[1, inf]"), ("temperature", 0.0, "(0.0, inf]"),
                                  ("top_p", 1.5, "(0.0, 1.0]")):
            with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field} = .* allowed: {re.escape(shown)}"):
                build_strategy(name, **{field: bad})
    assert field_docs(GenerationSettings) == {"max_new_tokens": "Maximum tokens per response.",
                                              "temperature": "Sampling temperature T.", "top_p": "Nucleus mass."}
    # a strategy's own doc wins where the field means more there
    assert STRATEGIES.docs("eat")["max_new_tokens"].startswith("Total tokens per response")
    dec = build_strategy("dts", max_new_tokens=7, temperature=0.5).decoder(None, None, None)
    assert (dec.max_new_tokens, dec.temperature, dec.top_p) == (7, 0.5, 1.0)
    assert build_strategy("sample").decoder(None, None, None, max_new_tokens=3).max_new_tokens == 3

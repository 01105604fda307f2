"""The decoding loop: HF-generate parity, entropies vs a full forward pass, forking by KV-cache copy, stopping."""

from __future__ import annotations

import math

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

from entrolab.generation.decoder import (
    Decoder,
    cache_kwargs,
    entropy_varentropy,
    generate,
    output_cache,
    select_cache,
    top_k_entropy,
    top_p_mask,
)
from entrolab.ops.dynamics import exact_entropy
from entrolab.ops.entropy import token_entropy, token_logprobs


@pytest.fixture(scope="module")
def tiny():
    from entrolab.engine.models import tiny_model

    model, tok = tiny_model(hidden=64, layers=2, heads=4, seed=0)
    return model.eval(), tok


def _prompts(tok):
    texts = ["What is 2+3?", "Hi", "Compute 12*7 and explain."]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def _hf_padded(prompts, pad):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return ids, mask, width


# --- distribution statistics ---------------------------------------------------------------------------------------


def test_entropy_varentropy_match_definitions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 37, generator=g) * 3
    logits[0, :30] = float("-inf")  # zero-probability tokens contribute nothing
    for T in (1.0, 0.6):
        h, v, logp = entropy_varentropy(logits, T)
        assert torch.allclose(h[1:], exact_entropy(logits[1:], T), atol=1e-5)
        p = torch.softmax(logits / T, -1)
        surprisal = torch.where(p > 0, -torch.log(p), torch.zeros_like(p))
        assert torch.allclose(h, (p * surprisal).sum(-1), atol=1e-5)
        var = (p * surprisal ** 2).sum(-1) - (p * surprisal).sum(-1) ** 2
        assert torch.allclose(v, var, atol=1e-4)
    # hand values: uniform over 4 → H = log 4, V = 0; Bernoulli(1/2, 1/4, 1/4) → H = 1.5 ln 2, V = 0.25 (ln 2)^2
    h, v, _ = entropy_varentropy(torch.log(torch.tensor([[0.25] * 4, [0.5, 0.25, 0.25, 1e-30]])))
    assert h[0].item() == pytest.approx(math.log(4), abs=1e-6) and v[0].item() == pytest.approx(0.0, abs=1e-6)
    assert h[1].item() == pytest.approx(1.5 * math.log(2), abs=1e-5)
    assert v[1].item() == pytest.approx(0.25 * math.log(2) ** 2, abs=1e-5)


def test_top_k_entropy_and_top_p_mask():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.2, 0.1]]))
    # top-2 renormalised: (5/7, 2/7)
    q = torch.tensor([5 / 7, 2 / 7])
    assert top_k_entropy(logp, 2).item() == pytest.approx(float(-(q * q.log()).sum()), abs=1e-6)
    assert top_k_entropy(logp, 4).item() == pytest.approx(float(exact_entropy(logp)), abs=1e-6)
    assert top_p_mask(logp, 0.5).tolist() == [[True, False, False, False]]  # 0.5 alone reaches 0.5
    assert top_p_mask(logp, 0.65).sum().item() == 2  # 0.5 + 0.2 ≥ 0.65
    assert top_p_mask(logp, 0.75).sum().item() == 3  # 0.5 + 0.2 < 0.75 → a third token is needed
    assert top_p_mask(logp, 0.95).sum().item() == 4
    assert top_p_mask(logp, 1.0).all()


# --- parity with transformers -----------------------------------------------------------------------------------------


def test_greedy_matches_hf_generate_and_full_forward(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids, mask, width = _hf_padded(prompts, pad)
    n_new = 16
    hf = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n_new,
                        pad_token_id=pad)
    gen = generate(model, tok, prompts, max_new_tokens=n_new, greedy=True)
    traces = {t.group: t for t in gen.traces}
    eos = set(gen_eos for gen_eos in [tok.eos_token_id] if gen_eos is not None)
    assert max(t.num_tokens for t in gen.traces) >= 8, "degenerate check: every sequence ended at once"
    for i, p in enumerate(prompts):
        ours = traces[i].token_ids
        theirs = hf[i, width:].tolist()[: len(ours)]
        assert ours == theirs, f"prompt {i}: {ours} vs HF {theirs}"
        if traces[i].finish_reason == "length":
            assert len(ours) == n_new
        else:
            assert ours[-1] in eos
        # entropies of the sampling distribution equal a teacher-forced full forward over prompt + response
        full = torch.tensor([p + ours])
        with torch.no_grad():
            logits = model(full).logits[0]
        resp_logits = logits[len(p) - 1: len(p) - 1 + len(ours)]
        assert torch.allclose(torch.tensor(traces[i].entropies), token_entropy(resp_logits), atol=1e-4)
        ref_lp = token_logprobs(resp_logits, torch.tensor(ours))
        assert torch.allclose(torch.tensor(traces[i].logprobs), ref_lp, atol=1e-4)


def test_temperature_entropy_matches_full_forward(tiny):
    model, tok = tiny
    prompts = _prompts(tok)[:2]
    gen = generate(model, tok, prompts, max_new_tokens=10, temperature=0.7, top_p=0.9,
                   generator=torch.Generator().manual_seed(3))
    for t in gen.traces:
        p = prompts[t.group]
        with torch.no_grad():
            logits = model(torch.tensor([p + t.token_ids])).logits[0]
        ref = token_entropy(logits[len(p) - 1: len(p) - 1 + t.num_tokens], temperature=0.7)
        assert torch.allclose(torch.tensor(t.entropies), ref, atol=1e-4)


def test_seeded_sampling_is_reproducible(tiny):
    model, tok = tiny
    prompts = _prompts(tok)
    runs = [generate(model, tok, prompts, num_return_sequences=2, max_new_tokens=8, temperature=1.0,
                     generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    a = sorted((t.id, t.token_ids) for t in runs[0].traces)
    b = sorted((t.id, t.token_ids) for t in runs[1].traces)
    assert a == b


# --- forking ----------------------------------------------------------------------------------------------------------


def test_fork_copies_cache_and_matches_recompute(tiny):
    model, tok = tiny
    prompt = _prompts(tok)[0]
    dec = Decoder(model, tok, max_new_tokens=12, greedy=True, eos_token_id=[])
    dec.prefill([prompt])
    forked = {}

    def hook(view):
        if view.step == 3:
            top = torch.topk(view.logprobs[0], 3).indices.tolist()
            forked["tokens"] = top
            view.fork(0, top)

    traces = dec.run(hook)
    assert len(traces) == 3 and dec.stats.forks == 2
    for t in traces:
        assert t.token_ids[3] in forked["tokens"]
        assert t.num_tokens == 12
        # greedy continuation after the forced branch equals HF greedy from the same prefix, recomputed from scratch
        prefix = prompt + t.token_ids[:4]
        with torch.no_grad():
            for want in t.token_ids[4:]:  # greedy recompute from scratch, no cache
                assert model(torch.tensor([prefix])).logits[0, -1].argmax().item() == want
                prefix = prefix + [want]
    children = [t for t in traces if t.parent is not None]
    assert len(children) == 2 and all(c.fork_step == 3 for c in children)
    # the shared prefix was generated once: 3 shared + 3 × 9 own tokens
    assert dec.stats.sampled_tokens == 3 + 3 * 9


def test_fork_does_not_recompute_prefix():
    tok = CharTokenizer()
    a = tok.tok("a")
    V = len(tok)

    def script(hist):
        return peaked(V, a)

    model = ScriptedLM(script, V, tok.eos_token_id)
    prompt = tok.encode("xyz<sep>")
    dec = Decoder(model, tok, max_new_tokens=6, greedy=True)
    dec.prefill([prompt])
    dec.run(lambda view: view.fork(0, [a, a, a]) if view.step == 2 else None)
    # prefill processes the prompt once; every later forward processes exactly one new token per live row
    assert model.tokens_processed == len(prompt) + 2 * 1 + 3 * 3  # steps 1–2: one row; steps 3–5: three rows
    assert dec.stats.sampled_tokens == 2 + 3 * 4


def test_select_cache_leaves_original_intact(tiny):
    model, tok = tiny
    prompt = _prompts(tok)[0]
    with torch.no_grad():
        out = model(torch.tensor([prompt, prompt]), use_cache=True)
    cache = output_cache(out)
    before = [layer.keys.clone() for layer in cache.layers]
    sel = select_cache(cache, torch.tensor([1, 1, 0]))
    assert sel.layers[0].keys.shape[0] == 3
    for b, layer in zip(before, cache.layers):
        assert torch.equal(b, layer.keys)
    # growing the copy does not grow the original
    with torch.no_grad():
        model(torch.tensor([[5], [6], [7]]), use_cache=True, **cache_kwargs(model, sel))
    assert cache.get_seq_length() == len(prompt) and sel.get_seq_length() == len(prompt) + 1


# --- stopping ---------------------------------------------------------------------------------------------------------


def _counting_model(tok, stop_at: int):
    """Emits 'a', 'b', 'c', ... then <eos> after ``stop_at`` tokens."""
    sep = tok.tok("<sep>")
    V = len(tok)

    def script(hist):
        g = after_sep(hist, sep)
        if len(g) >= stop_at:
            return peaked(V, tok.eos_token_id)
        return peaked(V, tok.tok(chr(ord("a") + len(g))))

    return ScriptedLM(script, V, tok.eos_token_id)


def test_stop_on_eos_stop_string_length_and_hook():
    tok = CharTokenizer()
    model = _counting_model(tok, 5)
    p = tok.encode("q<sep>")
    g = generate(model, tok, [p], max_new_tokens=20, greedy=True)
    assert g.traces[0].text == "abcde" and g.traces[0].finish_reason == "eos"
    g = generate(model, tok, [p], max_new_tokens=20, greedy=True, stop_strings=["cd"])
    assert g.traces[0].text == "abcd" and g.traces[0].finish_reason == "stop"
    g = generate(model, tok, [p], max_new_tokens=3, greedy=True)
    assert g.traces[0].text == "abc" and g.traces[0].finish_reason == "length"
    dec = Decoder(model, tok, max_new_tokens=20, greedy=True)
    dec.prefill([p])
    tr = dec.run(lambda view: view.stop(0) if view.step == 2 else None)[0]
    assert tr.text == "ab" and tr.finish_reason == "hook"
    dec = Decoder(model, tok, max_new_tokens=20, greedy=True)
    dec.prefill([p])
    tr = dec.run(lambda view: view.force(0, tok.encode("XY")) if view.step == 1 else None)[0]
    assert tr.text == "aXYde" and tr.forced == [False, True, True, False, False, False]


def test_left_padding_batch_with_different_lengths():
    tok = CharTokenizer()
    model = _counting_model(tok, 3)
    prompts = [tok.encode("long prompt here<sep>"), tok.encode("<sep>")]
    g = generate(model, tok, prompts, max_new_tokens=10, greedy=True)
    assert sorted(t.text for t in g.traces) == ["abc", "abc"]
    assert g.stats.prompt_tokens == sum(map(len, prompts))


def test_probe_is_uncommitted_and_mc_variant():
    tok = CharTokenizer()
    sep, think, w, x, y, z = (tok.tok(s) for s in ("<sep>", "</think>", "w", "x", "y", "z"))
    V = len(tok)

    def script(hist):
        if hist[-1] == think:
            return uniform(V, [w, x])  # 1 bit
        if len(hist) >= 2 and hist[-2] == think:
            return uniform(V, [w, x, y, z])  # 2 bits after any first answer token
        return peaked(V, tok.tok("a"))

    model = ScriptedLM(script, V, tok.eos_token_id)
    dec = Decoder(model, tok, max_new_tokens=4, greedy=True, generator=torch.Generator().manual_seed(0))
    dec.prefill([tok.encode("q<sep>")])
    seen = {}

    def hook(view):
        if view.step == 2:
            seen["h1"] = dec.probe(0, [think])
            seen["h2"] = dec.probe(0, [think], samples=3, tokens=2)

    tr = dec.run(hook)[0]
    assert seen["h1"] == pytest.approx(math.log(2), abs=1e-5)
    assert seen["h2"] == pytest.approx(math.log(2) + math.log(4), abs=1e-5)
    assert tr.text == "aaaa"  # probes never reach the committed sequence
    assert dec.stats.probe_tokens == 1 + 1 + 3 * 1
    assert dec.stats.tokens_spent == 4 + 5


def test_hf_dynamic_cache_fork_shapes(tiny):
    model, tok = tiny
    gen = generate(model, tok, _prompts(tok), num_return_sequences=3, max_new_tokens=4, temperature=1.0,
                   generator=torch.Generator().manual_seed(1))
    assert len(gen.traces) == 9
    assert sorted(len(v) for v in gen.by_group().values()) == [3, 3, 3]
    # prefill ran each prompt once despite three return sequences
    assert gen.stats.prompt_tokens == sum(map(len, _prompts(tok)))


def test_decoder_validates_arguments():
    tok = CharTokenizer()
    model = _counting_model(tok, 2)
    with pytest.raises(ValueError):
        Decoder(model, tok, temperature=0.0)
    with pytest.raises(ValueError):
        Decoder(model, tok, top_p=0.0)
    with pytest.raises(ValueError):
        Decoder(model, tok, max_new_tokens=0)
    with pytest.raises(RuntimeError):
        Decoder(model, tok).run()
    with pytest.raises(ValueError):
        Decoder(model, tok).prefill([[]])


def test_from_probs_helper_builds_requested_distribution():
    logits = from_probs(10, {0: 0.5, 1: 0.25}, rest=0.25, rest_tokens=[2, 3])
    p = torch.softmax(logits, -1)
    assert p[:4].tolist() == pytest.approx([0.5, 0.25, 0.125, 0.125], abs=1e-6)

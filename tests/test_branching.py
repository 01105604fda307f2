"""The branching rollout engine (generation/branching.py) and the decoder's forks from kept KV caches: a fork from a
cached prefix equals re-running the prefix, the tree is rebuilt from (parent, fork_step) alone, packing is exact."""

from __future__ import annotations

import pytest
import torch
from inference_fakes import CharTokenizer, ScriptedLM, after_sep, peaked, uniform

from entrolab.engine.forward import policy_logprobs_entropy
from entrolab.generation.branching import (
    BranchingRollout,
    IdCounter,
    pack_traces,
    tree_nodes,
)
from entrolab.generation.decoder import Decoder, Start, Trace, can_crop_cache
from entrolab.generation.engine import RolloutEngine
from entrolab.generation.rows import stack_generations


@pytest.fixture(scope="module")
def tiny():
    from entrolab.engine.models import tiny_model

    model, tok = tiny_model(seed=0)
    return model.eval(), tok


def test_fork_from_kept_cache_equals_rerunning_the_prefix(tiny):
    model, tok = tiny
    br = BranchingRollout(model, tok, max_new_tokens=10, generator=torch.Generator().manual_seed(0))
    roots = br.sample(["hello", "a longer prompt"], 2)
    assert set(br.snapshots) == {t.id for t in roots}
    assert can_crop_cache(br.snapshots[roots[0].id].cache)
    kids = br.fork([(roots[0], 0, 1), (roots[0], 4, 2), (roots[3], 9, 1)])
    dec = br.decoders[-1]
    assert dec.stats.prompt_tokens == 3  # one re-fed token per fork; no prompt or prefix recomputed
    assert [(k.parent, k.fork_step) for k in kids] == [(roots[0].id, 0), (roots[0].id, 4), (roots[0].id, 4),
                                                       (roots[3].id, 9)]
    for k in kids:
        assert k.token_ids[:k.fork_step] == br.traces[k.parent].token_ids[:k.fork_step]
    # The decoder's recorded entropies / log-probs of every token (prefix and forked suffix) equal a full forward
    # pass over prompt + response — the cache-reusing fork computed the same distributions.
    traces = roots + kids
    gen = br.pack(traces, [t.group for t in traces])
    with torch.no_grad():
        lp, ent = policy_logprobs_entropy(model, gen.input_ids, gen.attention_mask, gen.prompt_len,
                                          gen.response_ids, 1.0)
    for i, t in enumerate(traces):
        L = t.num_tokens
        torch.testing.assert_close(ent[i, :L], torch.tensor(t.entropies), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(lp[i, :L], torch.tensor(t.logprobs), atol=1e-4, rtol=1e-4)


def test_greedy_fork_reproduces_the_parent_and_the_recompute_fallback_agrees(tiny):
    model, tok = tiny
    br = BranchingRollout(model, tok, max_new_tokens=9, greedy=True)
    (root,) = br.sample(["abc"], 1)
    reused = br.fork([(root, 3, 1), (root, 7, 1)])
    fallback_dec = Decoder(model, tok, max_new_tokens=9, greedy=True)
    fallback_dec.resume([Start(root, 3, 1, None), Start(root, 7, 1, None)])
    fallback = fallback_dec.run()
    assert fallback_dec.stats.prompt_tokens == 2 * len(root.prompt_ids) + 3 + 7  # prefixes recomputed
    for a, b in zip(reused, sorted(fallback, key=lambda t: t.fork_step)):
        assert a.token_ids == root.token_ids == b.token_ids  # greedy from a shared prefix continues identically
        torch.testing.assert_close(torch.tensor(a.entropies), torch.tensor(b.entropies), atol=1e-4, rtol=1e-4)


def _trace(tid, n, parent=None, fork=None, prompt=(7,)):
    return Trace(id=tid, group=0, prompt_ids=list(prompt), token_ids=list(range(10 + tid * 10, 10 + tid * 10 + n)),
                 entropies=[0.0] * n, varentropies=[0.0] * n, logprobs=[0.0] * n, forced=[False] * n,
                 parent=parent, fork_step=fork, finish_reason="eos")


def test_tree_is_rebuilt_from_parent_and_fork_step():
    # A (6 tokens); B forks A at 2; C forks A at 4; D forks B at 3; E forks A at 0 (a fresh sample of the prompt).
    A, B, C = _trace(1, 6), _trace(2, 5, 1, 2), _trace(3, 6, 1, 4)
    D, E = _trace(4, 5, 2, 3), _trace(5, 3, 1, 0)
    tree = tree_nodes([A, B, C, D, E])
    nA, nB, nC, nD, nE = (tree.token_nodes[t.id] for t in (A, B, C, D, E))
    # A is cut where B (2) and C (4) fork off it: three segments.
    assert nA == [nA[0]] * 2 + [nA[2]] * 2 + [nA[4]] * 2 and len({*nA}) == 3
    # B shares A's first segment, is cut at 3 where D forks off it.
    assert nB[:2] == nA[:2] and nB[2] != nB[3] and nB[3:] == [nB[3]] * 2
    assert nC[:4] == nA[:4] and nC[4] not in nA
    assert nD[:3] == nB[:3] and nD[3] not in nB
    assert nE[0] not in nA
    p = tree.parent
    assert p[nA[0]] == 0 and p[nE[0]] == 0  # children of the prompt
    assert p[nA[2]] == nA[0] and p[nB[2]] == nA[0] and p[nA[4]] == nA[2] and p[nC[4]] == nA[2]
    assert p[nB[3]] == nB[2] and p[nD[3]] == nB[2]


def test_pack_left_pads_prompts_and_writes_masks_and_tree_extras():
    A, B = _trace(1, 4, prompt=(3, 4, 5)), _trace(2, 2, 1, 1, prompt=(3, 4, 5))
    C = _trace(3, 3, prompt=(9,))
    gen = pack_traces([A, B, C], [0, 0, 1], group_ids=[5, 5, 6], trainable=[[1] * 4, [0, 1], [1, 0, 1]],
                      pad_token_id=0, node_ids=iter(range(100, 200)))
    assert gen.prompt_len == 3 and gen.response_ids.shape == (3, 4)
    assert gen.input_ids[2].tolist() == [0, 0, 9] + C.token_ids + [0]
    assert gen.attention_mask[2].tolist() == [0, 0, 1, 1, 1, 1, 0]
    assert gen.attention_mask[1].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert gen.response_ids[1, :2].tolist() == B.token_ids
    assert gen.response_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert gen.trainable.tolist() == [[1, 1, 1, 1], [0, 1, 0, 0], [1, 0, 1, 0]]
    assert gen.group_ids.tolist() == [5, 5, 6] and gen.prompt_index.tolist() == [0, 0, 1]
    node = gen.extras["tree_node"]
    assert node[0, 0] == node[1, 0] and node[0, 1] != node[1, 1] and node[1, 2] == 0 and int(node.min()) == 0
    assert gen.extras["tree_root"].tolist() == [1, 1, 3] and gen.extras["fork_pos"].tolist() == [0, 1, 0]
    assert gen.extras["tree_depth"].tolist() == [0, 1, 0]
    both = stack_generations([gen, pack_traces([C], [0], pad_token_id=0)], pad_token_id=0)
    assert both.response_ids.shape == (4, 4) and both.extras["tree_node"].shape == (4, 4)
    assert both.prompt_index.tolist() == [0, 0, 1, 0]


def test_online_forks_from_a_hook_enter_the_tree():
    tok = CharTokenizer()
    sep, eos = tok.tok("<sep>"), tok.eos_token_id
    V = len(tok)
    a, b = tok.tok("a"), tok.tok("b")

    def script(hist):
        gen = after_sep(hist, sep)
        return peaked(V, eos) if len(gen) >= 4 else uniform(V, [a, b])

    model = ScriptedLM(script, V, eos)
    br = BranchingRollout(model, tok, max_new_tokens=8, generator=torch.Generator().manual_seed(1))

    def hook(view):
        for r, tr in enumerate(view.traces):
            if tr.num_tokens == 2 and tr.parent is None:
                view.fork(r, [a, b])

    traces = br.sample(["q<sep>"], 1, hook=hook)
    assert len(traces) == 2 and traces[1].parent == traces[0].id and traces[1].fork_step == 2
    gen = br.pack(traces, [0, 0])
    node = gen.extras["tree_node"]
    assert node[0, :2].tolist() == node[1, :2].tolist() and node[0, 2] != node[1, 2]


def test_engine_ids_stay_unique_across_engines_and_errors_name_the_fix(tiny):
    model, tok = tiny
    ids = IdCounter()
    e1 = RolloutEngine(model, tok, 1.0, 1.0, 4, generator=torch.Generator().manual_seed(0), ids=ids)
    t1 = e1.branching().sample(["x"], 2)
    t2 = e1.branching().sample(["y"], 2)
    assert not {t.id for t in t1} & {t.id for t in t2}
    with pytest.raises(Exception, match="model.expert"):
        e1.expert()
    with pytest.raises(ValueError, match="fork position 99 outside"):
        e1.branching().fork([(t1[0], 99, 1)])

"""Sampling-knob methods of issue 9: each rollout rule fires exactly where it should on a scripted model with known
entropies, tree / value / reshaping / mixed advantages on hand-computed cases, controller state round-trips, and the
catalog entries."""

from __future__ import annotations

import math
from types import SimpleNamespace

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

from entrolab import methods
from entrolab.batch import BatchError, RolloutBatch
from entrolab.env.tasks import Example
from entrolab.errors import ConfigError
from entrolab.generation.decoder import Trace
from entrolab.generation.engine import RolloutEngine
from entrolab.generation.rows import Generation
from entrolab.knobs.advantage.rollouts import (
    ETTRLAdvantage,
    FR3EAdvantage,
    MentorAdvantage,
    TreeRLAdvantage,
)
from entrolab.knobs.sampling.base import SAMPLINGS
from entrolab.knobs.sampling.guided import ExpertMixer
from entrolab.knobs.sampling.temperature import AEPOTemperature

OURS = ["aepo_wang", "treerl", "fr3e", "ettrl", "adr", "cure", "entropy_curriculum", "mentor"]

TOK = CharTokenizer()
SEP, EOS, V = TOK.tok("<sep>"), TOK.eos_token_id, len(TOK)
A, B, C, D = (TOK.tok(ch) for ch in "abcd")
HIGH = (2, 5)  # uniform over 4 tokens: H = surprisal = ln 4
MID = 4  # {a: 0.7, b: 0.3}: H ≈ 0.61, surprisal 0.36 or 1.20 (< ln 4)


def script(hist):
    """Known entropies per generated position j: ln 4 at 2 and 5, ≈0.61 at 4, ≈0 elsewhere; EOS at 7."""
    j = len(after_sep(hist, SEP))
    if j >= 7:
        return peaked(V, EOS)
    if j in HIGH:
        return uniform(V, [A, B, C, D])
    if j == MID:
        return from_probs(V, {A: 0.7, B: 0.3})
    return peaked(V, A)


def engine(model_script=script, seed=0, **kw):
    model = ScriptedLM(model_script, V, EOS)
    return RolloutEngine(model=model, tokenizer=TOK, temperature=1.0, top_p=1.0, max_new_tokens=10,
                         generator=torch.Generator().manual_seed(seed), **kw)


PROMPTS = ["p<sep>", "q<sep>"]


def build(name, **params):
    return SAMPLINGS.build(name, params)


# ------------------------------------------------------------------------------------------ where rollouts fork
def _forks(gen):
    """(fork position, depth) of each forked row."""
    return sorted((int(p), int(d)) for p, d in zip(gen.extras["fork_pos"], gen.extras["tree_depth"]) if d > 0)


def test_eptree_forks_at_the_top_surprisal_tokens_of_each_tree():
    gen = build("eptree", trees=2, forks=2, branches=3).rollout(engine(), PROMPTS, [None, None], 4)
    # 2 prompts × M(1 + N·T) = 2 × 2 × (1 + 2·3) rows; every fork at a ln 4-surprisal position (never at MID)
    assert gen.input_ids.shape[0] == 2 * 2 * 7
    assert _forks(gen) == sorted([(2, 1)] * 12 + [(5, 1)] * 12)
    assert gen.prompt_index.tolist() == gen.group_ids.tolist() and sorted(set(gen.prompt_index.tolist())) == [0, 1]
    # a second iteration forks the next best tokens (now the MID position, or the children's own high ones)
    gen2 = build("eptree", trees=1, forks=2, branches=1, iterations=2).rollout(engine(), PROMPTS[:1], [None], 1)
    assert gen2.input_ids.shape[0] == 1 + 2 + 2 and max(int(d) for d in gen2.extras["tree_depth"]) >= 1


def test_etmr_forks_at_the_top_entropy_tokens():
    gen = build("etmr", trees=2, forks=3, branches=2).rollout(engine(), PROMPTS, [None, None], 4)
    assert gen.input_ids.shape[0] == 2 * 2 * (1 + 2 * 3)  # M(1 + B·N) per prompt
    assert _forks(gen) == sorted([(2, 1)] * 8 + [(4, 1)] * 8 + [(5, 1)] * 8)
    assert build("etmr", forks=1).rollout(engine(), PROMPTS[:1], [None], 3).input_ids.shape[0] == 3 * (1 + 2)


def test_fr3e_restarts_from_the_top_entropy_states_of_the_first_base():
    gen = build("fr3e", states=2, per_state=3).rollout(engine(), PROMPTS, [None, None], 2)
    assert gen.input_ids.shape[0] == 2 * (2 + 2 * 3)
    st, base, grp = gen.extras["state_index"], gen.extras["state_base"], gen.group_ids
    forked = [(int(p), int(s)) for p, s, d in zip(gen.extras["fork_pos"], st, gen.extras["tree_depth"]) if d > 0]
    assert sorted(set(forked)) == [(2, 1), (5, 2)]  # S_1 at the earlier high-entropy position
    # each state's rollouts are one group; base rows keep their prompt's group
    for j in (1, 2):
        assert len(set(grp[st == j].tolist())) == 2 and all(int((grp == g).sum()) == 3 for g in grp[st == j].tolist())
    assert grp[st == 0].tolist() == [0, 0, 1, 1]
    roots = gen.extras["tree_root"]
    assert all(int(b) == int(r) for b, r in zip(base, roots))  # states come from the base trajectory


def test_cure_reconcatenates_at_a_critical_token_and_trains_only_the_continuation():
    strat = build("cure", n2=2, critical_top_k=2, min_chars=1)
    gen = strat.rollout(engine(), PROMPTS, [None, None], 2)
    assert gen.input_ids.shape[0] == 2 * (2 + 2 * 2)
    for i in range(gen.input_ids.shape[0]):
        k, d = int(gen.extras["fork_pos"][i]), int(gen.extras["tree_depth"][i])
        if d:
            assert k in HIGH  # one of the top-2 entropy tokens, both high
            assert gen.trainable[i, :k].sum() == 0 and gen.trainable[i, k:].tolist() == gen.response_mask[i, k:].tolist()
        else:
            assert torch.equal(gen.trainable[i], gen.response_mask[i])
    # validity filters: special tokens and short texts are skipped; no valid token → no re-concatenation
    tr = Trace(id=0, group=0, prompt_ids=[SEP], token_ids=[EOS, A, B], entropies=[9.0, 1.0, 2.0])
    tok = CharTokenizer()
    tok.all_special_ids = [EOS]
    assert strat.critical_index(tr, tok, None) in (1, 2)
    assert build("cure", critical_top_k=1, min_chars=1).critical_index(tr, tok, None) == 2
    assert build("cure", min_chars=2).critical_index(tr, tok, None) is None


def _marker_script(hist):
    """'abWait' then uniform over {c, d} (H = ln 2) for two tokens, then EOS; entropy ≈ 0 before."""
    gen = after_sep(hist, SEP)
    text = "abWait"
    if len(gen) < len(text):
        return peaked(V, TOK.tok(text[len(gen)]))
    return uniform(V, [C, D]) if len(gen) < len(text) + 2 else peaked(V, EOS)


def test_edr_branches_right_after_a_hard_marker_with_probability_alpha_plus_delta_h():
    eng = engine(_marker_script)
    gen = build("edr", alpha=1.0, markers="Wait|<hard>").rollout(eng, PROMPTS[:1], [None], 2)
    assert _forks(gen) == [(6, 1), (6, 1)]  # each of the 2 rows forks once, at the step after "Wait"
    never = build("edr", alpha=-5.0).rollout(engine(_marker_script), PROMPTS[:1], [None], 2)
    assert _forks(never) == [] and never.metrics["sampling/transitions"] == 2
    # SP = clip(α + ΔH), ΔH = (H_t − mean H of the tokens before) / ln|V| = (ln 2 − 0) / ln V
    expected = min(1.0, 0.1 + math.log(2) / math.log(V))
    assert never.metrics["sampling/branch_prob_mean"] == pytest.approx(min(1.0, max(0.0, -5 + math.log(2) / math.log(V))),
                                                                        abs=1e-4)
    half = build("edr", alpha=0.1).rollout(engine(_marker_script), PROMPTS[:1], [None], 2)
    assert half.metrics["sampling/branch_prob_mean"] == pytest.approx(expected, abs=1e-4)
    capped = build("edr", alpha=1.0, max_rows=3).rollout(engine(_marker_script), PROMPTS[:1], [None], 2)
    assert capped.input_ids.shape[0] == 3  # the budget stops branching
    with pytest.raises(ConfigError, match="edr.markers"):
        build("edr", markers="Wait||x")


def _policy_script(hist):
    """Certain 'a' for two tokens, then uniform {a, b} for two, then EOS."""
    j = len(after_sep(hist, SEP))
    return peaked(V, A) if j < 2 else uniform(V, [A, B]) if j < 4 else peaked(V, EOS)


def _expert_script(hist):
    j = len(after_sep(hist, SEP))
    return peaked(V, C) if j < 4 else peaked(V, EOS)


def test_mentor_mixes_in_the_expert_only_at_high_entropy_tokens():
    expert = ScriptedLM(_expert_script, V, EOS)
    eng = engine(_policy_script, expert_fn=lambda: expert)
    gen = build("mentor", mixed=3, entropy_p=0.95).rollout(eng, PROMPTS, [None, None], 2)
    assert gen.extras["mixed"].tolist() == [0.0] * 4 + [1.0] * 6
    assert gen.metrics["sampling/entropy_gamma"] == pytest.approx(math.log(2), abs=1e-3)
    for i in range(4, 10):  # w_t = min(1, H_t/γ): 0 where the policy is certain, 1 where H_t = γ
        assert TOK.decode(gen.response_ids[i, :5].tolist()) == "aacc<eos>"
    on = [TOK.decode(gen.response_ids[i, :2].tolist()) for i in range(4)]
    assert on == ["aa"] * 4
    # a huge γ gives w ≈ 0: the mixed rollouts are the policy's own
    from entrolab.generation.branching import BranchingRollout

    mixer = ExpertMixer(expert, 1e9, 1.0, torch.Generator().manual_seed(0))
    br = BranchingRollout(ScriptedLM(_policy_script, V, EOS), TOK, max_new_tokens=6,
                          generator=torch.Generator().manual_seed(0))
    traces = br.sample(["p<sep>"], 4, hook=mixer)
    assert all(set(TOK.decode(t.token_ids[:4])) <= {"a", "b"} for t in traces)
    with pytest.raises(ConfigError, match="model.expert"):
        build("mentor").rollout(engine(_policy_script), PROMPTS, [None, None], 1)


# ------------------------------------------------------------------------------------------ AEPO-Wang
class FakeEngine:
    """Plain-sampling engine with scripted rewards: rows of prompt i answer ``answers[i][k]``."""

    def __init__(self, rewards_by_call=(), answers=None, examples=()):
        self.calls = []
        self.rewards_by_call = list(rewards_by_call)
        self.answers = answers or {}
        self.examples = list(examples)
        self.tokenizer = SimpleNamespace(pad_token_id=0)

    def generate(self, prompts, n, temperature=None):
        self.calls.append((list(prompts), n, temperature))
        B = len(prompts) * n
        ids = torch.arange(1, B * 3 + 1).view(B, 3)
        g = Generation(input_ids=torch.cat([torch.ones(B, 1, dtype=torch.long), ids], 1),
                       attention_mask=torch.ones(B, 4, dtype=torch.long), prompt_len=1, response_ids=ids,
                       response_mask=torch.ones(B, 3), truncated=torch.zeros(B, dtype=torch.bool))
        g.prompt_index = torch.arange(len(prompts)).repeat_interleave(n)
        g.texts = [f"\\boxed{{{self.answers.get(p, ['x'] * n)[k]}}}" for p in prompts for k in range(n)]
        return g

    def decode(self, gen):
        return gen.texts

    def score(self, texts, examples):
        r = torch.tensor(self.rewards_by_call.pop(0), dtype=torch.float32)
        return r, [bool(x) for x in r]

    def format(self, ex):
        return ex.prompt

    def next_examples(self, k):
        out, self.examples = self.examples[:k], self.examples[k:]
        return out


def test_aepo_temperature_rule_replacement_and_state():
    s = AEPOTemperature(reinforce_samples=2)
    assert s.controlled_temperature() == 1.2  # no history yet: counts as low entropy
    s.on_step_end({"entropy/mean": 0.5})
    assert s.controlled_temperature() == 1.2  # H_prev ≤ H_target
    s.on_step_end({"entropy/mean": 0.51})
    assert s.controlled_temperature() == 0.8
    s2 = AEPOTemperature()
    s2.load_state_dict(s.state_dict())
    assert s2.h_prev == 0.51 and s2.controlled_temperature() == 0.8
    with pytest.raises(ConfigError, match="unknown entries"):
        s2.load_state_dict({"bogus": 1})

    # 4 prompts × n = 2 main rows; extra pass for the first ⌈4/4⌉ = 1 prompt at T_high.
    main_r = [1, 0, 1, 1, 0, 0, 1, 0]
    extra_r = [1, 0]  # GRPO in its group: +0.707, −0.707 → one positive
    low = AEPOTemperature(reinforce_samples=4)
    eng = FakeEngine([main_r, extra_r])
    gen = low.rollout(eng, ["a", "b", "c", "d"], ["A", "B", "C", "D"], 2)
    assert eng.calls[1] == (["a"], 2, 1.2)
    assert gen.input_ids.shape[0] == 8 and gen.extras["reinforce"].tolist() == [1.0] + [0.0] * 7
    adv = gen.extras["seq_advantage"]
    assert adv[0] == 1.0
    # main rows keep the GRPO advantage of their full group (row 0, replaced, was in prompt 0's group)
    assert adv[1].item() == pytest.approx(-0.5 / math.sqrt(0.5), abs=1e-4)  # group [1, 0]: (0 − .5)/.7071
    assert adv[2:4].tolist() == [0.0, 0.0]
    assert gen.group_ids[0].item() not in gen.group_ids[1:].tolist()
    # high entropy: T_low and S/2
    hot = AEPOTemperature(reinforce_samples=2)
    hot.on_step_end({"entropy/mean": 2.0})
    eng = FakeEngine([main_r + [1, 0], [1, 0, 1, 0]])
    gen = hot.rollout(eng, ["a", "b", "c", "d", "e"], list("ABCDE"), 2)
    assert eng.calls[1][2] == 0.8 and len(eng.calls[1][0]) == 2  # ⌈5/4⌉ prompts
    assert gen.extras["reinforce"].sum() == 1  # S/2 = 1 of the 2 positives
    assert methods.build("aepo_wang").state_dict()["sampling"] == {"h_prev": None, "temperature": None}


# ------------------------------------------------------------------------------------------ SENT curriculum
def test_semantic_entropy_curriculum_serves_low_to_high_in_stages_and_checkpoints():
    exs = [Example(id=f"e{i}", prompt=f"p{i}", answer="1") for i in range(4)]
    answers = {"p0": ["1", "2", "3", "4"], "p1": ["1"] * 4, "p2": ["1", "1", "2", "2"], "p3": ["5", "5", "5", "6"]}
    strat = build("semantic_entropy_curriculum", pool_size=4, stages=2, samples=4, equivalence="exact")
    eng = FakeEngine(answers=answers, examples=exs)
    first = strat.select_examples(eng, 2)
    assert [e.id for e in first] == ["e1", "e3"]  # SE 0 and H(3/4, 1/4) ≈ 0.562
    assert [s["stage"] for s in strat._served] == [1, 1]
    saved = strat.state_dict()
    again = build("semantic_entropy_curriculum", pool_size=4, stages=2, samples=4, equivalence="exact")
    again.load_state_dict(saved)
    second = again.select_examples(eng, 2)
    assert [e.id for e in second] == ["e2", "e0"]  # ln 2, then ln 4: stage 2
    assert [s["stage"] for s in again._served] == [2, 2]
    assert [s["se"] for s in again._served] == pytest.approx([math.log(2), math.log(4)])


# ------------------------------------------------------------------------------------------ advantages
def _batch(rewards, groups, T=4, **extras):
    B = len(rewards)
    return RolloutBatch(response_ids=torch.zeros(B, T, dtype=torch.long), response_mask=torch.ones(B, T),
                        old_logprobs=torch.full((B, T), -1.0), rewards=torch.tensor(rewards, dtype=torch.float32),
                        group_ids=torch.tensor(groups), extras=extras)


def test_treerl_global_plus_local_advantages_by_hand():
    # one prompt: tree 1 = root segment 1 → {2 (leaf A), 3 (leaf B)}; tree 2 = segment 4 (leaf C); rewards 1, 0, 1.
    nodes = torch.tensor([[1, 1, 2, 2], [1, 1, 3, 0], [4, 4, 4, 4]])
    batch = _batch([1.0, 0.0, 1.0], [0, 0, 0], tree_node=nodes)
    batch = batch.replace(response_mask=(nodes > 0).float())
    adv = TreeRLAdvantage().compute(batch)
    # RLOO: r̂ = R − mean of the others: A 0.5, B −1, C 0.5; V(root) = 0.
    # node 1: V = −0.25, GA = LA = −0.25, |L| = 2 → −0.5/√2; node 2: V 0.5, GA 0.5, LA 0.75 → 1.25;
    # node 3: V −1, GA −1, LA −0.75 → −1.75; node 4: V 0.5, GA = LA = 0.5 → 1.0.
    n1 = -0.5 / math.sqrt(2)
    expected = torch.tensor([[n1, n1, 1.25, 1.25], [n1, n1, -1.75, 0.0], [1.0] * 4])
    torch.testing.assert_close(adv, expected)
    la = TreeRLAdvantage(mode="la").compute(batch)
    torch.testing.assert_close(la[0], torch.tensor([-0.25 / math.sqrt(2)] * 2 + [0.75] * 2))
    with pytest.raises(BatchError, match="tree_node"):
        TreeRLAdvantage().compute(_batch([1.0, 0.0], [0, 0]))


def test_fr3e_value_change_modulation_by_hand():
    # prompt group 0: base rows (rewards 1, 0 → V0 = .5); state 1 from base 7: rewards 1, 1, 0 → V1 = 2/3;
    # state 2: 0, 0, 1 → V2 = 1/3.
    state = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    base = torch.tensor([7, 8, 7, 7, 7, 7, 7, 7])
    rewards = [1, 0, 1, 1, 0, 0, 0, 1]
    groups = [0, 0, 1, 1, 1, 2, 2, 2]
    adv = FR3EAdvantage(modulation=0.5)
    f = adv.factors(torch.tensor(rewards, dtype=torch.float32), torch.tensor(groups), state, base)
    a1, a2 = 1 - 0.5 * (2 / 3 - 0.5), 1 - 0.5 * (1 / 3 - 2 / 3)
    torch.testing.assert_close(f, torch.tensor([1, 1, a1, a1, a1, a2, a2, a2], dtype=torch.float32))
    out = adv.compute(_batch([float(r) for r in rewards], groups, state_index=state, state_base=base))
    g1 = (torch.tensor([1.0, 1.0, 0.0]) - 2 / 3) / (torch.tensor([1.0, 1.0, 0.0]).std() + 1e-6)
    torch.testing.assert_close(out[2:5, 0], g1 * a1)


def test_ettrl_reshaping_by_hand():
    ent = torch.tensor([[1.0, 1.0], [2.0, 4.0], [0.5, 0.5], [9.0, 9.0]])
    batch = _batch([1.0, 0.0, 1.0, 0.0], [0, 0, 1, 1], T=2).replace(old_entropy=ent)
    adv = ETTRLAdvantage().compute(batch)
    # group 0: H_resp 1, 3 → mean 2 → Y = 1.5, 0.5; GRPO ±0.7071
    g = 1 / math.sqrt(2)
    assert adv[0, 0].item() == pytest.approx(1.5 * g, rel=1e-4)
    assert adv[1, 0].item() == pytest.approx(-0.5 * g, rel=1e-4)
    # group 1: H_resp 0.5, 9 → mean 4.75 → Y = 1 + 4.25/4.75, 1 − 4.25/4.75
    assert adv[3, 1].item() == pytest.approx(-(1 - 4.25 / 4.75) * g, rel=1e-4)
    clipped = ETTRLAdvantage(clip_beta=0.5).compute(batch)
    assert clipped.abs().max().item() == pytest.approx(0.5)


def test_mentor_advantages_by_hand():
    mixed = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0])
    batch = _batch([1.0, 0.0, 0.0, 1.0, 0.0], [0] * 5, mixed=mixed).replace(step=30)
    adv = MentorAdvantage().compute(batch)[:, 0]
    on = torch.tensor([1.0, 0.0, 0.0])
    torch.testing.assert_close(adv[:3], (on - on.mean()) / (on.std() + 1e-6))
    # mixed: α = 1·(1 − 30/120) = 0.75; [R − 1/3]₊ / (1 − 0)
    assert adv[3].item() == pytest.approx(0.75 * (2 / 3)) and adv[4].item() == 0.0
    assert MentorAdvantage().coefficient(200) == 0.0


# ------------------------------------------------------------------------------------------ catalog
def test_catalog_entries_name_knobs_arxiv_and_evidence():
    for name in OURS:
        m = methods.get_method(name)
        assert "sampling" in m.knobs and m.arxiv and m.entropy_effect
        assert m.evidence == "exact" or m.evidence.startswith("approximate — ")
    assert methods.get_method("fr3e").evidence.startswith("approximate")
    assert methods.get_method("cure").evidence == "exact"
    # composable with a method of another knob; two sampling methods are refused
    obj = methods.build(["treerl", "entropy_bonus"])
    assert obj.sampling.name == "eptree" and obj.advantage.name == "treerl" and obj.terms[0].name == "entropy_bonus"
    with pytest.raises(ConfigError, match="both set the 'sampling' slot"):
        methods.build(["cure", "treerl"])
    with pytest.raises(ConfigError, match="eptree.score"):
        methods.build("treerl", score="logit")


# ------------------------------------------------------------------------------------------ in the trainer
def _config(tmp_path, method, overrides=None, **optim):
    from entrolab.train.config import config_from_dict

    return config_from_dict({
        "model": {"name": "tiny"}, "data": {"heldout_size": 2, "reward_fn": "tiny_rewards:letter_a"},
        "rollout": {"n": 2, "max_new_tokens": 6},
        "optim": {"steps": 1, "lr": 1e-3, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 4, **optim},
        "eval": {"every": 0, "size": 2}, "checkpoint": {"every": 1},
        "logging": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False},
        "diagnostics": {"law_refit_every": 0, "measure_delta_h": False},
        "algorithm": {"method": method, "overrides": overrides or {}},
    })


def test_branching_rows_train_in_the_trainer_and_controller_state_resumes(tmp_path, reward_path):
    from entrolab.train.trainer import Trainer

    tr = Trainer(_config(tmp_path, "cure", {"min_chars": 1, "n2": 2, "dynamic_sampling": False}))
    m = tr.step()
    assert m["sampling/forked_rows"] == 2 * 2 * 2 and m["update/steps"] == 2  # n1·n2 per prompt
    assert m["sampling/rows"] == 12
    tr2 = Trainer(_config(tmp_path / "b", "aepo_wang", steps=2))
    tr2.train()
    h = tr2.objective.sampling.h_prev
    assert h is not None and h == pytest.approx(tr2.history[-1]["entropy/mean"])
    resumed = Trainer.resume(tmp_path / "b" / "run")
    assert resumed.objective.sampling.h_prev == h


# ------------------------------------------------------------------------------------------ EDGE-GRPO's GEC
BOX = "\\boxed{"
ONE, TWO = TOK.tok("1"), TOK.tok("2")
GEC_EXAMPLES = [Example(id="p", prompt="p", answer="1"), Example(id="q", prompt="q", answer="1")]


def _gec_script(hist):
    """Writes \\boxed{1} (right) or \\boxed{2} (wrong) with p ½ each, then EOS; after a "...here." hint it starts a
    fresh \\boxed{} answer."""
    tail = TOK.decode(after_sep(hist, SEP)).rsplit("here.", 1)[-1]
    if len(tail) < len(BOX):
        return peaked(V, TOK.tok(BOX[len(tail)]))
    if len(tail) == len(BOX):
        return uniform(V, [ONE, TWO])
    return peaked(V, TOK.tok("}")) if len(tail) == len(BOX) + 1 else peaked(V, EOS)


def _gec_engine(seed=0):
    from entrolab.env.rewards import math_score

    def score(texts, exs):  # the arithmetic / file tasks' verifier: the last \boxed{} must equal the gold answer
        out = [math_score(t, ex) for t, ex in zip(texts, exs)]
        return torch.tensor([r for r, _ in out]), [ok for _, ok in out]

    return RolloutEngine(model=ScriptedLM(_gec_script, V, EOS), tokenizer=TOK, temperature=1.0, top_p=1.0,
                         max_new_tokens=12, generator=torch.Generator().manual_seed(seed), score_fn=score)


def _row(gen, i):
    L = int(gen.response_mask[i].sum())
    return gen.response_ids[i, :L].tolist(), gen.trainable[i, :L].tolist(), int(gen.extras["fork_pos"][i])


def test_edge_gec_rewrites_only_wrong_responses_with_the_card_injections():
    from entrolab.env.rewards import countdown_score, math_score
    from entrolab.knobs.sampling.guided import (
        ANSWER,
        ANSWER_HINT,
        HINT,
        KEEP,
        REGENERATE,
    )

    gen = build("edge_gec").rollout(_gec_engine(seed=0), PROMPTS, GEC_EXAMPLES, 8)
    act = gen.extras["gec_action"].tolist()
    assert gen.input_ids.shape[0] == 16 and gen.group_ids.tolist() == [0] * 8 + [1] * 8  # G unchanged, same groups
    assert set(act) == {KEEP, REGENERATE, ANSWER}  # seed 0 gives all three
    hint, inject = TOK.encode(HINT), TOK.encode(ANSWER_HINT.format(answer="1")) + [EOS]
    for i, a in enumerate(act):
        ids, train, k = _row(gen, i)
        text = TOK.decode(ids, skip_special_tokens=True)
        if a == KEEP:  # kept rows were right, untouched and trained as sampled
            assert text == BOX + "1}" and int(gen.extras["tree_depth"][i]) == 0 and train == [1.0] * len(ids)
            continue
        # rewritten rows were wrong: the wrong answer (its EOS dropped) is context only
        assert TOK.decode(ids[:k]) == BOX + "2}" and int(gen.extras["tree_depth"][i]) == 1
        assert train[:k] == [0.0] * k and train[k:] == [1.0] * (len(ids) - k)  # injection + continuation trained
        if a == REGENERATE:
            cont = TOK.decode(ids[k + len(hint):])
            assert ids[k:k + len(hint)] == hint and cont in (BOX + "1}<eos>", BOX + "2}<eos>")
        else:
            assert ids[k:] == inject and math_score(text, GEC_EXAMPLES[i // 8]) == (1.0, True)  # now right
    assert gen.metrics["sampling/gec_regenerated"] == act.count(REGENERATE)
    # train_injected=False: same rows (the option draws nothing), only sampled continuation tokens are trained
    only = build("edge_gec", train_injected=False).rollout(_gec_engine(seed=0), PROMPTS, GEC_EXAMPLES, 8)
    assert torch.equal(only.response_ids, gen.response_ids)
    for i, a in enumerate(act):
        ids, train, k = _row(only, i)
        end = 0 if a == KEEP else k + len(hint) if a == REGENERATE else len(ids)  # prefix + injection: [0, end)
        assert train == [0.0] * end + [1.0] * (len(ids) - end)
    # the injected answer also satisfies the Countdown verifier (its gold answer is an expression)
    ex = Example(id="c", prompt="", answer="(3 + 4) * 2", meta={"numbers": [3, 4, 2], "target": 14})
    assert countdown_score("\\boxed{3 + 4}" + ANSWER_HINT.format(answer=ex.answer), ex)[1]


def test_edge_gec_split_follows_the_seeded_generator():
    from entrolab.knobs.sampling.guided import ANSWER, KEEP, REGENERATE

    correct = [True, False] * 200
    acts = build("edge_gec").choose(correct, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # one uniform per wrong row, in order; none for right rows
    assert acts == [KEEP if ok else REGENERATE if float(torch.rand((), generator=g)) < 0.5 else ANSWER
                    for ok in correct]
    assert 0.4 < acts.count(REGENERATE) / 200 < 0.6
    assert set(build("edge_gec", p_regenerate=0.0).choose(correct, g)) == {KEEP, ANSWER}
    assert set(build("edge_gec", p_regenerate=1.0).choose(correct, g)) == {KEEP, REGENERATE}
    # the rollout draws from engine.generator only: the global RNG does not matter, the engine's seed does
    strat, seen = build("edge_gec"), []
    choose = strat.choose
    strat.choose = lambda c, generator: seen.append(generator) or choose(c, generator)
    outs = []
    for global_seed, seed in ((0, 5), (1, 5), (0, 6)):
        torch.manual_seed(global_seed)
        eng = _gec_engine(seed=seed)
        outs.append(strat.rollout(eng, PROMPTS, GEC_EXAMPLES, 8))
        assert seen[-1] is eng.generator
    same = [torch.equal(outs[0].response_ids, o.response_ids) and torch.equal(outs[0].extras["gec_action"],
                                                                              o.extras["gec_action"]) for o in outs]
    assert same == [True, True, False]
    with pytest.raises(ConfigError):
        build("edge_gec", p_regenerate=1.5)


def test_edge_grpo_runs_gec_in_the_trainer(tmp_path, reward_path):
    from entrolab.train.trainer import Trainer

    obj = methods.build("edge_grpo")
    assert obj.sampling.name == "edge_gec" and obj.advantage.name == "edge_grpo"
    m = Trainer(_config(tmp_path, "edge_grpo")).step()
    assert m["sampling/rows"] == 4 and m["sampling/gec_regenerated"] + m["sampling/gec_answer_injected"] > 0
    assert math.isfinite(m["loss/total"]) and m["update/steps"] == 2

"""The agentic part of issue 9: the sandboxed calculator, the multi-turn tool environment (observations attended but
not trained), ARPO / AEPO-Dong branching on a scripted model with known entropies, their hand-computed advantage and
clip rules, and trainer steps of arpo, aepo_dong, epo and ragen on the tool task."""

from __future__ import annotations

import math
import re
import time

import pytest
import torch
from batches import make_batch
from inference_fakes import CharTokenizer, ScriptedLM, after_sep, peaked, uniform

from entrolab import methods
from entrolab.batch import RolloutBatch
from entrolab.env.sandbox import SandboxLimits, run_programs
from entrolab.env.tasks import TaskError, build_task
from entrolab.errors import ConfigError
from entrolab.generation.engine import RolloutEngine
from entrolab.generation.tools import (
    ToolEnvironment,
    ToolHook,
    engine_tools,
    segment_entropy,
    tool_generate,
    tool_state,
)
from entrolab.knobs.advantage.base import ADVANTAGES
from entrolab.knobs.advantage.rollouts import shared_token_mean
from entrolab.knobs.sampling.agentic import AEPODongSampling, ARPOSampling
from entrolab.knobs.sampling.base import SAMPLINGS

INLINE = ToolEnvironment(isolation="inline")


# ================================================================================================== the sandbox
@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_sandbox_computes_and_refuses(isolation):
    progs = {
        "123456 * 789 + 1000": ("ok", "97407784"),
        "s = 0\nfor i in range(10):\n    s += i * i\ns": ("ok", "285"),
        "[i * i for i in range(5) if i % 2]": ("ok", "[1, 9]"),
        "x = 7 * 6": ("ok", "42"),  # a program ending in an assignment answers with it
        "gcd(84, 36) + isqrt(99)": ("ok", "21"),
        "import os": ("refused", "imports"),
        "(1).__class__": ("refused", "attribute access"),
        "__import__('os')": ("refused", "__import__ is not a callable"),
        "__builtins__": ("refused", "names starting with '_'"),
        "open('/etc/passwd')": ("refused", "open is not a callable"),
        "'a' * 3": ("refused", "str literals"),
        "f = lambda: 1": ("refused", "lambda"),
        "def f():\n    return 1": ("refused", "function definitions"),
        "1 / 0": ("error", "division by zero"),
        "y + 1": ("error", "not defined"),
        "(": ("refused", "syntax error"),
    }
    results = run_programs(list(progs), SandboxLimits(), isolation=isolation)
    for (src, (kind, text)), r in zip(progs.items(), results):
        assert r.kind == kind and text in r.text, (src, r)


@pytest.mark.parametrize("src", ["10 ** 10 ** 10", "2 ** 100000", "factorial(10 ** 6)", "[0] * 10 ** 9",
                                 "sum(range(10 ** 12))", "1 << 10 ** 9", "[[0] * 10000 for i in range(10000)]",
                                 "1.5 ** 100000"])
def test_sandbox_bounds_numbers_and_memory_before_computing(src):
    t = time.perf_counter()
    (r,) = run_programs([src], SandboxLimits(), isolation="inline")
    assert r.kind == "limit", r
    assert time.perf_counter() - t < 1.0  # refused before the huge value exists


@pytest.mark.parametrize("isolation", ["inline", "process"])
def test_infinite_loop_times_out_and_the_next_call_still_runs(isolation):
    t = time.perf_counter()
    r, ok = run_programs(["while True:\n    pass", "2 + 2"], SandboxLimits(timeout_s=0.2), isolation=isolation)
    assert r.kind == "timeout" and "0.2" in r.text
    assert ok.kind == "ok" and ok.text == "4"
    assert time.perf_counter() - t < 3.0


def test_subprocess_has_an_address_space_limit():
    # Interpreter limits relaxed so that only the OS limit (RLIMIT_AS = memory_mb) can stop the 80 MB list.
    relaxed = SandboxLimits(memory_mb=48, max_seq_len=10 ** 9, max_alloc_bytes=10 ** 12, max_value_items=10 ** 12)
    (r,) = run_programs(["x = [0] * (10 ** 7)\nlen(x)"], relaxed, isolation="process")
    assert r.kind == "limit" and "memory" in r.text
    (r,) = run_programs(["x = [0] * (10 ** 5)\nlen(x)"], relaxed, isolation="process")
    assert r.kind == "ok" and r.text == "100000"


def test_bad_limits_and_isolation_are_rejected():
    with pytest.raises(ValueError, match="SandboxLimits.timeout_s"):
        SandboxLimits(timeout_s=0)
    with pytest.raises(ValueError, match="isolation must be one of"):
        ToolEnvironment(isolation="docker")


# ================================================================================================== scripted agent
TOK = CharTokenizer()
V = len(TOK)
SEP, EOS = TOK.tok("<sep>"), TOK.eos_token_id
FILLERS = "abcdefgh"
N_FILL = 4


def agent(plans, fillers):
    """A scripted agent: segment k (the text after the k-th ``</result>``) is ``N_FILL`` filler tokens drawn
    uniformly from ``fillers[k]`` characters (entropy log fillers[k] each), then ``plans[k]`` exactly (entropy ≈ 0),
    then EOS after the last plan."""

    def script(hist):
        gen = TOK.decode(after_sep(hist, SEP))
        k = gen.count("</result>")
        seg = gen[gen.rindex("</result>") + len("</result>"):] if k else gen
        if len(seg) < N_FILL:
            return uniform(V, [TOK.tok(c) for c in FILLERS[:fillers[k]]])
        done = seg[N_FILL:]
        plan = plans[k]
        if done == plan or not plan.startswith(done):  # finished, or inside a (forced) observation
            return peaked(V, EOS)
        return peaked(V, TOK.tok(plan[len(done)]))

    return ScriptedLM(script, V, EOS)


def engine(model, max_new_tokens=160, seed=0, tools=INLINE):
    e = RolloutEngine(model=model, tokenizer=TOK, temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens,
                      generator=torch.Generator().manual_seed(seed))
    e.tools = tools
    return e


TWO_CALLS = ["<tool>1+1</tool>", "<tool>2*2</tool>", "\\boxed{4}"]
SEG0 = N_FILL + len("<tool>1+1</tool>")  # 20 tokens: the model's first segment
OBS = len("<result>2</result>")  # 18 tokens


def test_tool_rollout_masks_observations_and_counts_turns():
    gen = tool_generate(engine(agent(TWO_CALLS, [2, 2, 2])), ["Q<sep>"], 2)
    text = TOK.decode(gen.response_ids[0][gen.response_mask[0] > 0].tolist())
    assert re.fullmatch(r"[ab]{4}<tool>1\+1</tool><result>2</result>[ab]{4}<tool>2\*2</tool><result>4</result>"
                        r"[ab]{4}\\boxed\{4\}<eos>", text), text
    obs1 = range(SEG0, SEG0 + OBS)
    obs2 = range(2 * SEG0 + OBS, 2 * SEG0 + 2 * OBS)
    observed = set(obs1) | set(obs2)
    L = int(gen.response_mask[0].sum())
    for j in range(L):
        assert gen.loss_mask[0, j] == (0.0 if j in observed else 1.0)  # not trained ...
        assert gen.attention_mask[0, gen.prompt_len + j] == 1  # ... but attended
        assert bool(gen.extras["tool_observation"][0, j]) == (j in observed)
    turns = gen.extras["turn_id"][0, :L].tolist()
    assert turns[:SEG0 + OBS] == [0] * (SEG0 + OBS)  # turn 0 and the observation that closes it
    assert turns[SEG0 + OBS:2 * SEG0 + 2 * OBS] == [1] * (SEG0 + OBS)
    assert set(turns[2 * SEG0 + 2 * OBS:]) == {2}
    assert gen.metrics["tools/calls_per_response"] == 2.0 and gen.metrics["tools/ok_frac"] == 1.0
    # the task scores the model's own text: a boxed value inside an observation does not count
    task = build_task("tool_arithmetic", difficulty=1)
    ex = task.heldout(1)[0]
    assert task.score(f"\\boxed{{{ex.answer}}}", ex)[1]
    assert not task.score(f"<tool>x</tool><result>\\boxed{{{ex.answer}}}</result>", ex)[1]


def test_observation_tokens_are_attended_by_the_policy_forward():
    """Two rows identical but for the observation's digits: the trainer's forward gives equal log-probs before the
    observation and different ones after it (the model attends to tool output)."""
    from entrolab.engine.forward import policy_logprobs_entropy
    from entrolab.engine.models import tiny_model

    model, tok = tiny_model(seed=0)
    prompt = tok.encode("Compute 2+3.", add_special_tokens=False)
    rows = [tok.encode(f"<tool>2+3</tool><result>{v}</result>\\boxed{{5}}", add_special_tokens=False)
            for v in (5, 7)]
    ids = torch.tensor([prompt + r for r in rows])
    att = torch.ones_like(ids)
    with torch.no_grad():
        lp, _ = policy_logprobs_entropy(model, ids, att, len(prompt), torch.tensor(rows), 1.0)
    digit = len("<tool>2+3</tool><result>")
    torch.testing.assert_close(lp[0, :digit], lp[1, :digit])  # before the differing observation token
    assert (lp[0, digit + 1:] - lp[1, digit + 1:]).abs().min() > 1e-6  # every later token sees it


def test_tool_errors_come_back_as_observations_and_calls_are_limited():
    gen = tool_generate(engine(agent(["<tool>1/0</tool>", "\\boxed{0}"], [1, 1])), ["Q<sep>"], 1)
    assert "<result>error: division by zero</result>" in TOK.decode(gen.response_ids[0].tolist())
    assert gen.metrics["tools/error_frac"] == 1.0
    # an agent that keeps calling: stopped after max_calls answered calls
    looping = agent(["<tool>1</tool>"] * 9, [1] * 9)
    env = ToolEnvironment(max_calls=2, isolation="inline")
    gen = tool_generate(engine(looping, max_new_tokens=400, tools=env), ["Q<sep>"], 1)
    assert TOK.decode(gen.response_ids[0].tolist()).count("<result>") == 2
    assert gen.metrics["tools/limit_stops_frac"] == 1.0 and gen.truncated.tolist() == [False]


# ================================================================================================== branching
def rollout(method, model, n, seed=0, **params):
    strat = SAMPLINGS.build(method, params)
    return strat.rollout(engine(model, seed=seed), ["Q<sep>"], [None], n)


def fork_positions(gen):
    return sorted(int(p) for p in gen.extras["fork_pos"].tolist() if p > 0)


def test_segment_entropy_is_the_summed_entropy_of_the_first_tokens_over_log_v():
    (tr,) = engine(agent(TWO_CALLS, [2, 8, 1])).branching().sample(["Q<sep>"], 1, hook=ToolHook(INLINE, TOK))
    h0 = segment_entropy(tr, 0, SEG0, 20, V)
    h1 = segment_entropy(tr, SEG0 + OBS, 2 * SEG0 + OBS, 20, V)
    assert h0 == pytest.approx(N_FILL * math.log(2) / math.log(V), abs=1e-5)
    assert h1 == pytest.approx(N_FILL * math.log(8) / math.log(V), abs=1e-5)
    assert segment_entropy(tr, 0, SEG0, 2, None) == pytest.approx(2 * math.log(2), abs=1e-5)  # first 2 tokens
    assert tool_state(tr)["obs"] == [[SEG0, SEG0 + OBS], [2 * SEG0 + OBS, 2 * SEG0 + 2 * OBS]]


def test_arpo_branch_rule_hand_cases():
    arpo = ARPOSampling()  # τ = 0.5, w = 0.2: branch iff clip(U − 0.2·ΔH, 0, 1) ≤ 0.5
    assert arpo.branch(0.6, 0.6, None)  # 0.48
    assert not arpo.branch(0.6, 0.0, None)  # 0.6
    assert arpo.branch(0.4, -0.4, None) is True and not arpo.branch(0.45, -0.4, None)  # 0.48 / 0.53


@pytest.mark.parametrize("fillers, expect_fork", [([2, 8, 1], True), ([8, 2, 1], False)])
def test_arpo_branches_exactly_after_the_observation_that_raised_entropy(fillers, expect_fork):
    """τ = 0 and w = 1 make the rule deterministic: branch iff U ≤ ΔH. The first observation has ΔH = 0 (never);
    the second follows a segment with 4·ln 8 vs 4·ln 2 nats (ΔH ≈ +1.2: always) or the reverse (ΔH < 0: never)."""
    gen = rollout("arpo", agent(TWO_CALLS, fillers), n=4, initial_rollouts=2, branch_probability=0.0,
                  entropy_weight=1.0)
    assert gen.response_ids.shape[0] == 4 and gen.group_ids.tolist() == [0] * 4
    after_second_obs = 2 * SEG0 + 2 * OBS
    if expect_fork:
        assert fork_positions(gen) == [after_second_obs, after_second_obs]  # one branch per initial row
        assert gen.metrics["sampling/passes"] == 1.0 and gen.metrics["sampling/branches"] == 2.0
        assert gen.extras["tree_depth"].tolist().count(1) == 2
    else:
        assert fork_positions(gen) == []  # the budget is filled by fresh samples, one per pass
        assert gen.metrics["sampling/passes"] == 3.0 and gen.metrics["sampling/branches"] == 0.0
    # two observations per path that reaches them: the 2 initial rows (forks start after their last observation),
    # or all 4 rows when they are fresh samples
    assert gen.metrics["sampling/branch_decisions"] == (4.0 if expect_fork else 8.0)


def test_arpo_never_exceeds_the_budget_and_a_beam_of_one_never_branches():
    model = agent(TWO_CALLS, [2, 8, 1])
    gen = rollout("arpo", model, n=3, initial_rollouts=2, beam_size=4, branch_probability=0.0, entropy_weight=1.0)
    assert gen.response_ids.shape[0] == 3 and gen.metrics["sampling/branches"] == 1.0
    gen = rollout("arpo", model, n=3, initial_rollouts=2, beam_size=1, branch_probability=0.0, entropy_weight=1.0)
    assert fork_positions(gen) == [] and gen.response_ids.shape[0] == 3


def test_aepo_branch_penalty_hand_cases():
    aepo = AEPODongSampling()  # branch iff clip((U + 0.2·ΔH)(1 − 0.05·l)) ≥ 0.5
    state = {"tool": {"calls": 0, "obs": [], "seg_starts": [0], "observed": -1, "results": [], "consecutive": 0}}
    trace = type("T", (), {"extra": state})()
    assert aepo.branch(0.5, 0.1, trace)  # 0.52
    aepo.after_decision(trace, True)
    assert state["tool"]["consecutive"] == 1 and not aepo.branch(0.5, 0.1, trace)  # 0.52 × 0.95 = 0.494
    aepo.after_decision(trace, False)
    assert state["tool"]["consecutive"] == 0 and aepo.branch(0.5, 0.1, trace)


@pytest.mark.parametrize("penalty", [1.0, 0.0])
def test_aepo_penalty_stops_consecutive_branching_on_a_path(penalty):
    """Three observations; τ = 1 so only a clipped-to-1 score branches: obs 1 (ΔH = 0) never; obs 2 and obs 3
    (ΔH > 0, w = 10) always — unless the path branched at the previous step and γ·l = 1 zeroes the score."""
    plans = ["<tool>1+1</tool>", "<tool>2*2</tool>", "<tool>3*3</tool>", "\\boxed{9}"]
    gen = rollout("aepo_dong", agent(plans, [2, 8, 8, 1]), n=4, initial_rollouts=1, pre_monitoring=False,
                  branch_probability=1.0, entropy_weight=10.0, branch_penalty=penalty)
    obs2_end, obs3_end = 2 * SEG0 + 2 * OBS, 3 * SEG0 + 3 * OBS
    assert gen.response_ids.shape[0] == 4
    if penalty == 1.0:  # root and branch carry l = 1 at obs 3: no branch; a fresh sample fills the budget and
        assert fork_positions(gen) == [obs2_end, obs2_end]  # branches at its own obs 2
        assert gen.metrics["sampling/passes"] == 2.0
    else:  # no penalty: both paths branch again after obs 3
        assert fork_positions(gen) == [obs2_end, obs3_end, obs3_end]
        assert gen.metrics["sampling/passes"] == 1.0


def test_aepo_pre_monitoring_splits_the_budget():
    assert AEPODongSampling.initial_rows(1.0, 0.2, 16, 0.5) == 10  # ⌊16·σ(0.4)⌋ + 1 = ⌊9.58⌋ + 1
    assert AEPODongSampling.initial_rows(-50.0, 0.0, 16, 0.5) == 1  # clipped to [1, n]
    assert AEPODongSampling.initial_rows(50.0, 0.0, 16, 0.5) == 16
    # the scripted agent: H_root = 4 ln 2/ln V, tool segments 4 ln 8/ln V and ≈ 0 → H̄_tool = their mean of three
    model = agent(TWO_CALLS, [2, 8, 1])
    aepo = AEPODongSampling(pre_monitoring=True)
    e = engine(model)
    counts = aepo.initial_counts(e, e.branching(), [TOK.encode("Q<sep>")], 16)
    h_root = N_FILL * math.log(2) / math.log(V)
    h_tool = (h_root + N_FILL * math.log(8) / math.log(V) + N_FILL * math.log(1) / math.log(V)) / 3
    assert counts == [AEPODongSampling.initial_rows(h_root, h_tool, 16, 0.5)]


# ================================================================================================== advantages, clip
def test_arpo_soft_and_hard_attribution_hand_case():
    # rows 0 and 1 share their first 2 tokens (tree node 1); row 2 is independent. GRPO over [1, 0, 0]:
    # mean 1/3, unbiased std √(1/3) → A = [2/√3, −1/√3, −1/√3].
    s3 = math.sqrt(3)
    node = torch.tensor([[1, 1, 2], [1, 1, 3], [4, 4, 4]])
    b = make_batch([3, 3, 3], rewards=[1.0, 0.0, 0.0], group_ids=[0, 0, 0], extras={"tree_node": node})
    soft = ADVANTAGES.build("arpo_attribution").compute(b)
    torch.testing.assert_close(soft, torch.tensor([[2 / s3] * 3, [-1 / s3] * 3, [-1 / s3] * 3]))
    hard = ADVANTAGES.build("arpo_attribution", {"mode": "hard"}).compute(b)
    shared = (2 / s3 - 1 / s3) / 2
    torch.testing.assert_close(hard, torch.tensor([[shared, shared, 2 / s3], [shared, shared, -1 / s3],
                                                   [-1 / s3] * 3]))
    # soft's summed weight on a shared token equals hard's: the implicit average
    torch.testing.assert_close(soft[:2, 0].sum(), hard[:2, 0].sum())
    # without tree extras, identical token prefixes are the shared states
    ids = torch.tensor([[5, 6, 7], [5, 6, 9], [1, 2, 3]])
    b2 = RolloutBatch(response_ids=ids, response_mask=torch.ones(3, 3), old_logprobs=-torch.ones(3, 3),
                      rewards=torch.tensor([1.0, 0.0, 0.0]), group_ids=torch.tensor([0, 0, 0]))
    torch.testing.assert_close(shared_token_mean(torch.tensor([2 / s3, -1 / s3, -1 / s3]), b2), hard)
    with pytest.raises(ConfigError, match="arpo_attribution.mode"):
        ADVANTAGES.build("arpo_attribution", {"mode": "medium"})


def test_aepo_entropy_aware_advantage_hand_case():
    # rewards [1, 0] → GRPO A = ±1/√2; entropies [[0, 1], [2, 3]]: mean 1.5, unbiased std √(5/3)
    ent = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = make_batch([2, 2], rewards=[1.0, 0.0], group_ids=[0, 0], old_entropy=ent)
    z = (ent - 1.5) / math.sqrt(5 / 3)
    a = torch.tensor([[1.0], [-1.0]]) / math.sqrt(2)
    expected = a * (1 + 0.2 * z)
    torch.testing.assert_close(ADVANTAGES.build("aepo_entropy_aware").compute(b), expected, atol=1e-5, rtol=1e-5)


def test_aepo_clip_keeps_ppo_values_and_a_bounded_high_gradient():
    # r and A as in test_knobs' clip table; ε = 0.2, dual clip 3.
    r = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1, 4.0, 2.0, 1.25]])
    A = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0, -1.0, -1.0, 1.0]])
    old = torch.full_like(r, -3.0)
    logp = (old + r.log()).requires_grad_(True)
    b = make_batch([8], old_logprobs=old, rewards=[0.0], group_ids=[0], logprobs=logp, advantages=A)
    clip = methods.build("aepo_dong").clip  # CE-GPPO with β_low = 0, β_high = 1, dual clip 3
    loss, metrics = clip.pg_loss(b)
    # values: PPO's, with the dual cap −c·A = 3 on token 5; β_low = 0 makes the low-clipped token 2 read 0 (PPO: 0.8)
    torch.testing.assert_close(loss.detach(), torch.tensor([[-1.2, -0.5, 0.0, 1.5, -1.1, 3.0, 2.0, -1.2]]))
    loss.sum().backward()
    # dℓ/dlog π: (1+ε)·(−A) on high positive tokens 0 and 7 (PPO: 0), 0 on the low negative token 2 and the dual
    # token 5, −A·r elsewhere
    torch.testing.assert_close(logp.grad, torch.tensor([[-1.2, -0.5, 0.0, 1.5, -1.1, 0.0, 2.0, -1.2]]))
    assert metrics["clip/frac_high"] == pytest.approx(2 / 8) and metrics["clip/frac_low"] == pytest.approx(1 / 8)


def test_bad_agentic_configs_name_the_field():
    with pytest.raises(ConfigError, match=r"arpo\.initial_rollouts = 0 must be >= 1"):
        SAMPLINGS.build("arpo", {"initial_rollouts": 0})
    with pytest.raises(ConfigError, match=r"aepo_dong\.branch_penalty"):
        SAMPLINGS.build("aepo_dong", {"branch_penalty": 2.0})
    with pytest.raises(TaskError, match="tool_arithmetic difficulty must be one of"):
        build_task("tool_arithmetic", difficulty=9)


def test_tool_task_splits_never_overlap():
    task = build_task("tool_arithmetic", seed=3)
    held = {e.prompt for e in task.heldout(50)}
    train = [e for _, e in zip(range(400), task.train_examples())]
    assert not held & {e.prompt for e in train}
    ex = train[0]
    (value,) = run_programs([ex.meta["expression"]], isolation="inline")
    assert ex.prompt == f"Compute {ex.meta['expression']}." and value.text == ex.answer
    assert engine_tools(object()).max_calls == 5 and task.tools.max_calls == 5


# ================================================================================================== objectives on tools
def tool_batch(gen, rewards):
    B, T = gen.response_ids.shape
    return RolloutBatch(response_ids=gen.response_ids, response_mask=gen.loss_mask,
                        old_logprobs=-torch.rand(B, T) - 0.01, rewards=torch.tensor(rewards),
                        group_ids=gen.group_ids, old_entropy=torch.rand(B, T), extras=dict(gen.extras))


def test_epo_and_ragen_read_the_tool_rollout():
    gen = tool_generate(engine(agent(TWO_CALLS, [2, 8, 1])), ["Q<sep>", "R<sep>"], 2)
    batch = tool_batch(gen, [1.0, 0.0, 1.0, 1.0])
    epo = methods.build("epo")
    epo.prepare(epo.compute_advantages(batch))
    epo.on_step_end({})
    hist = epo.terms[0].history()
    assert sorted(hist) == [0, 1, 2]  # one running mean per turn of the agent
    turn, m = batch.extras["turn_id"], batch.mask > 0
    for k in (0, 1, 2):
        assert hist[k] == pytest.approx(float(batch.old_entropy[m & (turn == k)].mean()))
    ragen = methods.build("ragen")
    assert ragen.keep(batch).tolist() == [True, True, False, False]  # the group with varied rewards


# ================================================================================================== trainer steps
@pytest.fixture(scope="module")
def shared_tiny():
    from entrolab.engine.models import tiny_model

    model, tok = tiny_model(seed=0)
    return model, tok, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name, overrides", [("arpo", {"initial_rollouts": 2}), ("aepo_dong", {}), ("epo", {}),
                                             ("ragen", {})])
def test_trainer_step_on_the_tool_task(name, overrides, tmp_path, reward_path, shared_tiny):
    from entrolab.train.config import config_from_dict
    from entrolab.train.trainer import Trainer

    model, tok, state = shared_tiny
    model.load_state_dict(state)
    cfg = config_from_dict({
        "model": {"name": "tiny"},
        "data": {"task": "tool_arithmetic", "heldout_size": 2, "reward_fn": reward_path},
        "rollout": {"n": 4, "max_new_tokens": 8},
        "optim": {"steps": 1, "lr": 1e-4, "prompts_per_step": 2, "mini_batches": 2, "micro_batch_size": 4},
        "eval": {"every": 1, "size": 2, "n_samples": 2, "k": 2} if name == "epo" else {"every": 0},
        "checkpoint": {"every": 0},
        "logging": {"run_dir": str(tmp_path / "run"), "progress": False, "tensorboard": False},
        "diagnostics": {"law_refit_every": 0, "measure_delta_h": False},
        "algorithm": {"method": name, "overrides": overrides},
    })
    trainer = Trainer(cfg, model=model, tokenizer=tok)
    (m,) = trainer.train()
    assert m["update/steps"] == 2 and m["update/skipped"] == 0 and math.isfinite(m["loss/total"])
    assert "tools/calls_per_response" in m  # the rows came from the tool environment
    if name == "epo":  # evaluation runs the tool environment too (greedy and sampled)
        assert 0.0 <= m["eval/accuracy"] <= 1.0 and 0.0 <= m["eval/pass_at_k"] <= 1.0
    assert any(not torch.equal(v, state[k]) for k, v in model.state_dict().items())
    if name == "arpo":  # the strategy took over generation: 2 rows started per prompt, the budget filled to 4
        assert m["sampling/initial_rows_mean"] == 2.0 and m["sampling/passes"] >= 2
    if name == "aepo_dong":  # pre-monitoring chose 1..n initial rows per prompt
        assert 1.0 <= m["sampling/initial_rows_mean"] <= 4.0

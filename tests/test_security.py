"""Untrusted model output (issue 20): escapes, denial of service, crashes, batch isolation, extraction size, parser
memory, hanging rewards and label-free clustering budgets.

Every hostile call runs inside :func:`bounded`: a child Python with its own address-space limit, run in its own
process group with a wall-clock timeout, so a regression fails the test instead of hanging or swapping the suite.
Timings asserted inside a child are measured there; the child's own timeout is generous (the CI machine has 2 shared
cores), the asserted bounds are the product's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import entrolab

SRC = str(Path(entrolab.__file__).resolve().parent.parent)


def bounded(code: str, timeout_s: float = 90.0, memory_mb: int = 3072, cwd: Path | None = None,
            extra_path: Path | None = None) -> dict:
    """Run ``code`` in a fresh Python capped at ``memory_mb`` MB of address space and ``timeout_s`` seconds; return
    the JSON object it prints last. Its whole process group (pool workers included) is killed on timeout."""
    prelude = textwrap.dedent(f"""
        import resource, json, sys, time
        resource.setrlimit(resource.RLIMIT_AS, ({memory_mb} * 2**20, {memory_mb} * 2**20))
    """)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([SRC] + ([str(extra_path)] if extra_path else [])
                                        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the bounded child did not finish within {timeout_s} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # workers it left behind, if any
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


# ================================================================================================== escapes
ESCAPES = [
    "().__class__.__bases__[0].__subclasses__()",
    "[c for c in ().__class__.__base__.__subclasses__()]",
    "__import__('os').system('touch pwned')",
    "import os\nos.system('touch pwned')",
    "from os import system",
    "open('pwned', 'w')",
    "exec('1')", "eval('1')", "compile('1', 'f', 'exec')", "globals()", "locals()", "vars()", "dir()",
    "getattr(1, 'real')", "type(1)", "print(1)", "input()", "breakpoint()", "help()", "exit()", "quit()",
    "f'{1}'", "'{0.__class__}'.format(1)", "b'x'", "x = lambda: 1", "@max\ndef f():\n    pass",
    "(y := 1)", "class A:\n    pass", "def f():\n    yield 1", "async def f():\n    pass",
    "try:\n    1\nexcept Exception as e:\n    e.__traceback__", "with max as m:\n    pass", "del x", "global x",
    "max.__self__", "pow.__call__", "sorted.__module__", "1 .real", "x = [1]\nx.append(2)",
    "ｏｐｅｎ('pwned')",  # full-width letters: Python's parser folds them to `open`, which is not in the language
    "__builtins__", "_", "x = {}", "x = {1}", "[*range(3)]", "max(*[1, 2])", "max(key=abs)", "x @ y",
    "1 is 1", "0\x00", "memoryview(b'')", "sum.__globals__", "(lambda: 0).__code__",
]
BOXED_ESCAPES = [
    "\\boxed{__import__('os').system('touch pwned')}",
    "\\boxed{().__class__.__bases__[0].__subclasses__()}",
    "\\boxed{exec(\"open('pwned','w')\")}",
    "\\boxed{eval('1+1')}",
    "\\boxed{\\text{__import__('os').system('touch pwned')}}",
    "\\boxed{open('pwned', 'w')}",
    "\\boxed{lambda: 0}",
    "\\boxed{x.__class__}",
]


def test_no_escape_payload_runs_code(tmp_path):
    got = bounded(f"""
        from entrolab.env.sandbox import run_programs
        from entrolab.env.rewards import build_reward, verify_math, extract_boxed
        from entrolab.env.tasks import ArithmeticTask, CountdownTask, Example
        progs = {ESCAPES!r}
        res = run_programs(progs) + run_programs(progs, isolation="inline")
        boxes = {BOXED_ESCAPES!r}
        e = Example("x", "q", "2")
        cd = next(CountdownTask(num_numbers=3, max_target=50, seed=1).train_examples())
        math_r = build_reward(ArithmeticTask()).score_batch(boxes, [e] * len(boxes))
        cd_r = build_reward(CountdownTask(num_numbers=3, max_target=50, seed=1)).score_batch(boxes, [cd] * len(boxes))
        direct = [verify_math(b, "2") for b in boxes] + [verify_math(extract_boxed(b) or "", "2") for b in boxes]
        print(json.dumps({{"kinds": [r.kind for r in res], "texts": [r.text for r in res], "math": math_r,
                           "countdown": cd_r, "direct": direct}}))
    """, cwd=tmp_path)
    assert set(got["kinds"]) <= {"refused", "error", "limit"}, [(p, k) for p, k in zip(ESCAPES * 2, got["kinds"])
                                                                if k == "ok"]
    assert all("<" not in t for t in got["texts"])  # no object repr (a function, class or module) came back
    assert all(r == [0.0, False] for r in got["math"] + got["countdown"])
    assert not any(got["direct"])
    assert not (tmp_path / "pwned").exists() and list(tmp_path.iterdir()) == []


# ================================================================================================== the calculator
def test_benign_calculator_input_never_fails():
    progs = {"int(7/2)": "3", "round(2.5)": "2", "round(3.7)": "4", "int(-7/2)": "-3", "int(1e300) > 0": "True",
             "round(2.675, 2)": "2.67", "len(range(10**30))": "1000000000000000000000000000000",
             "[] * 10**30": "[]", "2.0 in range(5)": "True", "0.5 in range(10**15)": "False",
             "10**15 - 2 in range(0, 10**15, 3)": "False", "999 in range(0, 10**15, 3)": "True",
             "x = range(10)\nx[2:5]": "[2, 3, 4]", "a, b = range(2)\na + b": "1", "0xff + 0o17 + 0b11": "273"}
    got = bounded(f"""
        from entrolab.env.sandbox import run_programs
        progs = {list(progs)!r}
        t = time.monotonic()
        res = run_programs(progs) + run_programs(progs, isolation="inline")
        print(json.dumps({{"res": [[r.kind, r.text] for r in res], "s": time.monotonic() - t}}))
    """)
    want = [["ok", v] for v in progs.values()] * 2
    assert got["res"] == want


DOS = [
    "0.5 in range(10**15)", "round(5, -10**8)", "range(10**8)[:]", "sum(range(10**30))", "sum(range(10**9), 5)",
    "len(range(10**30)) * [0]", "[] * 10**30 + [0] * 10**30", "0x" + "f" * 3000, "pow(3, 2**8000, 2**8000 + 1)",
    "x = [0]\nfor i in range(40):\n    x = [x, x]\nx",
    "x = [0]\nfor i in range(40):\n    x = [x, x]\nx == [x, x]",
    "x = [0] * 10000\nfor i in range(20):\n    x = [x] * 10",
    "x = []\nwhile True:\n    x = x + [2**8000]",
    "x = [2**8000] * 5000\ny = [i * 3 for i in x]\nz = [i * 5 for i in y]\nsorted(x + y)",
    "while True:\n    pass",
    "10 ** 10 ** 10", "factorial(10 ** 6)", "1 << 10 ** 9", "a, b = range(10**30)", "sorted(range(10**30))",
    "x = [0]\nfor i in range(1000):\n    x = [x]\nx", "-" * 3000 + "1", "(" * 150 + "1" + ")" * 150,
    "1" + "+1" * 1900,
]


def test_denial_of_service_payloads_are_bounded_and_spare_their_neighbours():
    batch = [p for d in DOS for p in (d, "6*7")]
    got = bounded(f"""
        from entrolab.env.sandbox import SandboxLimits, run_programs
        batch = {batch!r}
        t = time.monotonic()
        res = run_programs(batch, SandboxLimits(timeout_s=1.0))
        print(json.dumps({{"res": [[r.kind, r.text, r.seconds] for r in res], "s": time.monotonic() - t}}))
    """, timeout_s=150)
    res = got["res"]
    assert len(res) == len(batch)
    for k, (kind, text, seconds) in enumerate(res):
        if k % 2:
            assert (kind, text) == ("ok", "42"), (batch[k - 1], kind, text)
        else:
            assert kind != "ok" or len(text) <= 256, (batch[k], kind, text)
            assert seconds <= 1.0 + 1.0 + 0.5, (batch[k], seconds)  # timeout_s + kill_grace_s, and some slack
    # a bounded whole: each program within its own limit, one subprocess start per kill at most
    assert got["s"] < len(DOS) * 2.5


def test_one_program_crash_or_kill_never_costs_its_neighbours():
    got = bounded("""
        from entrolab.env.sandbox import SandboxLimits, run_programs
        first = run_programs(["range(1,10,0)", "6*7"])
        # interpreter limits relaxed so that only the kill can stop the C loop of sum(range(10**11))
        hog = SandboxLimits(timeout_s=0.5, kill_grace_s=0.5, max_seq_len=10**15, max_steps=10**18)
        t = time.monotonic()
        second = run_programs(["sum(range(10**11))", "6*7", "sum(range(10**11))", "sum(range(10**11))", "1+1"], hog)
        print(json.dumps({"first": [[r.kind, r.text] for r in first], "second": [[r.kind, r.text] for r in second],
                          "s": time.monotonic() - t}))
    """)
    assert got["first"] == [["error", "error: range() step must not be zero"], ["ok", "42"]]
    kinds = [k for k, _ in got["second"]]
    assert kinds == ["timeout", "ok", "timeout", "timeout", "ok"]
    assert [t for _, t in got["second"]][1::3] == ["42", "2"]
    assert got["s"] < 3 * (0.5 + 0.5) + 3.0  # three kills, each at its program's limit, plus restarts


def test_the_tool_task_runs_model_programs_only_in_processes():
    from entrolab.env.tasks import TaskError, build_task

    with pytest.raises(TaskError, match="tool_isolation must be 'process'"):
        build_task("tool_arithmetic", tool_isolation="inline")
    assert build_task("tool_arithmetic").tools.isolation == "process"


# ================================================================================================== extraction
def _reference_extract_boxed(text):
    """The former quadratic implementation, as the behaviour reference."""
    import re

    found = None
    for m in re.finditer(r"\\boxed\s*\{", text or ""):
        depth, i = 1, m.end()
        while i < len(text):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    found = text[m.end():i].strip()
                    break
            i += 1
    return found


def test_extract_boxed_is_linear_and_unchanged():
    import random

    from entrolab.env.rewards import extract_boxed

    rng = random.Random(0)
    atoms = ["\\boxed{", "\\boxed {", "{", "}", "a", " ", "\\boxed", "1", "\\{", "\\}"]
    for _ in range(20000):
        t = "".join(rng.choice(atoms) for _ in range(rng.randint(0, 16)))
        assert extract_boxed(t) == _reference_extract_boxed(t), t
    got = bounded("""
        from entrolab.env.rewards import extract_answer, extract_boxed, math_score
        from entrolab.env.tasks import Example
        e = Example("x", "q", "7")
        out = {}
        for name, text in {"boxes": "\\\\boxed{" * (2**20 // 7), "closed": "\\\\boxed{" * 150000 + "7" + "}" * 150000,
                           "braces": "{" * 2**20 + "\\\\boxed{7}", "tail": "x" * 2**20 + "\\\\boxed{7}"}.items():
            t = time.monotonic()
            extract_boxed(text), extract_answer(text), math_score(text, e)
            out[name] = time.monotonic() - t
        print(json.dumps(out))
    """, timeout_s=60)
    assert max(got.values()) < 1.0, got  # 1 MB each; the quadratic scan took hours on "boxes"


# ================================================================================================== answer checking
HUGE = ["\\boxed{\\operatorname{eye}(20000)}", "\\boxed{\\operatorname{zeros}(10^{5}, 10^{5})}",
        "\\boxed{2^{10^{10}}}", "\\boxed{9^{9^{9}}}", "\\boxed{(10^{7})!}", "\\boxed{\\binom{10^{9}}{5\\cdot 10^{8}}}",
        "\\boxed{\\prod_{k=1}^{10^{6}} k}", "\\boxed{(x+1)^{10^{5}}}", "\\boxed{10^{-10^{10}}}",
        "\\boxed{\\begin{pmatrix}2&1\\\\1&1\\end{pmatrix}^{10^{7}}}", "\\boxed{" + "1+" * 5000 + "1}"]


def test_parser_bombs_cost_a_zero_reward_in_bounded_time_and_memory():
    got = bounded(f"""
        from entrolab.env.rewards import build_reward
        from entrolab.env.tasks import ArithmeticTask, Example
        from entrolab.env.workers import Call, shared_pool
        e = Example("x", "q", "3")
        r = build_reward(ArithmeticTask(), limit_s=5.0, memory_mb=1024)
        r.start(wait=True)
        huge = {HUGE!r}
        batch = [c for h in huge for c in (h, "\\\\boxed{{3}}")]
        t = time.monotonic()
        scores = r.score_batch(batch, [e] * len(batch))
        spent = time.monotonic() - t
        mem = [o.value for o in shared_pool(None, 1024).run([Call("entrolab.env.workers:memory_report")] * 6)]
        print(json.dumps({{"scores": scores, "s": spent, "counters": r.counters(), "mem": mem,
                           "workers": shared_pool(None, 1024).size}}))
    """, timeout_s=150)
    assert got["scores"] == [[0.0, False], [1.0, True]] * len(HUGE)
    assert got["counters"]["refused"] >= len(HUGE) - 1  # refused before anything is built (the long sum: too long)
    assert got["counters"]["timeouts"] + got["counters"]["oom"] + got["counters"]["errors"] == 0
    rounds = -(-len(got["scores"]) // got["workers"])
    assert got["s"] < rounds * 5.0  # each completion under its 5 s limit; in practice all are refused at once
    for m in got["mem"]:
        assert m["rlimit_as_mb"] == 1024 and 0 < m["vm_peak_kb"] <= 1024 * 1024


def test_without_the_guards_the_worker_limits_still_hold(tmp_path):
    """A user reward that builds the parser's 20000×20000 matrix itself (what ``\\operatorname{eye}(20000)`` makes the
    LaTeX parser do, 3.1 GB): the worker's memory cap and time limit stop it, and its neighbours score."""
    (tmp_path / "bomb_rewards.py").write_text(textwrap.dedent("""
        def eye(completion, example):
            if "bomb" in completion:
                import sympy
                sympy.eye(20000).tolist()  # dense: 4e8 entries
            return 1.0
    """))
    got = bounded("""
        from entrolab.env.rewards import build_reward
        from entrolab.env.tasks import ArithmeticTask, Example
        from entrolab.env.workers import Call, shared_pool
        e = Example("x", "q", "3")
        r = build_reward(ArithmeticTask(), custom="bomb_rewards:eye", limit_s=4.0, memory_mb=256)
        r.start(wait=True)
        t = time.monotonic()
        scores = r.score_batch(["bomb", "fine", "bomb", "fine"], [e] * 4)
        spent = time.monotonic() - t
        mem = [o.value for o in shared_pool(None, 256).run([Call("entrolab.env.workers:memory_report")] * 4)]
        print(json.dumps({"scores": scores, "s": spent, "counters": r.counters(), "mem": mem}))
    """, timeout_s=120, extra_path=tmp_path)
    assert [s[0] for s in got["scores"]] == [0.0, 1.0, 0.0, 1.0]
    assert got["counters"]["timeouts"] + got["counters"]["oom"] == 2 and got["counters"]["errors"] == 0
    assert got["s"] < 2 * 4.0 + 2.0  # two rounds of the 4 s limit, plus a worker restart
    assert all(m["rlimit_as_mb"] == 256 and m["vm_peak_kb"] <= 256 * 1024 for m in got["mem"])


HANG_MODULE = """
import os, time

def reward(completion, example):
    if completion == "python-loop":
        while True:
            pass
    if completion == "c-loop":  # one C call: no signal handler runs until it returns, only a kill ends it
        return float(sum(range(10 ** 12)))
    if completion == "sleep":
        time.sleep(10 ** 6)
    if completion == "memory":
        return float(len([0] * 10 ** 10))
    if completion == "exit":
        os._exit(3)
    if completion == "swallow":
        try:
            while True:
                pass
        except Exception:
            return 1.0
    if completion == "pid":
        return float(os.getpid())
    return 0.5
"""


def test_a_hanging_or_crashing_reward_costs_at_most_its_limit(tmp_path):
    (tmp_path / "hang_rewards.py").write_text(HANG_MODULE)
    got = bounded("""
        import logging, os
        logging.basicConfig(level=logging.WARNING)
        from entrolab.env.rewards import build_reward
        from entrolab.env.tasks import ArithmeticTask, Example
        e = Example("x", "q", "3")
        r = build_reward(ArithmeticTask(), custom="hang_rewards:reward", limit_s=1.5, memory_mb=512)
        r.start(wait=True)
        out = {}
        for bad in ["python-loop", "c-loop", "sleep", "memory", "exit", "swallow"]:
            t = time.monotonic()
            out[bad] = [r.score_batch([bad, "ok", "ok"], [e] * 3), time.monotonic() - t]
        pid = r.score("pid", e)[0]
        print(json.dumps({"out": out, "counters": r.counters(), "metrics": r.step_metrics(),
                          "again": r.step_metrics(), "pid": pid, "me": os.getpid()}))
    """, timeout_s=120, extra_path=tmp_path)
    for bad, (scores, spent) in got["out"].items():
        assert scores == [[0.0, False], [0.5, False], [0.5, False]], bad  # correct: the verifier's (answer 3)
        assert spent < 1.5 + 1.0, (bad, spent)  # the limit, plus scheduling slack on a loaded machine
    c = got["counters"]
    assert c["timeouts"] == 4 and c["oom"] == 1 and c["errors"] == 1  # loops, C call, sleep, swallow; memory; exit
    assert got["metrics"] == {"reward/errors": 1.0, "reward/timeouts": 4.0, "reward/oom": 1.0, "reward/refused": 0.0}
    assert set(got["again"].values()) == {0.0}
    assert got["pid"] != got["me"]  # scored in a worker, with the module found through the parent's sys.path


def test_pool_rewards_equal_in_process_rewards(tmp_path):
    """Determinism: the pool gives the rewards the trainer's process gives, for the built-in verifiers."""
    from entrolab.env.rewards import build_reward
    from entrolab.env.tasks import ArithmeticTask, CountdownTask, Example

    texts = ["\\boxed{42}", "\\boxed{41}", "\\boxed{\\frac{84}{2}}", "\\boxed{42.0}", "\\boxed{4.2e1}",
             "no box", "\\boxed{x}", "\\boxed{ 42 }", "\\boxed{84/2}", "\\boxed{\\sqrt{1764}}", "\\boxed{1,764}"]
    e = Example("x", "q", "42")
    for task in (ArithmeticTask(), CountdownTask(num_numbers=3, max_target=50, seed=1)):
        ex = e if isinstance(task, ArithmeticTask) else next(task.train_examples())
        pooled = build_reward(task, format_weight=0.1).score_batch(texts, [ex] * len(texts))
        here = build_reward(task, format_weight=0.1, isolation="inline").score_batch(texts, [ex] * len(texts))
        assert pooled == here
    assert build_reward(ArithmeticTask()).score_batch(texts[:2], [e, e]) == [(1.0, True), (0.0, False)]


def test_bad_bound_settings_name_the_field():
    from entrolab.env.rewards import RewardFunction
    from entrolab.env.workers import WorkerPool

    with pytest.raises(ValueError, match="RewardFunction.limit_s"):
        RewardFunction(len, limit_s=0)
    with pytest.raises(ValueError, match="RewardFunction.memory_mb"):
        RewardFunction(len, memory_mb=10)
    with pytest.raises(ValueError, match="RewardFunction.isolation"):
        RewardFunction(len, isolation="thread")
    with pytest.raises(ValueError, match="WorkerPool.workers"):
        WorkerPool(workers=0)


# ================================================================================================== label-free votes
def test_majority_vote_clustering_is_bounded_per_group():
    slow = [h[len("\\boxed{"):-1] for h in HUGE[2:8]]  # answers that cost math-verify 5-15 s each before
    many = ["\\frac{%d}{%d}" % (k, k + 1) for k in range(12)]
    got = bounded(f"""
        from entrolab.env.equivalence import COUNTERS, cluster_answer_groups, cluster_answers
        from entrolab.env.workers import shared_pool
        shared_pool().start(wait=True)
        slow = {slow!r}
        t = time.monotonic()
        ids = cluster_answers(slow + slow[:2])
        spent = time.monotonic() - t
        # a budget far below what a group of 12 different answers needs: its worker must stop at the budget
        many = {many!r}
        t = time.monotonic()
        groups = cluster_answer_groups([many, many[::-1]], budget_s=0.001)
        spent2 = time.monotonic() - t
        groups += cluster_answer_groups([["1/2", "0.5", "3", None], many[:3]])  # the default budget: math as usual
        long = cluster_answers(["1" * 5000, "1" * 5000, "2" * 5000])
        print(json.dumps({{"ids": ids, "s": spent, "groups": groups, "s2": spent2, "counters": COUNTERS,
                           "long": long, "many": many}}))
    """, timeout_s=120)
    assert got["ids"] == [0, 1, 2, 3, 4, 5, 0, 1] and got["s"] < 2.0  # refused answers: compared as strings
    assert got["s2"] < 0.001 + 1.0  # the budget, plus a worker restart's scheduling on a loaded machine
    assert [len(g) for g in got["groups"][:2]] == [12, 12]
    assert got["groups"][2:] == [[0, 0, 1, 2], [0, 1, 2]]
    c = got["counters"]
    assert c["timeouts"] + c["degraded"] >= 2 and c["oom"] + c["errors"] == 0  # both tight groups hit the budget
    assert got["long"] == [0, 0, 1]  # over-long answers are compared as strings

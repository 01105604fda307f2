"""Tests for entrolab.env.rewards: extraction, verification, Countdown parser, user rewards."""

import logging
import math
import textwrap
from fractions import Fraction

import pytest

from entrolab.env import rewards
from entrolab.env.rewards import (
    ExpressionError,
    RewardFunction,
    build_reward,
    check_countdown,
    countdown_score,
    eval_expression,
    extract_boxed,
    load_reward_fn,
    math_score,
    parse_int,
    verify_math,
)
from entrolab.env.tasks import ArithmeticTask, CountdownTask, Example
from entrolab.errors import ConfigError


def ex(answer, **meta):
    return Example(id="sample-7", prompt="q", answer=str(answer), meta=meta)


# ----------------------------------------------------------------------------- extract_boxed
@pytest.mark.parametrize(
    "text, expected",
    [
        ("so \\boxed{42}", "42"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{{a}{b{c}}}", "{a}{b{c}}"),
        ("first \\boxed{1} then \\boxed{2} finally \\boxed{3}.", "3"),
        ("no box here: 42", None),
        ("", None),
        ("\\boxed{7} and a truncated \\boxed{12", "7"),
        ("\\boxed{ 5 }", "5"),
        ("\\boxed {9}", "9"),
        ("\\boxed{}", ""),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [("42", 42), ("-7", -7), ("+3", 3), ("1,234", 1234), ("1 234", 1234), ("1\\,234", 1234),
     ("$56$", 56), ("12.", 12), ("12.0", 12), (" 8 ", 8), (5, 5),
     ("1.5", None), ("abc", None), ("", None), (None, None), ("1/2", None), (True, None)],
)
def test_parse_int(text, expected):
    assert parse_int(text) == expected


# ----------------------------------------------------------------------------- verify_math
@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("0.5", "1/2", True),
        ("\\frac{1}{2}", "0.5", True),
        ("\\frac{1}{2}", "1/2", True),
        ("1,234", "1234", True),
        ("1 234", "1234", True),
        ("1234", 1234, True),
        ("the answer is \\boxed{82}", "82", True),
        ("12", "13", False),
        ("0.5", "\\frac{1}{3}", False),
        ("x + 1", "1 + x", True),
        ("", "1", False),
        ("\\sqrt{4}", "2", True),
        ("$\\frac{3}{4}$", "0.75", True),
    ],
)
def test_verify_math(pred, gold, expected):
    assert verify_math(pred, gold) is expected


def test_verify_math_works_outside_the_main_thread():
    """math-verify's SIGALRM timeouts cannot run in worker threads; verify_math must still answer."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(verify_math, "0.5", "\\frac{1}{2}").result() is True
        assert pool.submit(verify_math, "0.4", "\\frac{1}{2}").result() is False


def test_verify_math_integer_fallback_without_math_verify(monkeypatch):
    monkeypatch.setattr(rewards, "_MATH_VERIFY", None)
    assert verify_math("1,234", "1234")
    assert not verify_math("1,235", "1234")
    assert not verify_math("0.5", "1/2")  # not integers: the fallback cannot tell


def test_verify_math_falls_back_when_math_verify_raises(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr(rewards, "_MATH_VERIFY", (boom, boom))
    assert not verify_math("0.5", "1/2")
    assert verify_math("\\boxed{7}", "7")


def test_math_score_and_format_weight():
    e = ex(82)
    assert math_score("57 + 25 = 82\n\\boxed{82}", e) == (1.0, True)
    assert math_score("57 + 25 = 82\n\\boxed{82}", e, format_weight=0.1) == (1.1, True)
    assert math_score("\\boxed{81}", e, format_weight=0.1) == (0.1, False)
    assert math_score("82", e, format_weight=0.1) == (0.0, False)  # no box, no credit


# ----------------------------------------------------------------------------- safe parser
@pytest.mark.parametrize(
    "expr, value, used",
    [
        ("3 + 5 * 2", 13, [3, 5, 2]),
        ("(3 + 5) * 2", 16, [3, 5, 2]),
        ("6 / 4", Fraction(3, 2), [6, 4]),
        ("10 - 4 - 3", 3, [10, 4, 3]),
        ("8 / 4 / 2", 1, [8, 4, 2]),
        ("7 \u00d7 3 \u2212 1", 20, [7, 3, 1]),
        ("12 \\div 4", 3, [12, 4]),
        ("((2))", 2, [2]),
    ],
)
def test_eval_expression_valid(expr, value, used):
    assert eval_expression(expr) == (value, used)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('echo hi')",
        "().__class__",
        "2 ** 10",
        "-3 + 5",
        "5 / (3 - 3)",
        "3 +",
        "(3 + 4",
        "3 + 4)",
        "",
        "1e3",
        "3.5 + 1",
        "(" * 50 + "1" + ")" * 50,
        "1 + " * 100 + "1",
        "9" * 20,
        "os",
    ],
)
def test_eval_expression_rejects(expr):
    with pytest.raises(ExpressionError):
        eval_expression(expr)


def test_check_countdown():
    nums, target = [3, 7, 25, 8], 47
    assert check_countdown("25 + 8 * 3 - 7 + 5", nums, target)[0] is False  # 5 is not given
    assert check_countdown("(7 - 3) * 8 + 25 - 10", nums, target)[0] is False
    assert check_countdown("25 + 7 * 3 + 1", nums, target)[0] is False
    assert check_countdown("25 + 3 * 8 - 7 + 5", nums, 47) == (False, "uses numbers that are not given: [5]")
    ok, reason = check_countdown("25 + 8 * 3 - 3", nums, 46)
    assert not ok and "more often" in reason  # 3 used twice
    assert check_countdown("25 + 3 * 8 - 2", nums, 47)[0] is False  # 2 missing
    assert check_countdown("25 + 7 + 8 + 3", nums, 43) == (True, "ok")
    assert check_countdown("25 + 7 + 8 + 3 = 43", nums, 43) == (True, "ok")
    assert check_countdown("43 = 25 + 7 + 8 + 3", nums, 43) == (True, "ok")
    assert check_countdown("25 + 7", nums, 43) == (False, "evaluates to 32, not 43")
    ok, reason = check_countdown("25 / (8 - 8)", [25, 8, 8], 1)
    assert not ok and "division by zero" in reason
    ok, reason = check_countdown("__import__('os')", nums, 43)
    assert not ok and "invalid expression" in reason
    # duplicates in the given numbers may each be used once
    assert check_countdown("8 + 8", [8, 8, 1], 16)[0]
    # fractions are fine in between, as long as the result is exact
    assert check_countdown("(25 / 3 + 7) * 3", [25, 3, 7, 3], 46)[0]


def test_countdown_score():
    e = ex("25 + 7", numbers=[3, 7, 25, 8], target=32)
    assert countdown_score("25 + 7 = 32\n\\boxed{25 + 7}", e) == (1.0, True)
    assert countdown_score("\\boxed{25 + 7 + 3}", e, format_weight=0.1) == (0.1, False)
    assert countdown_score("25 + 7", e, format_weight=0.1) == (0.0, False)


# ----------------------------------------------------------------------------- user rewards
@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent(
        """
        def length_reward(completion, example):
            return len(completion) / 10.0

        def broken(completion, example):
            if example.id == "bad":
                raise ZeroDivisionError("boom")
            return 1.0

        NOT_CALLABLE = 3
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_load_reward_fn_by_import_path(user_module):
    fn = load_reward_fn("my_rewards:length_reward")
    assert fn("abcde", ex(1)) == 0.5
    fn2 = load_reward_fn(str(user_module / "my_rewards.py") + ":length_reward")
    assert fn2("abcdefghij", ex(1)) == 1.0


def test_load_reward_fn_errors(user_module):
    with pytest.raises(ValueError, match="module:function"):
        load_reward_fn("my_rewards.length_reward")
    with pytest.raises(ConfigError, match="no module named 'no_such_module_xyz'"):
        load_reward_fn("no_such_module_xyz:fn")
    with pytest.raises(ConfigError, match="has no function 'nope'; it defines: .*length_reward"):
        load_reward_fn("my_rewards:nope")
    with pytest.raises(ConfigError, match="not callable"):
        load_reward_fn("my_rewards:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="does not exist"):
        load_reward_fn(str(user_module / "missing.py") + ":fn")


def test_raising_reward_gives_zero_and_logs_id(user_module, caplog):
    rf = RewardFunction(load_reward_fn("my_rewards:broken"), name="broken")
    good, bad = Example("good", "q", "1"), Example("bad", "q", "1")
    with caplog.at_level(logging.ERROR, logger="entrolab.rewards"):
        scores = rf.score_batch(["x", "y", "z"], [good, bad, good])
    assert scores == [(1.0, True), (0.0, False), (1.0, True)]
    assert rf.errors == 1 and rf.calls == 3
    msgs = [r.getMessage() for r in caplog.records if r.name == "entrolab.rewards"]
    assert len(msgs) == 1 and "bad" in msgs[0] and "ZeroDivisionError" in msgs[0]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "1.0", None])
def test_non_finite_or_non_number_reward_is_an_error(value):
    """NaN, inf, strings and None are reward errors (0, counted); numbers of any kind are fine."""
    rf = RewardFunction(lambda c, e: value)
    assert rf.score("c", ex(1)) == (0.0, False)
    assert rf.errors == 1
    import numpy as np

    ok = RewardFunction(lambda c, e: np.float32(0.5))
    assert ok.score("c", ex(1)) == (0.5, True) and ok.errors == 0


def test_build_reward_builtin_and_custom(user_module):
    task = ArithmeticTask(difficulty=3)
    e = next(task.train_examples())
    right = f"{e.prompt} = {e.answer}\n\\boxed{{{e.answer}}}"
    wrong = f"\\boxed{{{int(e.answer) + 1}}}"
    r = build_reward(task, format_weight=0.1)
    assert r.score(right, e) == (pytest.approx(1.1), True)
    assert r.score(wrong, e) == (pytest.approx(0.1), False)
    assert r(e.answer, e) == 0.0
    custom = build_reward(task, custom="my_rewards:length_reward")
    reward, correct = custom.score(right, e)
    assert reward == pytest.approx(len(right) / 10) and correct is True
    assert custom.score(wrong, e)[1] is False
    with pytest.raises(ValueError):
        build_reward(task, format_weight=-1)


def test_build_reward_countdown_uses_its_verifier():
    task = CountdownTask(num_numbers=3, max_target=50, seed=3)
    e = next(task.train_examples())
    r = build_reward(task)
    assert r.score(f"\\boxed{{{e.answer}}}", e) == (1.0, True)
    assert r.score(f"\\boxed{{{e.meta['target']}}}", e)[1] in (False, e.meta["target"] in e.meta["numbers"])
    assert math.isclose(r("\\boxed{__import__('os')}", e), 0.0)
    assert r.errors == 0  # rejected expressions are wrong answers, not reward errors

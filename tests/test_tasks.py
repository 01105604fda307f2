"""Tests for entrolab.env.tasks: synthetic tasks, file datasets, prompts, the registry."""

import csv
import json
from itertools import islice

import pytest

from entrolab.env.rewards import (
    check_countdown,
    eval_expression,
    extract_boxed,
    verify_math,
)
from entrolab.env.tasks import (
    ARITHMETIC_LEVELS,
    DEFAULT_DIFFICULTY,
    DEFAULT_FEWSHOT,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SYSTEM_PROMPT,
    DEFAULT_TASK,
    TASKS,
    ArithmeticTask,
    CountdownTask,
    Example,
    FileTask,
    TaskError,
    build_task,
    format_prompt,
)
from entrolab.files import FileError


def take(task, n, start=0):
    return list(islice(task.train_examples(start=start), n))


# ----------------------------------------------------------------------------- defaults
def test_defaults_are_consistent():
    assert DEFAULT_TASK in TASKS
    assert DEFAULT_DIFFICULTY in ARITHMETIC_LEVELS
    assert "\\boxed{}" in DEFAULT_SYSTEM_PROMPT
    assert 16 <= DEFAULT_MAX_NEW_TOKENS <= 128
    # the few-shot demonstrations must themselves be correct answers in the requested format
    for question, reply in DEFAULT_FEWSHOT:
        value, _ = eval_expression(question)
        assert verify_math(extract_boxed(reply), str(value)), (question, reply)


# ----------------------------------------------------------------------------- arithmetic
@pytest.mark.parametrize("level", sorted(ARITHMETIC_LEVELS))
def test_arithmetic_levels_match_their_spec(level):
    spec = ARITHMETIC_LEVELS[level]
    for e in take(ArithmeticTask(level, seed=1), 50):
        value, numbers = eval_expression(e.prompt)
        assert value == int(e.answer) >= 0
        assert [len(str(n)) for n in numbers] == list(spec.digits)
        ops = [tok for tok in e.prompt.split() if not tok.isdigit()]
        assert set(ops) <= set(spec.ops)
        assert e.meta["difficulty"] == level and e.meta["split"] == "train"


def test_arithmetic_is_deterministic_and_seeded():
    a, b = take(ArithmeticTask(4, seed=0), 40), take(ArithmeticTask(4, seed=0), 40)
    assert a == b
    c = take(ArithmeticTask(4, seed=1), 40)
    assert [e.prompt for e in a] != [e.prompt for e in c]
    assert len({e.id for e in a}) == 40


def test_arithmetic_stream_resumes_at_position():
    task = ArithmeticTask(3, seed=5)
    full = take(task, 60)
    assert take(task, 20, start=37) == full[37:57]
    assert [e.meta["position"] for e in full[:3]] == [0, 1, 2]


@pytest.mark.parametrize("level", [3, 4, 7])
def test_heldout_never_overlaps_training(level):
    held = ArithmeticTask(level, seed=0).heldout(150)
    held_q = {e.prompt for e in held}
    assert len(held_q) == 150  # distinct
    for seed in (0, 1, 2):
        task = ArithmeticTask(level, seed=seed)
        assert task.heldout(150) == held  # the same evaluation set for every seed
        train_q = {e.prompt for e in take(task, 3000)}
        assert not held_q & train_q
    assert all(e.meta["split"] == "heldout" for e in held)


def test_heldout_too_small_space_is_a_clear_error():
    with pytest.raises(TaskError, match="distinct held-out questions"):
        ArithmeticTask(1).heldout(128)
    assert len(ArithmeticTask(1).heldout(5)) == 5


def test_arithmetic_bad_difficulty():
    with pytest.raises(TaskError, match="difficulty must be one of"):
        ArithmeticTask(difficulty=42)


def test_arithmetic_score():
    task = ArithmeticTask(3)
    e = Example("x", "57 + 25", "82")
    assert task.score("57 + 25 = 82\n\\boxed{82}", e) == (1.0, True)
    assert task.score("57 + 25 = 82", e) == (0.0, False)
    assert task.score("\\boxed{83}", e, format_weight=0.1) == (0.1, False)


# ----------------------------------------------------------------------------- countdown
def test_countdown_examples_are_solvable_and_deterministic():
    task = CountdownTask(num_numbers=4, max_target=100, seed=2)
    exs = take(task, 100)
    assert exs == take(CountdownTask(num_numbers=4, max_target=100, seed=2), 100)
    for e in exs:
        nums, target = e.meta["numbers"], e.meta["target"]
        assert len(nums) == 4 and 1 <= target <= 100
        assert check_countdown(e.answer, nums, target) == (True, "ok")
        assert str(nums) in e.prompt and str(target) in e.prompt
        assert task.score(f"\\boxed{{{e.answer}}}", e) == (1.0, True)


def test_countdown_heldout_disjoint():
    task = CountdownTask(num_numbers=3, max_target=50, seed=0)
    held = {(tuple(sorted(e.meta["numbers"])), e.meta["target"]) for e in task.heldout(100)}
    train = {(tuple(sorted(e.meta["numbers"])), e.meta["target"]) for e in take(task, 2000)}
    assert len(held) == 100 and not held & train


def test_countdown_bad_params():
    with pytest.raises(TaskError, match="num_numbers"):
        CountdownTask(num_numbers=1)


# ----------------------------------------------------------------------------- files
ROWS = [{"question": f"What is {i} + {i}?", "solution": str(2 * i), "uid": f"r{i}", "level": i % 3}
        for i in range(60)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("writer, suffix", [(write_jsonl, ".jsonl"), (write_csv, ".csv"), (write_parquet, ".parquet")])
def test_file_task_formats(tmp_path, writer, suffix):
    path = writer(tmp_path / f"data{suffix}", ROWS)
    task = FileTask(path, prompt_key="question", answer_key="solution", id_key="uid", heldout_fraction=0.2)
    train, held = take(task, len(task)), task.heldout()
    assert len(train) + len(held) == 60 and 0 < len(held) < 30
    assert not {e.prompt for e in train} & {e.prompt for e in held}
    by_id = {e.id: e for e in train + held}
    assert by_id["r7"].prompt == "What is 7 + 7?" and by_id["r7"].answer == "14"
    assert str(by_id["r7"].meta["level"]) == "1"
    assert task.score("\\boxed{14}", by_id["r7"]) == (1.0, True)


def test_file_task_hf_datasets_dir(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    task = build_task("file", path=str(tmp_path / "ds"), prompt_key="question", answer_key="solution")
    assert len(task) + len(task.heldout()) == 60


def test_file_task_missing_column_names_columns(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(TaskError) as err:
        FileTask(path)  # default prompt_key="prompt" is not there
    msg = str(err.value)
    assert "'prompt'" in msg and "question" in msg and "solution" in msg and "uid" in msg


def test_file_task_split_is_deterministic_and_stream_resumes(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    a = FileTask(path, "question", "solution", seed=3)
    b = FileTask(path, "question", "solution", seed=3)
    assert a.heldout() == b.heldout()
    stream = take(a, 130)  # more than two epochs
    assert stream == take(b, 130)
    assert take(a, 30, start=95) == stream[95:125]
    n = len(a)
    assert sorted(e.prompt for e in stream[:n]) == sorted(e.prompt for e in stream[n:2 * n])  # full epochs
    assert [e.prompt for e in stream[:n]] != [e.prompt for e in stream[n:2 * n]]  # reshuffled


def test_file_task_explicit_heldout_file(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    held_path = write_csv(tmp_path / "held.csv", ROWS[:5] + [{"question": "New?", "solution": "1", "uid": "n",
                                                               "level": 0}])
    task = FileTask(train_path, "question", "solution", heldout_path=held_path)
    assert len(task.heldout()) == 6 and len(task.heldout(2)) == 2
    assert len(task) == 55  # training rows that repeat a held-out question are dropped
    assert not {e.prompt for e in take(task, 55)} & {e.prompt for e in task.heldout()}


def test_file_task_errors(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        FileTask(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(TaskError, match="unsupported dataset format"):
        FileTask(tmp_path / "d.txt")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "answer": "1"}\nnot json\n')
    with pytest.raises(FileError, match=r"bad.jsonl line 2: not valid JSON"):
        FileTask(tmp_path / "bad.jsonl")


# ----------------------------------------------------------------------------- prompts, registry
class _NoTemplate:
    chat_template = None


def test_format_prompt_with_chat_template():
    from entrolab.engine.models import tiny_model

    _, tok = tiny_model()
    text = format_prompt(tok, "57 + 25")
    assert text.startswith("<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT)
    for q, a in DEFAULT_FEWSHOT:
        assert f"<|im_start|>user\n{q}<|im_end|>" in text and f"<|im_start|>assistant\n{a}<|im_end|>" in text
    assert text.endswith("<|im_start|>user\n57 + 25<|im_end|>\n<|im_start|>assistant\n")
    bare = format_prompt(tok, "Q?", system_prompt=None, fewshot=None)
    assert bare == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n"
    task = CountdownTask(seed=0)
    e = next(task.train_examples())
    assert task.format_prompt(tok, e).endswith(f"user\n{e.prompt}<|im_end|>\n<|im_start|>assistant\n")


def test_format_prompt_without_chat_template():
    text = format_prompt(_NoTemplate(), "2 + 2", system_prompt="Be brief.", fewshot=[("1 + 1", "\\boxed{2}")])
    assert text == "Be brief.\n\nUser: 1 + 1\n\nAssistant: \\boxed{2}\n\nUser: 2 + 2\n\nAssistant:"


def test_build_task_registry():
    t = build_task("arithmetic", difficulty=2, seed=4)
    assert isinstance(t, ArithmeticTask) and t.difficulty == 2 and t.seed == 4
    assert isinstance(build_task("countdown", num_numbers=3, max_target=30), CountdownTask)
    with pytest.raises(TaskError, match=r"unknown task 'arithmatic'; valid tasks: arithmetic, countdown, file, tool_arithmetic"):
        build_task("arithmatic")
    with pytest.raises(TaskError, match="bad parameters for task 'arithmetic'"):
        build_task("arithmetic", digits=3)

"""Verifiable tasks for RL: synthetic arithmetic, Countdown, and file datasets; prompt formatting.

A task yields :class:`Example` objects (question text without any chat template, gold
answer, metadata) from two disjoint splits:

* ``train_examples(start=0)`` -- an endless deterministic stream; ``start`` skips that many
  training examples, so a run resumes exactly where it stopped.
* ``heldout(n)`` -- ``n`` distinct held-out examples that never occur in the training stream.
  Synthetic tasks partition the *question space* by a stable hash of the canonical question,
  so no seed can ever put a held-out question into training; the held-out set does not
  depend on the task seed either (runs with different seeds evaluate on the same questions).

``task.score(completion, example, format_weight=0.0) -> (reward, correct)`` verifies a
completion (see :mod:`entrolab.env.rewards`); ``task.format_prompt(tokenizer, example)``
builds the model input with the task's system prompt and few-shot demonstrations.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import inspect
import io
import itertools
import logging
import os
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..errors import ConfigError
from ..files import FileError, json_kind, read_json, read_jsonl, read_text
from ..registry import Registry
from .rewards import countdown_score, eval_expression, math_score

logger = logging.getLogger("entrolab.tasks")

__all__ = [
    "Example",
    "Task",
    "TaskError",
    "ArithmeticTask",
    "CountdownTask",
    "FileTask",
    "ARITHMETIC_LEVELS",
    "DEFAULT_TASK",
    "DEFAULT_DIFFICULTY",
    "DEFAULT_SYSTEM_PROMPT",
    "DEFAULT_FEWSHOT",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_HELDOUT_FRACTION",
    "TASKS",
    "format_prompt",
    "build_task",
    "register_task",
]

# --------------------------------------------------------------------------- defaults
# Calibrated on the packaged SmolLM2-135M-Instruct (Q4_1 GGUF dequantised to fp32) with
#   python bench/calibrate_task.py --task arithmetic --difficulty 3 --n 128 --samples 4 --threads 1
# 128 held-out questions x 4 samples, T=1.0, top_p=1.0, no top-k, max_new_tokens=64 (2-core CPU,
# torch 2.13.0, transformers 5.23; the machine was shared with other jobs, so speeds are low):
#   sampled accuracy 20.5 %, greedy 35.2 %, groups of 4 with both right and wrong answers 41 %
#   (all wrong 55 %), \boxed{} present 90 %, mean response 20.9 tokens, prompt ~110 tokens,
#   generation 20.4 tokens/s (16 sequences per generate() call, ~16 s per call, 1 thread).
# Without the few-shot turns (instruction only) the model rarely boxes an answer: in small
# screens 0-22 % of samples had a \boxed{} and almost none were right, even for 1-digit sums.
# See docs/tasks.md for the other levels.
DEFAULT_TASK = "arithmetic"
DEFAULT_DIFFICULTY = 3
DEFAULT_SYSTEM_PROMPT = (
    "Solve the arithmetic problem. Write the equation, then the final answer in \\boxed{}."
)
# Few-shot demonstrations (user question, assistant reply) placed before the question as
# chat turns.  Without them the 135M model almost never answers in \boxed{} and, under
# sampling at T=1, is nearly always wrong; writing the equation first is what makes it
# compute the sum before boxing it.
DEFAULT_FEWSHOT: tuple[tuple[str, str], ...] = (
    ("12 + 25", "12 + 25 = 37\n\\boxed{37}"),
    ("48 - 15", "48 - 15 = 33\n\\boxed{33}"),
)
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_HELDOUT_FRACTION = 0.1


class TaskError(ConfigError):
    """A task could not be built or loaded (bad parameters, file, or column names)."""


@dataclass
class Example:
    """One verifiable question: ``id``, ``prompt`` (question text, no template), gold ``answer``."""

    id: str
    prompt: str
    answer: str
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict of the example."""
        return dataclasses.asdict(self)


def _stable_unit(text: str, salt: str) -> float:
    """A stable pseudo-random number in [0, 1) from ``text`` (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{salt}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


# --------------------------------------------------------------------------- prompts
def format_prompt(
    tokenizer: Any,
    question: str,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    fewshot: Sequence[tuple[str, str]] | None = DEFAULT_FEWSHOT,
) -> str:
    """The model input for ``question``: chat template with ``add_generation_prompt=True``.

    Messages: the system prompt (skipped when None), each few-shot pair as a user turn and
    an assistant turn, then the question.  The default instruction asks for the final answer
    in ``\\boxed{}``.  A tokenizer without a chat template gets a plain-text layout.
    """
    messages: list[dict[str, str]] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    for user, assistant in fewshot or ():
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    messages.append({"role": "user", "content": question})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = [m["content"] if m["role"] == "system" else f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(parts) + "\n\nAssistant:"


# --------------------------------------------------------------------------- base class
class Task:
    """Base class of verifiable tasks (see the module docstring for the contract)."""

    name = "task"
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    fewshot: Sequence[tuple[str, str]] | None = None

    def train_examples(self, start: int = 0) -> Iterator[Example]:
        """Endless deterministic training stream, skipping the first ``start`` examples."""
        raise NotImplementedError

    def heldout(self, n: int) -> list[Example]:
        """``n`` held-out examples, disjoint from the training stream."""
        raise NotImplementedError

    def score(self, completion: str, example: Example, format_weight: float = 0.0) -> tuple[float, bool]:
        """``(reward, correct)`` for a completion: correctness of the last ``\\boxed{}`` + format bonus."""
        return math_score(completion, example, format_weight)

    def format_prompt(self, tokenizer: Any, example: Example | str) -> str:
        """The chat-formatted model input for ``example`` with this task's prompt settings."""
        question = example.prompt if isinstance(example, Example) else str(example)
        return format_prompt(tokenizer, question, self.system_prompt, self.fewshot)

    def describe(self) -> dict:
        """Parameters of the task, for logging and run metadata."""
        return {"name": self.name}


class _SyntheticTask(Task):
    """Shared machinery: per-index seeded generation + hash partition of the question space."""

    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION
    seed: int = 0

    def _key(self) -> str:
        """Identifies the question distribution (not the seed)."""
        raise NotImplementedError

    def _generate(self, rng: random.Random) -> tuple[str, str, str, dict]:
        """Draw one question: ``(canonical, question_text, answer, meta)``."""
        raise NotImplementedError

    def is_heldout(self, canonical: str) -> bool:
        """Whether a canonical question belongs to the held-out part of the question space."""
        return _stable_unit(canonical, self._key()) < self.heldout_fraction

    def _raw(self, stream: str, i: int) -> tuple[str, str, str, dict]:
        rng = random.Random(f"{self._key()}|{stream}|{i}")
        return self._generate(rng)

    def train_examples(self, start: int = 0) -> Iterator[Example]:
        """Endless training stream (held-out questions filtered out); resumes at ``start``."""
        if start < 0:
            raise ValueError("start must be >= 0")
        k = 0
        for i in itertools.count():
            canonical, question, answer, meta = self._raw(f"train-{self.seed}", i)
            if self.is_heldout(canonical):
                continue
            if k >= start:
                yield Example(
                    id=f"{self.name}-s{self.seed}-{k}", prompt=question, answer=answer,
                    meta={**meta, "split": "train", "position": k},
                )
            k += 1

    def heldout(self, n: int) -> list[Example]:
        """``n`` distinct held-out questions (same for every seed); error if too few exist."""
        out: list[Example] = []
        seen: set[str] = set()
        max_draws = 200 * n + 10_000
        for i in range(max_draws):
            if len(out) >= n:
                break
            canonical, question, answer, meta = self._raw("heldout", i)
            if canonical in seen or not self.is_heldout(canonical):
                continue
            seen.add(canonical)
            out.append(Example(id=f"{self.name}-heldout-{len(out)}", prompt=question, answer=answer,
                               meta={**meta, "split": "heldout"}))
        if len(out) < n:
            raise TaskError(
                f"{self.name}: only {len(out)} distinct held-out questions found for {self.describe()} "
                f"(held-out fraction {self.heldout_fraction}); ask for fewer or use a harder setting"
            )
        return out


# --------------------------------------------------------------------------- arithmetic
@dataclass(frozen=True)
class ArithmeticLevel:
    """One difficulty level: operand digit counts and allowed operators."""

    digits: tuple[int, ...]
    ops: str
    description: str


# Difficulty levels of :class:`ArithmeticTask`.  "d-digit" means a number in [10^(d-1), 10^d - 1]
# (1-digit: 1..9).  Operators are chosen uniformly per gap; "*" binds tighter than "+"/"-";
# subtraction never makes a negative intermediate or final result (operands are redrawn).
# Levels order questions by construction, not by measured accuracy: with the default prompt the
# 135M model scores lower on level 2 than on level 3 (see docs/tasks.md).
ARITHMETIC_LEVELS: dict[int, ArithmeticLevel] = {
    1: ArithmeticLevel((1, 1), "+", "1-digit + 1-digit (81 questions)"),
    2: ArithmeticLevel((2, 1), "+", "2-digit + 1-digit"),
    3: ArithmeticLevel((2, 2), "+", "2-digit + 2-digit"),
    4: ArithmeticLevel((2, 2), "+-", "2-digit +/- 2-digit (non-negative result)"),
    5: ArithmeticLevel((2, 1), "*", "2-digit * 1-digit"),
    6: ArithmeticLevel((3, 3), "+-", "3-digit +/- 3-digit"),
    7: ArithmeticLevel((2, 2, 2), "+-", "three 2-digit operands with + and -"),
    8: ArithmeticLevel((2, 2), "*", "2-digit * 2-digit"),
    9: ArithmeticLevel((3, 2, 2, 1), "+-*", "four operands (3,2,2,1 digits) with +, -, *"),
}


def _draw(rng: random.Random, digits: int) -> int:
    """A uniformly random number with exactly ``digits`` digits (1-digit: 1..9)."""
    return rng.randint(10 ** (digits - 1) if digits > 1 else 1, 10**digits - 1)


class ArithmeticTask(_SyntheticTask):
    """Integer arithmetic questions like ``"57 + 38"`` at a difficulty level (see ARITHMETIC_LEVELS).

    The question text is the bare expression (the default few-shot demonstrations show the
    answer format); the answer is the exact integer value.
    """

    name = "arithmetic"

    def __init__(
        self,
        difficulty: int = DEFAULT_DIFFICULTY,
        seed: int = 0,
        heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        fewshot: Sequence[tuple[str, str]] | None = DEFAULT_FEWSHOT,
    ):
        if difficulty not in ARITHMETIC_LEVELS:
            raise TaskError(f"arithmetic difficulty must be one of {sorted(ARITHMETIC_LEVELS)}, got {difficulty!r}")
        if not 0.0 < heldout_fraction < 1.0:
            raise TaskError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.difficulty = int(difficulty)
        self.level = ARITHMETIC_LEVELS[self.difficulty]
        self.seed = int(seed)
        self.heldout_fraction = float(heldout_fraction)
        self.system_prompt = system_prompt
        self.fewshot = fewshot

    def _key(self) -> str:
        return f"arithmetic-L{self.difficulty}"

    def _generate(self, rng: random.Random) -> tuple[str, str, str, dict]:
        lvl = self.level
        while True:
            nums = [_draw(rng, d) for d in lvl.digits]
            ops = [rng.choice(lvl.ops) for _ in range(len(nums) - 1)]
            expr = " ".join(itertools.chain.from_iterable(zip(map(str, nums), ops))) + f" {nums[-1]}"
            value = _evaluate_checked(nums, ops)
            if value is not None:
                break
        return expr, expr, str(value), {"difficulty": self.difficulty, "expression": expr}

    def describe(self) -> dict:
        return {"name": self.name, "difficulty": self.difficulty, "level": self.level.description,
                "seed": self.seed, "heldout_fraction": self.heldout_fraction}


def _evaluate_checked(nums: list[int], ops: list[str]) -> int | None:
    """Value of ``nums`` joined by ``ops`` with precedence; None if any +/- step goes negative."""
    # Fold products first, then add/subtract left to right.
    terms = [nums[0]]
    signs = ["+"]
    for op, n in zip(ops, nums[1:]):
        if op == "*":
            terms[-1] *= n
        else:
            terms.append(n)
            signs.append(op)
    total = 0
    for s, t in zip(signs, terms):
        total = total + t if s == "+" else total - t
        if total < 0:
            return None
    return total


# --------------------------------------------------------------------------- countdown
COUNTDOWN_SYSTEM_PROMPT = (
    "Solve the numbers puzzle. Write one arithmetic expression that reaches the target, "
    "then put the expression in \\boxed{}."
)
COUNTDOWN_FEWSHOT: tuple[tuple[str, str], ...] = (
    (
        "Using the numbers [3, 5, 2], make 13. Use +, -, *, / and each number at most once.",
        "3 * 5 - 2 = 13\n\\boxed{3 * 5 - 2}",
    ),
)


class CountdownTask(_SyntheticTask):
    """Countdown: reach ``target`` from ``num_numbers`` given numbers with + - * /.

    Numbers are drawn from 1..``max_number``; the target (1..``max_target``) is built from a
    random subset of them, so every question is solvable.  A completion is correct when its
    last ``\\boxed{expr}`` evaluates exactly to the target using each given number at most
    once (checked by a safe parser, never ``eval``).  ``answer`` holds one reference solution.
    """

    name = "countdown"

    def __init__(
        self,
        num_numbers: int = 4,
        max_target: int = 100,
        seed: int = 0,
        max_number: int = 25,
        heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
        system_prompt: str | None = COUNTDOWN_SYSTEM_PROMPT,
        fewshot: Sequence[tuple[str, str]] | None = COUNTDOWN_FEWSHOT,
    ):
        if not 2 <= num_numbers <= 8:
            raise TaskError(f"num_numbers must be in 2..8, got {num_numbers}")
        if max_target < 2:
            raise TaskError(f"max_target must be >= 2, got {max_target}")
        if max_number < 2:
            raise TaskError(f"max_number must be >= 2, got {max_number}")
        if not 0.0 < heldout_fraction < 1.0:
            raise TaskError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
        self.num_numbers = int(num_numbers)
        self.max_target = int(max_target)
        self.max_number = int(max_number)
        self.seed = int(seed)
        self.heldout_fraction = float(heldout_fraction)
        self.system_prompt = system_prompt
        self.fewshot = fewshot

    def _key(self) -> str:
        return f"countdown-n{self.num_numbers}-t{self.max_target}-m{self.max_number}"

    def _generate(self, rng: random.Random) -> tuple[str, str, str, dict]:
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(self.num_numbers)]
            k = rng.randint(2, self.num_numbers)
            chosen = rng.sample(numbers, k)
            # Combine the chosen numbers pairwise in random order with random operators.
            items: list[tuple[Fraction, str]] = [(Fraction(n), str(n)) for n in chosen]
            while len(items) > 1:
                (a, ea), (b, eb) = items.pop(rng.randrange(len(items))), items.pop(rng.randrange(len(items)))
                op = rng.choice("+-*/")
                if op == "-" and a < b:
                    (a, ea), (b, eb) = (b, eb), (a, ea)
                if op == "/" and (b == 0 or (a / b).denominator != 1):
                    op = "+"
                value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else a + b}[op]
                items.append((value, f"({ea} {op} {eb})"))
            value, expr = items[0]
            expr = expr[1:-1] if expr.startswith("(") and expr.endswith(")") else expr
            if value.denominator == 1 and 1 <= value <= self.max_target and eval_expression(expr)[0] == value:
                break
        target = int(value)
        canonical = f"{sorted(numbers)}->{target}"
        question = (
            f"Using the numbers {numbers}, make {target}. "
            "Use +, -, *, / and each number at most once."
        )
        return canonical, question, expr, {"numbers": numbers, "target": target}

    def score(self, completion: str, example: Example, format_weight: float = 0.0) -> tuple[float, bool]:
        """``(reward, correct)``: the last ``\\boxed{expr}`` must reach the target (safe parser)."""
        return countdown_score(completion, example, format_weight)

    def describe(self) -> dict:
        return {"name": self.name, "num_numbers": self.num_numbers, "max_target": self.max_target,
                "max_number": self.max_number, "seed": self.seed, "heldout_fraction": self.heldout_fraction}


# --------------------------------------------------------------------------- file datasets
FILE_SYSTEM_PROMPT = "Solve the problem. Put the final answer in \\boxed{}."


def _read_rows(path: str) -> tuple[list[dict], list[str]]:
    """Rows (dicts) and column names of a JSONL/JSON/Parquet/CSV file or a saved HF dataset."""
    if os.path.isdir(path):
        try:
            import datasets
        except ImportError as exc:  # pragma: no cover
            raise TaskError(f"{path} is a directory; reading a saved dataset needs 'datasets'") from exc
        try:
            ds = datasets.load_from_disk(path)
        except Exception as exc:
            raise TaskError(f"{path} is not a dataset saved with Dataset.save_to_disk: {exc}") from exc
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise TaskError(f"{path} is a DatasetDict without a 'train' split (splits: {list(ds)})")
            ds = ds["train"]
        return [dict(r) for r in ds], list(ds.column_names)
    if not os.path.isfile(path):
        raise TaskError(f"dataset file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jsonl", ".ndjson"):
        rows = read_jsonl(path, what="data file")  # every line one JSON object; errors name the file and line
    elif ext == ".json":
        data = read_json(path, what="data file")
        rows = data if isinstance(data, list) else data.get("data", data.get("rows")) if isinstance(data, dict) \
            else None
        if not isinstance(rows, list):
            raise TaskError(f"{path}: expected a JSON list of objects (or an object with a 'data' list), got "
                            f"{json_kind(data)}")
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise TaskError(f"{path}: item {i} is {json_kind(r)}, expected an object "
                                '(e.g. {"prompt": ..., "answer": ...})')
    elif ext == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 — pyarrow's errors have no common base; name the file
            raise TaskError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        return table.to_pylist(), list(table.column_names)
    elif ext in (".csv", ".tsv"):
        text = read_text(path, what="data file")
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if ext == ".tsv" else ",")
            rows = list(reader)
        except csv.Error as exc:
            raise TaskError(f"{path} line {reader.line_num}: not valid CSV ({exc})") from None
        return rows, list(reader.fieldnames or [])
    else:
        raise TaskError(f"unsupported dataset format {ext!r} ({path}); use .jsonl, .json, .parquet, .csv or a saved HF dataset directory")
    if not all(isinstance(r, dict) for r in rows):
        raise TaskError(f"{path}: every record must be a JSON object")
    columns: list[str] = []
    for r in rows:
        columns.extend(k for k in r if k not in columns)
    return rows, columns


class FileTask(Task):
    """Questions and gold answers from a local file (JSONL, JSON, Parquet, CSV) or saved HF dataset.

    ``prompt_key`` / ``answer_key`` name the columns (``id_key`` optionally names an id
    column); other columns go to ``Example.meta``.  Held-out split: the rows of
    ``heldout_path`` when given (training rows with the same question are dropped), otherwise
    a deterministic hash fraction ``heldout_fraction`` of the questions.  Answers are verified
    with math-verify.  Never touches the network.
    """

    name = "file"

    def __init__(
        self,
        path: str,
        prompt_key: str = "prompt",
        answer_key: str = "answer",
        id_key: str | None = None,
        heldout_path: str | None = None,
        heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
        seed: int = 0,
        shuffle: bool = True,
        system_prompt: str | None = FILE_SYSTEM_PROMPT,
        fewshot: Sequence[tuple[str, str]] | None = None,
    ):
        if heldout_path is None and not 0.0 <= heldout_fraction < 1.0:
            raise TaskError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
        self.path = os.fspath(path)
        self.prompt_key, self.answer_key, self.id_key = prompt_key, answer_key, id_key
        self.heldout_path = os.fspath(heldout_path) if heldout_path is not None else None
        self.heldout_fraction = float(heldout_fraction)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.system_prompt = system_prompt
        self.fewshot = fewshot

        rows = self._examples(self.path, "train")
        if self.heldout_path is not None:
            held = self._examples(self.heldout_path, "heldout")
            held_q = {e.prompt.strip() for e in held}
            train = [e for e in rows if e.prompt.strip() not in held_q]
            if len(train) < len(rows):
                logger.warning("%s: dropped %d training rows whose question is in the held-out file",
                               self.path, len(rows) - len(train))
        else:
            salt = "file-heldout"
            train = [e for e in rows if _stable_unit(e.prompt.strip(), salt) >= self.heldout_fraction]
            held = [e for e in rows if _stable_unit(e.prompt.strip(), salt) < self.heldout_fraction]
            for e in held:
                e.meta["split"] = "heldout"
        if not train:
            raise TaskError(f"{self.path}: no training examples left after the held-out split")
        self._train = train
        self._heldout = held

    def _examples(self, path: str, split: str) -> list[Example]:
        rows, columns = _read_rows(path)
        if not rows:
            raise TaskError(f"{path} contains no rows")
        for key, what in ((self.prompt_key, "prompt_key"), (self.answer_key, "answer_key"), (self.id_key, "id_key")):
            if key is not None and key not in columns:
                raise TaskError(
                    f"{path}: column {key!r} ({what}) not found; available columns: {columns}"
                )
        stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
        out = []
        for i, row in enumerate(rows):
            question, answer = row.get(self.prompt_key), row.get(self.answer_key)
            if question is None or answer is None or str(question).strip() == "":
                raise TaskError(f"{path}: row {i} has an empty {self.prompt_key!r} or {self.answer_key!r}")
            ex_id = str(row[self.id_key]) if self.id_key else f"{stem}-{i}"
            meta = {k: v for k, v in row.items() if k not in (self.prompt_key, self.answer_key)}
            meta.update(split=split, row=i, source=path)
            out.append(Example(id=ex_id, prompt=str(question), answer=str(answer), meta=meta))
        return out

    def __len__(self) -> int:
        return len(self._train)

    def train_examples(self, start: int = 0) -> Iterator[Example]:
        """Endless stream over epochs (reshuffled per epoch when ``shuffle``); resumes at ``start``."""
        if start < 0:
            raise ValueError("start must be >= 0")
        n = len(self._train)
        epoch, offset = divmod(start, n)
        k = start
        while True:
            order = list(range(n))
            if self.shuffle:
                random.Random(f"{self.seed}|epoch|{epoch}").shuffle(order)
            for j in order[offset:]:
                e = self._train[j]
                yield dataclasses.replace(e, meta={**e.meta, "position": k, "epoch": epoch})
                k += 1
            epoch, offset = epoch + 1, 0

    def heldout(self, n: int | None = None) -> list[Example]:
        """Up to ``n`` held-out examples in file order (all of them when ``n`` is None)."""
        return list(self._heldout if n is None else self._heldout[:n])

    def describe(self) -> dict:
        return {"name": self.name, "path": self.path, "prompt_key": self.prompt_key,
                "answer_key": self.answer_key, "heldout_path": self.heldout_path,
                "heldout_fraction": self.heldout_fraction, "train_size": len(self._train),
                "heldout_size": len(self._heldout), "seed": self.seed}


# --------------------------------------------------------------------------- registry
TASKS: Registry[Callable[..., Task]] = Registry("task")
"""Task name → factory; ``data.task`` names one. More tasks register from their own modules (``env/tools.py``)."""
TASKS.add("arithmetic", ArithmeticTask)
TASKS.add("countdown", CountdownTask)
TASKS.add("file", FileTask)


def register_task(name: str, factory: Callable[..., Task]) -> None:
    """Add a task factory to :data:`TASKS` (a duplicate name is refused)."""
    TASKS.add(name, factory)


def build_task_from_settings(kind: str, settings: Mapping[str, Any], defaults: Mapping[str, Any], *,
                             where: str = "data.") -> Task:
    """Build ``kind`` from a config section's task settings (``data.difficulty``, ``data.path``, ...): a setting goes
    to the task when its factory takes a parameter of that name and the setting is not None; a setting the task does
    not take is an error when it differs from its default (``defaults``), never silently ignored."""
    if kind not in TASKS:
        raise TaskError(f"unknown task {kind!r}; valid tasks: {', '.join(TASKS.names())}")
    accepted = inspect.signature(TASKS.get(kind)).parameters
    params: dict[str, Any] = {}
    for key, value in settings.items():
        if key in accepted:
            if value is not None:
                params[key] = value
        elif value != defaults.get(key):
            takes = ", ".join(f"{where}{k}" for k in settings if k in accepted) or "none of the task settings"
            raise TaskError(f"{where}{key} does not apply to task {kind!r} (it takes {takes}); remove it")
    try:
        return build_task(kind, **params)
    except TaskError as exc:
        path = params.get("path")
        if isinstance(exc, FileError) or (path is not None and str(exc).startswith(os.fspath(path))):
            raise  # names its file (and line) already
        raise TaskError(f"{where}task = {kind!r}: {exc}") from None


def build_task(kind: str = DEFAULT_TASK, **params: Any) -> Task:
    """Build a task by registry name (``arithmetic``, ``countdown``, ``file``, ``tool_arithmetic``) with its
    parameters."""
    if kind not in TASKS:
        raise TaskError(f"unknown task {kind!r}; valid tasks: {', '.join(TASKS.names())}")
    try:
        return TASKS.get(kind)(**params)
    except TypeError as exc:
        raise TaskError(f"bad parameters for task {kind!r}: {exc}") from exc

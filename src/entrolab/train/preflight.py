"""Degenerate settings, refused or warned about before the first step (the config alone refuses what it can:
``rollout.n = 1`` with a group-relative advantage, in ``TrainConfig.validate``):

- evaluation on an empty held-out split is an error; a split smaller than ``eval.size`` is a warning;
- a prompt that, with ``rollout.max_new_tokens``, does not fit the model's context is an error naming its length and
  the limit — up front for a finite data set (every question is checked), and for every rollout batch in the engine
  (synthetic tasks, curricula).
"""

from __future__ import annotations

import itertools
from typing import Any

from ..engine.native import check_context
from ..errors import ConfigError
from .rundir import warn

UPFRONT_PROMPTS = 50_000
"""Data sets up to this many questions have every prompt's length checked before the first step (about 1 s per
10k questions); larger ones are checked batch by batch."""


def preflight(config: Any, engine: Any, heldout: list) -> None:
    c = config
    task = engine.task
    if c.eval.every and not heldout:
        where = f"data.path = {c.data.path!r}" if c.data.path else f"data.task = {c.data.task!r}"
        raise ConfigError(f"{where} has an empty held-out split, but eval.every = {c.eval.every} evaluates on it; use "
                          "a larger data set (a file holds out about one question in ten) or set eval.every = 0")
    if c.eval.every and len(heldout) < c.eval.size:
        warn(f"the held-out split has only {len(heldout)} question(s); each evaluation uses those, fewer than "
             f"eval.size = {c.eval.size}")
    size = _finite_size(task)
    if size is not None and size <= UPFRONT_PROMPTS:
        examples = list(itertools.islice(task.train_examples(), size)) + list(heldout)
        check_context(engine.model, engine.tokenizer, [engine.format(e) for e in examples], examples,
                      engine.settings.max_new_tokens)


def _finite_size(task: Any) -> int | None:
    try:
        return len(task)
    except TypeError:
        return None

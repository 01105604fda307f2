"""Run ``entrolab train`` in this process and park it at a chosen point, for ``tests/test_crash.py`` to kill -9.

    python crash_harness.py MARKER POINT STEP -- <entrolab train arguments>

POINT is where the process stops, at RL step STEP (the step index, from 0):

- ``update``: mid-step — the step's optimizer steps are done, its metrics not yet logged, its checkpoint not written;
- ``checkpoint``: mid-checkpoint-write — the checkpoint after step STEP - 1 (``step_{STEP:06d}``) has its weights on
  disk and half of its trainer state, under its temporary name;
- ``none``: never (runs to the end).

On reaching it the process writes MARKER and sleeps; the test then sends SIGKILL. Threads are pinned to one, as in
the test suite (``tests/conftest.py``), so that runs in and out of this process compute the same numbers.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch


def park(marker: str) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(600)  # the test kills this process long before
    sys.exit("crash_harness: not killed")


def install(marker: str, point: str, step: int) -> None:
    if point == "update":
        import entrolab.train.trainer as trainer

        real_update = trainer.policy_update

        def update_then_park(objective, batch, *args, **kwargs):
            out = real_update(objective, batch, *args, **kwargs)
            if batch.step == step:
                park(marker)
            return out

        trainer.policy_update = update_then_park
    elif point == "checkpoint":
        import entrolab.train.checkpoint as checkpoint

        real_save = checkpoint.torch.save

        def save_half_then_park(obj, path, *args, **kwargs):
            real_save(obj, path, *args, **kwargs)
            if f".tmp-step_{step:06d}" in str(path):
                size = os.path.getsize(path)
                with open(path, "r+b") as f:
                    f.truncate(size // 2)
                park(marker)

        checkpoint.torch.save = save_half_then_park
    elif point != "none":
        raise SystemExit(f"crash_harness: unknown point {point!r}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    marker, point, step = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert sys.argv[4] == "--"
    install(marker, point, step)
    from entrolab.cli import main

    sys.exit(main(sys.argv[5:]))

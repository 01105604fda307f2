"""Atomic checkpoints: a checkpoint directory is written under a temporary name and renamed into place, so a
crash at any moment leaves either the previous checkpoint or the new one, never a half-written one.

A checkpoint holds the model weights (safetensors), the optimizer and scheduler states, the RNG states of every
generator (python, numpy, torch CPU/CUDA, the trainer's own), the data position, the method components' state, and
the step.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

CKPT_PREFIX = "step_"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file in the same directory and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def rng_state(generator: Optional[torch.Generator] = None) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, trainer_state: dict[str, Any],
                    keep_last: int, extra_models: Optional[dict[str, torch.nn.Module]] = None) -> Path:
    """Write ``ckpt_root/step_{step:06d}`` atomically and keep only the last ``keep_last`` checkpoints.
    ``extra_models`` (e.g. a reference policy that a method may reset) are saved as ``<name>.safetensors``."""
    from safetensors.torch import save_model

    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{CKPT_PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f".tmp-{CKPT_PREFIX}{step:06d}-"))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        for name, extra in (extra_models or {}).items():
            save_model(extra, str(tmp / f"{name}.safetensors"))
        torch.save(trainer_state, tmp / "trainer_state.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step}))
        for p in tmp.iterdir():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary, half-written directories are ignored)."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    done = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
            and (p / "meta.json").is_file()]
    return sorted(done, key=lambda p: p.name)


def load_checkpoint(path: Path, model: torch.nn.Module,
                    extra_models: Optional[dict[str, torch.nn.Module]] = None) -> dict[str, Any]:
    """Load weights into ``model`` (and any saved ``extra_models``) and return the trainer state dict."""
    from safetensors.torch import load_model

    load_model(model, str(Path(path) / "model.safetensors"))
    for name, extra in (extra_models or {}).items():
        if (Path(path) / f"{name}.safetensors").is_file():
            load_model(extra, str(Path(path) / f"{name}.safetensors"))
    return torch.load(Path(path) / "trainer_state.pt", weights_only=False)

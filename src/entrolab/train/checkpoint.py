"""Atomic, self-verifying checkpoints: a checkpoint directory is written under a temporary name (``.tmp-step_*``)
and renamed into place, so a crash at any moment leaves either the previous checkpoint or the new one, never a
half-written one under its final name; its ``manifest.json``, written last, lists every file with its size and
SHA-256, so a checkpoint damaged later (a truncated or overwritten file, a deleted one) is recognised on resume.

A checkpoint holds the model weights (safetensors), the optimizer and scheduler states, the RNG states of every
generator (python, numpy, torch CPU/CUDA, the trainer's own), the data position, the method components' state, and
the step; the manifest also holds the run's config, against which ``--resume`` checks the config it is given.
Weights that are not finite are never saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..errors import ConfigError, TrainingError
from ..files import FileError, read_json

CKPT_PREFIX = "step_"
TMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"


class CheckpointError(ConfigError):
    """A checkpoint is damaged or incomplete, or does not fit the model it is loaded into; the message names the
    checkpoint and the file."""


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover — platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def nonfinite_tensors(models: dict[str, torch.nn.Module]) -> list[str]:
    """``model:parameter`` names of the floating-point weights that hold a NaN or an infinity."""
    bad = []
    for label, model in models.items():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad.append(f"{label}:{name}")
    return bad


def save_checkpoint(ckpt_root: Path, step: int, model: torch.nn.Module, trainer_state: dict[str, Any],
                    keep_last: int, extra_models: Optional[dict[str, torch.nn.Module]] = None,
                    run: Optional[dict[str, Any]] = None) -> Path:
    """Write ``ckpt_root/step_{step:06d}`` atomically, its manifest last, and keep only the last ``keep_last``
    checkpoints. ``extra_models`` (e.g. a reference policy that a method may reset) are saved as
    ``<name>.safetensors``; ``run`` (the run's config and its fingerprint, ``rundir.manifest_record``) goes into the
    manifest. Non-finite weights raise
    ``TrainingError`` and nothing is written."""
    from safetensors.torch import save_model

    bad = nonfinite_tensors({"model": model, **(extra_models or {})})
    if bad:
        raise TrainingError(f"not saving checkpoint {CKPT_PREFIX}{step:06d}: {len(bad)} weight tensor(s) are not "
                            f"finite ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); the previous checkpoint "
                            "is intact. Lower optim.lr or set optim.grad_clip, then --resume.")
    ckpt_root = Path(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{CKPT_PREFIX}{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=ckpt_root, prefix=f"{TMP_PREFIX}{CKPT_PREFIX}{step:06d}-"))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        for name, extra in (extra_models or {}).items():
            save_model(extra, str(tmp / f"{name}.safetensors"))
        torch.save(trainer_state, tmp / "trainer_state.pt")
        files = {}
        for p in sorted(tmp.iterdir()):
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[p.name] = {"size": p.stat().st_size, "sha256": file_digest(p)}
        manifest = {"step": step, "files": files, "run": run}
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=1, default=str))
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(ckpt_root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    """Checkpoint directories (``step_NNNNNN``), oldest first; temporary ones (``.tmp-*``) are not listed. Whether
    one is intact is :func:`verify_checkpoint`'s to say."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    found = [p for p in ckpt_root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)
             and p.name[len(CKPT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: p.name)


def remove_stale_temporaries(ckpt_root: Path) -> list[str]:
    """Delete the ``.tmp-*`` directories a crash during a checkpoint write left behind; their names."""
    ckpt_root = Path(ckpt_root)
    if not ckpt_root.is_dir():
        return []
    stale = sorted(p for p in ckpt_root.iterdir() if p.name.startswith(TMP_PREFIX))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return [p.name for p in stale]


def read_manifest(path: Path) -> Optional[dict[str, Any]]:
    """The checkpoint's manifest; None for a checkpoint written before manifests (it has ``meta.json``)."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        if (path / "meta.json").is_file() and (path / "trainer_state.pt").is_file():
            return None
        raise CheckpointError(f"{path / MANIFEST}: missing (an incomplete checkpoint)")
    try:
        m = read_json(path / MANIFEST, what="checkpoint manifest")
    except FileError as e:
        raise CheckpointError(str(e)) from None
    if not (isinstance(m, dict) and isinstance(m.get("files"), dict) and isinstance(m.get("step"), int)):
        raise CheckpointError(f"{path / MANIFEST}: not a checkpoint manifest (no step or file list)")
    return m


def verify_checkpoint(path: Path) -> Optional[str]:
    """None when every file the manifest lists is there with its size and SHA-256; else the first problem, e.g.
    ``model.safetensors: size mismatch (357664 bytes expected, 1000 found)``. A checkpoint from before manifests
    passes (nothing to check against)."""
    path = Path(path)
    try:
        m = read_manifest(path)
    except CheckpointError as e:
        return str(e).replace(f"{path}/", "")
    if m is None:
        return None
    for name, want in m["files"].items():
        f = path / name
        if not f.is_file():
            return f"{name}: missing"
        size = f.stat().st_size
        if size != want.get("size"):
            return f"{name}: size mismatch ({want.get('size')} bytes expected, {size} found)"
        if file_digest(f) != want.get("sha256"):
            return f"{name}: checksum mismatch (the file was changed after it was written)"
    return None


def load_checkpoint(path: Path, model: torch.nn.Module,
                    extra_models: Optional[dict[str, torch.nn.Module]] = None) -> dict[str, Any]:
    """Load weights into ``model`` (and any saved ``extra_models``) and return the trainer state dict. A file that
    does not load, or weights that do not fit the model, raise :class:`CheckpointError` naming the file."""
    from safetensors.torch import load_model

    path = Path(path)
    targets = [("model.safetensors", model)] + [(f"{n}.safetensors", m) for n, m in (extra_models or {}).items()]
    for fname, target in targets:
        f = path / fname
        if fname != "model.safetensors" and not f.is_file():
            continue
        try:
            load_model(target, str(f))
        except Exception as e:  # noqa: BLE001 — safetensors raises several types; name the file either way
            raise CheckpointError(f"{f}: does not load into this run's model ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300]})") from None
    try:
        return torch.load(path / "trainer_state.pt", weights_only=False)
    except Exception as e:  # noqa: BLE001 — pickle/zip errors of a damaged file
        raise CheckpointError(f"{path / 'trainer_state.pt'}: does not load ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:300] if str(e) else ''})") from None

"""The architecture holds (docs/architecture.md): layers import downward only and no two sibling modules import each
other, checked by import-linter (the contracts are in pyproject.toml), every package is in a layer, and the trainer
knows no method, task or model by name."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "entrolab"


def _layers() -> list[str]:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    return [name.strip() for layer in layers for name in layer.split("|")]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    out = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(" KEPT") == 2 and "BROKEN" not in out.stdout


def test_every_package_and_top_level_module_is_in_a_layer():
    layered = set(_layers())
    found = {f"entrolab.{p.stem}" for p in SRC.glob("*.py") if p.stem != "__init__"}
    found |= {f"entrolab.{p.name}" for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert found <= layered, f"add these to a layer in pyproject.toml: {sorted(found - layered)}"


def test_the_trainer_names_no_method_task_or_model():
    from entrolab import methods
    from entrolab.engine.models import PACKAGED_DEFAULT, TINY
    from entrolab.env.tasks import TASKS

    source = (SRC / "train" / "trainer.py").read_text()
    assert len(source.splitlines()) <= 350
    names = set(methods.method_names()) | set(TASKS.names()) | {PACKAGED_DEFAULT, TINY}
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not (strings & names), sorted(strings & names)


@pytest.mark.parametrize("layer", ["entrolab.env", "entrolab.ops", "entrolab.batch"])
def test_the_lowest_layers_import_no_model_code(layer):
    """env (tasks, rewards, the tool sandbox), ops and batch run without transformers: no model code below the
    generation layer."""
    code = (f"import sys; import {layer}; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('transformers', 'peft')]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

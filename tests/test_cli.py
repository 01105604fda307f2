"""entrolab.cli: the ``methods`` subcommand."""

from __future__ import annotations

import json

import pytest

from entrolab import methods
from entrolab.cli import main


def test_methods_table(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in methods.method_names():
        assert name in out
    assert "2505.22617" in out and "entropy effect" in out


def test_methods_json(capsys):
    assert main(["methods", "--format", "json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == methods.method_names()
    by_name = {c["name"]: c for c in cards}
    assert by_name["clip_cov"]["arxiv"] == "2505.22617" and by_name["kl_cov"]["arxiv"] == "2505.22617"
    assert by_name["grpo"]["arxiv"] == "2402.03300" and by_name["dapo"]["arxiv"] == "2503.14476"
    assert by_name["kl_cov"]["knobs"] == ["clip", "kl"]
    assert by_name["kl_cov"]["sets"] == {"clip": "none", "kl": "kl_cov"}


def test_methods_markdown(capsys):
    assert main(["methods", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.strip() == methods.markdown_table()


def test_methods_show(capsys):
    assert main(["methods", "show", "clip_cov", "--steps", "4"]) == 0
    out = capsys.readouterr().out
    # the card
    assert out.startswith("clip_cov — Clip-Cov")
    assert "arXiv 2505.22617" in out and "knobs: clip" in out
    assert "  clip:" in out and "clip_cov" in out and "  kl:" in out and "none (no parameters)" in out
    assert "toy run overrides" in out
    # the toy table: header and one row per step 0..4
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if "H grpo" in line)
    assert "H clip_cov" in lines[header] and "R clip_cov" in lines[header]
    rows = [line.split() for line in lines[header + 1:] if line.strip()]
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4]
    assert all(len(r) == 5 for r in rows)
    assert rows[0][1] == rows[0][2]  # same initial policy for both runs
    assert float(rows[-1][1]) < float(rows[0][1])  # GRPO's entropy falls


def _field_row(out: str, field: str) -> str:
    """The field's table line plus its wrapped continuation lines, whitespace-joined."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.split()[:1] == [field])
    indent = len(lines[i]) - len(lines[i].lstrip())
    rest = []
    for line in lines[i + 1:]:
        if len(line) - len(line.lstrip()) <= indent or not line.strip():
            break
        rest.append(line)
    return " ".join(" ".join([lines[i]] + rest).split())


def test_methods_show_prints_each_field_with_default_and_doc(capsys):
    from entrolab.knobs.clip import CLIPS

    assert main(["methods", "show", "clip_cov", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    docs = CLIPS.docs("clip_cov")
    for field, default in CLIPS.defaults("clip_cov").items():
        row = _field_row(out, field)
        assert row.startswith(f"{field} {default!r} "), row
        assert row.endswith(" ".join(docs[field].split())), row
    ratio = _field_row(out, "ratio")
    assert ratio.startswith("ratio 0.0002 Fraction") and "not percent" in ratio
    assert "*" not in _field_row(out, "eps_low")  # the preset keeps the component defaults
    assert "advantage: grpo field default doc eps 1e-06 " in " ".join(out.split())


def test_methods_show_marks_preset_values(capsys):
    assert main(["methods", "show", "dler", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert _field_row(out, "coef").startswith("coef 0.0005 * (component default 0.001) β:")
    assert _field_row(out, "eps_high").startswith("eps_high 0.28 Upper")  # clip_higher's own default: no mark
    assert "* set by this method's preset" in out


def test_methods_show_unknown_method(capsys):
    assert main(["methods", "show", "clipcov"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'clipcov'" in err
    for name in methods.method_names():
        assert name in err


def test_methods_show_needs_a_name(capsys):
    assert main(["methods", "show"]) == 2
    assert "needs a method name" in capsys.readouterr().err


@pytest.mark.parametrize("name", methods.method_names())
def test_methods_show_never_fails_for_a_catalog_method(name, capsys):
    """Every method shows its card; one the toy cannot run (it needs texts, trees or LM logits) says so instead of
    raising, and one whose sampling strategy the toy cannot reproduce says that too."""
    assert main(["methods", "show", name, "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name} — ")
    assert ("No toy trajectory:" in out) != ("Toy tabular softmax policy" in out)
    if methods.build(name).sampling.name in ("eptree", "cure"):
        assert "acts only in `entrolab train`" in out

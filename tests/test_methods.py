"""entrolab.methods: the catalog, composition, overrides, resolution, and the generated docs/methods.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from entrolab import methods
from entrolab.errors import ConfigError
from entrolab.knobs.advantage.base import ADVANTAGES, DrGRPOAdvantage, GRPOAdvantage
from entrolab.knobs.clip.base import CLIPS, ClipHigher, NoClip, PPOClip
from entrolab.knobs.clip.covariance import ClipCov
from entrolab.knobs.kl.base import KLS, NoKL
from entrolab.knobs.kl.penalties import KLCov
from entrolab.knobs.objective.base import TERMS, EntropyBonus
from entrolab.knobs.sampling.base import SAMPLINGS, DynamicSampling
from entrolab.methods import (
    COMPONENT_SLOTS,
    METHODS,
    Method,
    build,
    reference,
    register_method,
    resolve,
)
from entrolab.objective import PolicyObjective
from entrolab.ops.masked import AGGREGATION_MODES

DOC = Path(__file__).resolve().parent.parent / "docs" / "methods.md"
START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"


@pytest.mark.parametrize("name", methods.method_names())
def test_every_catalog_method_builds(name):
    m = methods.get_method(name)
    obj = build(name)
    assert isinstance(obj, PolicyObjective) and obj.methods == (name,)
    desc = obj.describe()
    for slot, value in m.sets.items():
        if slot == "aggregation":
            assert obj.aggregation == value
        elif slot == "objective":
            assert [t["name"] for t in desc["objective"]] == [v if isinstance(v, str) else v["name"] for v in value]
        else:
            assert desc[slot]["name"] == (value if isinstance(value, str) else value["name"])
    # the toy-scale overrides are valid overrides of this method
    build(name, **m.toy_overrides)
    assert m.arxiv and m.entropy_effect and m.card()["name"] == name


def test_baseline_slots_of_a_method():
    obj = build("clip_cov")
    assert isinstance(obj.advantage, GRPOAdvantage) and isinstance(obj.kl, NoKL) and obj.terms == []
    assert isinstance(obj.clip, ClipCov) and obj.clip.ratio == 2e-4 and obj.aggregation == "token-mean"
    dapo = build("dapo")
    assert isinstance(dapo.clip, ClipHigher) and dapo.clip.eps_high == 0.28
    assert isinstance(dapo.sampling, DynamicSampling)


def test_composition():
    obj = build(["dr_grpo", "kl_cov"])
    assert isinstance(obj.advantage, DrGRPOAdvantage)
    assert obj.aggregation == "seq-mean-token-sum-norm"
    assert isinstance(obj.clip, NoClip) and isinstance(obj.kl, KLCov)
    assert obj.methods == ("dr_grpo", "kl_cov")
    assert build(["kl_cov", "dr_grpo"]).describe() | {"methods": []} == obj.describe() | {"methods": []}


def test_composition_of_the_same_slot_is_refused():
    with pytest.raises(ConfigError) as e:
        build(["dapo", "clip_cov"])
    msg = str(e.value)
    assert "'dapo'" in msg and "'clip_cov'" in msg and "'clip'" in msg
    with pytest.raises(ConfigError, match="'advantage'"):
        build(["grpo", "rloo"])


def test_overrides():
    # bare hyperparameter, found in the one slot that has it
    assert build("clip_cov", ratio=1e-3).clip.ratio == 1e-3
    # slot-qualified
    obj = build(["dr_grpo", "kl_cov"], **{"kl.coef": 2})
    assert obj.kl.coef == 2.0 and isinstance(obj.kl.coef, float)
    # slot replacement by name, and by spec with parameters
    assert isinstance(build("grpo", clip="clip_higher").clip, ClipHigher)
    obj = build("grpo", clip={"name": "ppo", "eps_high": 0.3})
    assert isinstance(obj.clip, PPOClip) and obj.clip.eps_high == 0.3
    # replacement first, then a hyperparameter of the new component
    assert build("grpo", clip="clip_cov", ratio=0.01).clip.ratio == 0.01
    # objective terms: by index, by term name, by 'objective' when there is one term
    assert build("entropy_bonus", **{"objective.0.coef": 0.2}).terms[0].coef == 0.2
    assert build("entropy_bonus", **{"entropy_bonus.coef": 0.3}).terms[0].coef == 0.3
    assert build("entropy_bonus", **{"objective.coef": 0.4}).terms[0].coef == 0.4
    assert isinstance(build("grpo", objective="entropy_bonus").terms[0], EntropyBonus)
    # aggregation and norm_length
    obj = build("dr_grpo", norm_length=512)
    assert obj.norm_length == 512
    assert build("grpo", aggregation="seq-mean-token-mean").aggregation == "seq-mean-token-mean"


def test_overrides_do_not_mutate_the_catalog():
    build("entropy_bonus", coef=0.5)
    build("clip_cov", ratio=0.3)
    assert resolve("entropy_bonus")["objective"][0]["coef"] == 1e-3
    assert resolve("clip_cov")["clip"]["ratio"] == 2e-4
    assert METHODS["entropy_bonus"].sets["objective"] == [{"name": "entropy_bonus"}]


def test_override_errors():
    with pytest.raises(ConfigError) as e:
        build(["kl_cov", "entropy_bonus"], coef=2.0)   # β of KL-Cov or α of the bonus?
    assert "ambiguous" in str(e.value) and "kl.coef" in str(e.value) and "objective.0.coef" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build("grpo", temperature=1.0)
    assert "'temperature'" in str(e.value) and "clip.eps_low" in str(e.value) and "advantage.eps" in str(e.value)
    with pytest.raises(ConfigError, match="'ppo' has no parameter 'ratio'"):
        build("grpo", **{"clip.ratio": 0.1})
    with pytest.raises(ConfigError, match="'critic' is not a slot"):
        build("grpo", **{"critic.lr": 0.1})
    with pytest.raises(ConfigError, match="only 1 objective terms"):
        build("entropy_bonus", **{"objective.3.coef": 0.1})
    with pytest.raises(ConfigError, match="aggregation = 'sum' is unknown"):
        build("grpo", aggregation="sum")
    with pytest.raises(ConfigError, match=r"^clip\.ratio = 2\.0 is out of range; allowed: \(0\.0, 1\.0\]"):
        build("clip_cov", ratio=2.0)  # the key a user types, not the component's name
    with pytest.raises(ConfigError, match="unknown clip component 'clipped'"):
        build("grpo", clip="clipped")
    with pytest.raises(ConfigError, match="expected a component name"):
        build("grpo", clip=3)


def test_unknown_method_and_empty_list():
    with pytest.raises(ConfigError) as e:
        build("clipcov")
    for n in methods.method_names():
        assert n in str(e.value)
    with pytest.raises(ConfigError, match="no method given"):
        build([])


@pytest.mark.parametrize("name", methods.method_names())
def test_resolve_fills_every_default(name):
    full = resolve(name)
    assert full["methods"] == [name]
    for slot, reg in COMPONENT_SLOTS.items():
        spec = full[slot]
        assert set(spec) == {"name"} | set(reg.defaults(spec["name"]))
    for t in full["objective"]:
        assert set(t) == {"name"} | set(TERMS.defaults(t["name"]))
    assert full["aggregation"] in AGGREGATION_MODES and "norm_length" in full
    # the resolved spec rebuilds the same objective
    obj = build(name)
    for slot in COMPONENT_SLOTS:
        assert obj.describe()[slot] == full[slot]


def test_resolve_with_overrides():
    full = resolve(["dr_grpo", "kl_cov"], k=0.01)
    assert full["kl"] == {"name": "kl_cov", "k": 0.01, "coef": 1.0, "scope": "micro"}
    assert full["advantage"] == {"name": "dr_grpo"}
    assert full["sampling"] == {"name": "standard"}


def test_register_method_validates_and_leaves_no_trace():
    before = dict(METHODS)
    bad = [
        (Method(name="grpo", title="t", arxiv="x", sets={}, entropy_effect="e"), "already in the catalog"),
        (Method(name="tmp_slot", title="t", arxiv="x", sets={"critic": "x"}, entropy_effect="e"), "unknown slots"),
        (Method(name="tmp_ev", title="t", arxiv="x", sets={}, entropy_effect="e", evidence="maybe"), "evidence"),
        (Method(name="tmp_comp", title="t", arxiv="x", sets={"clip": "no_such_rule"}, entropy_effect="e"),
         "unknown clip component"),
        (Method(name="tmp_param", title="t", arxiv="x", sets={"clip": {"name": "ppo", "eps": 0.1}},
                entropy_effect="e"), "no parameter"),
    ]
    for m, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            register_method(m)
    assert METHODS == before  # a rejected method is not left half-registered


def test_knobs_of_a_method():
    assert methods.get_method("dapo").knobs == ("clip", "objective", "sampling")
    assert methods.get_method("kl_cov").knobs == ("clip", "kl")


def test_registries_cover_catalog_components():
    used = {(slot, (v if isinstance(v, str) else v["name"]))
            for m in METHODS.values() for slot, v in m.sets.items() if slot in COMPONENT_SLOTS}
    regs = {"sampling": SAMPLINGS, "advantage": ADVANTAGES, "clip": CLIPS, "kl": KLS}
    for slot, name in used:
        assert name in regs[slot]


def test_docs_methods_md_matches_catalog():
    text = DOC.read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    table = text.split(START, 1)[1].split(END, 1)[0].strip("\n")
    assert table == methods.markdown_table(), "docs/methods.md is stale: run python scripts/gen_methods_doc.py"
    assert text.split(START, 1)[0].strip()  # an intro precedes the table


@pytest.mark.parametrize("page", sorted(reference.PAGES))
def test_docs_hyperparameter_sections_match_the_field_docs(page):
    """Each knob page's generated "Hyperparameters" section equals what the registries and field docs give now."""
    text = (DOC.parent / page).read_text()
    assert text.count(reference.START) == 1 and text.count(reference.END) == 1
    assert reference.section_of(text) == reference.markdown_section(page), \
        f"docs/{page} is stale: run python scripts/gen_methods_doc.py"


def test_every_component_has_one_hyperparameter_page():
    placed = [(knob, name) for page in reference.PAGES for knob, name in reference.page_components(page)]
    every = [(knob, name) for knob, reg in reference.KNOB_REGISTRIES.items() for name in reg.names()]
    assert sorted(placed) == sorted(every)  # each registered component on exactly one page
    agentic = reference.page_components("methods-agentic.md")
    assert ("sampling", "arpo") in agentic and ("advantage", "aepo_entropy_aware") in agentic
    clip_kl = reference.markdown_section("methods-clip-kl.md")
    assert "### `clip_cov` (clip: `ClipCov` in `knobs/clip/covariance.py`)" in clip_kl
    ratio = next(line for line in clip_kl.splitlines() if line.startswith("| `ratio` | `0.0002` |"))
    assert "not percent" in ratio


def test_hyperparameter_markdown_escapes_pipes():
    edr = reference.markdown_component("sampling", "edr")
    row = next(line for line in edr.splitlines() if line.startswith("| `markers` |"))
    assert row.startswith("| `markers` | `'<hard>\\|Wait\\|However\\|Alternatively'` |")
    assert row.count("|") - row.count("\\|") == 4  # three cells, no stray separator


def test_gen_methods_doc_check_detects_a_stale_page(tmp_path, monkeypatch):
    import runpy

    docs = tmp_path / "docs"
    docs.mkdir()
    for page in ["methods.md", "methods-baselines.md", *reference.PAGES]:
        (docs / page).write_text((DOC.parent / page).read_text())
    script = runpy.run_path(str(DOC.parent.parent / "scripts" / "gen_methods_doc.py"))
    monkeypatch.setitem(script["main"].__globals__, "DOCS", docs)
    assert script["main"](check=True) == 0
    page = docs / "methods-clip-kl.md"
    page.write_text(page.read_text().replace("| `ratio` | `0.0002` |", "| `ratio` | `0.002` |"))
    assert script["main"](check=True) == 1
    assert script["main"](check=False) == 0 and script["main"](check=True) == 0
    assert page.read_text() == (DOC.parent / "methods-clip-kl.md").read_text()


def test_markdown_table_rows():
    table = methods.markdown_table()
    lines = table.splitlines()
    assert len(lines) == 2 + len(METHODS)
    for name in METHODS:
        assert any(line.startswith(f"| `{name}` |") for line in lines)
    assert all(line.count("|") == 7 for line in lines)  # no stray pipe inside a cell
    sub = methods.markdown_table(["kl_cov"])
    assert len(sub.splitlines()) == 3 and "| `kl_cov` | clip, kl | 2505.22617 |" in sub

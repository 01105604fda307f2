"""Regenerate the generated parts of the method docs from the catalog and the knob registries (between marker
lines): the method table of docs/methods.md, the anchors table of docs/methods-baselines.md (each method's reference
implementation) and the "Hyperparameters" section of every docs/methods-*.md page (one table per component: field,
default, doc — the doc written under the field in the component's dataclass).

    python scripts/gen_methods_doc.py          # rewrite
    python scripts/gen_methods_doc.py --check  # exit 1 if any generated part is out of date
"""

import sys
from pathlib import Path

from entrolab.methods import anchors_table, markdown_table
from entrolab.methods.reference import PAGES, markdown_section, replace_section

DOCS = Path(__file__).resolve().parent.parent / "docs"
TABLE_START, TABLE_END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"
ANCHORS_START, ANCHORS_END = "<!-- anchors-table:start -->", "<!-- anchors-table:end -->"


def between(text: str, start: str, end: str, body: str) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def methods_md(text: str) -> str:
    return between(text, TABLE_START, TABLE_END, markdown_table())


def baselines_md(text: str) -> str:
    return between(text, ANCHORS_START, ANCHORS_END, anchors_table())


def main(check: bool) -> int:
    targets = {DOCS / "methods.md": methods_md, DOCS / "methods-baselines.md": baselines_md}
    for page in PAGES:
        targets[DOCS / page] = lambda text, page=page: replace_section(text, markdown_section(page))
    stale = []
    for path, render in targets.items():
        text = path.read_text()
        new = render(text)
        if new == text:
            continue
        stale.append(path)
        if not check:
            path.write_text(new)
            print(f"updated {path}")
    if check:
        for path in stale:
            print(f"{path} is out of date; run python scripts/gen_methods_doc.py", file=sys.stderr)
        if not stale:
            print("generated method docs are up to date")
        return 1 if stale else 0
    if not stale:
        print("generated method docs were already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main("--check" in sys.argv[1:]))

"""Rewrite the method table in docs/methods.md from the catalog (between the marker lines).

    python scripts/gen_methods_doc.py          # rewrite
    python scripts/gen_methods_doc.py --check  # exit 1 if the file is out of date
"""

import sys
from pathlib import Path

from entrolab.methods import markdown_table

START, END = "<!-- methods-table:start -->", "<!-- methods-table:end -->"
path = Path(__file__).resolve().parent.parent / "docs" / "methods.md"
text = path.read_text()
head, rest = text.split(START, 1)
old, tail = rest.split(END, 1)
new = f"\n{markdown_table()}\n"
if "--check" in sys.argv[1:]:
    if old != new:
        sys.exit(f"{path} is out of date; run python scripts/gen_methods_doc.py")
    print(f"{path} is up to date")
else:
    path.write_text(f"{head}{START}{new}{END}{tail}")
    print(f"updated {path}")

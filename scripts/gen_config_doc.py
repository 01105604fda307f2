"""Rewrite the config reference in docs/training.md from the config dataclasses (between the marker lines).

    python scripts/gen_config_doc.py          # rewrite
    python scripts/gen_config_doc.py --check  # exit 1 if the file is out of date
"""

import sys
from pathlib import Path

from entrolab.train.config_doc import markdown_reference

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
path = Path(__file__).resolve().parent.parent / "docs" / "training.md"
text = path.read_text()
head, rest = text.split(START, 1)
old, tail = rest.split(END, 1)
new = f"\n{markdown_reference()}\n"
if "--check" in sys.argv[1:]:
    if old != new:
        sys.exit(f"{path} is out of date; run python scripts/gen_config_doc.py")
    print(f"{path} is up to date")
else:
    path.write_text(f"{head}{START}{new}{END}{tail}")
    print(f"updated {path}")

"""Rewrite the config reference in docs/training.md from the config dataclasses (between the marker lines)."""

from pathlib import Path

from entrolab.train.config_doc import markdown_reference

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
path = Path(__file__).resolve().parent.parent / "docs" / "training.md"
text = path.read_text()
head, rest = text.split(START, 1)
_, tail = rest.split(END, 1)
path.write_text(f"{head}{START}\n{markdown_reference()}\n{END}{tail}")
print(f"updated {path}")

"""The one reader of the files a user hands entrolab (configs, data sets, reward modules, run records, checkpoints).

Every decode or parse problem becomes a :class:`FileError` (a ``ConfigError``) whose message starts with the file and,
where there is one, the line: ``data.jsonl line 3: not valid JSON (Expecting value)``. The command line prints it as
``entrolab: error: data.jsonl line 3: …``. Text is UTF-8 (a byte-order mark is allowed); a file that is not says so
with the line of the first bad byte.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ConfigError

PathLike = Union[str, "os.PathLike[str]"]


class FileError(ConfigError):
    """A file is missing, unreadable, not UTF-8, or does not parse; the message names the file (and line)."""


def _where(path: PathLike, line: Optional[int] = None) -> str:
    return f"{os.fspath(path)}" + (f" line {line}" if line is not None else "")


def read_bytes(path: PathLike, *, what: str = "file") -> bytes:
    """The bytes of ``path``; a missing path, a directory or an OS error is a :class:`FileError`."""
    p = Path(path)
    if not p.exists():
        raise FileError(f"{_where(path)}: no such {what}")
    if p.is_dir():
        raise FileError(f"{_where(path)}: is a directory, expected a {what}")
    try:
        return p.read_bytes()
    except OSError as e:
        raise FileError(f"{_where(path)}: cannot read it ({e.strerror or e})") from None


def decode(data: bytes, path: PathLike) -> str:
    """UTF-8 text of ``data`` (read from ``path``); a bad byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise FileError(f"{_where(path, line)}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as "
                        "UTF-8") from None


def read_text(path: PathLike, *, what: str = "file") -> str:
    """The UTF-8 text of ``path`` (:class:`FileError` naming the file and line otherwise)."""
    return decode(read_bytes(path, what=what), path)


def read_yaml(path: PathLike, *, what: str = "file") -> Any:
    """The YAML document in ``path``; a parse error is one line: ``FILE line N: not valid YAML: problem``."""
    import yaml

    text = read_text(path, what=what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        line = mark.line + 1 if mark is not None else None
        col = f" (column {mark.column + 1})" if mark is not None else ""
        raise FileError(f"{_where(path, line)}: not valid YAML: {problem}{col}") from None


def read_json(path: PathLike, *, what: str = "file") -> Any:
    """The JSON document in ``path``; a parse error names its line."""
    text = read_text(path, what=what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileError(f"{_where(path, e.lineno)}: not valid JSON ({e.msg})") from None


def numbered_jsonl(text: str, path: PathLike, *, objects: bool = True, torn_tail: bool = False
                   ) -> list[tuple[int, Any]]:
    """``(line number, record)`` of each non-blank line of JSON-lines ``text`` read from ``path``. ``objects``: every
    record must be a JSON object. ``torn_tail``: an unparseable *last* line is dropped (a crash mid-append leaves
    one); any other bad line is a :class:`FileError` naming the file and line."""
    lines = text.splitlines()
    last = max((i for i, x in enumerate(lines) if x.strip()), default=-1)
    out: list[tuple[int, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            if torn_tail and i == last:
                break
            raise FileError(f"{_where(path, i + 1)}: not valid JSON ({e.msg}); expected one JSON object per line"
                            + ("; a file holding one JSON document should end in .json" if i == 0 else "")) from None
        if objects and not isinstance(obj, dict):
            raise FileError(f"{_where(path, i + 1)}: {json_kind(obj)}, expected a JSON object per line")
        out.append((i + 1, obj))
    return out


def parse_jsonl(text: str, path: PathLike, *, objects: bool = True, torn_tail: bool = False) -> list[Any]:
    """The records of JSON-lines ``text`` (:func:`numbered_jsonl` without the line numbers)."""
    return [obj for _, obj in numbered_jsonl(text, path, objects=objects, torn_tail=torn_tail)]


def read_jsonl(path: PathLike, *, objects: bool = True, torn_tail: bool = False, what: str = "file") -> list[Any]:
    """The records of the JSON-lines file ``path`` (:func:`parse_jsonl`)."""
    return parse_jsonl(read_text(path, what=what), path, objects=objects, torn_tail=torn_tail)


def json_kind(obj: Any) -> str:
    """``a JSON list``, ``a JSON number``, ... (for messages)."""
    kind = {list: "list", str: "string", bool: "boolean", type(None): "null", int: "number", float: "number",
            dict: "object"}.get(type(obj), type(obj).__name__)
    return f"a JSON {kind}"


def check_dir_path(key: str, value: PathLike) -> None:
    """``value`` names a directory entrolab may create or write into: neither it nor any existing ancestor may be a
    file (:class:`FileError` naming ``key`` otherwise)."""
    value = os.fspath(value)
    p = os.path.abspath(os.path.expanduser(value))
    probe = p
    while True:
        if os.path.exists(probe):
            if not os.path.isdir(probe):
                what = "is a file" if probe == p else f"is under {probe}, which is a file"
                raise FileError(f"{key} = {value!r} {what}; choose a directory path")
            return
        parent = os.path.dirname(probe)
        if parent == probe:
            return
        probe = parent


def compile_python(path: PathLike) -> Any:
    """The code object of the Python file ``path``; a syntax error names its line."""
    text = read_text(path, what="Python file")
    try:
        return compile(text, os.fspath(path), "exec")
    except SyntaxError as e:
        raise FileError(f"{_where(path, e.lineno)}: syntax error: {e.msg}") from None


__all__ = ["FileError", "check_dir_path", "compile_python", "decode", "json_kind", "numbered_jsonl", "parse_jsonl",
           "read_bytes", "read_json", "read_jsonl", "read_text", "read_yaml"]

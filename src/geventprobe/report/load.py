"""A saved ``--json`` result back into the ``RunResult`` every renderer reads.

The record is rebuilt from the dataclasses' own field declarations, so a field
added later (with a default, as the schema's rules demand) needs no change
here: an older file simply gets the default. Keys this version does not know
(a newer geventprobe, same ``schema_version``) are ignored. A different
``schema_version`` is refused: its fields may mean something else.

``normalize`` gives a live record the form its JSON reads back in (lists for tuples,
string keys, plain values in the untyped dicts, no non-finite figure where none can be
read back), without the text: a report of a run and a later ``report RESULT.json`` of
its file are then the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum

from geventprobe import kinds, record
from geventprobe.errors import ProbeError
from geventprobe.record import SCHEMA_VERSION, RunResult
from geventprobe.report import json_format

# The scalar annotations a record's fields use, and what JSON value each accepts.
# bool is an int in Python: a count edited into ``true`` is refused too.
_SCALARS = {
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
}
_JSON_NAMES = {"float": "a number", "int": "an integer", "str": "a string", "bool": "true or false"}


class _Invalid(Exception):
    """A value that does not fit its field; the message names the field's path."""


def _split(args: str, sep: str = ",") -> list[str]:
    """``"str, list[int]"`` -> ``["str", "list[int]"]`` (separators at the top level only)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(args):
        depth += ch == "["
        depth -= ch == "]"
        if ch == sep and depth == 0:
            parts.append(args[start:i].strip())
            start = i + 1
    parts.append(args[start:].strip())
    return parts


def _resolve(annotation: str):
    """How to rebuild a field from its annotation text (``from __future__`` keeps it a string).

    Parsed by hand rather than with ``typing.get_type_hints``, which cannot
    evaluate ``X | None`` on Python 3.9.
    """
    text = annotation.strip()
    union = _split(text, "|")
    if len(union) > 1 and "None" in union:
        rest = [u for u in union if u != "None"]
        if len(rest) == 1:
            return ("optional", _resolve(rest[0]))
        return ("plain", None)
    if text.startswith("Optional[") and text.endswith("]"):
        return ("optional", _resolve(text[9:-1]))
    head, _, args = text.partition("[")
    args = args[:-1] if args.endswith("]") else ""
    if head in ("list", "List", "Sequence") and args:
        return ("list", _resolve(args))
    if head in ("dict", "Dict", "Mapping") and args and len(_split(args)) == 2:
        return ("dict", _resolve(_split(args)[1]))
    found = getattr(record, text, None)
    if isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, Enum)):
        return ("type", found)
    if text in _SCALARS:
        return (text, None)
    return ("plain", None)


def _convert(value, kind, path: str):
    tag, inner = kind
    if tag == "optional":
        return None if value is None else _convert(value, inner, path)
    if tag == "list":
        if not isinstance(value, list):
            raise _Invalid(f"{path} must be a list")
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if tag == "dict":
        if not isinstance(value, dict):
            raise _Invalid(f"{path} must be an object")
        return {k: _convert(v, inner, f"{path}.{k}") for k, v in value.items()}
    if tag == "float" and value is None:
        # JSON has no NaN: the writer turned non-finite figures into null.
        return math.nan
    if tag in _SCALARS:
        if not _SCALARS[tag](value):
            raise _Invalid(f"{path} must be {_JSON_NAMES[tag]}, not {json.dumps(value)[:40]}")
        return value
    if tag == "type":
        if issubclass(inner, Enum):
            try:
                return inner(value)
            except ValueError as exc:
                raise _Invalid(f"{path}: unknown value {value!r}") from exc
        return _build(inner, value, path)
    return value


def _build(cls, data, path: str):
    if not isinstance(data, dict):
        raise _Invalid(f"{path} must be an object")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            has_default = (f.default is not dataclasses.MISSING
                           or f.default_factory is not dataclasses.MISSING)
            if has_default:
                continue
            raise _Invalid(f"{path}.{f.name} is missing")
        kwargs[f.name] = _convert(data[f.name], _resolve(str(f.type)), f"{path}.{f.name}")
    return cls(**kwargs)


def _normal(value, kind):
    """``value`` as ``_convert`` would rebuild it from its JSON form (``json_format.plain``)."""
    tag, inner = kind
    if tag == "optional":
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return None  # written as null, read back as None
        return _normal(value, inner)
    if tag == "list" and isinstance(value, (list, tuple)):
        return [_normal(v, inner) for v in value]
    if tag == "dict" and isinstance(value, dict):
        return {str(k): _normal(v, inner) for k, v in value.items()}
    if tag == "float" and (value is None or (isinstance(value, float)
                                              and not math.isfinite(value))):
        return math.nan  # null, read back into a figure that cannot be None
    if tag == "type" and dataclasses.is_dataclass(inner) and dataclasses.is_dataclass(value):
        return normalize(value)
    if tag == "type" and issubclass(inner, Enum) and not isinstance(value, inner):
        return inner(value)
    if tag == "plain":
        return json_format.plain(value)
    return value


def normalize(record):
    """A record (``RunResult`` or any of its parts) as ``from_dict(to_dict(record))`` gives it
    back: the one form every document reads, whether the record is live or loaded."""
    changes = {f.name: _normal(getattr(record, f.name), _resolve(str(f.type)))
               for f in dataclasses.fields(record) if f.init}
    return dataclasses.replace(record, **changes)


def from_dict(data: dict, source: str = "the result") -> RunResult:
    """A ``RunResult`` from the JSON data ``json_format.to_dict`` produced."""
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ProbeError(f"{source} is not a geventprobe result (no schema_version): pass the "
                         "file `geventprobe run --json PATH` wrote")
    version = data["schema_version"]
    if version != SCHEMA_VERSION:
        raise ProbeError(
            f"{source} has schema_version {version!r}; this geventprobe reads version "
            f"{SCHEMA_VERSION}: render it with the geventprobe release that wrote it "
            f"(tool_version {data.get('tool_version', 'unknown')})")
    kind = (data.get("app") or {}).get("kind") if isinstance(data.get("app"), dict) else None
    if not kinds.known(kind):  # its sections would be drawn in another kind's words
        raise ProbeError(
            f"{source} is a run of a kind of worker this geventprobe does not know "
            f"({kind!r}): render it with the geventprobe release that wrote it "
            f"(tool_version {data.get('tool_version', 'unknown')})")
    try:
        return _build(RunResult, data, "result")
    except (_Invalid, TypeError) as exc:
        raise ProbeError(f"{source} is not a valid geventprobe result ({exc}): pass the file "
                         "`geventprobe run --json PATH` wrote, unedited") from exc


def load(path: str) -> RunResult:
    """Read the result ``geventprobe run --json`` wrote to ``path``."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise ProbeError(f"cannot read {path} ({exc.strerror}): pass the file "
                         "`geventprobe run --json PATH` wrote") from exc
    except ValueError as exc:
        raise ProbeError(f"{path} is not JSON ({exc}): pass the file "
                         "`geventprobe run --json PATH` wrote") from exc
    return from_dict(data, path)

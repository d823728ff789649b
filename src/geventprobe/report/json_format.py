"""The versioned JSON form of a run (``schema/result.schema.json`` describes it).

Not a document format: the JSON is the record itself, every figure of it, the file
``geventprobe report`` and ``compare`` read back (``load``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum

from geventprobe.files import write_atomic
from geventprobe.record import RunResult


def plain(value):
    """``value`` (from ``dataclasses.asdict``) as JSON-ready data: enums as their value,
    non-finite floats as null, every key a string."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def to_dict(result: RunResult) -> dict:
    """The result as plain JSON-ready data."""
    return plain(dataclasses.asdict(result))


def dumps(data) -> str:
    """JSON-ready data as the text every JSON output writes (a run, a comparison, a bisect)."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render(result: RunResult) -> str:
    """The result as JSON text."""
    return dumps(to_dict(result))


def write(result: RunResult, path: str) -> None:
    """Write the JSON to ``path`` (write then rename: a reader never sees half a file)."""
    write_atomic(path, render(result))

"""The versioned JSON form of a run (``schema/result.schema.json`` describes it)."""

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


def render(result: RunResult) -> str:
    """The result as JSON text."""
    return json.dumps(to_dict(result), indent=2, ensure_ascii=False) + "\n"


def write(result: RunResult, path: str) -> None:
    """Write the JSON to ``path`` (write then rename: a reader never sees half a file)."""
    write_atomic(path, render(result))

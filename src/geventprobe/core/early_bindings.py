"""A stall in a name bound before gevent patched: the cause, and the fix that fits.

The worker reports the app's globals that still point at a standard-library original
gevent replaced (``worker/bindings.py``: ``from time import sleep`` at ``app.py:17``).
When the stack that blocked the hub stops in the user's own line calling one of those
names (``app.py:22 in call_upstream: sleep(0.1)``: the original is C, so the user's line
is the innermost frame), that binding is the cause: the call blocks the whole worker
although gevent patched ``time.sleep``. The fix is to import the module rather than the
name, or to patch before the app is imported; "preload" is named only when the app was
preloaded.

Pure functions of the worker's record and the counted stacks (``core/blocked.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from geventprobe.record import BlockedStack


@dataclass(frozen=True)
class Binding:
    """A global of the app's that still points at an original gevent replaced."""

    file: str
    """The module's file as the user knows it: ``app.py``."""
    name: str
    """The global: ``sleep``."""
    original: str
    """What it is: ``time.sleep``, ``socket.socket``, ``threading.Lock``."""
    kind: str
    """``function``, ``class`` or ``instance`` (an object made from an original class)."""
    line: int | None
    """The line that bound it, when the module's source says so."""
    statement: str | None
    """That line: ``from time import sleep``."""

    @property
    def where(self) -> str:
        """``app.py:17``."""
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True)
class BindingCause:
    """Why the hub stalled, when a binding made before patching was the call."""

    binding: Binding
    cause: str
    fix: str


def parse(records: Iterable[dict]) -> list[Binding]:
    """The workers' ``bindings`` records as ``Binding``s, duplicates (one per worker)
    dropped."""
    out: dict[tuple, Binding] = {}
    for r in records:
        try:
            b = Binding(file=str(r["file"]), name=str(r["name"]), original=str(r["original"]),
                        kind=str(r.get("kind") or "function"), line=r.get("line"),
                        statement=r.get("statement"))
        except (KeyError, TypeError):
            continue
        out.setdefault((b.file, b.name), b)
    return list(out.values())


def _frame_file(frame: str) -> str:
    return frame.split(":", 1)[0]


def _source(frame: str) -> str:
    match = re.match(r"^.*? in [^:]+:\s(.*)$", frame)
    return match.group(1) if match else ""


def _uses(binding: Binding, source: str) -> bool:
    """Does this source line call the name (or use the object)?"""
    name = re.escape(binding.name)
    if binding.kind == "instance":
        return bool(re.search(rf"\b{name}\b", source))
    return bool(re.search(rf"(?<![\w.]){name}\s*\(", source))


def match(stack: BlockedStack, bindings: Iterable[Binding]) -> Binding | None:
    """The binding the stalled stack was calling: its innermost frame is the user's own
    line (the original is C or the standard library) and that line uses the name."""
    frames = list(stack.frames)
    if not frames:
        return None
    inner = [f for f in frames if not re.match(r"^python3\.\d+/", f)] or frames
    innermost = inner[-1]
    if stack.user_frame is None or innermost != stack.user_frame:
        return None
    for b in bindings:
        if _frame_file(innermost) == b.file and _uses(b, _source(innermost)):
            return b
    return None


def explain(stack: BlockedStack, bindings: Iterable[Binding], preload: bool
            ) -> BindingCause | None:
    """The cause and fix when the hub stalled in a name bound before patching."""
    b = match(stack, bindings)
    if b is None:
        return None
    bound = f"`{b.statement}` at {b.where}" if b.statement else f"{b.name} in {b.where}"
    when = ("the gunicorn master imported the app under preload_app, before the workers "
            "patched" if preload else
            f"{b.file} was imported before the worker patched: from the gunicorn config, a "
            "hook, or before monkey.patch_all()")
    module, _, attr = b.original.rpartition(".")
    if b.kind == "instance":
        what = f"made an original {b.original}"
        fix = (f"make {b.name} after gevent patched: lazily in the request or in "
               "post_worker_init")
    else:
        what = f"bound the standard library's {b.original}"
        fix = (f"import the module, not the name: `import {module}`, then call "
               f"`{module}.{attr}(...)`, so the call finds gevent's")
    fix += (", or drop preload_app, or patch first: `from gevent import monkey; "
            "monkey.patch_all()` at the very top of the gunicorn config" if preload else
            f", or do not import {b.file} before the worker patched (not from the gunicorn "
            "config or its hooks), or patch first: `from gevent import monkey; "
            "monkey.patch_all()` at the very top of the gunicorn config")
    where = (stack.user_frame or "").split(": ", 1)[0]
    return BindingCause(
        binding=b,
        cause=(f"{bound} {what} before gevent patched ({when}): the call at {where} blocks "
               "the whole worker"),
        fix=fix)

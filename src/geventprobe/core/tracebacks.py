"""The exceptions in the workers' log: type, message and the user's frame that raised them.

gunicorn logs a request that raised as one ``[ERROR] Error handling request …`` line
followed by Python's traceback; the exception is the traceback's LAST line
(``psycopg_pool.PoolTimeout: couldn't get a connection after 0.50 sec``), not its header
(``Traceback (most recent call last):``). The frame the user can act on is the innermost
one in their own code (``app.py:29 in application``), not the library's ``raise``.

Pure functions of the lines the parent already reads (``app.routes.RouteRun.log_lines``):
no file, no process. The same parser reads a celery worker's log, whose tracebacks have
the same shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

_HEADER = "Traceback (most recent call last):"
# Between the parts of a chained exception (``raise … from``, or raised while handling).
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")
_FRAME = re.compile(r'^\s+File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
# A gunicorn log line: ``[2026-12-01 15:51:49 +0000] [24560] [ERROR] …``.
_LOG_LINE = re.compile(r"^\[[^\]]+\] \[(?P<pid>\d+)\] \[[A-Z]+\]")
# An exception line: a dotted name, then ": message" or nothing.
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
_MESSAGE_LIMIT = 300
# Digits and hex ids differ between otherwise identical errors (thread ids, pids, times).
_VARIABLE = re.compile(r"0x[0-9a-fA-F]+|\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Frame:
    """One frame of a traceback."""

    path: str
    """The file as the worker printed it (absolute, as a rule)."""
    line: int
    function: str
    source: str | None = None
    """The source line Python printed under the frame, stripped."""

    def where(self, root: str | None = None) -> str:
        """``app.py:29 in application``: the path relative to ``root`` (the app's directory)
        when it lies below it, from ``site-packages/`` on for a library."""
        return f"{short_path(self.path, root)}:{self.line} in {self.function}"

    def text(self, root: str | None = None) -> str:
        """``app.py:29 in application: with pool.connection() as conn``."""
        return self.where(root) + (f": {self.source}" if self.source else "")


@dataclass(frozen=True)
class LoggedError:
    """One exception the workers logged (identical ones counted together)."""

    type: str
    """The exception's qualified name as printed: ``psycopg_pool.PoolTimeout``."""
    message: str
    """The first line of its message (may be empty), at most 300 characters."""
    user_frame: Frame | None
    """The innermost frame in the user's own code (not the standard library,
    site-packages, gevent or geventprobe); None when every frame is a library's."""
    raised_at: Frame | None
    """The innermost frame of all: where the library raised."""
    count: int = 1
    """How many tracebacks in the lines had this type, message (digits aside) and frame."""
    pids: tuple[int, ...] = ()
    """The workers that logged it (from gunicorn's line before the traceback)."""

    @property
    def line(self) -> str:
        """``type: message``, as Python's last line of the traceback says it."""
        return f"{self.type}: {self.message}" if self.message else self.type

    @property
    def name(self) -> str:
        """The class name alone: ``PoolTimeout``."""
        return self.type.rsplit(".", 1)[-1]


def short_path(path: str, root: str | None = None) -> str:
    """A path the user recognises: below ``root`` relative to it, a library's from
    ``site-packages/`` on, the standard library's as ``python3.X/…``."""
    if not path or path.startswith("<"):
        return path
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1]
    if root:
        real_root = os.path.normpath(root)
        if os.path.normpath(path).startswith(real_root + os.sep):
            return os.path.relpath(path, real_root)
    match = re.search(r"/lib/(python3\.\d+/.*)$", path)
    if match:
        return match.group(1)
    return path


def is_user_path(path: str) -> bool:
    """True for the user's own files: not the standard library, an installed package,
    gevent, geventprobe or a frozen/generated module."""
    if not path or path.startswith("<"):
        return False
    if "site-packages/" in path or "dist-packages/" in path:
        return False
    if re.search(r"/lib/python3\.\d+/", path):
        return False
    return not re.search(r"/(gevent|geventprobe|greenlet)/", path)


def _parse_one(block: list[str]) -> tuple[str, str, list[Frame]] | None:
    """(type, message, frames) of one traceback part: header, frames, exception line."""
    frames: list[Frame] = []
    exception: tuple[str, str] | None = None
    for i, line in enumerate(block):
        frame = _FRAME.match(line)
        if frame:
            source = None
            if i + 1 < len(block) and block[i + 1].startswith("    ") \
                    and not _FRAME.match(block[i + 1]):
                text = block[i + 1].strip()
                # 3.11 prints ^^^ markers under the source line: they are not source.
                source = text if text and set(text) - set("^~ ") else None
            frames.append(Frame(frame["path"], int(frame["line"]), frame["func"].strip(),
                                source))
            continue
        if line.startswith((" ", "\t")) or not line.strip() or line.startswith(_HEADER):
            continue
        match = _EXCEPTION.match(line.rstrip())
        if match:
            exception = (match["type"], (match["message"] or "").strip()[:_MESSAGE_LIMIT])
            break
    if exception is None:
        return None
    return exception[0], exception[1], frames


def tracebacks(lines: Iterable[str]) -> list[LoggedError]:
    """Every traceback in ``lines``, in the order logged, one ``LoggedError`` each.

    A chained traceback (``During handling of the above exception…``) is one error: the
    last exception printed, with the user's frame of the last part that has one.
    """
    out: list[LoggedError] = []
    pid: int | None = None
    parts: list[list[str]] = []
    current: list[str] | None = None

    def finish() -> None:
        nonlocal parts, current
        if current is not None:
            parts.append(current)
        parsed = [p for p in (_parse_one(part) for part in parts) if p is not None]
        parts, current = [], None
        if not parsed:
            return
        type_, message, frames = parsed[-1]
        user = next((f for _, _, fr in reversed(parsed) for f in reversed(fr)
                     if is_user_path(f.path)), None)
        out.append(LoggedError(type=type_, message=message, user_frame=user,
                               raised_at=frames[-1] if frames else None, count=1,
                               pids=(pid,) if pid is not None else ()))

    for raw in lines:
        line = raw.rstrip("\n")
        log = _LOG_LINE.match(line)
        if log:
            finish()
            pid = int(log["pid"])
            continue
        if line.startswith(_HEADER):
            if current is not None:
                # Another traceback: the next part of a chained one if a "During handling…"
                # line came after the last exception, else a new error.
                if any(line.startswith(_CHAIN) for line in current):
                    parts.append(current)
                else:
                    finish()
            current = [line]
            continue
        if current is not None:
            current.append(line)
    finish()
    return out


def _key(error: LoggedError) -> tuple:
    return (error.type, _VARIABLE.sub("#", error.message),
            error.user_frame.where() if error.user_frame else None)


def summarize(lines: Iterable[str]) -> list[LoggedError]:
    """The distinct errors in ``lines``, counted, most frequent first (ties: first logged).

    Errors that differ only in numbers (thread ids, timings) count as one; the first
    one's message is kept.
    """
    groups: dict[tuple, list[LoggedError]] = {}
    for error in tracebacks(lines):
        groups.setdefault(_key(error), []).append(error)
    out = []
    for seen in groups.values():
        pids = tuple(sorted({p for e in seen for p in e.pids}))
        first = seen[0]
        out.append(LoggedError(type=first.type, message=first.message,
                               user_frame=first.user_frame, raised_at=first.raised_at,
                               count=len(seen), pids=pids))
    order = {id(e): i for i, e in enumerate(out)}
    return sorted(out, key=lambda e: (-e.count, order[id(e)]))


def main_error(lines: Iterable[str]) -> LoggedError | None:
    """The error the workers logged most often (None when they logged no traceback)."""
    errors = summarize(lines)
    return errors[0] if errors else None

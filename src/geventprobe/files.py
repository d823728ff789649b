"""Output files: checked before a run, written so that nobody ever sees half of one.

- ``-`` means standard output, as for most tools;
- a symlink is written through: the file it points to gets the new content (the
  link stays a link), written beside that file and renamed over it;
- a device or FIFO (``/dev/stdout``, ``/dev/null``) is written in place: it cannot
  be renamed over, and must not be replaced by a regular file;
- a write that fails leaves nothing behind (no ``*.tmp``) and says why in one line;
- ``check_outputs`` refuses, before anything runs, a path that could not be written
  (a directory, a read-only or pseudo file system, a missing folder) and two outputs
  that name the same file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile

from geventprobe.errors import ProbeError

STDOUT = "-"
# Names of our own standard output: written as ``-`` (replacing the file a redirection
# made would lose whatever else goes to stdout).
_STDOUT_NAMES = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def is_stdout(path: str | os.PathLike | None) -> bool:
    """True when ``path`` means standard output (``-`` or ``/dev/stdout``)."""
    if path is None:
        return False
    path = os.fspath(path)
    return path == STDOUT or os.path.abspath(path) in _STDOUT_NAMES


def _fix(flag: str | None) -> str:
    return f"give {flag} another path" if flag else "choose another path"


def _named(path: str, flag: str | None) -> str:
    return f"{flag} {path}" if flag else str(path)


def _special(path: str) -> bool:
    """True for an existing file that is not a regular file or a directory (a device, a FIFO)."""
    try:
        mode = os.stat(path).st_mode  # through symlinks: /dev/stderr -> /proc/self/fd/2 -> ...
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def write_atomic(path: str | os.PathLike, data: str | bytes, flag: str | None = None) -> None:
    """Write ``data`` to ``path`` whole: ``-`` is stdout, a symlink is followed.

    Raises ProbeError (one line, nothing left behind) when it cannot be written.
    """
    path = os.fspath(path)
    if is_stdout(path):
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data)
        sys.stdout.flush()
        return
    target = os.path.realpath(path)
    mode, encoding = ("wb", None) if isinstance(data, bytes) else ("w", "utf-8")
    try:
        if _special(path):
            with open(path, mode, encoding=encoding) as f:
                f.write(data)
            return
        _replace(target, data, mode, encoding)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ProbeError(f"cannot write {_named(path, flag)} ({reason}): {_fix(flag)}") from exc


def _replace(target: str, data, mode: str, encoding: str | None) -> None:
    """Write beside ``target``, then rename over it; remove the temp file if anything fails."""
    folder, name = os.path.split(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder or ".")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            f.write(data)
        # mkstemp makes it 0600: keep an existing file's mode, else what open() would give.
        try:
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_writable(path: str | None, flag: str) -> None:
    """Refuse an output path that cannot be written, before spending a run on it."""
    if path is None or is_stdout(path):
        return
    target = os.path.realpath(path)
    if os.path.isdir(target):
        raise ProbeError(f"cannot write {flag} {path}: it is a directory: give {flag} a file "
                         "path")
    if _special(path):
        if not os.access(path, os.W_OK):
            raise ProbeError(f"cannot write {flag} {path} (permission denied): {_fix(flag)}")
        return
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise ProbeError(f"cannot write {flag} {path}: {folder} is not a directory: "
                         f"{_fix(flag)}")
    if os.path.exists(target) and not os.access(target, os.W_OK):
        raise ProbeError(f"cannot write {flag} {path} (permission denied): {_fix(flag)}")
    # Try it: access() says yes to root on /proc and on a read-only mount's files.
    try:
        fd, probe = tempfile.mkstemp(prefix=".geventprobe-check-", dir=folder)
    except OSError as exc:
        raise ProbeError(f"cannot write {flag} {path}: {folder} is not a writable directory "
                         f"({exc.strerror}): {_fix(flag)}") from exc
    os.close(fd)
    os.unlink(probe)


def check_outputs(outputs: list[tuple[str, str | None]]) -> None:
    """Check each ``(flag, path)`` output and refuse two that name the same file.

    Two outputs on one file would leave only the last one written; two on stdout
    would interleave.
    """
    seen: dict[str, str] = {}
    for flag, path in outputs:
        if path is None:
            continue
        check_writable(path, flag)
        key = STDOUT if is_stdout(path) else os.path.realpath(path)
        if key in seen:
            where = "standard output (-)" if key == STDOUT else f"the same file {path}"
            raise ProbeError(f"{seen[key]} and {flag} both write to {where}: give each its own "
                             "path")
        seen[key] = flag

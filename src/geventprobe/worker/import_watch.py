"""Who imported the PostgreSQL driver, in which process and phase, and was gevent patched then.

Used in ``--app`` mode, where the user's own config, hooks and app decide when the
driver is imported (docs/field-facts.md). ``app_conf.py`` installs this at the
very top of the gunicorn master, before the user's config runs: an import hook on
``sys.meta_path`` notes the first import of each watched module (the process, the
phase of gunicorn's start-up, whether gevent had patched ``select`` at that moment,
and the frames that imported it), and the wrapper's hooks take snapshots at each
phase boundary (which drivers are loaded, psycopg's wait function, psycopg2's wait
callback). Workers inherit all of it through ``fork``.

Like the rest of ``worker/``, this imports no driver and nothing else of geventprobe.
"""

from __future__ import annotations

import os
import sys
import time

WATCHED = ("psycopg", "psycopg2", "psycogreen", "gevent")

#: The phase of gunicorn's start-up we are in (set by app_conf.py's hooks).
phase = "before-config"
#: First import of each watched module: name -> what the process looked like then.
events: dict[str, dict] = {}
#: [{phase, pid, drivers, select_patched, psycopg_wait, psycopg2_wait_callback}, ...]
snapshots: list[dict] = []
#: The gunicorn master (the process that loaded the config).
master_pid = os.getpid()
#: Modules already loaded before gunicorn read its config (sitecustomize, a .pth file...).
preloaded: list[str] = []

_installed = False

# Where a phase happens, in words, for causes ("imported ... {where}").
PHASES = {
    "before-config": "before gunicorn read its config (sitecustomize, a .pth file, or whatever "
                     "launched gunicorn)",
    "config": "in the gunicorn master, while gunicorn read the config file",
    "master": "in the gunicorn master, before any worker was forked",
    "on_starting": "in the gunicorn master's on_starting hook",
    "when_ready": "in the gunicorn master's when_ready hook",
    "pre_fork": "in the gunicorn master's pre_fork hook",
    "post_fork": "in the worker's post_fork hook, before gevent patched the worker",
    "worker": "in the worker, while it loaded the app after gevent had patched it",
    "post_worker_init": "in the worker's post_worker_init hook",
    "uwsgi-master": "in the uWSGI master, while it loaded the app, before any worker was forked",
    "uwsgi-worker": "in the uWSGI worker, while it loaded the app (lazy-apps)",
    "uwsgi-after-load": "after uWSGI loaded the app (in a post-fork function, or on a request)",
    "probe": "by geventprobe in the worker after patching (the app had not imported a driver "
             "by then; it would have imported it the same way on its first request)",
}


def _patched(name: str) -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched(name))


def _short(path: str) -> str:
    """A path the user recognises: relative to the working dir, or from site-packages on."""
    if not path or path.startswith("<"):
        return path
    # geventprobe's worker package copied for another Python (``venvs.worker_shim``): its
    # temp dir's name changes every run and tells nothing.
    for marker in ("site-packages/", "dist-packages/", "/geventprobe-shim-"):
        if marker in path:
            rest = path.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker.startswith("/") else rest
    if "/lib/python3" in path:  # the standard library: python3.11/importlib/__init__.py
        return "python3" + path.split("/lib/python3", 1)[1]
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("../..") else rel


def _is_library(path: str) -> bool:
    # A console script in a bin/ directory (pyuwsgi's ``bin/uwsgi``) is a package's entry
    # point, not the user's code.
    return any(m in path for m in ("site-packages/", "dist-packages/", "/lib/python3")) or \
        os.path.basename(os.path.dirname(path)) == "bin"


def _importers(limit: int = 6) -> list[tuple[str, bool]]:
    """(``file:line``, is a library) of the importing frames, innermost first, no importlib."""
    frames = []
    frame = sys._getframe(2)
    here = __file__.rstrip("c")
    while frame is not None and len(frames) < limit:
        filename = frame.f_code.co_filename
        if not filename.startswith("<frozen importlib") and filename.rstrip("c") != here:
            frames.append((f"{_short(filename)}:{frame.f_lineno}", _is_library(filename)))
        frame = frame.f_back
    return frames


def _blame(frames: list[tuple[str, bool]]) -> str | None:
    """Who imported it: the importing line, and the user's line that led there if another."""
    if not frames:
        return None
    inner = frames[0][0]
    user = next((f for f, lib in frames if not lib and not f.startswith("geventprobe/")), None)
    if user is None or user == inner:
        return inner
    return f"{inner} (from {user})" if frames[0][1] else user


class _Finder:
    """A meta-path finder that finds nothing: it only notes the first import of a watched module."""

    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in events and name not in sys.modules:
            frames = _importers()
            events[name] = {
                "module": name,
                "pid": os.getpid(),
                "phase": phase,
                "time": time.time(),
                "select_patched": _patched("select"),
                "socket_patched": _patched("socket"),
                "frames": [f for f, _ in frames],
                "by": _blame(frames),
            }
        return None

    def find_module(self, name, path=None):  # pragma: no cover - Python < 3.4 protocol
        return None


def install() -> None:
    """Start watching (once per process tree): call before the user's config runs."""
    global _installed
    if _installed:
        return
    _installed = True
    preloaded.extend(m for m in WATCHED if m in sys.modules)
    sys.meta_path.insert(0, _Finder())
    snapshot("before-config")


def set_phase(name: str) -> None:
    """Enter a phase of gunicorn's start-up."""
    global phase
    phase = name


def _state() -> dict:
    state: dict = {
        "drivers": [m for m in ("psycopg", "psycopg2") if loaded(m)],
        "select_patched": _patched("select"),
        "psycopg_wait": None,
        "psycopg2_wait_callback": None,
    }
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None:
        state["psycopg_wait"] = getattr(getattr(waiting, "wait", None), "__name__", None)
    ext = sys.modules.get("psycopg2.extensions")
    if ext is not None:
        cb = ext.get_wait_callback()
        if cb is not None:
            state["psycopg2_wait_callback"] = (getattr(cb, "__module__", "") + "."
                                               + getattr(cb, "__qualname__", repr(cb)))
    return state


def snapshot(name: str) -> None:
    """Note what the process looks like at the end of phase ``name``."""
    snapshots.append(dict(_state(), phase=name, pid=os.getpid()))


def where(event: dict, preload: bool) -> str:
    """In words: where and by whom a module was imported."""
    text = PHASES.get(event.get("phase", ""), event.get("phase", "somewhere"))
    if event.get("phase") == "master" and preload:
        text = "in the gunicorn master, while it loaded the app (--preload / preload_app = True)"
    if event.get("by"):
        text += f", by {event['by']}"
    return text


def loaded(name: str) -> bool:
    """True when module ``name`` has been imported. ``sys.modules[name] = None`` is how an
    app hides a driver it must not use (Django settings that keep psycopg 3 out do): that
    entry means "not there", not "imported"."""
    return sys.modules.get(name) is not None


def driver_module():
    """The driver this worker's app uses: psycopg, else psycopg2, else one we import now.

    Returns (module or None, who imported it, error text or None).
    """
    for name in ("psycopg", "psycopg2"):
        if loaded(name):
            if name == "psycopg2":
                import psycopg2.extensions
            return sys.modules[name], "app", None
    set_phase("probe")
    errors = []
    for name in ("psycopg", "psycopg2"):
        try:
            module = __import__(name)
            if name == "psycopg2":
                import psycopg2.extensions  # noqa: F401
            return module, "geventprobe", None
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return None, None, "no PostgreSQL driver imports in the worker (" + "; ".join(errors) + ")"


def facts(preload: bool) -> dict:
    """What the probe reports about imports and patching, in the shape core/causes.py reads."""
    driver = next((m for m in ("psycopg", "psycopg2") if loaded(m)), None)
    event = events.get(driver or "", {})
    if driver and driver in preloaded:
        event = {"module": driver, "pid": master_pid, "phase": "before-config",
                 "select_patched": False, "by": None}
    out = {
        "driver_import": {k: event.get(k) for k in
                          ("module", "pid", "phase", "select_patched", "socket_patched", "by",
                           "frames")} if event else {},
        "driver_imported_in_master": bool(event) and event.get("pid") != os.getpid(),
        "imports": {name: dict(e, where=where(e, preload)) for name, e in events.items()},
        "snapshots": list(snapshots),
        "preloaded_modules": list(preloaded),
    }
    if event:
        out["driver_import"]["where"] = where(event, preload)
    return out


def error_record(exc: BaseException, where: str, server: str):
    """The app's own error as an ``AppError``, with the innermost frame of it that is neither
    the server's (``server``: a path fragment, ``/gunicorn/``) nor geventprobe's."""
    import traceback

    from geventprobe.worker import record

    origin = None
    ours = os.path.dirname(os.path.abspath(__file__))
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if fr.filename.startswith(ours) or server in fr.filename:
            continue
        if not fr.filename.startswith("<frozen"):
            origin = f"{_short(fr.filename)}, line {fr.lineno}"
        break
    lines = str(exc).strip().splitlines()
    message = f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__
    return record.AppError(pid=os.getpid(), where=where, error=message, origin=origin)

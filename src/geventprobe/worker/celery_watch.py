"""Inside a celery worker under test, from its first line: who imported what, and when.

``celery_sitecustomize.py`` (on the worker's ``PYTHONPATH`` as ``sitecustomize``) calls
``install()`` while Python starts, before the worker's own code runs, whatever starts it
(``celery -A APP worker``, ``python worker.py`` calling ``app.worker_main``, a shell
script). It puts one finder at the front of ``sys.meta_path`` that finds nothing itself:

- it notes the first import of each watched module (the PostgreSQL drivers, psycogreen,
  gevent, celery, Django): the phase of the worker's start-up, whether gevent had patched
  ``select`` then, and the frames that imported it (``import_watch``'s helpers);
- two modules get a hook that runs once they have loaded: ``gevent.events`` (we subscribe
  to gevent's own patch events: who called ``patch_all``, in which phase) and
  ``celery.signals`` (``celery_probe.connect()`` connects our signal receivers, which set
  the phases below and start the probe once the worker is ready).

It imports nothing that the worker would not import itself, and nothing before the
worker asks for it (docs/celery.md measures that the import order stays the same).
Only ``os``, ``sys`` and ``time`` (loaded by every interpreter at start) at module level.
"""

from __future__ import annotations

import os
import sys
import time

from geventprobe.worker import import_watch as _iw

WATCHED = ("psycopg", "psycopg2", "psycogreen", "gevent", "celery", "django")

#: The phase of the worker's start-up we are in (``set_phase``).
phase = "startup"
#: First import of each watched module: name -> what the process looked like then.
events: dict[str, dict] = {}
#: gevent's patching: ``patch_all`` and the first patch of ``select``, as it happened.
patches: list[dict] = []
#: Errors of our own hooks (a hook must never break the worker).
errors: list[str] = []
#: Watched modules already loaded when we were installed.
preloaded: list[str] = []

# Where a phase happens, in words, for causes ("imported ... {where}").
PHASES = {
    "startup": "before celery was imported, by the program that starts the worker (the top "
               "of `python worker.py`, a sitecustomize or .pth file)",
    "app": "while celery loaded the app (the app module, its config, Django's settings)",
    "worker_init": "while the worker started (its worker_init and celeryd_after_setup hooks, "
                   "the pool, the consumer)",
    "ready": "in a task or later, after the worker was ready",
    "probe": "by geventprobe's probe once the worker was ready (the app had not imported a "
             "driver by then; it would have imported it in its first task)",
}

_installed = False


#: Phases said to the parent in ``phase-<pid>.txt``: how far a worker that never got ready
#: came (none: celery was never imported; ``app``: celery is loading the app, still
#: importing; ``worker_init``: the worker itself was starting).
SAID_PHASES = ("app", "worker_init")
_run_dir: str | None = None


def set_phase(name: str) -> None:
    """Enter a phase of the worker's start-up."""
    global phase
    phase = name
    if name in SAID_PHASES and _run_dir is not None:
        try:
            path = os.path.join(_run_dir, f"phase-{os.getpid()}.txt")
            with open(path + ".tmp", "w") as f:
                f.write(name)
            os.replace(path + ".tmp", path)
        except OSError as exc:
            _note_error("the phase file", exc)


def where(event: dict) -> str:
    """In words: where and by whom a module was imported (or gevent patched)."""
    text = PHASES.get(event.get("phase", ""), event.get("phase", "somewhere"))
    if event.get("by"):
        text += f", by {event['by']}"
    return text


def _note_error(what: str, exc: BaseException) -> None:
    errors.append(f"{what}: {type(exc).__name__}: {exc}")


class _RunAfter:
    """A loader that runs the real one, then ``callback(module)``: a post-import hook."""

    def __init__(self, loader, callback):
        self._loader = loader
        self._callback = callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._callback(module)
        except Exception as exc:  # our hook must never break the worker's import
            _note_error(f"hook after {module.__name__}", exc)

    def __getattr__(self, name):  # get_source, get_resource_reader, ...: the real loader's
        return getattr(self._loader, name)


def _after_gevent_events(module) -> None:
    """gevent.events is loaded (gevent imports zope.event with it): hear its patch events."""
    subscribers = sys.modules["zope.event"].subscribers
    subscribers.append(_on_gevent_event)


def _on_gevent_event(event) -> None:
    kind = type(event).__name__
    if kind == "GeventDidPatchAllEvent":
        what = "patch_all"
    elif kind == "GeventDidPatchModuleEvent" and getattr(event, "name", None) == "select":
        what = "select"
    else:
        return
    frames = [f for f in _iw._importers(limit=16)
              if not f[0].startswith(("gevent/", "zope/"))]
    patches.append({"what": what, "phase": phase, "pid": os.getpid(), "at": time.monotonic(),
                    "frames": [f for f, _ in frames], "by": _blame(frames)})


def _after_celery_signals(module) -> None:
    from geventprobe.worker import celery_probe

    celery_probe.connect()


_AFTER = {"gevent.events": _after_gevent_events, "celery.signals": _after_celery_signals}


def _ours(frame: str) -> bool:
    """A frame of the interpreter (``<frozen runpy>`` of ``python -m celery``), of importlib,
    or of geventprobe itself (installed, or the copy in the worker's boot dir)."""
    return (frame.startswith(("<", "geventprobe/")) or "/importlib/" in frame
            or "/boot/geventprobe/" in frame)


def _blame(frames: list[tuple[str, bool]]) -> str | None:
    """``import_watch._blame`` without the interpreter's, importlib's and our own frames:
    the innermost line, and the user's line that led there (None when only ours did)."""
    return _iw._blame([f for f in frames if not _ours(f[0])])


class _Finder:
    """A meta-path finder that notes watched imports and hooks two modules; finds nothing."""

    def __init__(self):
        self._busy = False

    def find_spec(self, name, path=None, target=None):
        if name in WATCHED and name not in events and name not in sys.modules:
            if name == "celery" and phase == "startup":
                set_phase("app")
            frames = _iw._importers()
            events[name] = {
                "module": name, "pid": os.getpid(), "phase": phase,
                "at": time.monotonic(),
                "select_patched": _iw._patched("select"),
                "socket_patched": _iw._patched("socket"),
                "frames": [f for f, _ in frames], "by": _blame(frames),
            }
        if name in _AFTER and not self._busy:
            return self._hooked(name, path, target)
        return None

    def _hooked(self, name, path, target):
        """The spec the other finders give, with a loader that runs our hook afterwards."""
        self._busy = True
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    if spec.loader is not None:
                        spec.loader = _RunAfter(spec.loader, _AFTER[name])
                    return spec
            return None
        finally:
            self._busy = False


#: faulthandler's file: open for the life of the process.
_stack_file = None
# A real-time signal nobody else uses (celery takes SIGUSR1 for its own stack dump).
STACK_SIGNAL_OFFSET = 6
#: record.RECORD_VERSION (record.py imports json and dataclasses: not here, while Python
#: starts; tests/test_celery_boot.py holds the two equal).
BOOT_VERSION = 8


def stack_signal() -> int:
    """The signal that makes this process dump every thread's stack (``_signal`` is loaded
    by every interpreter at start; ``signal`` is not)."""
    import _signal

    return _signal.SIGRTMIN + STACK_SIGNAL_OFFSET


def install(run_dir: str) -> None:
    """Start watching (once per process): call while Python starts.

    Also takes ``stack_signal()``: faulthandler dumps every thread's stack to
    ``stacks-<pid>.txt`` from C, so it answers even while the hub is held in C, or the
    app's import hangs; then says so in ``boot-<pid>.json``. faulthandler is a built-in
    module with no imports of its own.
    """
    global _installed, _stack_file, _run_dir
    if _installed:
        return
    _installed = True
    _run_dir = run_dir
    preloaded.extend(m for m in WATCHED if m in sys.modules)
    sys.meta_path.insert(0, _Finder())
    if "celery.signals" in sys.modules:  # loaded before us (a .pth file?): connect now
        _after_celery_signals(sys.modules["celery.signals"])
    import faulthandler

    pid = os.getpid()
    _stack_file = open(os.path.join(run_dir, f"stacks-{pid}.txt"), "a")  # noqa: SIM115
    faulthandler.register(stack_signal(), file=_stack_file, all_threads=True, chain=False)
    # record.CeleryBoot, written without json (not imported yet): ints and a float only.
    text = (f'{{"version": {BOOT_VERSION}, "pid": {pid}, '
            f'"stack_signal": {stack_signal()}, "at": {time.monotonic()!r}}}')
    path = os.path.join(run_dir, f"boot-{pid}.json")
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def facts() -> dict:
    """Who imported the driver and when, and how gevent was patched, for the ready record."""
    # sys.modules[name] = None is how an app hides a driver: not imported, then.
    driver = next((m for m in ("psycopg", "psycopg2") if _iw.loaded(m)), None)
    event = dict(events.get(driver or "", {}))
    if driver and driver in preloaded:
        event = {"module": driver, "pid": os.getpid(), "phase": "startup",
                 "select_patched": False, "by": None}
    if event:
        event["where"] = where(event)
    return {
        "driver_import": event,
        "driver_imported_in_master": False,  # one process: a gevent pool forks no children
        "imports": {name: dict(e, where=where(e)) for name, e in events.items()},
        "patches": [dict(p, where=where(p)) for p in patches],
        "preloaded_modules": list(preloaded),
        "hook_errors": list(errors),
    }

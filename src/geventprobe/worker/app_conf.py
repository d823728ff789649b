"""gunicorn config for ``geventprobe run --app``: the user's own config, then the probe.

gunicorn loads this module (``--config python:geventprobe.worker.app_conf``) in
the master. It runs the user's config exactly as gunicorn would have
(``--gunicorn-config``, else ``-c``/``--config`` in ``GUNICORN_CMD_ARGS``, else
``./gunicorn.conf.py``), copies every gunicorn setting it defines into this module,
and chains the user's hooks with ours: each of our hooks marks the phase of
gunicorn's start-up for ``import_watch``, calls the user's hook, and notes what
changed. The probe starts in ``post_worker_init``, after the user's own
``post_worker_init``, once the worker has patched and loaded the app (docs/field-facts.md).

gunicorn applies every module-level name of a config module that is one of its
settings, so everything private here starts with an underscore.
"""

from __future__ import annotations

from geventprobe.worker import import_watch as _watch

# First, before the user's config can import anything.
_watch.install()

import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

from geventprobe.worker import record as _record  # noqa: E402

# The hooks we chain, with the arity gunicorn requires of each.
_HOOKS = {"on_starting": 1, "when_ready": 1, "pre_fork": 2, "post_fork": 2, "post_worker_init": 1,
          "worker_abort": 1, "child_exit": 2}


def _locate() -> str | None:
    """The config file gunicorn would have read for the user, or None."""
    explicit = _os.environ.get("GEVENTPROBE_USER_CONFIG")
    if explicit:
        return explicit
    env_args = _os.environ.get("GUNICORN_CMD_ARGS")
    if env_args:
        from gunicorn.config import Config

        cfg = Config()
        try:
            parsed = cfg.parser().parse_args(cfg.get_cmd_args_from_env())
        except SystemExit:  # a bad GUNICORN_CMD_ARGS: gunicorn itself says what is wrong
            parsed = None
        if parsed is not None and parsed.config:
            return parsed.config
    from gunicorn.config import get_default_config_file

    return get_default_config_file()


def _load(location: str) -> dict:
    """Run the user's config the way gunicorn does (a file as module ``__config__``)."""
    import importlib
    import importlib.machinery
    import importlib.util

    _watch.set_phase("config")
    try:
        if location.startswith("python:"):
            return dict(vars(importlib.import_module(location[len("python:"):])))
        filename = location[len("file:"):] if location.startswith("file:") else location
        if not _os.path.exists(filename):
            raise RuntimeError(f"{filename!r} doesn't exist")
        loader = None
        if _os.path.splitext(filename)[1] not in (".py", ".pyc"):
            loader = importlib.machinery.SourceFileLoader("__config__", filename)
        spec = importlib.util.spec_from_file_location("__config__", filename, loader=loader)
        mod = importlib.util.module_from_spec(spec)
        _sys.modules["__config__"] = mod
        spec.loader.exec_module(mod)
        return dict(vars(mod))
    finally:
        _watch.snapshot("config")
        _watch.set_phase("master")


def _settings() -> set:
    from gunicorn.config import KNOWN_SETTINGS

    return {s.name for s in KNOWN_SETTINGS}


def _resolve(hook, arity: int):
    """The user's hook as a callable (gunicorn accepts "module.function" strings too)."""
    from gunicorn.config import validate_callable

    return validate_callable(arity)(hook)


def _write(name: str, rec) -> None:
    run_dir = _os.environ.get("GEVENTPROBE_RUN_DIR")
    if run_dir:
        _record.write(_os.path.join(run_dir, name), rec)


def _error_record(exc: BaseException, where: str) -> _record.AppError:
    return _watch.error_record(exc, where, "/gunicorn/")


USER_CONFIG = _locate()
_user = _load(USER_CONFIG) if USER_CONFIG else {}
_known = _settings()
globals().update({k: v for k, v in _user.items() if k in _known and k not in _HOOKS})

def _validated_hooks(user: dict) -> dict:
    # gunicorn validates hooks when it reads the config; we hold theirs, so we do it for them.
    hooks = {}
    for name, arity in _HOOKS.items():
        if user.get(name) is None:
            continue
        try:
            hooks[name] = _resolve(user[name], arity)
        except TypeError as exc:
            raise TypeError(f"Invalid value for {name}: {exc}") from None
    return hooks


_user_hooks = _validated_hooks(_user)
# A daemon would leave the process group we stop and reap: never detach.
daemon = False
# Nor touch the user's $HOME/.gunicorn/gunicorn.ctl (gunicorn 27's control socket).
control_socket_disable = True


def _call(name: str, *args) -> None:
    hook = _user_hooks.get(name)
    _watch.set_phase(name)
    try:
        if hook is not None:
            hook(*args)
    finally:
        _watch.snapshot(name)


def on_starting(server):
    """Master, after --preload loaded the app: the user's hook, noted."""
    _watch.snapshot("master")
    try:
        _call("on_starting", server)
    finally:
        _watch.set_phase("master")


def when_ready(server):
    """Master, listening: the user's hook, noted."""
    try:
        _call("when_ready", server)
    finally:
        _watch.set_phase("master")


def pre_fork(server, worker):
    """Master, before each fork: the user's hook, noted."""
    try:
        _call("pre_fork", server, worker)
    finally:
        _watch.set_phase("master")


def post_fork(server, worker):
    """Worker, not yet patched: the user's hook, noted; then catch an app that fails to load."""
    try:
        _call("post_fork", server, worker)
    finally:
        _watch.set_phase("worker")
    load = worker.load_wsgi

    def load_wsgi():
        # An import that outlasts the boot timeout is named as such, not as a hung worker.
        import time

        _write(f"importing-{_os.getpid()}.json", _record.Importing(pid=_os.getpid(),
                                                                  t=time.monotonic()))
        # gunicorn only logs a failed app import; the parent wants it on its own channel.
        try:
            load()
        except BaseException as exc:
            _write(f"app-error-{_os.getpid()}.json",
                   _error_record(exc, "while the gunicorn worker imported the app"))
            raise

    worker.load_wsgi = load_wsgi


def post_worker_init(worker):
    """Worker, patched, app loaded: the user's hook, then the probe."""
    _watch.snapshot("worker")
    _call("post_worker_init", worker)
    from geventprobe.worker import probe

    probe.start(worker, probe.USERS_APP)


def worker_abort(worker):
    """Worker, killed by the master for WORKER TIMEOUT: the user's hook, then the route phase's
    figures so far (``probe_route.on_abort``: who held the hub)."""
    try:
        _call("worker_abort", worker)
    finally:
        from geventprobe.worker import probe_route

        probe_route.on_abort()


def child_exit(server, worker):
    """Master, a worker reaped: the user's hook; then, once the parent said stop (``stop`` in
    the run dir: every figure is in, it kills the workers next), no worker is started in its
    place. gunicorn's own quit (SIGINT, sent once they are reaped) then has none left to wait
    for: its stop loop sleeps 0.1 s at a time while any is."""
    hook = _user_hooks.get("child_exit")
    try:
        if hook is not None:
            hook(server, worker)
    finally:  # even if the user's hook raised: a replacement would boot the app again
        run_dir = _os.environ.get("GEVENTPROBE_RUN_DIR")
        if run_dir and _os.path.exists(_os.path.join(run_dir, "stop")):
            server.num_workers = 0


def _master_excepthook(exc_type, exc, tb):
    # With --preload the app is imported in the master: an error there ends gunicorn.
    # HaltServer is not the app's error but the master giving up after a worker failed to
    # boot: that worker wrote the app's own error already.
    if _os.getpid() == _watch.master_pid and exc is not None and \
            exc_type.__name__ != "HaltServer":
        _write(f"app-error-{_os.getpid()}.json",
               _error_record(exc, "while the gunicorn master loaded the app (--preload)"))
    _previous_excepthook(exc_type, exc, tb)


_previous_excepthook = _sys.excepthook
_sys.excepthook = _master_excepthook

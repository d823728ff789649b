"""The user's uWSGI configuration, as uWSGI itself resolves it, and the run's own from it.

``resolve`` runs the user's command (``--uwsgi-cmd``, or the one ``--uwsgi APP`` stands for)
with ``--show-config --hook-pre-jail exit:``: uWSGI reads every ini, flag and magic variable,
prints the configuration it would run as one ini, and exits before it binds a socket or
loads the app (measured with pyuwsgi 2.0.30: the pre-jail hook runs after the configuration
is printed and before any bind). ``for_probe`` then keeps every option of theirs, in their
order, but the few it must change, and says why for each (``Overrides``): a free loopback
port instead of their sockets (never their public bind), no daemon, pid file or stats
server (nothing written to or opened on their system), no worker recycling mid-probe, a
master (the probe runs in forked workers), and our app module in place of theirs, which
loads theirs at the same moment (``worker/uwsgi_app.py``) and ``import`` of the probe's
hook before theirs (``worker/uwsgi_hook.py``).
"""

from __future__ import annotations

import os
import re
import signal
from dataclasses import dataclass, field

from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children

APP_MODULE = "geventprobe.worker.uwsgi_app:application"
HOOK_MODULE = "geventprobe.worker.uwsgi_hook"
_EXIT_HOOK = "exit:"

# Their options that open something on the network or on their system: dropped, each said.
_SOCKETS = {"socket", "uwsgi-socket", "http-socket", "https-socket", "http", "https",
            "http-to", "fastcgi-socket", "scgi-socket", "raw-socket", "shared-socket",
            "suwsgi-socket", "ssl-socket", "zerg", "zerg-server", "protocol",
            "http-socket-modifier1", "socket-protocol"}
_THEIR_SYSTEM = {"daemonize", "daemonize2", "pidfile", "pidfile2", "safe-pidfile",
                 "safe-pidfile2", "stats", "stats-server", "master-fifo", "logto", "logto2",
                 "touch-reload", "touch-chain-reload", "touch-workers-reload", "fs-reload",
                 "py-autoreload", "python-autoreload", "uid", "gid"}
_RECYCLING = {"max-requests", "max-requests-delta", "reload-on-rss", "reload-on-as",
              "max-worker-lifetime", "evil-reload-on-rss", "evil-reload-on-as", "cheaper",
              "cheaper-initial", "cheaper-algo", "cheaper-step", "cheaper-overload"}
_CONFIG_FILES = {"ini", "xml", "yaml", "yml", "json", "js", "inherit", "include",
                 "show-config"}
_APP = {"module", "wsgi", "wsgi-file", "file", "callable", "w"}
_DROPPED = _SOCKETS | _THEIR_SYSTEM | _RECYCLING
"""Theirs, replaced or left out, each said in the report."""
_REPLACED = _DROPPED | _CONFIG_FILES | _APP
"""Theirs that the probe's ini does not carry over."""
_REFUSED = {"mount": "mounts several apps", "emperor": "runs an Emperor of other instances",
            "paste": "loads a Paste app", "pecan": "loads a Pecan app",
            "eval": "evaluates its app from a string", "pyrun": "runs a script, not a server"}


@dataclass
class Resolved:
    """The configuration uWSGI would run, option by option, in its order."""

    options: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        """The last value of ``name`` (None: not set)."""
        values = [v for k, v in self.options if k == name]
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        value = self.get(name)
        return value is not None and value.lower() not in ("false", "0", "no", "off")


@dataclass
class ForProbe:
    """What geventprobe runs: their options with its few changes, and the app it wraps."""

    ini: str
    """The ini file's text (written in the run dir, never on a command line)."""
    app: str
    """``module:callable`` or ``file:PATH:callable``: theirs, for ``worker/uwsgi_app.py``."""
    shown_app: str
    """Their app as they gave it (``module = myapp:app``)."""
    processes: int
    gevent: int
    harakiri: float
    """Their harakiri (uWSGI's worker timeout), s; 0: none."""
    overrides: list[str] = field(default_factory=list)
    """What geventprobe changed, and why, in uWSGI's words."""
    options: dict = field(default_factory=dict)
    """The options the report shows (the patch flags, lazy-apps...)."""

    @property
    def lazy_apps(self) -> bool:
        """``lazy-apps``: each worker loads the app, after the fork."""
        return bool(self.options.get("lazy_apps"))

    def record(self) -> dict:
        """What a run records of it (``RunResult.app``): what decides the import order and
        what geventprobe changed."""
        return {"processes": self.processes, "gevent": self.gevent,
                "patch": self.options["patch"], "lazy_apps": self.lazy_apps,
                "enable_threads": self.options["enable_threads"],
                "imports": self.options["imports"], "overrides": self.overrides}


def resolve(argv: list[str], cwd: str, env: dict[str, str], timeout: float = 30.0
            ) -> Resolved:
    """Their configuration as uWSGI prints it (``--show-config``), without starting it."""
    tmp = children.make_temp_dir("geventprobe-uwsgi-config-")
    try:
        log = os.path.join(tmp, "log")
        try:
            proc = children.spawn([*argv, "--show-config", "--hook-pre-jail", _EXIT_HOOK],
                                  env=env, cwd=cwd, log_path=log)
        except FileNotFoundError:
            raise ProbeError(f"cannot start {argv[0]!r}: no such program: install uWSGI "
                             "(pip install \"geventprobe[uwsgi]\", or pyuwsgi) or give its "
                             "path in --uwsgi-cmd") from None
        except PermissionError:
            raise ProbeError(f"cannot start {argv[0]!r}: it is not executable: give the "
                             "uWSGI program in --uwsgi-cmd, or chmod +x it") from None
        with children.running(proc, signal.SIGKILL, timeout=1):
            code = children.wait(proc, timeout)
        with open(log, errors="replace") as f:
            text = f.read()
    finally:
        children.remove_temp_dir(tmp)
    if code is None:
        raise ProbeError(f"reading your uWSGI configuration did not finish within {timeout:.0f} "
                         "s (does an ini or a magic variable wait for something?)")
    body = re.search(r";uWSGI instance configuration\n\[uwsgi\]\n(.*?);end of configuration",
                     text, re.S)
    if body is None:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        why = redact(lines[-1]) if lines else f"exit code {code}"
        raise ProbeError(f"uWSGI refused your configuration: {why}: check it with: "
                         f"{os.path.basename(argv[0])} ... --show-config")
    options = []
    for line in body.group(1).splitlines():
        key, sep, value = line.partition(" = ")
        if sep:
            options.append((key.strip(), value))
    # Ours, the last two: the printing and the exit hook.
    if options and options[-1] == ("hook-pre-jail", _EXIT_HOOK):
        options.pop()
    return Resolved([(k, v) for k, v in options if k != "show-config"])


def for_probe(found: Resolved, *, cwd: str, workers: int | None, greenlets: int,
              app: tuple[str, str] | None = None) -> ForProbe:
    """Their options with geventprobe's changes, each said (``ForProbe.overrides``); ``cwd``:
    where uWSGI starts (their ``chdir`` applies on top); ``app``: (the app for
    ``worker/uwsgi_app.py``, as shown) in place of theirs (the built-in harness)."""
    for key, why in _REFUSED.items():
        if found.get(key) is not None:
            raise ProbeError(f"your uWSGI configuration {why} ({key} = {redact(found.get(key))}): "
                             "geventprobe probes one WSGI app: give it as module = ... or "
                             "wsgi-file = ... (--uwsgi-cmd), or --uwsgi MODULE:CALLABLE")
    app, shown = app or _their_app(found, os.path.join(cwd, found.get("chdir") or ""))
    overrides = ["http-socket 127.0.0.1:0: a free loopback port, for the probe's requests"]
    kept: list[tuple[str, str]] = [("import", HOOK_MODULE)]
    dropped: dict[str, str] = {}
    for key, value in found.options:
        if key in _REPLACED:
            if key in _DROPPED:
                dropped.setdefault(key, value)
            continue
        if key in ("processes", "workers") and workers is not None:
            continue
        kept.append((key, value))
    for key, value in dropped.items():
        if key in _SOCKETS:
            overrides.append(f"no {key} (yours: {redact(value)}): geventprobe listens on "
                             "loopback only")
        elif key in _RECYCLING:
            overrides.append(f"no {key} (yours: {value}): a worker recycled or a worker count "
                             "that changes mid-probe would lose its report")
        else:
            overrides.append(f"no {key} (yours: {redact(value)}): geventprobe owns the "
                             "processes it starts and writes nothing outside its run dir")
    if not found.flag("master"):
        kept.append(("master", "true"))
        overrides.append("master on (yours: off): the probe runs in forked workers")
    gevent = found.get("gevent")
    if not gevent:
        kept.append(("gevent", str(greenlets)))
        overrides.append(f"gevent {greenlets} (yours: none): the probe measures uWSGI's gevent "
                         "loop")
        gevent = str(greenlets)
    processes = workers if workers is not None else int(found.get("processes")
                                                        or found.get("workers") or 1)
    if workers is not None:
        kept.append(("processes", str(workers)))
        overrides.append(f"processes {workers} (--workers)")
    kept += [("http-socket", "127.0.0.1:0"), ("module", APP_MODULE), ("need-app", "true")]
    overrides.append("need-app on: an app that fails to load stops uWSGI, and the check says "
                     "why")
    harakiri = float(found.get("harakiri") or 0)
    options = {"patch": ("--gevent-early-monkey-patch" if found.flag("gevent-early-monkey-patch")
                         else "--gevent-monkey-patch" if found.flag("gevent-monkey-patch")
                         else "none"),
               "lazy_apps": found.flag("lazy-apps") or found.flag("lazy"),
               "enable_threads": found.flag("enable-threads"),
               "harakiri": harakiri or None,
               "imports": [v for k, v in found.options if k in ("import", "pyimport",
                                                                "python-import")]}
    ini = "[uwsgi]\n" + "".join(f"{k} = {v}\n" for k, v in kept)
    return ForProbe(ini=ini, app=app, shown_app=shown, processes=processes,
                    gevent=int(gevent), harakiri=harakiri,
                    overrides=overrides, options=options)


def loaded_app(found: Resolved) -> str | None:
    """The app their configuration loads, as they gave it (None: it loads none)."""
    for key in ("module", "wsgi", "w", "wsgi-file", "file"):
        if found.get(key):
            return f"{key} = {found.get(key)}"
    return None


def _their_app(found: Resolved, cwd: str) -> tuple[str, str]:
    """(their app for ``worker/uwsgi_app.py``, as they gave it)."""
    callable_ = found.get("callable") or "application"
    module = found.get("module") or found.get("wsgi") or found.get("w")
    path = found.get("wsgi-file") or found.get("file")
    if module and path:
        raise ProbeError(f"your uWSGI configuration loads two apps (module = {module} and "
                         f"wsgi-file = {path}): geventprobe probes one: keep one")
    if module:
        name, _, attr = module.partition(":")
        return f"{name}:{attr or callable_}", f"module = {module}"
    if path:
        return (f"file:{os.path.normpath(os.path.join(cwd, path))}:{callable_}",
                f"wsgi-file = {path}")
    raise ProbeError("your uWSGI configuration loads no app (no module = or wsgi-file =): "
                     "give it one, e.g. --uwsgi-cmd \"uwsgi --ini uwsgi.ini\" with module = "
                     "myproject.wsgi:application in the ini, or --uwsgi MODULE:CALLABLE")

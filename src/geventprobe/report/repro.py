"""The reproduction a report attaches: the harness, and what to run it on.

What a maintainer asks for first is a way to see the fault without the tool that found
it. The project checks every example against the harness (``harness/harness.py``: plain
gunicorn, celery or uWSGI, no geventprobe, shipped in the wheel as ``geventprobe.harness``),
so the report hands over that same program. For each subject that did not get OK:

- a built-in build: a one-file app (``app.py``) that rebuilds the setup its workers
  reported (the driver imported at the top, under ``--preload`` when the gunicorn master
  imported it; ``PSYCOPG_IMPL``, ``PSYCOPG_WAIT_FUNC``; psycogreen's callback; the
  busy-wait control's spinning wait), one route that runs ``SELECT pg_sleep(w)`` on a
  connection of its own, and the harness's command: G of them at once under plain
  ``gunicorn -k gevent -w 1``;
- your app: the harness on your app's directory, with your gunicorn config and the route
  that showed the class;
- your celery worker: the harness on its directory, started as geventprobe started it,
  with the task that showed the class.

Then the harness itself, once. The DSN never appears: the harness starts a throwaway
PostgreSQL, or reads ``DATABASE_URL``.
"""

from __future__ import annotations

import importlib.resources
import re
import shlex
import textwrap
from dataclasses import dataclass

from geventprobe import kinds
from geventprobe.record import BuildResult, RunResult, Verdict
from geventprobe.report.cells import label

ROUTE = "/wait"
HARNESS = "harness.py"
_NOT_OK = (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.SERIALIZED, Verdict.FAILING)

# The harness's busy-wait control (worker/controls.py) as an app sets it up.
_SPINNING_WAIT = '''

def spinning_wait(gen, fileno, interval=None, timeout=None):
    """The workers' wait function: polls with a zero timeout and yields, never sleeps."""
    import select

    from gevent import monkey, sleep
    from psycopg import waiting

    poll = monkey.get_original("select", "poll")()
    try:
        state = next(gen)
        poll.register(fileno, waiting._poll_evmasks[state])
        while True:
            events = poll.poll(0)
            if not events:
                sleep(0)
                if interval is not None:
                    gen.send(getattr(waiting, "READY_NONE", 0))
                continue
            ev = events[0][1]
            ready = ((waiting.READY_R if ev & select.POLLIN else 0)
                     | (waiting.READY_W if ev & select.POLLOUT else 0))
            state = gen.send(ready)
            poll.modify(fileno, waiting._poll_evmasks[state])
    except StopIteration as stop:
        return stop.value


psycopg.waiting.wait = spinning_wait
'''

_APP = '''
import os

{imports}

W = {w!r}  # seconds each request waits on the server, as the probe's greenlets did


def application(environ, start_response):
    """``{route}`` waits W on the server on a connection of its own; anything else is 404."""
    if environ.get("PATH_INFO") != "{route}":
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
{query}
    start_response("200 OK", [("Content-Length", "5")])
    return [b"done\\n"]
'''

_PSYCOPG_QUERY = '''    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (W,))'''

_PSYCOPG2_QUERY = '''    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_sleep(%s)", (W,))
    finally:
        conn.close()'''


@dataclass(frozen=True)
class Reproduction:
    """What to run for one subject: files to write (none: your own directory), the command,
    and what the harness should print."""

    subject: str
    verdict: Verdict
    """The class the harness should show."""
    directory: str
    """Where the harness starts the server: a new directory of the files, or yours."""
    files: tuple[tuple[str, str], ...]
    """(name, text) to write into ``directory``; empty for your own app."""
    needs: str
    """The ``pip install`` line (besides the server the files name)."""
    command: str
    """The shell command, from the directory that holds ``harness.py``."""
    says: str
    """What it reproduces and what to expect, one paragraph."""


def harness_source() -> str:
    """The harness as this geventprobe ships it (``harness/harness.py`` of the repository)."""
    return importlib.resources.files("geventprobe.harness").joinpath(HARNESS).read_text()


def wanted(build: BuildResult) -> bool:
    """A reproduction is worth attaching for a subject that is not OK: a build that blocked or
    busy-waited in its waits (an idle window's spin is not something requests show), or a
    route or task of yours that did not get OK."""
    if any(r.verdict in _NOT_OK for r in build.routes):
        return True
    if any(t.verdict in _NOT_OK and not t.probe for t in build.tasks):
        return True
    if {e.phase for e in build.evidence if e.fired} == {"idle"}:
        return False
    return build.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT)


@dataclass(frozen=True)
class PlainServer:
    """How a built-in build's reproduction starts its one-file app under a plain server
    other than gunicorn (a kind brings its own: ``kinds/uwsgi/report.py``)."""

    name: str
    """The server's name (``uWSGI``)."""
    argv: tuple[str, ...]
    """The server's command, one worker, up to the app (``uwsgi --master ... --gevent 16``)."""
    app: tuple[str, ...]
    """How it names the app (``--module app:application``)."""
    words: str
    """The server in a few words (``one plain uWSGI gevent worker``)."""
    imported: str
    """How that server's flags had the driver imported, as the workers reported it."""
    pip: str
    """Its pin for the ``pip install`` line (``"pyuwsgi==2.0.30"``)."""


def reproduction(build: BuildResult, result: RunResult | None = None) -> Reproduction:
    """The harness's reproduction of ``build`` (a built-in build, your app, your worker)."""
    facts = build.facts or {}
    kind = kinds.report_of(result)
    if kind is not None:
        return kind.reproduction(build, result)
    if facts.get("mode") == "app":
        return _app(build, result)
    return build_reproduction(build, result)


def _directory(build: BuildResult) -> str:
    """``repro_<build>``, with its versions for a row of a version matrix."""
    return "repro_" + re.sub(r"[^\w.-]+", "_", label(build)).strip("_")


def build_reproduction(build: BuildResult, result: RunResult | None,
                       server: PlainServer | None = None) -> Reproduction:
    """A one-file app with the build's setup, under plain gunicorn (or ``server``), G requests
    at once."""
    facts = build.facts or {}
    driver = facts.get("driver") or ("psycopg2" if build.build.startswith("psycopg2")
                                     else "psycopg")
    pg = facts.get(driver) or {}
    env = facts.get("env") or {}
    m = build.metrics
    workload = ((result.profile if result else {}) or {}).get("workload") or {}
    n = m.greenlets if m else int(workload.get("greenlets", 16))
    w = m.wait_seconds if m else float(workload.get("wait_seconds", 0.15))
    imported = facts.get("driver_import") or {}
    before = imported.get("select_patched") is False
    in_master = before and bool(facts.get("driver_imported_in_master"))
    setup, comments, prefix, files = [], [], [], []
    gunicorn = ["gunicorn", "-k", "gevent", "-w", "1"]
    if driver == "psycopg2":
        callback = pg.get("wait_callback")
        imports = "import psycopg2"
        if callback and callback.startswith("psycogreen"):
            imports += ("\nfrom psycogreen.gevent import patch_psycopg\n\n"
                        "patch_psycopg()  # the workers' wait callback (process-wide)")
            setup.append("psycogreen.gevent.patch_psycopg()")
        elif callback:
            comments.append(f"The workers used wait callback {callback}: install it with "
                            "psycopg2.extensions.set_wait_callback() to reproduce them.")
            setup.append(f"wait callback {callback}")
        else:
            setup.append("no wait callback")
        query = _PSYCOPG2_QUERY
    else:
        impl = pg.get("impl") or env.get("PSYCOPG_IMPL") or build.build
        prefix.append(f"PSYCOPG_IMPL={shlex.quote(impl)}")
        setup.append(f"PSYCOPG_IMPL={impl}")
        if env.get("PSYCOPG_WAIT_FUNC"):
            prefix.append(f"PSYCOPG_WAIT_FUNC={shlex.quote(env['PSYCOPG_WAIT_FUNC'])}")
            setup.append(f"PSYCOPG_WAIT_FUNC={env['PSYCOPG_WAIT_FUNC']}")
        imports = "import psycopg"
        wait = pg.get("wait")
        if wait == "busy_wait_control":
            imports += _SPINNING_WAIT.rstrip()
            setup.append("the probe's spinning wait function")
        elif wait and not wait.startswith("wait_"):
            comments.append(f"The workers used wait function {wait}, which is not psycopg's "
                            "own: assign it to psycopg.waiting.wait to reproduce them.")
        query = _PSYCOPG_QUERY
    if server is not None:  # its flags decide when the app's top-level import runs
        gunicorn = [*server.argv]
        setup.append(server.imported)
    elif in_master:
        gunicorn.append("--preload")
        setup.append(f"{driver} imported in the gunicorn master, before gevent patched "
                     "(--preload)")
    elif before:
        gunicorn += ["-c", "gunicorn.conf.py"]
        files.append(("gunicorn.conf.py",
                      f'def post_fork(server, worker):\n    """Import {driver} in the worker '
                      f'before gevent patches it, as your workers did."""\n'
                      f"    import {driver}  # noqa: F401\n"))
        setup.append(f"{driver} imported in the worker before gevent patched")
    else:
        setup.append(f"{driver} imported after gevent patched (gunicorn's gevent worker)")
    if facts.get("select_patched") is False and server is None:
        comments.append("The workers ran with select left unpatched (patch_all(select=False)), "
                        "which gunicorn's gevent worker does not do: patch the same way to "
                        "reproduce them.")
    doc = [f'"""Build {build.build} ({driver} {pg.get("version") or ""}'.rstrip()
           + f"): {build.verdict.value} in geventprobe's "
           + ("gunicorn" if server is None else server.name) + " gevent workers."]
    seen = ([f"In its workers {m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) took "
             f"{m.wait_factor:.2f}x one sleep, the hub was late by up to "
             f"{m.max_hub_lag_ms:,.1f} ms"
             + (f", CPU {m.cpu_during_waits:.3f} CPU-s/s while waiting." if
                m.cpu_during_waits is not None else ".")] if m is not None else [])
    for paragraph in seen + ([f"Cause: {build.cause}."] if build.cause else []) + [
            f"Setup, as the workers reported it: {'; '.join(setup)}.", *comments]:
        doc += ["", *textwrap.wrap(paragraph, 88)]
    doc.append('"""')
    app = "\n".join(doc) + _APP.format(imports=imports, w=w, route=ROUTE, query=query)
    directory = _directory(build)
    app_args = ["app:application"] if server is None else list(server.app)
    command = " ".join([*prefix, "python", HARNESS, directory,
                        shlex.quote(shlex.join([*gunicorn, *app_args])),
                        "--request", shlex.quote(f"GET {ROUTE}"), "-n", str(n)])
    words = "one plain gunicorn gevent worker" if server is None else server.words
    says = (f"{n} requests at once, each waiting {w:g} s on the server, in {words} set up as "
            "the probed workers were. " + _expect(build))
    return Reproduction(build.build, build.verdict, directory, (("app.py", app), *files),
                        _needs(driver, facts, pg, server.pip if server else None), command,
                        says)


def _expect(build: BuildResult) -> str:
    """What the harness prints, in words that do not promise what it cannot see."""
    fired = {e.phase for e in build.evidence if e.fired}
    if build.verdict is Verdict.BLOCKING and fired and fired <= {"connect"}:
        return ("The harness should print BLOCKING only where connecting is slow (a server "
                "across a network: give it DATABASE_URL); on loopback a connect costs a few "
                "ms, the requests still overlap and it prints OK: only the connects held the "
                "hub here.")
    return f"The harness should print {build.verdict.value}."


def _needs(driver: str, facts: dict, pg: dict, server_pin: str | None = None) -> str:
    """The ``pip install`` line: the driver, gevent and the server (``server_pin``: another
    server's than gunicorn), at the versions the workers reported."""
    version = pg.get("version")
    if driver == "psycopg":
        extra = {"binary": "[binary]", "c": "[c]"}.get(pg.get("impl") or "", "")
        pins = [f'"psycopg{extra}=={version}"' if version else f'"psycopg{extra}"']
    else:
        pins = [f'"psycopg2-binary=={version}"' if version else '"psycopg2-binary"']
        if (pg.get("wait_callback") or "").startswith("psycogreen"):
            pins.append(f'"psycogreen=={facts["psycogreen"]}"' if facts.get("psycogreen")
                        else '"psycogreen"')
    pins.append(f'"gevent=={facts["gevent"]}"' if facts.get("gevent") else '"gevent"')
    pins.append(server_pin or (f'"gunicorn=={facts["gunicorn"]}"' if facts.get("gunicorn")
                               else '"gunicorn"'))
    return "pip install " + " ".join(pins)


def first_not_ok(items, verdict_of) -> tuple[object | None, Verdict | None]:
    """The first item that is not OK, else the first item."""
    for item in items:
        if verdict_of(item) in _NOT_OK:
            return item, verdict_of(item)
    return (items[0], verdict_of(items[0])) if items else (None, None)


def shown_verdict(build: BuildResult, found: Verdict | None) -> Verdict:
    """A route's or task's class when it is not OK, else the subject's."""
    return found if found in _NOT_OK else build.verdict


def _app(build: BuildResult, result: RunResult | None) -> Reproduction:
    """Your app, your gunicorn config, one worker, the route that showed the class."""
    app = (result.app if result else None) or {}
    route, found = first_not_ok(build.routes, lambda r: r.verdict)
    gunicorn = ["gunicorn", "-k", "gevent", "-w", "1", *_config(app)]
    if app.get("preload"):
        gunicorn.append("--preload")
    request = route.route if route else "GET /a-route-of-yours-that-queries"
    command = " ".join(["python", HARNESS, ".", shlex.quote(shlex.join(
        [*gunicorn, app.get("app") or build.build])), "--request", shlex.quote(request),
        "-n", str(route.concurrency if route else 16)])
    verdict = shown_verdict(build, found)
    which = (f"route {request}" if route else
             "a route of yours that queries the database (name it in --request)")
    return Reproduction(build.build, verdict, ".", (), "pip install gunicorn gevent  # and "
                        "your app's requirements", command,
                        f"Your app, {which}, under plain gunicorn (one gevent worker), run "
                        f"from your app's directory: the harness should print "
                        f"{verdict.value}.")


def _config(app: dict) -> list[str]:
    """``-c CONFIG`` as the harness (run in your app's directory) needs it: nothing for a
    ``gunicorn.conf.py`` there (gunicorn reads it by itself), its name for another file
    there, the path as recorded otherwise."""
    config = app.get("gunicorn_config")
    if not config:
        return []
    folder, _, name = config.rpartition("/")
    here = not folder or folder.rsplit("/", 1)[-1] == (app.get("chdir") or "").rstrip(
        "/").rsplit("/", 1)[-1]
    if here:
        return [] if name == "gunicorn.conf.py" else ["-c", name]
    return ["-c", config]

"""The pytest plugin: ``pip install geventprobe`` registers it (entry point ``pytest11``).

A test asks for the ``geventprobe`` fixture and calls the Python API through it::

    def test_gevent(geventprobe):
        result = geventprobe.app("mysite.wsgi:application", routes="auto",
                                 gunicorn_config="gunicorn.conf.py")
        assert result.ok, result.explain()

- ``geventprobe_server`` (session scope, the process fixture of pytest-postgresql's
  convention): one throwaway PostgreSQL shared by every probe of the session (of each
  pytest-xdist worker process), started the first time a test uses it, or the user's
  server: ``--geventprobe-dsn``, else ``GEVENTPROBE_DSN``, else the ``geventprobe_dsn`` ini
  key.
- ``geventprobe`` (function scope): ``app(...)``, ``celery(...)``, ``uwsgi(...)``,
  ``drivers(...)`` run ``probe_app``, ``probe_celery``, ``probe_uwsgi``, ``probe_drivers``
  against that server with the
  session's settings (``--geventprobe-profile/-workers/-greenlets`` and their ini keys),
  then a ``@pytest.mark.geventprobe(...)`` marker's, then the call's own; each probe's
  record goes to ``--geventprobe-json DIR`` / ``--geventprobe-markdown DIR`` and one line
  to pytest's terminal summary.

Nothing is started, and nothing changes, unless a test uses one of these fixtures; every
process and temp dir a probe starts is gone when it returns (the API's promise), the
server when the session ends, also after a failed test or a Ctrl-C. ``-p no:geventprobe``
turns the plugin off. Module level imports pytest only: the API is imported on first use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MAX_CONNECTIONS = 300
"""The shared server's ``max_connections``: room for the largest probe (gunicorn workers ×
greenlets, your app's own connections) while the previous one's backends exit."""

_SETTINGS = (
    ("dsn", "DSN", "your PostgreSQL for every probe of the session (libpq conninfo or URI; "
     "env GEVENTPROBE_DSN keeps it out of ps) [a throwaway server, shared by the session]"),
    ("profile", "NAME", "profile of every probe: default, quick, ci [the project's]"),
    ("workers", "N", "gunicorn workers of every probe [the profile's, or your gunicorn "
     "config's]"),
    ("greenlets", "N", "greenlets (one connection each) per worker [the profile's]"),
    ("json", "DIR", "write each probe's record as JSON into DIR (one file per probe)"),
    ("markdown", "DIR", "write each probe's Markdown report into DIR (one file per probe)"),
)
_USED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("geventprobe", "geventprobe: your app and PostgreSQL driver "
                            "under gevent workers")
    for name, metavar, text in _SETTINGS:
        group.addoption(f"--geventprobe-{name}", dest=f"geventprobe_{name}", default=None,
                        metavar=metavar, help=text)
        parser.addini(f"geventprobe_{name}", f"geventprobe: {text}", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "geventprobe(**settings): settings of the geventprobe fixture's probes in "
        "this test (profile, workers, greenlets, fail_on, time_limit_s...)")
    config.stash[_USED] = False
    config.pluginmanager.register(_Summary(), "geventprobe-summary")


def setting(config: pytest.Config, name: str) -> str | None:
    """``--geventprobe-NAME``, else (for the DSN) ``GEVENTPROBE_DSN``, else the ini key."""
    value = config.getoption(f"geventprobe_{name}", None)
    if value is None and name == "dsn":
        value = os.environ.get("GEVENTPROBE_DSN") or None
    if value is None:
        value = str(config.getini(f"geventprobe_{name}") or "").strip() or None
    return value


def _number(config: pytest.Config, name: str) -> int | None:
    value = setting(config, name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise pytest.UsageError(f"geventprobe: --geventprobe-{name} / geventprobe_{name} "
                                f"{value!r} is not a whole number") from None


@dataclass(frozen=True)
class Server:
    """The PostgreSQL every probe of the session runs against."""

    dsn: str
    embedded: bool
    """True when the plugin started it (a throwaway cluster, removed after the session)."""
    pid: int | None
    """The embedded server's postmaster; None for yours."""

    def describe(self) -> str:
        return f"embedded PostgreSQL pid {self.pid}" if self.embedded else "your PostgreSQL"


@pytest.fixture(scope="session")
def geventprobe_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The session's PostgreSQL: yours (``--geventprobe-dsn``, ``GEVENTPROBE_DSN``, the
    ``geventprobe_dsn`` ini key), or a throwaway one started now and removed at the end of
    the session (each pytest-xdist worker process starts its own)."""
    request.config.stash[_USED] = True
    dsn = setting(request.config, "dsn")
    if dsn:
        from geventprobe.dsn import remember

        remember(dsn)  # masked in every record and report
        yield Server(dsn=dsn, embedded=False, pid=None)
        return
    from geventprobe.api import sigint_routed
    from geventprobe.processes.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(max_connections=MAX_CONNECTIONS)
    with sigint_routed():
        server.__enter__()
    try:
        yield Server(dsn=server.dsn, embedded=True, pid=server.proc.pid)
    finally:
        with sigint_routed():
            server.__exit__(None, None, None)


class GeventProbe:
    """The ``geventprobe`` fixture: each method runs the Python API against the session's
    server and returns the ``RunResult`` (``result.ok``, ``result.explain()``)."""

    def __init__(self, request: pytest.FixtureRequest, server: Server):
        self._request = request
        self.server = server
        self.results: list = []
        """The records of this test's probes, in order."""

    @property
    def dsn(self) -> str:
        """The session server's DSN (the probes' ``dsn``)."""
        return self.server.dsn

    def _settings(self, given: dict, *, workers: bool = True) -> dict:
        """The session's settings < the test's marker < the call's own."""
        config = self._request.config
        out: dict = {"dsn": self.server.dsn}
        profile = setting(config, "profile")
        if profile:
            out["profile"] = profile
        for name in ("workers", "greenlets") if workers else ("greenlets",):
            value = _number(config, name)
            if value is not None:
                out[name] = value
        marker = self._request.node.get_closest_marker("geventprobe")
        if marker is not None:
            out.update(marker.kwargs)
        out.update(given)
        return out

    def app(self, app: str, **settings):
        """``geventprobe.probe_app(app, ...)``: your gunicorn app under your config.
        ``chdir`` defaults to pytest's rootdir; a relative ``gunicorn_config`` is read from
        ``chdir``."""
        from geventprobe import api

        settings = self._settings(settings)
        chdir = Path(settings.pop("chdir", None) or self._request.config.rootpath)
        config = settings.get("gunicorn_config")
        if config is not None and not str(config).startswith("python:"):
            settings["gunicorn_config"] = str(chdir / config)
        return self._record(api.probe_app, app, chdir=str(chdir), **settings)

    def celery(self, app: str | None = None, **settings):
        """``geventprobe.probe_celery(app, ...)``: your celery worker under ``-P gevent``
        (``tasks=[...]``); ``chdir`` defaults to pytest's rootdir."""
        from geventprobe import api

        settings = self._settings(settings, workers=False)
        settings.setdefault("chdir", str(self._request.config.rootpath))
        return self._record(api.probe_celery, app, **settings)

    def uwsgi(self, app: str | None = None, **settings):
        """``geventprobe.probe_uwsgi(app, ...)``: your app under uWSGI's gevent loop
        (``command="uwsgi --ini uwsgi.ini"``: started your way); ``chdir`` defaults to
        pytest's rootdir."""
        from geventprobe import api

        settings = self._settings(settings)
        settings.setdefault("chdir", str(self._request.config.rootpath))
        return self._record(api.probe_uwsgi, app, **settings)

    def drivers(self, **settings):
        """``geventprobe.probe_drivers(...)``: the built-in driver builds."""
        from geventprobe import api

        return self._record(api.probe_drivers, **self._settings(settings))

    def _record(self, probe, *args, **kwargs):
        result = probe(*args, **kwargs)
        self.results.append(result)
        node = self._request.node
        name = _file_name(node, self._request.config.rootpath)
        if len(self.results) > 1:
            name += f"-{len(self.results)}"
        for kind, suffix in (("json", ".json"), ("markdown", ".md")):
            folder = setting(self._request.config, kind)
            if folder:
                _write(kind, result, Path(folder) / (name + suffix))
        line = (f"{'OK' if result.ok else 'FAILED'}: {result.summary} "
                f"[{result.duration_s:.1f} s, {self.server.describe()}]")
        node.user_properties.append(("geventprobe", line))
        return result


def _file_name(node: pytest.Item, rootpath: Path) -> str:
    """The test's file (relative to the rootdir, else its last three path parts) and name,
    as a file name: ``tests_test_gevent.py__test_app``."""
    rel = os.path.relpath(node.path, rootpath)
    if rel.startswith(".."):
        rel = os.path.join(*Path(node.path).parts[-3:])
    return re.sub(r"[^\w.-]+", "_", f"{rel}::{node.name}").strip("._") or "probe"


def _write(kind: str, result, path: Path) -> None:
    from geventprobe.cli import report as report_cli
    from geventprobe.report import json_format, run

    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        json_format.write(result, str(path))
    else:
        report_cli.write_markdown(run.document(result), str(path))


@pytest.fixture
def geventprobe(request: pytest.FixtureRequest, geventprobe_server: Server) -> GeventProbe:
    """Runs geventprobe's probes against the session's PostgreSQL: ``geventprobe.app(...)``,
    ``geventprobe.celery(...)``, ``geventprobe.drivers(...)``; each returns the record
    (``assert result.ok, result.explain()``)."""
    return GeventProbe(request, geventprobe_server)


class _Summary:
    """One line per probe in pytest's terminal summary. The teardown report carries every
    line the test's probes added, from a pytest-xdist worker too (``user_properties``
    travel with the report to the controller, which draws the summary)."""

    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "teardown":
            self.lines += [(report.nodeid, v) for k, v in report.user_properties
                           if k == "geventprobe"]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("geventprobe")
            for nodeid, line in self.lines:
                terminalreporter.write_line(f"{nodeid}: {line}")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_USED, False):
        # Whatever a fixture's teardown did not get to (an interrupted start) goes last.
        from geventprobe.processes import children

        children.cleanup()

"""A run's settings: the profile (workload and thresholds), where it comes from, and the plan.

The profile's layers, lowest precedence first, each overriding the keys it sets:

1. ``configs/default.toml`` (shipped as ``geventprobe.configs``);
2. a named profile, ``configs/<name>.toml`` (``--profile``, else ``profile`` in
   ``[tool.geventprobe]``): ``quick`` for a fast look, ``ci`` for a pre-deploy
   gate (stricter thresholds, calibration on);
3. the ``[tool.geventprobe]`` table of the nearest ``pyproject.toml`` at or above
   the working directory that has one (the convention of ruff and pytest);
4. ``--config PATH``, a TOML profile file;
5. command-line flags (``--workers``, ``--greenlets``, ``--rtt``), then the DSN's own
   ``connect_timeout`` (``profile_for`` applies them all).

Every key is checked; an unknown key or a wrong type is refused with its file and name
(exit 2). ``RunPlan`` is a run resolved once from all of it; nothing changes it after.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING

from geventprobe.dsn import own_connect_timeout
from geventprobe.errors import ProbeError
from geventprobe.processes.delay_proxy import MAX_RTT_MS

if TYPE_CHECKING:
    from geventprobe.core.target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


# --------------------------------------------------------------------------------------
# The profile: what each worker does, and the verdict rules' limits

@dataclass(frozen=True)
class Workload:
    """What each worker does."""

    workers: int = 4
    """gunicorn ``--workers``."""
    greenlets: int = 16
    """Concurrent greenlets per worker, each with its own connection."""
    wait_seconds: float = 0.15
    """w: every greenlet runs ``SELECT pg_sleep(w)`` at once."""
    wait_rounds: int = 1
    """Number of wait windows per worker."""
    heartbeat_ms: float = 2.0
    """Period of the hub-lag heartbeat greenlet."""
    connect_rounds: int = 2
    """Connect windows per worker: all greenlets connect at once, then ``connect_rounds - 1``
    times close everything and reconnect at once (an app without a pool)."""
    connect_min_connects: int = 24
    """Connections each worker opens at once in a connect window, even with fewer greenlets
    (the extra ones are closed after the phase). Measured: the python build's 8 connects
    stalled by a preloaded import took 16-23 ms a window on loopback, under
    ``connect_min_window_ms``, and read OK ("too short to judge"); 24 take about three times
    as long, judged."""
    select1_seconds: float = 0.05
    """Duration of the closed ``SELECT 1`` loop."""
    idle_seconds: float = 0.1
    """The idle window: every greenlet's connection open and used once, then nothing sent
    for this long while the heartbeat ticks (does an idle connection cost CPU?; 0: none)."""
    statement_timeout_ms: int = 30000
    """``statement_timeout`` of every probe connection."""
    connect_timeout_s: int = 10
    """libpq ``connect_timeout`` of every probe connection."""
    boot_timeout_s: float = 60.0
    """How long gunicorn and all its workers may take to get ready."""
    http_rate: float = 100.0
    """HTTP requests per second the parent sends at the workers' probe route, open loop,
    in the request phase after the verdict's windows (0: no request phase)."""
    http_seconds: float = 0.15
    """Length of the request phase (the probe's greenlets keep waiting on the server)."""
    http_query_ms: float = 10.0
    """Each request runs ``SELECT pg_sleep(http_query_ms / 1000)`` (0: ``SELECT 1``)."""
    http_pool: int = 4
    """Connections per worker the probe route uses (its own, besides the greenlets')."""
    http_timeout_s: float = 30.0
    """A request not answered this long after it was due counts as an error."""
    http_max_requests: int = 20000
    """At most this many requests per build."""
    route_concurrency: int = 8
    """``run --app --route``: concurrent requests per worker in each route's burst."""
    monitor_ms: float = 50.0
    """gevent's monitor thread looks this often (ms) for a blocked hub during the wait
    windows, and catches who blocked (0: off during the windows; the route phase keeps it)."""
    worker_timeout_s: int = 0
    """gunicorn ``--timeout`` (set it to your deployment's to see whether a blocked hub would
    get workers killed there); unset (0): long enough for a fully blocked run."""
    rtt_ms: float = 0.0
    """``--rtt``: network round trip to simulate, ms; the workers reach the server through a
    loopback delay proxy adding half of it each way (0: directly, no proxy)."""
    task_wait_seconds: float = 0.2
    """``run --celery``: w of the probe task (each opens a connection and runs
    ``pg_sleep(w)``), sent alone, then C at once."""
    task_start_timeout_s: float = 5.0
    """``run --celery``: a batch of tasks none of which started this long after it was sent,
    or whose worker's heartbeat was silent this long, has stalled (healthy: 0.02–0.04 s)."""
    task_timeout_s: float = 60.0
    """``run --celery``: one of the user's tasks (``--task``) must finish within this."""

    def blocked_seconds(self) -> float:
        """How long the wait windows and connect rounds last if every query and connect
        blocks the hub (the worst case; a connect counted as 0.25 s, a slow remote one)."""
        return self.greenlets * (self.wait_seconds * self.wait_rounds
                                 + 0.25 * self.connect_rounds)

    def probe_timeout_s(self) -> float:
        """Upper bound for the whole in-worker workload, blocked or not."""
        return 30.0 + 1.5 * self.blocked_seconds() + self.select1_seconds

    def connections(self) -> int:
        """Server connections one build needs at once: each worker's greenlets and the HTTP
        route's pool, or, while one worker connects (they take turns, before the route's pool
        opens), the others' greenlets and that worker's connect window
        (``connect_min_connects`` at least), whichever is more."""
        pool = self.http_pool if self.http_rate > 0 else 0
        connecting = ((self.workers - 1) * self.greenlets
                      + max(self.greenlets, self.connect_min_connects))
        return max(self.workers * (self.greenlets + pool), connecting)

    def fitted(self, free: int) -> Workload:
        """This workload with its connect window narrowed to fit ``free`` server connections
        (never under the greenlets): a small server of the user's is not refused for the
        extra connects alone. A window too short to judge then says so in its evidence."""
        if free >= self.connections():
            return self
        room = free - (self.workers - 1) * self.greenlets
        return dataclasses.replace(self, connect_min_connects=max(self.greenlets, room))

    def to_worker(self, thresholds: Thresholds | None = None) -> dict:
        """What the harness reads from ``GEVENTPROBE_WORKLOAD``; with ``thresholds``, the
        workers stop repeating a measurement once the verdict's rules are decided."""
        data = dataclasses.asdict(self)
        data["go_timeout_s"] = self.boot_timeout_s + 30.0
        if thresholds is not None:
            data["thresholds"] = dataclasses.asdict(thresholds)
        return data


@dataclass(frozen=True)
class Thresholds:
    """The verdict rules' limits (see configs/default.toml for what each means)."""

    blocking_wait_factor: float = 2.0
    """BLOCKING when a worker's median window took this many times w or more."""
    blocking_hub_lag_fraction: float = 0.5
    """BLOCKING when a heartbeat inside a window was late by this fraction of w or more."""
    busy_wait_cpu: float = 0.2
    """BUSY-WAIT when a worker used this many CPU-s per wall-s while only waiting."""
    busy_wait_runnable: float = 0.4
    """BUSY-WAIT when a worker was runnable (on a CPU or waiting for one) this fraction of
    the time while only waiting, and slept at most ``busy_wait_max_sleeps`` times a second:
    unlike CPU used, neither figure changes when other programs take the cores."""
    busy_wait_max_sleeps: float = 50.0
    """See ``busy_wait_runnable``: a healthy worker sleeps about once per heartbeat tick."""
    connect_stall_share: float = 0.85
    """BLOCKING when the hub stalled for this share of a connect window or more (a worker's
    median over its rounds): the connects waited in C one after another."""
    connect_min_window_ms: float = 25.0
    """A connect window shorter than this is too short to judge by its stall share (connects
    on a fast loopback): the hub-lag rule still applies; ``--rtt`` makes them judgeable."""
    route_failing_share: float = 0.1
    """A route is FAILING when this share of its burst (or its lone request) answered 5xx,
    was reset or timed out."""
    route_hub_lag_ms: float = 75.0
    """A route is BLOCKING when a heartbeat in a worker was this late during its burst (the
    driver verdict's limit: 0.5 · w with the default w = 0.15 s)."""
    route_serialized_factor: float = 1.8
    """A route is SERIALIZED when the burst's p90 latency is this many times the lone
    request's (about 1 when the requests overlap, about C when they run one at a time)..."""
    route_serialized_min_ms: float = 50.0
    """...and at least this much longer in absolute terms (8 quick requests sharing the CPU
    are not worth a finding)."""
    task_hub_lag_ms: float = 100.0
    """A celery task (the probe's or ``--task``) is BLOCKING when the worker's heartbeat was
    this late while it ran alone (0.5 · w of the probe task, w = 0.2 s)..."""
    task_burst_hub_lag_ms: float = 300.0
    """...or this late while C ran at once (taking C tasks off the broker and connecting
    costs a healthy hub some CPU)..."""
    task_queue_factor: float = 4.0
    """...or when, C at once, a task waited this many times the lone task's run time in the
    queue (sent → started: the consumer shares the blocked hub)..."""
    task_queue_min_ms: float = 300.0
    """...and at least this long (quick tasks)."""
    task_serialized_factor: float = 3.0
    """A celery task is SERIALIZED when, C at once, the p90 of their run times is this many
    times the lone task's while the hub ran on time..."""
    task_serialized_min_ms: float = 100.0
    """...and at least this much longer."""
    task_failing_share: float = 0.1
    """A celery task is FAILING when the lone task, or more than this share of the C at
    once, raised (or did not finish in time while the hub ran)."""


@dataclass(frozen=True)
class Profile:
    """A complete profile: workload and thresholds, and where it came from."""

    workload: Workload
    thresholds: Thresholds
    source: str
    calibrate: bool = False
    """Run the calibration controls before the builds (``[run] calibrate``)."""
    fail_on: tuple[str, ...] = ("blocking", "busy-wait", "serialized", "failing")
    """Verdicts that make ``run`` exit 1 (``[run] fail_on``, ``--fail-on``)."""


FAIL_ON_CHOICES = ("blocking", "busy-wait", "serialized", "failing")
"""Verdicts ``--fail-on`` may name (``none``: never exit 1)."""


def parse_fail_on(value, source: str) -> tuple[str, ...]:
    """``blocking,busy-wait`` (a string or a list) as a tuple; ``none`` for never."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ProbeError(f"{source} must be a list such as [\"blocking\", \"busy-wait\"], "
                         f"got {value!r}")
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    if not names:  # as --builds "" is: an unset $VAR must not mean the default in silence
        raise ProbeError(f"{source} is empty: name the verdicts that fail the run "
                         f"({', '.join(FAIL_ON_CHOICES)}, comma-separated), or none")
    bad = [n for n in names if n not in (*FAIL_ON_CHOICES, "none")]
    if bad or not names or ("none" in names and len(names) > 1):
        what = repr(bad[0]) if bad else repr(value)
        raise ProbeError(f"{source}: unknown verdict {what}: choose from "
                         f"{', '.join(FAIL_ON_CHOICES)} (comma-separated), or none")
    return () if names == ["none"] else tuple(dict.fromkeys(names))


# --------------------------------------------------------------------------------------
# Profile files: configs/*.toml, --config, the tables of [tool.geventprobe]

def _run_section(table, base: Profile, source: str) -> dict:
    """The [run] section of a profile: calibrate, fail_on."""
    if not isinstance(table, dict):
        raise ProbeError(f"{source}: [run] must be a table of keys, got {table!r}")
    out = {"calibrate": base.calibrate, "fail_on": base.fail_on}
    for key, value in table.items():
        if key == "calibrate":
            if not isinstance(value, bool):
                raise ProbeError(f"{source}: [run].calibrate must be true or false, got {value!r}")
            out["calibrate"] = value
        elif key == "fail_on":
            out["fail_on"] = parse_fail_on(value, f"{source}: [run].fail_on")
        else:
            raise ProbeError(f"{source}: unknown key [run].{key}: valid keys are calibrate, "
                             "fail_on")
    return out


# Keys for which 0 is a meaningful value (it turns something off).
_ZERO_MEANS_OFF = {"http_rate", "http_query_ms", "worker_timeout_s", "rtt_ms", "monitor_ms"}
# Upper bounds: a larger value would only make the probe's own timeouts fire (rtt_ms), is
# refused by the command line too (workers), or is a share, which cannot exceed the whole.
_AT_MOST = {"rtt_ms": MAX_RTT_MS, "workers": 64, "route_failing_share": 1.0,
            "connect_stall_share": 1.0, "busy_wait_runnable": 1.0}
# Lower bounds above 0: below them the rule fires on every healthy run (a wait factor or a
# burst factor is about 1 when nothing waits), or the probe cannot measure (one greenlet
# has nothing to overlap with; the command line refuses it too).
_MORE_THAN = {"blocking_wait_factor": 1.0, "route_serialized_factor": 1.0}
_AT_LEAST = {"greenlets": 2}
_WHY = {"route_failing_share": "a share of the requests", "connect_stall_share":
        "a share of a connect window", "busy_wait_runnable": "a share of the time",
        "blocking_wait_factor": "about 1 when the waits overlap",
        "route_serialized_factor": "about 1 when the requests overlap"}


def _apply(cls, base, table: dict, section: str, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dataclasses.asdict(base)
    if not isinstance(table, dict):
        raise ProbeError(f"{source}: [{section}] must be a table of keys, got {table!r}")
    for key, value in table.items():
        if key not in fields:
            raise ProbeError(f"{source}: unknown key [{section}].{key}: "
                             f"valid keys are {', '.join(sorted(fields))}")
        expected = type(values[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProbeError(f"{source}: [{section}].{key} must be a number, got {value!r}")
        if expected is int and not isinstance(value, int):
            raise ProbeError(f"{source}: [{section}].{key} must be a whole number, got {value!r}")
        if value < 0 or (value == 0 and key not in _ZERO_MEANS_OFF):
            least = "0 or more" if key in _ZERO_MEANS_OFF else "greater than 0"
            raise ProbeError(f"{source}: [{section}].{key} must be {least}, got {value!r}")
        why = f" ({_WHY[key]})" if key in _WHY else ""
        if key in _AT_MOST and value > _AT_MOST[key]:
            raise ProbeError(f"{source}: [{section}].{key} must be at most {_AT_MOST[key]:g}"
                             f"{why}, got {value!r}")
        if key in _MORE_THAN and value <= _MORE_THAN[key]:
            raise ProbeError(f"{source}: [{section}].{key} must be more than "
                             f"{_MORE_THAN[key]:g}{why}, got {value!r}")
        if key in _AT_LEAST and value < _AT_LEAST[key]:
            raise ProbeError(f"{source}: [{section}].{key} must be at least {_AT_LEAST[key]:g}"
                             f"{why}, got {value!r}")
        values[key] = expected(value)
    return cls(**values)


def parse_profile(text: str, source: str, base: Profile) -> Profile:
    """``base`` overridden by the TOML profile ``text`` (``source`` names it in errors)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"{source}: not valid TOML ({exc}): fix the file") from exc
    return profile_from_tables(data, source, base)


def profile_from_tables(data: dict, source: str, base: Profile) -> Profile:
    """``base`` overridden by parsed TOML tables ([workload], [thresholds], [run])."""
    unknown = set(data) - {"workload", "thresholds", "run"}
    if "dsn" in unknown and not isinstance(data["dsn"], dict):
        # A DSN holds a password: it does not belong in a file, and profiles do not read one.
        raise ProbeError(f"{source}: a profile does not take a dsn: pass it in the "
                         "GEVENTPROBE_DSN environment variable (or --dsn)")
    if unknown:
        name = sorted(unknown)[0]
        if not isinstance(data[name], dict):
            raise ProbeError(f"{source}: {name} = is outside any section: put it under "
                             "[workload], [thresholds] or [run]")
        raise ProbeError(f"{source}: unknown section [{name}]: valid sections are [workload], "
                         "[thresholds] and [run]")
    workload = _apply(Workload, base.workload, data.get("workload", {}), "workload", source)
    thresholds = _apply(Thresholds, base.thresholds, data.get("thresholds", {}), "thresholds",
                        source)
    return Profile(workload, thresholds, source, **_run_section(data.get("run", {}), base,
                                                                 source))


def default_profile() -> Profile:
    """The shipped ``configs/default.toml``."""
    text = resources.files("geventprobe.configs").joinpath("default.toml").read_text()
    return parse_profile(text, "configs/default.toml",
                         Profile(Workload(), Thresholds(), "built-in"))


def read_profile_file(path: str, base: Profile) -> Profile:
    """``base`` overridden by the TOML profile file at ``path`` (``--config``)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ProbeError(f"cannot read --config {path} ({exc.strerror}): "
                         "pass the path of a TOML profile") from exc
    except UnicodeDecodeError as exc:
        raise ProbeError(f"--config {path} is not UTF-8 text (byte {exc.start}: "
                         f"{exc.object[exc.start:exc.start + 1]!r}): save it as UTF-8, as "
                         "TOML requires") from exc
    return parse_profile(text, path, base)


def load_profile(path: str | None) -> Profile:
    """The default profile, overridden by the TOML file at ``path`` if given."""
    profile = default_profile()
    return profile if path is None else read_profile_file(path, profile)


PROFILE_NAMES = ("default", "quick", "ci")
"""The profiles shipped in ``configs/`` (``--profile``)."""


def named_text(name: str) -> str:
    """The TOML text of a shipped profile."""
    if name not in PROFILE_NAMES:
        raise ProbeError(f"unknown profile {name!r}: choose from {', '.join(PROFILE_NAMES)}, or "
                         "pass your own file with --config PATH")
    return resources.files("geventprobe.configs").joinpath(f"{name}.toml").read_text()


# --------------------------------------------------------------------------------------
# The project's [tool.geventprobe] table

TABLE = "tool.geventprobe"

# Top-level keys of [tool.geventprobe] -> type; [workload] and [thresholds] are tables.
_KEYS: dict[str, type | tuple] = {
    "profile": str,
    "app": str,
    "gunicorn_config": str,
    "chdir": str,
    "builds": (str, list),
    "preload": bool,
    "fail_on": (str, list),
    "calibrate": bool,
    "rtt_ms": (int, float),
    "routes": list,
    "celery": str,
    "celery_cmd": str,
    "uwsgi": str,
    "uwsgi_cmd": str,
    "tasks": list,
}
_TABLES = ("workload", "thresholds")


@dataclass(frozen=True)
class ProjectSettings:
    """What ``[tool.geventprobe]`` in the project's pyproject.toml says (paths made absolute)."""

    path: str | None = None
    """The pyproject.toml it came from; None when none was found."""
    profile: str | None = None
    app: str | None = None
    """``MODULE:CALLABLE`` for ``run --app``."""
    gunicorn_config: str | None = None
    chdir: str | None = None
    """The directory gunicorn runs in; the pyproject's own directory unless set."""
    builds: str | None = None
    preload: bool | None = None
    routes: tuple = ()
    """``--route`` for ``run --app``: the app's routes to drive (``routes = ["/login"]``)."""
    celery: str | None = None
    """``APP`` for ``run --celery``."""
    celery_cmd: str | None = None
    """The command that starts the worker, for ``run --celery-cmd``."""
    uwsgi: str | None = None
    """``APP`` for ``run --uwsgi``."""
    uwsgi_cmd: str | None = None
    """The command that starts uWSGI, for ``run --uwsgi-cmd``."""
    tasks: tuple = ()
    """``--task`` for ``run --celery``: ``(name, args, kwargs)`` each, from ``tasks =
    ["proj.tasks.charge", {name = "proj.tasks.send", args = [1], kwargs = {}}]``."""
    tables: dict = field(default_factory=dict)
    """[workload], [thresholds] and [run] overrides, applied over the named profile."""

    @property
    def source(self) -> str:
        """How error messages and the report name this layer."""
        return f"{self.path} [{TABLE}]"


def _norm(key: str) -> str:
    # pyproject tools spell keys both ways (ruff: line-length, pytest: ini_options).
    return key.replace("-", "_")


def find_pyproject(start: str) -> tuple[str, dict] | None:
    """The nearest pyproject.toml at or above ``start`` with a [tool.geventprobe] table."""
    folder = os.path.abspath(start)
    while True:
        path = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    data = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ProbeError(f"{path}: not valid TOML ({exc}): fix the file") from exc
            table = data.get("tool", {}).get("geventprobe")
            if table is not None:
                return path, table
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def project_settings(table: dict, path: str) -> ProjectSettings:
    """Validate a [tool.geventprobe] table read from ``path``."""
    source = f"{path} [{TABLE}]"
    if not isinstance(table, dict):
        raise ProbeError(f"{source} must be a table")
    base = os.path.dirname(os.path.abspath(path))
    values: dict = {}
    tables: dict = {}
    for raw_key, value in table.items():
        key = _norm(raw_key)
        if key == "dsn":
            raise ProbeError(f"{source}: key dsn: a connection string does not belong in a file "
                             "kept in git: set GEVENTPROBE_DSN in the environment instead")
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ProbeError(f"{source}: {raw_key} must be a table ([{TABLE}.{raw_key}])")
            tables[key] = {_norm(k): v for k, v in value.items()}
            continue
        if key not in _KEYS:
            valid = ", ".join(sorted([*_KEYS, *_TABLES]))
            raise ProbeError(f"{source}: unknown key {raw_key}: valid keys are {valid}")
        expected = _KEYS[key]
        if not isinstance(value, expected) or (key == "rtt_ms" and isinstance(value, bool)):
            kind = {bool: "true or false", str: "a string", (int, float): "a number of ms",
                    list: "a list of strings"}.get(expected, "a string or a list")
            raise ProbeError(f"{source}: {raw_key} must be {kind}, got {value!r}")
        values[key] = value
    run: dict = {}
    if "fail_on" in values:
        run["fail_on"] = list(parse_fail_on(values.pop("fail_on"), f"{source}: fail_on")) \
            or ["none"]
    if "calibrate" in values:
        run["calibrate"] = values.pop("calibrate")
    if run:
        tables["run"] = run
    if "rtt_ms" in values:  # a workload key, allowed at the top for `rtt_ms = 20`
        workload = tables.setdefault("workload", {})
        if "rtt_ms" in workload:
            raise ProbeError(f"{source}: rtt_ms is set twice (also in [{TABLE}.workload]): "
                             "keep one")
        workload["rtt_ms"] = values.pop("rtt_ms")
    if "profile" in values and values["profile"] not in PROFILE_NAMES:
        raise ProbeError(f"{source}: unknown profile {values['profile']!r}: choose from "
                         f"{', '.join(PROFILE_NAMES)}")
    if "routes" in values:
        from geventprobe.app.routes import parse_route

        bad = [r for r in values["routes"] if not isinstance(r, str)]
        if bad:
            raise ProbeError(f"{source}: routes must be a list of strings such as "
                             f"[\"/login\", \"POST /cart\"], got {bad[0]!r}")
        try:
            values["routes"] = tuple(  # "auto": found in the app (--route auto)
                r.strip().lower() if r.strip().lower() == "auto" else str(parse_route(r))
                for r in values["routes"])
        except ProbeError as exc:
            raise ProbeError(f"{source}: {exc}") from None
    if "tasks" in values:
        values["tasks"] = _project_tasks(values["tasks"], source)
    if isinstance(values.get("builds"), list):
        values["builds"] = ",".join(str(b) for b in values["builds"])
    for key in ("gunicorn_config", "chdir"):  # celery_cmd runs in chdir: left as written
        if key in values and not values[key].startswith("python:"):
            values[key] = os.path.normpath(os.path.join(base, values[key]))
    values.setdefault("chdir", base)
    return ProjectSettings(path=path, tables=tables, **values)


def _project_tasks(items: list, source: str) -> tuple:
    """``tasks = [...]`` of [tool.geventprobe]: each a name, or a table with ``name`` and
    optional ``args`` (a list) and ``kwargs`` (a table)."""
    out = []
    example = ('tasks = ["proj.tasks.charge", {name = "proj.tasks.send", args = [1], '
               'kwargs = {retry = false}}]')
    for item in items:
        if isinstance(item, str):
            out.append((item, [], {}))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                set(item) - {"name", "args", "kwargs"} or \
                not isinstance(item.get("args", []), list) or \
                not isinstance(item.get("kwargs", {}), dict):
            raise ProbeError(f"{source}: tasks must list task names or tables of name, args "
                             f"(a list) and kwargs (a table), e.g. {example}; got {item!r}")
        out.append((item["name"], list(item.get("args", [])), dict(item.get("kwargs", {}))))
    return tuple(out)


def load_project(start: str | None = None) -> ProjectSettings:
    """The project's settings, from the nearest pyproject.toml that has some."""
    found = find_pyproject(start or os.getcwd())
    if found is None:
        return ProjectSettings()
    return project_settings(found[1], found[0])


# --------------------------------------------------------------------------------------
# Layering: default, named profile, pyproject, --config, then the flags

def resolve(profile_name: str | None = None, config_path: str | None = None,
            project: ProjectSettings | None = None) -> Profile:
    """The profile a run uses: default, named profile, pyproject, --config, in that order."""
    project = project or ProjectSettings()
    profile = default_profile()
    layers = ["configs/default.toml"]
    name = profile_name or project.profile or "default"
    if name != "default":
        source = f"configs/{name}.toml"
        profile = parse_profile(named_text(name), source, profile)
        layers.append(source)
    if project.tables:
        profile = profile_from_tables(project.tables, project.source, profile)
        layers.append(project.source)
    if config_path is not None:
        profile = read_profile_file(config_path, profile)
        layers.append(config_path)
    return dataclasses.replace(profile, source=" + ".join(layers))


def with_sizes(profile: Profile, workers: int | None, greenlets: int | None) -> Profile:
    """``profile`` with the ``--workers`` / ``--greenlets`` flags applied (they win)."""
    sizes = {k: v for k, v in (("workers", workers), ("greenlets", greenlets)) if v is not None}
    if not sizes:
        return profile
    return dataclasses.replace(profile, workload=dataclasses.replace(profile.workload, **sizes))


def with_rtt(profile: Profile, rtt_ms: float | None) -> Profile:
    """``profile`` with ``--rtt`` applied (it wins); None leaves the profile's ``rtt_ms``."""
    if rtt_ms is None:
        return profile
    return dataclasses.replace(profile, workload=dataclasses.replace(profile.workload,
                                                                     rtt_ms=float(rtt_ms)))


def with_connect_timeout(profile: Profile, dsn: str | None) -> Profile:
    """``profile`` with the user's own ``connect_timeout`` (in the DSN, or
    ``PGCONNECT_TIMEOUT``): it bounds every connection of the run, the parent's and the
    workers', and the messages quote it, as libpq would have it."""
    own = own_connect_timeout(dsn)
    if own is None or own == profile.workload.connect_timeout_s:
        return profile
    return dataclasses.replace(profile, workload=dataclasses.replace(
        profile.workload, connect_timeout_s=own))


def profile_for(name: str | None, config_path: str | None, project: ProjectSettings, *,
                workers: int | None = None, greenlets: int | None = None,
                rtt_ms: float | None = None, dsn: str | None = None) -> Profile:
    """Every layer and every flag that shapes the workload, in their order of precedence:
    default < ``--profile`` < pyproject < ``--config`` < ``--workers``/``--greenlets``/
    ``--rtt`` < the DSN's ``connect_timeout``."""
    profile = with_sizes(resolve(name, config_path, project), workers, greenlets)
    return with_connect_timeout(with_rtt(profile, rtt_ms), dsn)


# --------------------------------------------------------------------------------------
# The plan: a run resolved once, then never changed

@dataclass(frozen=True)
class RunPlan:
    """Everything one run needs, resolved once from flags, files and defaults
    (``core/plan.py`` builds it; ``core/runner.run`` runs it; nothing changes it after)."""

    profile: Profile
    """Workload and thresholds, every layer and flag applied."""
    target: Target
    """What is probed: the built-in driver builds, the user's gunicorn app, a version
    matrix, the calibration controls alone (``core/target.py``)."""
    dsn: str | None
    """The user's server (None: the PG* environment, else an embedded one)."""
    preload: bool
    """gunicorn ``--preload`` for the built-in builds; for an app, its effective setting."""
    command: list[str]
    """The command line as typed (redacted when recorded)."""
    calibrate: bool = False
    """Run the calibration controls before the target's rows."""
    fail_on: tuple[str, ...] = FAIL_ON_CHOICES
    """Verdicts of a row under test that make the run exit 1 (``--fail-on``)."""
    time_limit_s: float = 600.0
    """The run is stopped (exit 2) once it has lasted this long (``--time-limit``)."""
    allow_many_connections: bool = False
    """The user confirmed more than ``preflight.CONNECTION_CAP`` connections at once."""

    @property
    def workload(self) -> Workload:
        """The profile's workload."""
        return self.profile.workload

    @property
    def thresholds(self) -> Thresholds:
        """The profile's thresholds."""
        return self.profile.thresholds

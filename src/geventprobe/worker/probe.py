"""The in-worker workload: wait windows with a hub heartbeat, then a SELECT 1 loop.

Runs in a greenlet of a gunicorn gevent worker. It talks to the parent only
through files in ``GEVENTPROBE_RUN_DIR``, typed and versioned in ``record.py``
(``ready-<pid>.json`` when its connections are open, then it waits for ``go``;
``result-<pid>.json`` at the end), never through stdout or the log. All times are
``time.monotonic()``, which on Linux is the same clock in every process, so the
parent can line its CPU samples up with the windows reported here.

What is probed comes from a *source*: the built-in harness app (``HARNESS``, started
by ``harness_conf.py``) or the user's own app (``USERS_APP``, started by ``app_conf.py``).
A source is any object with ``import_facts(worker)`` (how its driver got imported),
``driver()`` (the driver module its app uses, or the import error) and ``set_up()``
(what it needs once per worker); ``run(source, worker)`` needs nothing else of gunicorn
(``worker`` may be None: no listening port, no preload to report).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import statistics
import sys
import time
import traceback
from importlib import metadata

from geventprobe.worker import import_watch, record


def _env_workload() -> dict:
    return json.loads(os.environ["GEVENTPROBE_WORKLOAD"])


def _run_dir() -> str:
    return os.environ["GEVENTPROBE_RUN_DIR"]


def _write(name: str, rec) -> None:
    """Write a record for the parent into the run dir (whole, then renamed into place)."""
    record.write(os.path.join(_run_dir(), name), rec)


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _libpq_version(number: int) -> str:
    # libpq encodes 15.18 as 150018 (and 9.6.24 as 90624).
    if number >= 100000:
        return f"{number // 10000}.{number % 10000}"
    return f"{number // 10000}.{number // 100 % 100}.{number % 100}"


def _callable_name(func) -> str | None:
    if func is None:
        return None
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{name}" if module else name


class _HarnessApp:
    """The built-in harness app (``harness_app.py``): one driver build, imported as an app
    module does, at the moment gunicorn imports the app."""

    def import_facts(self, worker=None) -> dict:
        """Which build this is and how its driver got imported."""
        from geventprobe.worker import harness_app

        return {"build": harness_app.BUILD, "driver_import": dict(harness_app.IMPORT_FACTS),
                "driver_imported_in_master": harness_app.IMPORT_FACTS["pid"] != os.getpid(),
                "import_error": harness_app.IMPORT_ERROR}

    def driver(self):
        """(driver module, import error)."""
        from geventprobe.worker import harness_app

        return harness_app.driver, harness_app.IMPORT_ERROR

    def set_up(self) -> None:
        """What the build needs once per worker: a calibration control, psycogreen."""
        from geventprobe.worker import controls, harness_app

        controls.apply(harness_app.BUILD)
        if harness_app.BUILD == "psycopg2-green" and harness_app.IMPORT_ERROR is None:
            # What a gevent app using psycopg2 does once per worker.
            from psycogreen.gevent import patch_psycopg

            patch_psycopg()


class _UsersApp:
    """The user's own app under their config (``run --app``): ``import_watch`` saw who
    imported the driver, in which process and phase of gunicorn's start-up."""

    def import_facts(self, worker=None) -> dict:
        """How the driver got imported, and the deployment's words for it."""
        from geventprobe.worker import import_watch

        preload = bool(worker is not None and worker.cfg.preload_app)
        out = import_watch.facts(preload)
        out.update(build=os.environ.get("GEVENTPROBE_BUILD", "app"), import_error=None,
                   mode="app", preload=preload,
                   user_config=os.environ.get("GEVENTPROBE_USER_CONFIG_SHOWN"))
        return out

    def driver(self):
        """(driver module, import error): whatever the user's app uses."""
        from geventprobe.worker import import_watch

        module, _, error = import_watch.driver_module()
        return module, error

    def set_up(self) -> None:
        """Nothing: the user's app and hooks have set everything up already."""


HARNESS = _HarnessApp()
USERS_APP = _UsersApp()


def collect_facts(source, worker=None) -> dict:
    """What this worker really runs: driver, wait function, patching, versions."""
    import gevent
    import greenlet
    from gevent import monkey

    origin = source.import_facts(worker)
    facts: dict = {
        "pid": os.getpid(),
        "build": origin.pop("build"),
        "python": platform.python_version(),
        # Which environment the worker runs in (a version matrix runs isolated ones).
        "prefix": sys.prefix,
        "gevent": gevent.__version__,
        "greenlet": greenlet.__version__,
        "gunicorn": _dist_version("gunicorn"),
        "worker_class": type(worker).__module__ + "." + type(worker).__name__ if worker else None,
        "select_patched": bool(monkey.is_module_patched("select")),
        "socket_patched": bool(monkey.is_module_patched("socket")),
        "env": {k: os.environ.get(k) for k in ("PSYCOPG_IMPL", "PSYCOPG_WAIT_FUNC")},
        "driver_import": origin.pop("driver_import"),
        "driver_imported_in_master": origin.pop("driver_imported_in_master"),
        "import_error": origin.pop("import_error"),
        "driver": None,
    }
    facts.update(origin)  # --app mode: who imported what, and when
    # An app may hide a driver with sys.modules[name] = None: not imported, then.
    if import_watch.loaded("psycopg"):
        import psycopg
        from psycopg import pq, waiting

        facts["driver"] = "psycopg"
        # Old releases lack some of these attributes: report what exists (issue reports
        # often come from exactly those releases).
        build_version = getattr(pq, "__build_version__", None)
        wait = getattr(waiting, "wait", None)
        facts["psycopg"] = {
            "version": psycopg.__version__,
            "impl": getattr(pq, "__impl__", None),
            "libpq": _libpq_version(pq.version()),
            "libpq_build": _libpq_version(build_version) if build_version else None,
            "wait": getattr(wait, "__name__", None),
            # What connection setup waits with: bound when psycopg was imported, so it is
            # the stdlib's (blocking) selector if that happened before gevent patched select.
            "selector": _callable_name(getattr(waiting, "DefaultSelector", None)),
        }
    if import_watch.loaded("psycopg2"):
        import psycopg2
        import psycopg2.extensions as ext

        facts["driver"] = facts["driver"] or "psycopg2"
        facts["psycopg2"] = {
            "version": psycopg2.__version__.split()[0],
            "libpq": _libpq_version(ext.libpq_version()),
            "wait_callback": _callable_name(ext.get_wait_callback()),
        }
        facts["psycogreen"] = _dist_version("psycogreen")
    return facts


class Driver:
    """The few calls the workload needs, for psycopg 3 and psycopg2 alike."""

    def __init__(self, module, workload: dict):
        self.module = module
        self.is_psycopg2 = module.__name__ == "psycopg2"
        self.dsn = os.environ.get("GEVENTPROBE_DSN", "")
        self.kwargs = {
            "application_name": "geventprobe",
            "connect_timeout": int(workload["connect_timeout_s"]),
            # Read-only sessions: the probe only reads, and a server it is pointed at must
            # not be written to even by mistake.
            "options": (f"-c statement_timeout={int(workload['statement_timeout_ms'])} "
                        "-c default_transaction_read_only=on"),
        }

    def connect(self):
        if self.is_psycopg2:
            conn = self.module.connect(self.dsn, **self.kwargs)
            conn.autocommit = True
            return conn
        return self.module.connect(self.dsn, autocommit=True, **self.kwargs)

    @staticmethod
    def query(cursor, sql: str, params=None):
        cursor.execute(sql, params)
        return cursor.fetchone()

    @staticmethod
    def cancel(conn) -> None:
        """Cancel the query ``conn`` runs (libpq's PQcancel, callable from another thread)."""
        conn.cancel()


class Heartbeat:
    """Ticks every ``period`` s; each late tick is hub lag: time the hub could not run us."""

    def __init__(self, period: float):
        self.period = period
        self.expected: list[float] = []
        self.lag: list[float] = []
        self._running = True
        self._greenlet = None
        self.last = time.monotonic()
        """When it last ran (a thread reads it to see how long the hub has not run)."""
        self.waited: list[float] | None = None
        """With ``count_waits``: beside each lag, how long this thread waited meanwhile for a
        core (runnable, not running), s; 0.0 for the beats before it was turned on."""
        self._runqueue_fd: int | None = None

    def count_waits(self) -> None:
        """From now on, read beside each beat the time the hub's thread waited for a core
        (``/proc/thread-self/schedstat``, 1 µs a read): on a loaded machine a late beat can be
        the kernel's, not the app's. Nothing changes where that file is missing."""
        if self.waited is not None:
            return  # counting already: one descriptor for the life of the heartbeat
        try:
            self._runqueue_fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            return
        self.waited = [0.0] * len(self.lag)

    def _runqueue(self) -> float:
        try:
            return int(os.pread(self._runqueue_fd, 128, 0).split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return 0.0

    def run(self):
        import gevent

        period = self.period
        while self._running:
            counted = self.waited is not None
            queued = self._runqueue() if counted else 0.0
            before = self.last = time.monotonic()
            gevent.sleep(period)
            now = self.last = time.monotonic()
            if counted:
                self.waited.append(max(0.0, self._runqueue() - queued))
            self.expected.append(before + period)
            self.lag.append(now - before - period)

    def start(self) -> None:
        """Tick in a greenlet of its own (again, after ``pause``)."""
        import gevent

        self._running = True
        self._greenlet = gevent.spawn(self.run)

    def pause(self) -> None:
        """Stop ticking until ``start``: nothing of this worker is measured meanwhile, and
        ticking every 2 ms costs a worker about 0.05 CPU-s/s (docs/benchmarks.md)."""
        self.stop()
        if self._greenlet is not None:
            self._greenlet.join(timeout=1)
            self._greenlet = None

    def stop(self):
        self._running = False


def _wait_for_files(paths: list[str], timeout: float, what: str, every: float = 0.005) -> None:
    """Sleep (cooperatively) until every one of ``paths`` exists, looking ``every`` s."""
    import gevent

    deadline = time.monotonic() + timeout
    while not all(os.path.exists(p) for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        gevent.sleep(every)


def _wait_for_go(workload: dict) -> list[int]:
    """Wait for the parent's go; return the order in which the workers take turns.

    A worker booted ahead of its turn (``go_wait_s``: every build of a run boots at once)
    waits while other builds are measured: it looks every 10 ms, not every 5, so that 16
    such workers cost the machine little (its heartbeat does not run yet).
    """
    go = os.path.join(_run_dir(), "go")
    _wait_for_files([go], float(workload["go_timeout_s"]) + float(workload.get("go_wait_s", 0)),
                    "the parent did not say go", every=0.01)
    with open(go) as f:
        return list(json.load(f).get("order") or [])


def _serve_route(driver: Driver, workload: dict) -> None:
    """Open the HTTP route's own connections and serve it (the parent's load needs it)."""
    import gevent

    from geventprobe.worker import probe_route

    if float(workload.get("http_rate", 0)) <= 0:
        return
    jobs = [gevent.spawn(driver.connect) for _ in range(int(workload.get("http_pool", 1)))]
    gevent.joinall(jobs, raise_error=True)
    # Not closed with the probe's: requests may still arrive after the result is written;
    # they close when the worker exits.
    probe_route.configure([job.value for job in jobs], float(workload.get("http_query_ms", 0)))


def _request_phase(driver: Driver, cursors: list, workload: dict) -> None:
    """While the parent's HTTP load runs, keep every greenlet waiting on the server.

    Like the requests already in flight in a busy worker: each greenlet runs
    ``pg_sleep(w)`` again and again. A cooperating hub serves the parent's
    requests in between; a blocked one makes them queue behind every sleep.
    """
    import gevent

    if float(workload.get("http_rate", 0)) <= 0:
        return
    try:
        _wait_for_files([os.path.join(_run_dir(), "http-go")], float(workload["go_timeout_s"]),
                        "the parent did not start the request phase")
    except TimeoutError:
        return  # no request phase after all: the result is written already
    end = time.monotonic() + float(workload.get("http_seconds", 1.0))
    w = float(workload["wait_seconds"])

    def in_flight(cursor):
        while time.monotonic() < end:
            driver.query(cursor, "SELECT pg_sleep(%s)", (w,))
            gevent.sleep(0)  # what a request's end gives the hub: a turn for the others

    gevent.joinall([gevent.spawn(in_flight, c) for c in cursors])


SHARE_CEILING = 1.2
"""The most a connect window's stall share can be: the tick due at its start fires once the
last connect is done, about the whole window (0.96-0.99 measured on stalled workers), plus
the few ms the hub may take to run it after the window."""


class Rules:
    """The parent's verdict rules, so a worker stops repeating a measurement once more rounds
    cannot change its verdict (the thresholds come in ``GEVENTPROBE_WORKLOAD``).

    Each rule reads either a maximum (hub lag: one window past the limit decides it) or a
    median over the rounds (wait factor: a majority of rounds on one side decides it;
    connect stall share: decided once no shares the rounds still to come could give would
    move the median across the limit). Without thresholds every round runs.
    """

    def __init__(self, workload: dict, heartbeat: Heartbeat):
        self.t = workload.get("thresholds")
        self.w = float(workload["wait_seconds"])
        # With --rtt each sleep also costs a round trip: the parent's wait factor is over both.
        self.sleep_cost = self.w + float(workload.get("rtt_ms", 0.0)) / 1000
        self.heartbeat = heartbeat

    def _lag(self, window: list[float]) -> float:
        """The latest heartbeat due inside ``window``, s."""
        a, b = window
        hb = self.heartbeat
        return max((lag for due, lag in zip(hb.expected, hb.lag) if a <= due <= b), default=0.0)

    def connect_decided(self, windows: list[list[float]], rounds: int) -> bool:
        """The connect-stall rule (a worker's median share over its rounds) is decided."""
        if not self.t:
            return False
        least = float(self.t["connect_min_window_ms"]) / 1000
        limit = float(self.t["connect_stall_share"])
        shares = [self._lag(win) / (win[1] - win[0]) for win in windows
                  if win[1] - win[0] >= least and win[1] > win[0]]
        if not shares:
            return False
        # The rounds to come may each be judged or too short to count, at any share between
        # 0 and the ceiling: the median is monotonic in each, so the extremes bound it.
        sides = set()
        for more in range(max(0, rounds - len(windows)) + 1):
            for share in (0.0, SHARE_CEILING):
                sides.add(statistics.median(shares + [share] * more) >= limit)
        return len(sides) == 1

    def call_off_after(self) -> tuple[float, float] | None:
        """(seconds into a wait window, hub stall in seconds) past which both BLOCKING rules
        of the waits are decided: twice the wait-factor limit, twice the hub-lag limit (at
        the default's: 4·w, and a hub that did not run for w). None without thresholds."""
        if not self.t:
            return None
        return (2 * float(self.t["blocking_wait_factor"]) * self.sleep_cost,
                2 * float(self.t["blocking_hub_lag_fraction"]) * self.w)

    def waits_blocking(self, windows: list[list[float]], rounds: int) -> bool:
        """A blocking rule already fired for good: a window's hub lag reached the limit, or
        most rounds' wait factor did. (OK and BUSY-WAIT need every window: CPU is summed.)"""
        if not self.t or not windows:
            return False
        if self._lag(windows[-1]) >= float(self.t["blocking_hub_lag_fraction"]) * self.w:
            return True
        factors = [(b - a) / self.sleep_cost >= float(self.t["blocking_wait_factor"])
                   for a, b in windows]
        return sum(factors) >= rounds // 2 + 1


def wait_window(driver: Driver, conns: list, cursors: list, rules: Rules
                ) -> tuple[list[float], int]:
    """One wait window: every greenlet runs ``SELECT pg_sleep(w)`` at once on its own
    connection; its [start, end] and how many sleeps were called off.

    A hub its driver blocks runs them one after another: G × w (2.4 s by default). Once the
    window has lasted twice the wait-factor limit and the hub has not run for twice the
    hub-lag limit, both BLOCKING rules are decided and the rest of the window would only
    repeat them. A thread of its own (the hub cannot run; the driver's wait in C let go of
    the GIL) then calls the rest off: the greenlets that have not started skip their sleep,
    and the one running is cancelled on the server. A hub that keeps the GIL, or that runs
    (however slowly), is never cut short.
    """
    import gevent

    w = rules.w
    state = {"off": False, "done": False, "current": None}

    def sleep(conn, cursor) -> bool:
        if state["off"]:
            return False
        state["current"] = conn
        try:
            driver.query(cursor, "SELECT pg_sleep(%s)", (w,))
        except Exception as exc:
            # psycopg2's QueryCanceledError, psycopg's QueryCanceled: our own cancel.
            if state["off"] and type(exc).__name__.startswith("QueryCancel"):
                return False
            raise
        return True

    t0 = time.monotonic()
    after = rules.call_off_after()
    if after is not None:
        _call_off_when_decided(state, driver, rules.heartbeat, t0 + after[0], after[1])
    try:
        jobs = [gevent.spawn(sleep, c, cur) for c, cur in zip(conns, cursors)]
        gevent.joinall(jobs, raise_error=True)
    finally:
        state["done"] = True
    return [t0, time.monotonic()], sum(job.value is False for job in jobs)


def _call_off_when_decided(state: dict, driver: Driver, heartbeat: Heartbeat, not_before: float,
                           stalled: float) -> None:
    """From ``not_before`` on, in a native thread: once the hub has not run for ``stalled``
    s while the window runs, call the window off (``wait_window``)."""
    from gevent import monkey

    native_sleep = monkey.get_original("time", "sleep")

    def watch():
        native_sleep(max(0.0, not_before - time.monotonic()))
        while not state["done"]:
            if time.monotonic() - heartbeat.last >= stalled:
                state["off"] = True
                conn = state["current"]
                if conn is not None:
                    with contextlib.suppress(Exception):
                        driver.cancel(conn)
                return
            native_sleep(0.01)

    monkey.get_original("_thread", "start_new_thread")(watch, ())


def connect_phase(driver: Driver, greenlets: int, rounds: int, rules: Rules,
                  least: int = 0) -> tuple[list, record.ConnectPhase]:
    """Open the windows' connections while the heartbeat runs, and time it.

    One connection alone first (what a connect costs here), then every greenlet opens its
    own at once (the connect window), then up to ``rounds - 1`` times: close them all and
    reopen them at once, as an app without a pool does on every request. psycopg sets a
    connection up with a selector of its own (``psycopg.waiting.DefaultSelector``), bound
    when psycopg is imported: imported before gevent patched select, every connect stalls
    the hub while the queries may still cooperate (docs/connect-phase.md).

    A window opens at least ``least`` connections (``connect_min_connects``): fewer stalled
    connects are over too soon to be judged on loopback. The greenlets keep theirs; the
    extra ones are closed once the phase is over.
    """
    import gevent

    per_window = max(greenlets, least)
    t0 = time.monotonic()
    driver.connect().close()
    single = [t0, time.monotonic()]
    windows: list[list[float]] = []
    conns: list = []
    for _ in range(max(1, rounds)):
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        # The heartbeat ticks in between (and the closed connections' backends exit).
        gevent.sleep(0.02 if conns else 0.01)
        t0 = time.monotonic()
        jobs = [gevent.spawn(driver.connect) for _ in range(per_window)]
        gevent.joinall(jobs, raise_error=True)
        windows.append([t0, time.monotonic()])
        conns = [job.value for job in jobs]
        if len(windows) == max(1, rounds):
            break  # the last round: its late heartbeat is recorded when the hub next runs
        gevent.sleep(0.005)  # a late heartbeat fires now, so the rule sees this window's lag
        if rules.connect_decided(windows, rounds):
            break
    for conn in conns[greenlets:]:
        with contextlib.suppress(Exception):
            conn.close()
    return conns[:greenlets], record.ConnectPhase(single=single, windows=windows,
                                                  connects=per_window)


def _connect_in_turn(driver: Driver, workload: dict, order: list[int], rules: Rules
                     ) -> tuple[list, record.ConnectPhase]:
    """The connect phase, one worker at a time, then wait until every worker is done.

    Measured: with 4 workers connecting 16 greenlets each at the same moment, on 2 cores,
    the server's 64 backend forks starved cooperating workers of CPU (hub lag up to 140 ms,
    stall share up to 0.59), while one worker at a time kept its median share at 0.54 or
    less against 0.97 or more for a blocked one (docs/connect-phase.md).
    Taking turns keeps the evidence about the driver; the wait windows then start together.
    The heartbeat ticks for this worker's own turn only (nothing of it is measured while the
    others take theirs), then again once every worker has connected.
    """
    pid = os.getpid()
    run_dir = _run_dir()
    timeout = float(workload["go_timeout_s"])
    mine = order.index(pid) if pid in order else 0
    before = [os.path.join(run_dir, f"connected-{p}") for p in order[:mine]]
    _wait_for_files(before, timeout, "the workers before this one did not finish connecting")
    heartbeat = rules.heartbeat
    # It ticks from here on: a lone connect and 10 ms (five ticks) come before the first
    # window (``connect_phase``).
    heartbeat.start()
    try:
        conns, phase = connect_phase(driver, int(workload["greenlets"]),
                                      int(workload.get("connect_rounds", 1)), rules,
                                      int(workload.get("connect_min_connects", 0)))
    finally:
        heartbeat.pause()
    # A marker for the other workers (only its existence counts; the parent never reads it).
    with open(os.path.join(run_dir, f"connected-{pid}"), "w"):
        pass
    everyone = [os.path.join(run_dir, f"connected-{p}") for p in order]
    _wait_for_files(everyone, timeout, "the other workers did not finish connecting")
    heartbeat.start()  # it ticks while the first queries run, before the idle window
    return conns, phase


def run(source, worker=None) -> None:
    """Run the whole workload once and write ``result-<pid>.json`` (a ``ProbeResult``)."""
    import gevent

    pid = os.getpid()
    workload = _env_workload()
    if os.path.exists(os.path.join(_run_dir(), "go")):
        # gunicorn started this worker after the probe began, in place of one it killed
        # (WORKER TIMEOUT) or lost: the others are being measured, this one only serves, and
        # is watched like them if the routes are being driven (its hub serves them too).
        if glob.glob(os.path.join(_run_dir(), "route-ready-*.json")) and \
                not os.path.exists(os.path.join(_run_dir(), "routes-stop")):
            _hand_over_to_routes(workload)
        return
    found: dict = {}
    """The fields of this worker's ``ProbeResult``, filled in as each phase ends."""
    conns: list = []
    heartbeat = Heartbeat(workload["heartbeat_ms"] / 1000.0)
    monitor = None
    try:
        module, import_error = source.driver()
        found["facts"] = collect_facts(source, worker)
        if import_error:
            raise ImportError(import_error)
        driver = Driver(module, workload)
        port = None
        if worker is not None and worker.sockets:
            port = worker.sockets[0].getsockname()[1]
        # The facts go along already: a worker killed mid-probe never writes its result.
        _write(f"ready-{pid}.json", record.Ready(pid=pid, port=port, facts=found["facts"]))
        order = _wait_for_go(workload)

        rules = Rules(workload, heartbeat)
        monitor = _start_monitor(workload)
        conns, found["connect"] = _connect_in_turn(driver, workload, order, rules)
        found["blocked_connect"], monitor = _stop_monitor(monitor), None
        cursors = [conn.cursor() for conn in conns]
        # One query per connection first, so first-use costs stay out of the windows.
        gevent.joinall([gevent.spawn(driver.query, c, "SELECT 1") for c in cursors],
                       raise_error=True)
        # The idle window: G connections open, nothing sent, only the heartbeat runs. The
        # parent reads the worker's CPU over it (does an idle connection spin?).
        idle = float(workload.get("idle_seconds", 0.0))
        if idle > 0:
            gevent.sleep(0.02)  # the first queries' answers are read, the heartbeat ticks
            from geventprobe.worker import controls, running

            spinners = controls.idle_spinners(conns)  # none unless the idle-spin control
            # Who runs on the hub's thread meanwhile: if the worker spins, whose loop it is.
            tracer = running.Tracer()
            before = tracer.begin()
            i0 = time.monotonic()
            gevent.sleep(idle)
            found["idle_window"] = [i0, time.monotonic()]
            found["idle_running"] = tracer.end(before)
            gevent.killall(spinners)
        w = float(workload["wait_seconds"])
        rounds = int(workload["wait_rounds"])
        windows: list[list[float]] = []
        called_off: list[int] = []
        monitor = _start_monitor(workload)
        for _ in range(rounds):
            gevent.sleep(0.02)  # let the heartbeat tick between windows (10 ticks)
            # A blocked hub serialises every window (16 × w = 2.4 s each by default): once
            # the first one decided BLOCKING, the others would only repeat it.
            if rules.waits_blocking(windows, rounds):
                break
            window, off = wait_window(driver, conns, cursors, rules)
            windows.append(window)
            called_off.append(off)
        gevent.sleep(0.02)
        found["blocked"], monitor = _stop_monitor(monitor), None

        latencies: list[int] = []
        t_end = time.monotonic() + float(workload["select1_seconds"])

        def select1_loop(cursor):
            clock = time.perf_counter_ns
            keep = latencies.append
            while time.monotonic() < t_end:
                t = clock()
                driver.query(cursor, "SELECT 1")
                keep((clock() - t) // 1000)

        s0 = time.monotonic()
        gevent.joinall([gevent.spawn(select1_loop, c) for c in cursors], raise_error=True)
        s1 = time.monotonic()
        heartbeat.pause()
        # The request phase's connections, after every measurement: a worker booted ahead of
        # its turn holds none while other builds are measured.
        _serve_route(driver, workload)

        found.update(
            wait_seconds=w,
            windows=windows,
            called_off=called_off,
            select1_window=[s0, s1],
            select1_latencies_us=latencies,
            heartbeat_expected=heartbeat.expected,
            heartbeat_lag=heartbeat.lag,
            # The wait function may be looked up again on every query: report what it is now.
            facts_after=collect_facts(source, worker),
        )
    except BaseException as exc:
        heartbeat.stop()
        with contextlib.suppress(Exception):
            _stop_monitor(monitor)
        found["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        found["traceback"] = traceback.format_exc()
    finally:
        _write(f"result-{pid}.json", record.ProbeResult(pid=pid, **found))
        if "error" not in found and conns:
            # After the verdict's windows, never during them: the requests' own CPU and
            # greenlets would disturb the evidence (measured: README, request latency).
            with contextlib.suppress(Exception):
                _request_phase(driver, cursors, workload)
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        if "error" not in found:
            _hand_over_to_routes(workload)


def _start_monitor(workload: dict):
    """gevent's monitor thread for the connect phase or the wait windows (who blocked); None
    when turned off."""
    from geventprobe.worker.monitor import Monitor

    period = float(workload.get("monitor_ms", 0)) / 1000.0
    return Monitor(period).start() if period > 0 else None


def _stop_monitor(monitor) -> list[record.BlockedEvent]:
    """Stop it before the SELECT 1 loop (its tracer must not weigh on those figures)."""
    return monitor.stop() if monitor is not None else []


def _hand_over_to_routes(workload: dict) -> None:
    """``run --app --route``: the parent drives the app's own routes next, in this worker."""
    from geventprobe.worker import probe_route
    from geventprobe.worker.monitor import DEFAULT_MAX_BLOCKING_S, Monitor

    timeout = float(os.environ.get("GEVENTPROBE_ROUTES_TIMEOUT_S") or 0)
    if timeout <= 0:
        return
    period = float(workload.get("monitor_ms", 0)) / 1000.0 or DEFAULT_MAX_BLOCKING_S
    probe_route.route_phase(_run_dir(), Heartbeat(workload["heartbeat_ms"] / 1000.0),
                            Monitor(period), timeout, _write)


def start(worker, source=HARNESS) -> None:
    """Entry point from ``post_worker_init``: the source's set-up, then spawn the probe.

    ``source``: ``HARNESS`` from ``harness_conf.py``, ``USERS_APP`` from ``app_conf.py``.
    """
    import gevent

    from geventprobe.worker import probe_route

    # The parent's HTTP load reaches the route through the worker's own WSGI callable.
    worker.wsgi = probe_route.wrap(worker.wsgi)
    source.set_up()
    gevent.spawn(run, source, worker)

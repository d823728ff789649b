"""Why a build got its verdict, and how to fix it, in words computed from the worker's facts.

The facts are what the worker reported about itself (docs/field-facts.md): the
wait function psycopg chose, whether select was patched when the driver was
imported, in which process it was imported, psycopg2's wait callback.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from geventprobe.record import Verdict
from geventprobe.worker.record import Running

GEVENT_SUPPORT = Version("3.1.14")  # first psycopg whose c/binary builds detect gevent
PATCH_FIRST = ("patch first: put `from gevent import monkey; monkey.patch_all()` at the very "
               "top of the gunicorn config file, so the master is patched before it imports "
               "the app")


def _version(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _imported_early(facts: dict, preload: bool) -> tuple[str, str]:
    """(where psycopg was imported before gevent patched, in words; the fix)."""
    imported = facts.get("driver_import") or {}
    where = ""
    if facts.get("driver_imported_in_master"):
        where = " (in the gunicorn master: --preload" if preload else \
            " (in the gunicorn master: config file or hook"
        where += ", before the worker patched)"
    if imported.get("where"):  # run --app: the import hook saw where, and who imported it
        where = f" ({imported['where']})"
        preload = preload and imported.get("phase") == "master"
    advice = ("drop --preload, or " + PATCH_FIRST) if preload else \
        ("import psycopg only from the app, never from the gunicorn config file or its "
         "on_starting/post_fork hooks, or " + PATCH_FIRST)
    return where, advice


def _psycopg_connect_blocking(facts: dict, preload: bool) -> tuple[str, str]:
    """Only connection setup blocked: psycopg's selector, bound when it was imported."""
    pg = facts.get("psycopg") or {}
    selector = pg.get("selector") or "unknown"
    imported = facts.get("driver_import") or {}
    if selector.startswith("selectors."):
        where = ""
        if imported and not imported.get("select_patched"):
            where, advice = _imported_early(facts, preload)
        else:
            advice = PATCH_FIRST
        return (f"psycopg sets connections up with psycopg.waiting.DefaultSelector = "
                f"{selector}, the standard library's, bound because psycopg was imported "
                f"before gevent patched select{where}: every connect waits in C and stalls the "
                f"hub, although its queries cooperate ({pg.get('wait') or 'its wait function'})",
                advice)
    return (f"connecting stalled the hub although psycopg's connection selector is {selector}: "
            "something else in connection setup waits in C (a host name resolved by libpq?)",
            "try an IP address instead of a host name in the DSN, and report it to psycopg with "
            "this run's Markdown or JSON report attached")


def _psycopg_blocking(facts: dict, preload: bool) -> tuple[str, str]:
    pg = facts.get("psycopg") or {}
    wait = pg.get("wait")
    version = _version(pg.get("version"))
    forced = (facts.get("env") or {}).get("PSYCOPG_WAIT_FUNC")
    imported = facts.get("driver_import") or {}
    if wait != "wait_c":
        return (f"psycopg's wait function {wait} did not yield to the gevent hub",
                "this is unexpected: report it to psycopg with this run's Markdown or JSON "
                "report attached")
    if forced == "wait_c":
        return ("PSYCOPG_WAIT_FUNC=wait_c forces psycopg's C wait function, which waits in C "
                "without yielding to gevent", "unset PSYCOPG_WAIT_FUNC")
    if version is not None and version < GEVENT_SUPPORT:
        return (f"psycopg {version} < 3.1.14: its c/binary builds always wait in C (wait_c) "
                "and do not support gevent (psycopg issue #527)",
                "upgrade: pip install 'psycopg[binary]>=3.1.14' (and import it after "
                "monkey-patching), or use the pure-Python build (PSYCOPG_IMPL=python)")
    if not facts.get("select_patched"):
        return ("gevent did not patch select in this worker (monkey.patch_all(select=False)?), "
                "so psycopg chose wait_c, which waits in C without yielding",
                "let gevent patch select: call monkey.patch_all() without select=False")
    if imported and not imported.get("select_patched"):
        where, advice = _imported_early(facts, preload)
        return ("psycopg chose wait_c because it was imported before gevent patched select"
                + where, advice)
    return ("psycopg uses wait_c although select was patched when it was imported",
            "set PSYCOPG_WAIT_FUNC=wait_poll as a workaround and report it to psycopg")


def _psycopg2_blocking(facts: dict) -> tuple[str, str]:
    callback = (facts.get("psycopg2") or {}).get("wait_callback")
    if callback is None:
        return ("psycopg2 has no wait callback, so libpq waits in C and the hub stops",
                "call psycogreen.gevent.patch_psycopg() in post_worker_init (pip install "
                "psycogreen)")
    return (f"psycopg2's wait callback {callback} did not yield to the gevent hub",
            "use psycogreen.gevent.patch_psycopg() as the wait callback")


def _busy_wait(facts: dict) -> tuple[str, str]:
    if facts.get("driver") == "psycopg2":
        callback = (facts.get("psycopg2") or {}).get("wait_callback")
        return (f"psycopg2's wait callback {callback} yields to the hub but never sleeps: "
                "the worker spins while the server works",
                "use psycogreen.gevent.patch_psycopg() as the wait callback")
    wait = (facts.get("psycopg") or {}).get("wait")
    return (f"psycopg's wait function {wait} yields to the hub but never sleeps (it polls with "
            "a zero timeout): the worker spins while the server works",
            "let psycopg choose its own wait function: unset PSYCOPG_WAIT_FUNC and remove any "
            "replacement of psycopg.waiting.wait")


def explain(verdict: Verdict, facts: dict, preload: bool,
            phases: frozenset[str] | set[str] = frozenset({"waits"})
            ) -> tuple[str | None, str | None]:
    """(cause, advice) for a BLOCKING or BUSY-WAIT verdict; (None, None) otherwise.

    ``phases``: when the rules that fired measured (``waits``, ``connect``): a driver that
    blocked only while connecting has another cause than one whose queries block.
    """
    if verdict is Verdict.BLOCKING:
        if facts.get("driver") == "psycopg2":
            return _psycopg2_blocking(facts)
        if "waits" not in phases and "connect" in phases:
            return _psycopg_connect_blocking(facts, preload)
        return _psycopg_blocking(facts, preload)
    if verdict is Verdict.BUSY_WAIT:
        if phases and "waits" not in phases and "idle" in phases:
            return _idle_spin(facts)
        return _busy_wait(facts)
    return None, None


def _idle_spin(facts: dict) -> tuple[str, str]:
    """BUSY-WAIT while the connections were open and idle, not while they waited: nothing
    measured here does that (docs/field-facts.md), so the cause names what would."""
    driver = facts.get("driver") or "the driver"
    return (f"the worker kept a CPU busy while its {driver} connections sat open and idle "
            "(no query in flight): something polls idle connections without sleeping",
            "find the loop that polls (a keep-alive or notification listener that waits with a "
            "zero timeout, a patched wait function); wait on the connection's socket with "
            "gevent.select or gevent.socket.wait_read instead")


BUSY_SITE_SHARE = 0.25
"""A greenlet is named as the one that kept the worker busy when greenlets resumed at one
site outside the driver ran this share of the window or more, and longer than the driver's
sites together. Measured (tests/data/running): an app's loop on ``gevent.sleep(0)`` ran
0.54 of a gunicorn worker's idle window, 0.54 of a lone celery probe task's wait and
0.41–0.50 of each of 16 at once; no site of a healthy gunicorn worker's idle window ran at
all (the hub and geventprobe's heartbeat have none), nor of a healthy lone celery probe
task's wait outside the driver; with 16 at once, celery's consumer (resumed in redis-py's
socket read) ran up to 0.28, which is why the driver's own sites must be outrun too (0.49
and more for a wait function that spins inside psycopg's query; docs/causes.md)."""
SPIN_SWITCHES_PER_S = 1000
"""Switched to this often a second or more: a loop that yields without waiting (the loops
on ``gevent.sleep(0)`` were switched to 154,000–382,000 times a second), not a long
computation between two switches."""


def busy_greenlet(running: Running | None, during: str, cpu: float | None
                  ) -> tuple[str, str] | None:
    """(cause, advice) when a greenlet outside the driver kept the worker busy: in
    ``running`` (what ran on the hub's thread ``during`` the window the CPU figure ``cpu``
    covers), the site outside the driver that ran longest ran ``BUSY_SITE_SHARE`` of the
    window or more, and longer than the driver's sites together. None otherwise: the
    driver's own causes stay (a wait function that spins inside a query is the driver's,
    even one the app installed)."""
    if running is None or running.seconds <= 0:
        return None
    top = next((s for s in running.sites if not s.driver), None)
    if top is None:
        return None
    share = top.seconds / running.seconds
    in_driver = sum(s.seconds for s in running.sites if s.driver) / running.seconds
    if share < BUSY_SITE_SHARE or share <= in_driver:
        return None
    where, _, source = top.frame.partition(": ")
    code = f" (`{source}`)" if source else ""
    whose = ("a greenlet of your app" if top.user else
             f"a greenlet in {where.split('/', 1)[0].split(':', 1)[0]}")
    burned = f" ({cpu:.3f} CPU-s/s)" if cpu is not None else ""
    rate = top.switches / running.seconds
    if rate >= SPIN_SWITCHES_PER_S:
        return (f"{whose} never sleeps: while {during}, the loop at {where}{code} ran "
                f"{share:.0%} of the time and was switched to {rate:,.0f} times a second: "
                f"each turn hands the hub over and comes straight back, so the worker burns "
                f"a core{burned}; not the driver's wait",
                f"make the loop at {where} wait for its work (block on a gevent.queue.Queue "
                "or a gevent.event.Event, or sleep a real interval such as "
                "gevent.sleep(0.05)): gevent.sleep(0) only yields, it never sleeps")
    return (f"{whose} kept the CPU busy: while {during}, the code at {where}{code} ran "
            f"{share:.0%} of the time{burned}; not the driver's wait",
            f"move the work at {where} out of the worker (a task queue, a process pool), or "
            "let it pause between steps (gevent.sleep with a real interval)")


def waits_in_c(facts: dict) -> bool:
    """The workers' driver waits in C without yielding to the hub: psycopg's ``wait_c``, or
    psycopg2 without a wait callback (facts as the workers reported them)."""
    if facts.get("driver") == "psycopg2":
        return (facts.get("psycopg2") or {}).get("wait_callback") is None
    return (facts.get("psycopg") or {}).get("wait") == "wait_c"


def driver_blocking(facts: dict, preload: bool) -> tuple[str, str] | None:
    """(cause, advice) of the driver's BLOCKING verdict when its facts say it waits in C;
    None when it cooperates (a stall is then someone else's: never blame the driver)."""
    if not facts.get("driver") or not waits_in_c(facts):
        return None
    cause, advice = explain(Verdict.BLOCKING, facts, preload)
    return (cause, advice) if cause and advice else None


def worker_timeout(facts: dict, preload: bool) -> tuple[str, str]:
    """(cause, advice) when gunicorn killed a worker for a blocked hub (WORKER TIMEOUT).

    The driver is the cause only when its facts say it waits in C; a driver that cooperates
    (``wait_poll``, psycogreen's callback) did not stop the hub, whatever else did: the
    app's own code, as a rule (its routes and who blocked say where).
    """
    found = driver_blocking(facts, preload)
    if found is not None:
        return found
    if not facts.get("driver"):
        return ("a worker's hub was blocked longer than gunicorn's --timeout",
                "find the call that waits or computes without yielding to gevent (see the "
                "evidence and who blocked)")
    pg = facts.get("psycopg") or {}
    how = (f"psycopg's {pg['wait']}" if pg.get("wait") else
           f"psycopg2's wait callback {(facts.get('psycopg2') or {}).get('wait_callback')}")
    return (f"a worker's hub was blocked longer than gunicorn's --timeout, while the driver "
            f"cooperates ({how} yields to the hub): something else in the worker blocked it, "
            "the app's own code as a rule (CPU work or a blocking call in a request)",
            "find that call (--route on the app's routes names the line) and move it out of "
            "the request: a task queue or a process pool; or raise gunicorn's timeout if "
            "the work must stay")


def explain_error(error: str) -> str:
    """Advice for a probe that failed."""
    lowered = error.lower()
    if "too many clients" in lowered or "remaining connection slots" in lowered:
        return ("the server ran out of connections: lower --workers/--greenlets or raise the "
                "server's max_connections")
    if "connectiontimeout" in lowered or "timeout expired" in lowered:
        return ("a connection took longer than its connect_timeout (in the DSN, or "
                "PGCONNECT_TIMEOUT): raise it; with --rtt each connection costs 2 to 4 round "
                "trips, so keep connect_timeout above 4 × the RTT, or lower --rtt")
    if "password" in lowered or "authentication" in lowered:
        return "check the credentials in --dsn (or PGPASSWORD / ~/.pgpass)"
    if "did not run during the probe" in lowered:
        return ("find what stopped it (kill -STOP, a debugger, a frozen cgroup or container) "
                "and run again")
    if "worker timeout" in lowered or "killed a worker" in lowered:
        return ("the hub was blocked longer than gunicorn's --timeout: this is BLOCKING "
                "evidence; rerun with fewer --greenlets to see the figures")
    if "gevent worker requires gevent" in lowered:
        # A version matrix holds gunicorn to ours while --gevent varies: gunicorn 27 refuses
        # gevent < 24.10.1 at start-up.
        return ("this gunicorn's gevent worker refuses that gevent release: pick a newer "
                "--gevent, or probe with an older gunicorn installed")
    return "rerun with --debug for the full error"

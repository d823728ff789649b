"""Self-contained reproduction scripts: a build's setup, without geventprobe or gunicorn.

What a maintainer asks for first ("send a script that reproduces it"). Each
script rebuilds the setup the workers reported (import order, ``PSYCOPG_IMPL``,
``PSYCOPG_WAIT_FUNC``, ``patch_all(select=False)``, psycopg2's wait callback)
in one plain process, then does what psycopg's own ``tests/test_gevent.py``
does: N greenlets connect at once, then run ``SELECT pg_sleep(w)`` at once, while a
ticker greenlet checks that the hub keeps time, and the process CPU is read over the
window.
It prints its figures and a ``RESULT:`` line that says whether the sleeps
were serialised, and exits 1 when they were (or the wait spun), 0 otherwise,
so that it also works under ``git bisect run``. The DSN comes from the command
line or ``$DSN``, never from the script: no password is ever written into it.
"""

from __future__ import annotations

import json
import textwrap

from geventprobe.record import BuildResult, RunResult, Verdict

# The harness's busy-wait control (worker/controls.py), reduced to what a script needs.
_SPINNING_WAIT = '''

def spinning_wait(gen, fileno, interval=None, timeout=None):
    """The workers' wait function: polls with a zero timeout and yields, never sleeps."""
    import select
    from gevent import monkey
    from psycopg import waiting

    poll = monkey.get_original("select", "poll")()
    try:
        state = next(gen)
        poll.register(fileno, waiting._poll_evmasks[state])
        while True:
            events = poll.poll(0)
            if not events:
                gevent.sleep(0)
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

_MEASURE = '''
DSN = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("DSN", "")  # "" = libpq's PG* defaults
N, W, TICK = {n}, {w!r}, 0.002
SERIAL_FACTOR, LAG_FRACTION, BUSY_CPU = {factor!r}, {lag!r}, {busy!r}  # geventprobe's limits
CONNECT_SHARE, CONNECT_MIN = {share!r}, {least!r}  # ...and for the connects


def connect():
{connect}


def sleeper(conn):
    cur = conn.cursor()
    cur.execute("SELECT pg_sleep(%s)", (W,))
    cur.fetchone()


late = []
running = True


def ticker():
    while running:
        due = time.monotonic() + TICK
        gevent.sleep(TICK)
        late.append(time.monotonic() - due)


tick = gevent.spawn(ticker)
gevent.sleep(0.05)
del late[:]
c0 = time.monotonic()  # the N connects at once: does the hub keep running meanwhile?
jobs = [gevent.spawn(connect) for _ in range(N)]
gevent.joinall(jobs, raise_error=True)
cwall = time.monotonic() - c0
gevent.sleep(0.01)  # a late tick fires now
cstall = max(late, default=0.0)
conns = [job.value for job in jobs]
for conn in conns:  # first use outside the timed window
    conn.cursor().execute("SELECT 1")
gevent.sleep(0.05)
del late[:]
cpu0, t0 = time.process_time(), time.monotonic()
gevent.joinall([gevent.spawn(sleeper, c) for c in conns], raise_error=True)
wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
running = False
tick.join()
for conn in conns:
    conn.close()

factor, lag = wall / W, max(late, default=0.0)
print(f"{{N}} concurrent SELECT pg_sleep({{W}}) took {{wall:.3f}} s = {{factor:.2f}}x one sleep "
      f"(1x if they overlap, {{N}}x if they run one at a time)")
print(f"ticker (every {{TICK * 1000:.0f}} ms) was late by up to {{lag * 1000:.1f}} ms; process CPU "
      f"{{cpu:.3f}} s over {{wall:.3f}} s wall ({{cpu / wall:.2f}} CPU-s/s)")
print(f"{{N}} concurrent connects took {{cwall * 1000:.1f}} ms; the ticker was late by up to "
      f"{{cstall * 1000:.1f}} ms meanwhile ({{cstall / cwall:.0%}} of it)")
if factor >= SERIAL_FACTOR or lag >= LAG_FRACTION * W:
    print("RESULT: serialised: the sleeps ran one at a time, the gevent hub was blocked (BLOCKING)")
    sys.exit(1)
if cwall * 1000 >= CONNECT_MIN and cstall / cwall >= CONNECT_SHARE:
    print("RESULT: connects serialised: the gevent hub was blocked while connecting (BLOCKING)")
    sys.exit(1)
if cpu / wall >= BUSY_CPU:
    print("RESULT: overlapped but spinning: the wait loop burned CPU while the server slept "
          "(BUSY-WAIT)")
    sys.exit(1)
print("RESULT: overlapped: the sleeps ran concurrently and the ticker kept time (OK)")
'''


def _facts(build: BuildResult) -> tuple[str, dict, dict]:
    facts = build.facts or {}
    driver = facts.get("driver") or ("psycopg2" if build.build.startswith("psycopg2")
                                     else "psycopg")
    return driver, facts, (facts.get(driver) or {})


def _psycopg_setup(build: BuildResult, facts: dict, pg: dict) -> tuple[list[str], list[str]]:
    """(lines, what the setup reproduces) for a psycopg 3 build."""
    env = facts.get("env") or {}
    impl = pg.get("impl") or env.get("PSYCOPG_IMPL") or build.build
    lines = [f'os.environ["PSYCOPG_IMPL"] = {_literal(impl)}  # the build under test']
    said = [f"PSYCOPG_IMPL={impl}"]
    forced = env.get("PSYCOPG_WAIT_FUNC")
    if forced:
        lines.append(f'os.environ["PSYCOPG_WAIT_FUNC"] = {_literal(forced)}  # as in the workers')
        said.append(f"PSYCOPG_WAIT_FUNC={forced}")
    imported = facts.get("driver_import") or {}
    before = imported.get("select_patched") is False
    patch = ("monkey.patch_all(select=False)  # as in the workers: select left unpatched"
             if facts.get("select_patched") is False else "monkey.patch_all()")
    if facts.get("select_patched") is False:
        said.append("patch_all(select=False)")
    if before:
        where = ("the gunicorn master" if facts.get("driver_imported_in_master")
                 else "the worker")
        lines += [f"# psycopg imported BEFORE gevent patches, as it was in {where}",
                  "# (--preload, a config file or hook): it picks its wait function now.",
                  "import psycopg", "", "from gevent import monkey", "", patch]
        said.append("psycopg imported before monkey.patch_all()")
    else:
        lines += ["from gevent import monkey", "", patch, "", "import psycopg"]
        said.append("monkey.patch_all() before import psycopg")
    lines += ["import gevent"]
    wait = pg.get("wait")
    if wait == "busy_wait_control":
        lines.append(_SPINNING_WAIT)
        said.append("the harness's spinning wait function")
    elif wait and not wait.startswith("wait_"):
        lines.append(f"# The workers used wait function {wait}, which is not psycopg's own: "
                     "assign it to psycopg.waiting.wait here to reproduce them.")
    return lines, said


def _psycopg2_setup(facts: dict, pg2: dict) -> tuple[list[str], list[str]]:
    callback = pg2.get("wait_callback")
    lines = ["from gevent import monkey", "", "monkey.patch_all()", "", "import gevent",
             "import psycopg2", "import psycopg2.extensions"]
    if callback and callback.startswith("psycogreen"):
        lines += ["from psycogreen.gevent import patch_psycopg", "",
                  "patch_psycopg()  # the workers' wait callback"]
        said = ["psycogreen.gevent.patch_psycopg()"]
    elif callback:
        lines.append(f"# The workers used wait callback {callback}: install it here with "
                     "psycopg2.extensions.set_wait_callback() to reproduce them.")
        said = [f"wait callback {callback}"]
    else:
        lines.append("# No wait callback: libpq waits in C, as in the workers.")
        said = ["no wait callback"]
    return lines, said


def _requirements(driver: str, facts: dict, pg: dict) -> str:
    pins = []
    version = pg.get("version")
    if driver == "psycopg":
        impl = pg.get("impl")
        extra = {"binary": "[binary]", "c": "[c]"}.get(impl or "", "")
        pins.append(f'"psycopg{extra}=={version}"' if version else f'"psycopg{extra}"')
    else:
        pins.append(f'"psycopg2-binary=={version}"' if version else '"psycopg2-binary"')
        if (pg.get("wait_callback") or "").startswith("psycogreen"):
            pins.append(f'"psycogreen=={facts["psycogreen"]}"' if facts.get("psycogreen")
                        else '"psycogreen"')
    gevent = facts.get("gevent")
    pins.append(f'"gevent=={gevent}"' if gevent else '"gevent"')
    return "pip install " + " ".join(pins)


def _literal(text: str) -> str:
    return json.dumps(text)  # a double-quoted Python string literal


def script(build: BuildResult, result: RunResult | None = None) -> str:
    """A standalone Python script that reproduces ``build``'s setup and says what it does."""
    driver, facts, pg = _facts(build)
    if driver == "psycopg2":
        setup, said = _psycopg2_setup(facts, pg)
        connect = ('    conn = psycopg2.connect(DSN, application_name="geventprobe-repro")\n'
                   "    conn.autocommit = True\n    return conn")
        facts_line = ('callback = psycopg2.extensions.get_wait_callback()\n'
                      'print("psycopg2", psycopg2.__version__.split()[0], "| wait callback",\n'
                      '      callback and f"{callback.__module__}.{callback.__name__}",\n'
                      '      "| gevent", gevent.__version__)\n')
    else:
        setup, said = _psycopg_setup(build, facts, pg)
        connect = ('    return psycopg.connect(DSN, autocommit=True, '
                   'application_name="geventprobe-repro")')
        facts_line = ('print("psycopg", psycopg.__version__, psycopg.pq.__impl__,\n'
                      '      "| wait function", psycopg.waiting.wait.__name__,\n'
                      '      "| gevent", gevent.__version__)\n')
    m = build.metrics
    profile = (result.profile if result else {}) or {}
    thresholds = profile.get("thresholds") or {}
    workload = profile.get("workload") or {}
    n = m.greenlets if m else int(workload.get("greenlets", 8))
    w = m.wait_seconds if m else float(workload.get("wait_seconds", 0.15))
    head = [
        "#!/usr/bin/env python3",
        f'"""Reproduces geventprobe\'s finding for build {build.build}: {build.verdict.value}, '
        "without gunicorn.",
        "",
    ]
    if m is not None:
        head += [f"In the gunicorn workers: {m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) "
                 f"took {m.wait_factor:.2f}x one sleep,",
                 f"the hub was late by up to {m.max_hub_lag_ms:,.1f} ms"
                 + (f", CPU {m.cpu_during_waits:.3f} CPU-s/s while waiting."
                    if m.cpu_during_waits is not None else ".")]
    if build.cause:
        head += textwrap.wrap(f"Cause: {build.cause}.", 88)
    head += textwrap.wrap(f"Setup, as the workers reported it: {'; '.join(said)}.", 88)
    head += [
        "",
        f"Needs: {_requirements(driver, facts, pg)}",
        "Run:   python repro.py 'host=... dbname=...'  (or DSN=... in the environment; neither:",
        "       libpq's PG* variables). Prints a RESULT line; exits 1 when the sleeps were",
        "       serialised or the wait spun, 0 when they overlapped (git bisect run works).",
        '"""',
        "",
        "import os",
        "import sys",
        "import time",
        "",
    ]
    body = _MEASURE.format(
        n=n, w=w, connect=connect,
        factor=float(thresholds.get("blocking_wait_factor", 2.0)),
        lag=float(thresholds.get("blocking_hub_lag_fraction", 0.5)),
        busy=float(thresholds.get("busy_wait_cpu", 0.2)),
        share=float(thresholds.get("connect_stall_share", 0.85)),
        least=float(thresholds.get("connect_min_window_ms", 25.0)),
    )
    return "\n".join(head + setup) + "\n\n" + facts_line + body


def wanted(build: BuildResult) -> bool:
    """A reproduction is worth attaching for a build that blocked or busy-waited in its
    waits (the script reproduces concurrent waits: an idle window's spin is not in it)."""
    if {e.phase for e in build.evidence if e.fired} == {"idle"}:
        return False
    return build.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT)

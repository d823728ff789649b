"""Who blocked under a held GIL (worker/stall_watch.py): a wall-clock alarm the hub re-arms.

The real case in a real gevent hub (no gunicorn): ``examples/regex_route``'s backtracking
match holds the GIL ~0.2 s a call, gevent's monitor thread sees nothing, the alarm's
handler names ``app.py:24 in validate``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from geventprobe.core import blocked
from geventprobe.worker import stall_watch
from geventprobe.worker.record import BlockedEvent

EXAMPLE = Path(__file__).parent.parent / "examples" / "regex_route"


def _events(dicts: list[dict]) -> list[BlockedEvent]:
    return [BlockedEvent(**d) for d in dicts]


def _run(code: str, watch: str = "1") -> list[dict]:
    script = textwrap.dedent("""\
        from gevent import monkey; monkey.patch_all()
        import gevent, json, sys
        sys.path.insert(0, sys.argv[1])
        import app
        from geventprobe.worker.monitor import Monitor
        m = Monitor(0.05)
        m.stall_watch = True
        m.start()
        gevent.sleep(0.1)
        """) + textwrap.dedent(code) + ("gevent.sleep(0.1)\nimport dataclasses\n"
                                              "print(json.dumps([dataclasses.asdict(e) "
                                              "for e in m.stop()]))\n")
    out = subprocess.run([sys.executable, "-c", script, str(EXAMPLE)], capture_output=True,
                         text=True, timeout=60, cwd=EXAMPLE,
                         env=dict(os.environ, GEVENTPROBE_STALL_WATCH=watch))
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_a_gil_holding_call_is_named():
    events = _run("gevent.joinall([gevent.spawn(app.validate, app.SUBJECT) for _ in range(3)])\n")
    counted = blocked.stacks(_events(events), "t")
    assert counted, "no stack for a 0.2 s regex that held the GIL"
    assert counted[0].user_frame.startswith("app.py:24 in validate")
    assert counted[0].count >= 3  # one alarm per call at least
    assert all("validate" in e["frames"][-1] for e in events)
    assert counted[0].gil_held  # the helper thread could not run while the match ran


def test_short_stalls_that_release_the_gil_are_not_called_gil_held():
    """Back-to-back 60 ms sleeps in C (the GIL released), the hub switching between them:
    the monitor thread reports none (the hub switched since its last look), the alarm
    does, and its helper thread kept running: the GIL was free."""
    code = ("import time as t\nfrom gevent.monkey import get_original\n"
            "sleep = get_original('time', 'sleep')\n"
            "gevent.joinall([gevent.spawn(sleep, 0.06) for _ in range(10)])\n")
    counted = blocked.stacks(_events(_run(code)), "t")
    assert counted, "the alarm saw nothing of 10 back-to-back 60 ms stalls"
    assert not any(s.gil_held for s in counted), counted


def test_without_the_watch_the_monitor_alone_sees_nothing():
    """The truth the watch answers: gevent's monitor thread is blind to this stall."""
    events = _run("gevent.joinall([gevent.spawn(app.validate, app.SUBJECT) for _ in range(3)])\n",
                  watch="0")
    assert events == []


def test_a_stall_the_monitor_sees_is_counted_once():
    """A GIL-releasing call the monitor sees is not counted again from the alarm's sighting of
    it: in the same run, no event of the alarm's is left beside the monitor's. (The test
    compared two runs' counts before: their stalls differ on a loaded machine, 3 against 7
    sightings were seen, and it failed once for that alone.)"""
    code = "import hashlib\nhashlib.pbkdf2_hmac('sha256', b'x', b'y', 1000000)\n"
    both = _run(code)
    assert any(e["source"] == "monitor" for e in both), "the monitor sees a GIL-releasing call"
    assert [e for e in both if e["source"] == "alarm"] == []


def test_merge_counts_each_stall_once_and_drops_the_handlers_own_traces():
    seen = [BlockedEvent(t=5.00, s=0.05, frames=["app.py:19 in login"], user=0),
            BlockedEvent(t=5.30, s=0.05, frames=[
                "app.py:24 in validate",
                "geventprobe/worker/stall_watch.py:100 in _on_alarm: def _on_alarm(…)"], user=0)]
    stalls = [BlockedEvent(t=5.04, s=0.10, frames=["app.py:19 in login"], user=0),
              BlockedEvent(t=5.32, s=0.05, frames=["app.py:24 in validate"], user=0)]
    merged = stall_watch.merge(seen, stalls)
    assert [(e.t, e.frames[-1]) for e in merged] == [
        (5.00, "app.py:19 in login"), (5.32, "app.py:24 in validate")]


def _script(body: str) -> dict:
    """Run ``body`` in a patched process beside the regex example; its last line is JSON."""
    script = textwrap.dedent("""\
        from gevent import monkey; monkey.patch_all()
        import dataclasses, gevent, json, signal, sys, time
        sys.path.insert(0, sys.argv[1])
        import app
        from geventprobe.core import blocked
        from geventprobe.worker.monitor import Monitor
        """) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", script, str(EXAMPLE)], capture_output=True,
                         text=True, timeout=60, cwd=EXAMPLE)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def _named(events: list[dict]) -> str | None:
    counted = blocked.stacks(_events(events), "t")
    return counted[0].user_frame if counted else None


def test_an_apps_own_alarm_installed_at_start_is_untouched_and_the_line_still_named():
    """Issue 25 row 11: the app owns SIGALRM and ITIMER_REAL from the start (a 1 s alarm of
    its own). The watch runs anyway, on a timer and a signal of its own: the app's timer
    keeps counting down as the app set it, its handler fires once, at its time, and who
    held the hub under the GIL is still named."""
    result = _script("""\
        fired = []
        signal.signal(signal.SIGALRM, lambda *a: fired.append(time.monotonic()))
        t0 = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 1.0)
        m = Monitor(0.05)
        m.stall_watch = True
        m.start()
        gevent.sleep(0.05)
        gevent.joinall([gevent.spawn(app.validate, app.SUBJECT) for _ in range(3)])
        left = signal.getitimer(signal.ITIMER_REAL)[0]  # the app's, never re-armed by us
        during = len(fired)
        off = m._stalls.off
        events = [dataclasses.asdict(e) for e in m.stop()]
        gevent.sleep(max(0.0, 1.2 - (time.monotonic() - t0)))
        print(json.dumps({"left": left, "elapsed": time.monotonic() - t0, "during": during,
                          "fired_after": [f - t0 for f in fired], "off": off,
                          "events": events, "mine": signal.getsignal(signal.SIGALRM) is not
                          signal.SIG_DFL}))
        """)
    assert result["off"] is None  # the watch did not step aside: nothing of its was taken
    assert result["during"] == 0  # the app's alarm did not fire early
    assert 0.0 < result["left"] <= 1.0 - 0.3  # it kept counting down from 1 s, untouched
    assert len(result["fired_after"]) == 1 and 0.95 <= result["fired_after"][0] <= 1.3
    assert result["mine"]  # the app's handler is still installed after the watch stopped
    assert (_named(result["events"]) or "").startswith("app.py:24 in validate")


def test_the_timeout_decorator_pattern_per_request_never_fires():
    """Issue 25 row 11, in one process: greenlets each install a SIGALRM handler and arm a 2 s
    ITIMER_REAL (the timeout-decorator pattern), wait 20 ms cooperatively, then run the
    0.2 s regex. None comes near 2 s: with the watch on, none may time out (the first
    watch re-armed ITIMER_REAL to 50 ms and fired the app's handler), and the line is named."""
    result = _script("""\
        class Timeout(Exception):
            pass
        def on_timeout(*a):
            raise Timeout()
        def guarded():
            old = signal.signal(signal.SIGALRM, on_timeout)
            signal.setitimer(signal.ITIMER_REAL, 2.0)
            try:
                gevent.sleep(0.02)
                return app.validate(app.SUBJECT)
            except Timeout:
                return "timed out"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        m = Monitor(0.05)
        m.stall_watch = True
        m.start()
        gevent.sleep(0.05)
        answers = [g.get() for g in gevent.joinall([gevent.spawn(guarded) for _ in range(6)])]
        events = [dataclasses.asdict(e) for e in m.stop()]
        print(json.dumps({"answers": answers, "events": events}))
        """)
    assert result["answers"] == [False] * 6  # the match ran to its end every time
    assert (_named(result["events"]) or "").startswith("app.py:24 in validate")


def test_the_watch_steps_aside_when_the_app_takes_its_signal():
    """The app installs a handler for the very signal the watch took, while it runs: the
    watch deletes its timer at its next re-arm, says so, and never sends the app a signal
    after; the app's handler stays when the watch stops."""
    result = _script("""\
        from geventprobe.worker.stall_watch import StallWatch
        w = StallWatch(0.05).start()
        got = []
        gevent.sleep(0.05)
        signal.signal(w.signo, lambda *a: got.append(1))
        gevent.sleep(0.05)  # a re-arm or two: the watch sees it is not its handler any more
        app.validate(app.SUBJECT)  # 0.2 s of a held hub: the old timer would fire 4 times
        w.stop()
        print(json.dumps({"off": w.off, "got": len(got),
                          "kept": signal.getsignal(w.signo) is not signal.SIG_DFL}))
        """)
    assert result["off"].startswith("the app took SIGRTMAX while the stall watch ran: it "
                                    "stepped aside"), result
    assert result["got"] == 0 and result["kept"]


def test_a_signal_handled_from_c_is_not_taken():
    """``free_signal`` reads the kernel's disposition: faulthandler's handler on SIGRTMAX
    (installed from C, invisible to ``signal.getsignal``) makes it take the next one."""
    script = textwrap.dedent("""\
        import faulthandler, signal, sys
        from geventprobe.worker import signal_timer
        assert signal_timer.free_signal() == signal.SIGRTMAX
        faulthandler.register(signal.SIGRTMAX, file=sys.stderr)
        print(signal.getsignal(signal.SIGRTMAX) == signal.SIG_DFL,
              signal_timer.free_signal() == signal.SIGRTMAX - 1)
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_started_from_a_greenlet_as_in_a_gunicorn_worker():
    """The probe starts the monitor from a spawned greenlet, where ``threading`` (patched)
    says the current thread is not the main one: the watch must start anyway."""
    script = textwrap.dedent("""\
        from gevent import monkey; monkey.patch_all()
        import gevent, json, sys
        sys.path.insert(0, sys.argv[1])
        import app
        from geventprobe.worker.monitor import Monitor
        def phase():
            m = Monitor(0.05)
            m.stall_watch = True
            m.start()
            gevent.sleep(0.05)
            gevent.joinall([gevent.spawn(app.validate, app.SUBJECT) for _ in range(2)])
            gevent.sleep(0.05)
            return m.stop()
        import dataclasses
        print(json.dumps([dataclasses.asdict(e) for e in gevent.spawn(phase).get()]))
        """)
    out = subprocess.run([sys.executable, "-c", script, str(EXAMPLE)], capture_output=True,
                         text=True, timeout=60, cwd=EXAMPLE)
    assert out.returncode == 0, out.stderr
    counted = blocked.stacks(_events(json.loads(out.stdout.splitlines()[-1])), "t")
    assert counted and counted[0].user_frame.startswith("app.py:24 in validate")


def test_the_alarm_interrupts_no_system_call_of_the_main_thread():
    """A C wait that does not retry on EINTR (psycopg 3.1.12's wait_c raised
    InterruptedError): libc's poll() for 0.3 s in the main thread, GIL released, the hub
    stalled, the watch firing every 50 ms meanwhile."""
    script = textwrap.dedent("""\
        from gevent import monkey; monkey.patch_all()
        import ctypes, ctypes.util, gevent, json
        from geventprobe.worker.monitor import Monitor
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        m = Monitor(0.05)
        m.stall_watch = True
        m.start()
        gevent.sleep(0.05)
        rv = libc.poll(None, 0, 300)
        err = ctypes.get_errno()
        gevent.sleep(0.05)
        m.stop()
        print(json.dumps([rv, err]))
        """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == [0, 0]  # not -1, EINTR


# ---------------------------------------------------------------- the GIL rule, on recorded figures

def _alarms_held(starved: list[tuple[float, float]], alarms: list[float]) -> list[bool]:
    watch = stall_watch.StallWatch(0.05)
    watch._starved = starved
    return [watch._held(t) for t in alarms]


def test_a_wake_up_late_across_two_alarms_says_both_were_held():
    # Seen once in a full suite (5 alarms, fewer than 3 of them called held). Measured on
    # regex_route's matches: the helper thread, due before an alarm, may get the GIL only at
    # the next alarm, 35-62 ms later (as here: due 0.107 s, got it at 0.2 s; alarms every
    # 50 ms). Its one late wake-up spans both alarms, and both were held.
    assert _alarms_held([(0.107, 0.2)], [0.15, 0.2]) == [True, True]


def test_a_wake_up_late_before_or_after_the_stall_says_nothing_of_it():
    # The helper starved before the stall and on time across it (a GIL-releasing stall at
    # 1.0 s), or due only after the stall began: not held.
    assert _alarms_held([(0.50, 0.60)], [1.0]) == [False]
    assert _alarms_held([(0.99, 1.30)], [1.0]) == [False]

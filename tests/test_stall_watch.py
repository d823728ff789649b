"""Who blocked under a held GIL: faulthandler's dumps read back (worker/stall_watch.py).

``faulthandler_regex.txt`` is a real dump: the watchdog fired every 50 ms
while ``examples/regex_route``'s backtracking match held the GIL in the main thread, with
a second thread parked in ``threading.Event.wait``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from geventprobe.core import blocked
from geventprobe.worker import stall_watch

DATA = Path(__file__).parent / "data" / "causes"
MAIN = 0x7EFC05210B80  # the main thread of the dump (the hub's thread in a worker)
OTHER = 0x7EFC046A56C0


def test_the_hub_threads_stack_once_per_dump_innermost_last():
    text = (DATA / "faulthandler_regex.txt").read_text()
    stacks = stall_watch.parse_dump(text, MAIN)
    assert len(stacks) == text.count("Timeout (") >= 3
    inner_path, inner_line, inner_func = stacks[0][-1]
    assert inner_path.endswith("examples/regex_route/app.py")
    assert (inner_line, inner_func) == (24, "validate")


def test_another_threads_stack_is_not_the_hubs():
    stacks = stall_watch.parse_dump((DATA / "faulthandler_regex.txt").read_text(), OTHER)
    assert stacks and all(fr[-1][2] == "wait" for fr in stacks)
    assert stall_watch.parse_dump((DATA / "faulthandler_regex.txt").read_text(), 1) == []


def test_events_count_like_the_monitors():
    stacks = stall_watch.parse_dump((DATA / "faulthandler_regex.txt").read_text(), MAIN)
    events = [stall_watch.event(s, 10.0 + i * 0.05, 0.05, 0.2) for i, s in enumerate(stacks)]
    counted = blocked.stacks(events, "route GET /validate")
    assert len(counted) == 1 and counted[0].count == len(stacks)
    assert counted[0].user_frame.endswith(
        "app.py:24 in validate: return PATTERN.match(value) is not None")


def test_a_stall_the_monitor_saw_counts_once():
    frames = ["app.py:19 in login: return hashlib.pbkdf2_hmac(…)"]
    seen = [{"t": 5.00, "s": 0.05, "frames": frames}]
    stalls = [{"t": 5.04, "s": 0.05, "lag": 0.3, "frames": frames},
              {"t": 5.50, "s": 0.05, "lag": 0.3, "frames": frames},
              {"t": 5.02, "s": 0.05, "lag": 0.3, "frames": ["app.py:24 in validate"]}]
    kept = stall_watch.unseen(stalls, seen)
    assert [e["t"] for e in kept] == [5.50, 5.02]


def test_a_gil_holding_call_is_named_in_a_gevent_process(tmp_path):
    """The watch in a real gevent hub: the regex of examples/regex_route, no gunicorn."""
    script = tmp_path / "run.py"
    script.write_text(
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent, json, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import app\n"
        "from geventprobe.worker.monitor import Monitor\n"
        "m = Monitor(0.05).start()\n"
        "gevent.sleep(0.1)\n"
        "gevent.joinall([gevent.spawn(app.validate, app.SUBJECT) for _ in range(2)])\n"
        "gevent.sleep(0.1)\n"
        "print(json.dumps(m.stop()))\n")
    example = Path(__file__).parent.parent / "examples" / "regex_route"
    out = subprocess.run([sys.executable, str(script), str(example)], capture_output=True,
                         text=True, timeout=60, cwd=example,
                         env=dict(os.environ, GEVENTPROBE_STALL_WATCH="1"))
    assert out.returncode == 0, out.stderr
    import json

    events = json.loads(out.stdout.splitlines()[-1])
    counted = blocked.stacks(events, "t")
    assert counted, "no stack for a 0.2 s regex that held the GIL"
    assert counted[0].user_frame.startswith("app.py:24 in validate")

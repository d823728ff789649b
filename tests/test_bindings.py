"""Bindings made before patching: found in the worker (worker/bindings.py), and named as
the cause when the hub stalled in one (core/early_bindings.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from geventprobe.core import early_bindings
from geventprobe.core.early_bindings import Binding
from geventprobe.record import BlockedStack

DATA = Path(__file__).parent / "data" / "causes"


def _scan(tmp_path: Path, before: str, after: str = "") -> list[dict]:
    """Import ``early`` (source ``before``), patch, import ``late`` (``after``), scan."""
    (tmp_path / "early.py").write_text(textwrap.dedent(before))
    (tmp_path / "late.py").write_text(textwrap.dedent(after))
    script = ("import sys, json; sys.path.insert(0, sys.argv[1])\n"
              "import early\n"
              "from gevent import monkey; monkey.patch_all()\n"
              "import late\n"
              "from geventprobe.worker import bindings\n"
              "print(json.dumps(bindings.scan()))\n")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_names_bound_before_patching_with_their_line(tmp_path):
    found = _scan(tmp_path, """\
        import threading
        import time
        from socket import socket as Sock
        from time import sleep  # the comment is not part of the statement
        LOCK = threading.Lock()
        def f():
            time.sleep(0)
        """, "from time import sleep\nimport threading\nLATE_LOCK = threading.Lock()\n")
    by_name = {(b["module"], b["name"]): b for b in found}
    assert set(by_name) == {("early", "Sock"), ("early", "sleep"), ("early", "LOCK")}
    assert by_name["early", "sleep"] | {"file": "early.py"} == {
        "file": "early.py", "module": "early", "name": "sleep", "original": "time.sleep",
        "kind": "function", "line": 4, "statement": "from time import sleep"}
    assert by_name["early", "Sock"]["original"] == "socket.socket"
    assert by_name["early", "LOCK"]["kind"] == "instance"
    assert by_name["early", "LOCK"]["statement"] == "LOCK = threading.Lock()"


def test_nothing_when_the_app_imports_after_patching(tmp_path):
    assert _scan(tmp_path, "", "from time import sleep\nfrom select import select\n") == []


def _stack(frames: list[str], user: int | None) -> BlockedStack:
    return BlockedStack(phase="route GET /upstream", count=16, blocked_s=0.8, frames=frames,
                        user_frame=frames[user] if user is not None else None,
                        innermost=frames[-1])


# The stack the monitor took for examples/preload_sleep under --preload (a real run:
# tests/data/causes/today-preload_sleep.json).
_TODAY = json.loads((DATA / "today-preload_sleep.json").read_text())["routes"][0]["blocked_by"][0]
SLEEP = Binding(file="app.py", name="sleep", original="time.sleep", kind="function", line=17,
                statement="from time import sleep  # bound at import: the original when the "
                          "master imports it")


def test_the_stall_in_a_name_bound_early_is_the_cause_preload_named_when_on():
    stack = _stack(_TODAY["frames"], len(_TODAY["frames"]) - 1)
    assert stack.user_frame == "app.py:22 in call_upstream: sleep(0.1)"
    out = early_bindings.explain(stack, [SLEEP], preload=True)
    assert out is not None and out.binding is SLEEP
    assert "at app.py:17" in out.cause and "time.sleep" in out.cause
    assert "app.py:22 in call_upstream" in out.cause
    assert "`import time`, then call `time.sleep(...)`" in out.fix and "preload_app" in out.fix
    quiet = early_bindings.explain(stack, [SLEEP], preload=False)
    assert "preload" not in (quiet.cause + quiet.fix).lower()
    assert "do not import app.py before the worker patched" in quiet.fix
    assert "patch first" in quiet.fix


def test_a_stall_elsewhere_is_not_blamed_on_the_binding():
    frames = ["app.py:30 in application: body = login()",
              "app.py:19 in login: return hashlib.pbkdf2_hmac('sha256', pw, SALT, N)"]
    assert early_bindings.explain(_stack(frames, 1), [SLEEP], preload=True) is None
    # The user's line calls a library, which blocks deeper down: not the binding either.
    frames = ["app.py:22 in call_upstream: sleep(0.1)", "somelib/x.py:3 in sleep: wait()"]
    assert early_bindings.explain(_stack(frames, 0), [SLEEP], preload=True) is None
    # Another module's sleep.
    frames = ["other.py:5 in f: sleep(1)"]
    assert early_bindings.explain(_stack(frames, 0), [SLEEP], preload=True) is None


def test_an_instance_made_before_patching():
    lock = Binding(file="app.py", name="LOCK", original="threading.Lock", kind="instance",
                   line=5, statement="LOCK = threading.Lock()")
    frames = ["app.py:12 in handler: with LOCK:"]
    out = early_bindings.explain(_stack(frames, 0), [lock], preload=False)
    assert out is not None and "make LOCK after gevent patched" in out.fix


def test_parse_drops_one_copy_per_worker():
    rec = {"file": "app.py", "module": "app", "name": "sleep", "original": "time.sleep",
           "kind": "function", "line": 17, "statement": "from time import sleep"}
    assert len(early_bindings.parse([rec, dict(rec), {"bad": 1}])) == 1

"""The parked-greenlet sampler in a real gevent process (worker/parked.py), read back by
core/waits.py: greenlets queued on a lock of the app's, one holding it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from geventprobe.core import waits


def test_the_sampler_sees_who_waits_on_a_lock_and_who_holds_it(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent("""\
        import threading
        import time
        LOCK = threading.Lock()
        def handler():
            with LOCK:
                time.sleep(0.05)
        """))
    script = textwrap.dedent("""\
        from gevent import monkey; monkey.patch_all()
        import gevent, greenlet, json, sys
        sys.path.insert(0, sys.argv[1])
        import app
        from geventprobe.worker import parked
        def request():
            parked.track(greenlet.getcurrent())
            app.handler()
        s = parked.Sampler(0.01).start()
        gevent.joinall([gevent.spawn(request) for _ in range(6)])
        print(json.dumps(s.stop()))
        """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout)
    assert record["looks"] >= 10 and record["cost_s"] > 0
    found = waits.read({1: {"parked": record}})
    finding = waits.classify(found, concurrency=6)
    assert finding is not None and finding.kind == "lock"
    assert finding.site.user_frame == "app.py:5 in handler: with LOCK:"
    assert finding.site.most == 5 and finding.holders == 1

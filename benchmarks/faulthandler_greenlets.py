"""Why the stall watch does not use faulthandler's watchdog: it crashes greenlet programs.

``faulthandler.dump_traceback_later`` dumps every thread's Python frames from a C thread,
without the GIL. While greenlets switch (greenlet saves and restores the thread's frame
pointers and moves C stacks), that read can follow a stale pointer: this script (50
greenlets switching, the watchdog dumping every 1 ms) ends with SIGSEGV in some runs.
Measured on the 2-core VM: 3 of 10 runs (exit 139); docs/causes.md.

    for i in $(seq 10); do .venv/bin/python benchmarks/faulthandler_greenlets.py; \\
        echo $?; done
"""

from gevent import monkey

monkey.patch_all()

import faulthandler  # noqa: E402
import tempfile  # noqa: E402

import gevent  # noqa: E402


def work() -> None:
    def deep(n: int) -> None:
        if n:
            return deep(n - 1)
        gevent.sleep(0)
        return None

    for _ in range(2000):
        deep(20)


if __name__ == "__main__":
    with tempfile.TemporaryFile() as f:
        faulthandler.dump_traceback_later(0.001, repeat=True, file=f)
        gevent.joinall([gevent.spawn(work) for _ in range(50)])
        faulthandler.cancel_dump_traceback_later()
        print("survived;", f.tell(), "bytes of dumps")

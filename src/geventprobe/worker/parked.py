"""Where the requests wait: the frames of the app's parked greenlets, sampled in the worker.

A SERIALIZED route's requests run on time as far as the hub is concerned, yet queue on
something: a pool's checkout, a connection's lock, a lock of the app's. A parked greenlet
keeps its frame (``greenlet.gr_frame``) where it switched away, so a greenlet on the hub
can look at every request greenlet every ``period`` seconds and note where each one sits.

Only the greenlets of the app's requests are looked at (``track`` is called for each by
``probe_route.wrap``): walking every object with ``gc`` cost 46 ms a pass in a worker
with 66,000 objects, far too much for a sampler. A stack is walked as (code, line) pairs,
which costs microseconds; it is formatted into text once, the first time it is seen.

The record (``Sampler.record()``) is plain JSON for the parent, which classifies it
(``core/waits.py``): ``stacks`` is the list of distinct stacks (frame texts,
innermost last, with the index of the user's innermost frame), ``samples`` says at each
time how many greenlets sat in which stack.

Imports gevent only inside functions (see ``worker/__init__.py``).
"""

from __future__ import annotations

import time
import traceback
import weakref

from geventprobe.worker.monitor import frame_text, is_user_code

DEFAULT_PERIOD_S = 0.02
"""20 ms: 10 looks or more in a burst of 0.2 s queries, at a cost measured in docs/causes.md."""
_MAX_FRAMES = 40
_MAX_SAMPLES = 3000  # one minute of sampling at 20 ms: a bounded record whatever happens

_tracked: weakref.WeakSet = weakref.WeakSet()


def track(greenlet) -> None:
    """Note a greenlet that serves one of the app's requests (or tasks)."""
    _tracked.add(greenlet)


def _key(frame) -> tuple:
    """The stack as (code, line) pairs, innermost last: cheap to build and to compare."""
    out = []
    while frame is not None and len(out) < _MAX_FRAMES:
        out.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    out.reverse()
    return tuple(out)


def _format(frame) -> dict:
    stack = traceback.extract_stack(frame)[-_MAX_FRAMES:]
    user = next((i for i in range(len(stack) - 1, -1, -1) if is_user_code(stack[i].filename)),
                None)
    return {"frames": [frame_text(fr) for fr in stack], "user": user}


class Sampler:
    """A greenlet that samples where the tracked greenlets are parked, until ``stop``."""

    def __init__(self, period: float = DEFAULT_PERIOD_S):
        self.period = period
        self.stacks: list[dict] = []
        self.samples: list[dict] = []
        self.cost_s = 0.0
        """Seconds spent sampling (its own cost, reported with the record)."""
        self.looks = 0
        """How many times it looked (samples with nobody parked are not kept)."""
        self._ids: dict[tuple, int] = {}
        self._greenlet = None
        self._running = False

    def sample(self) -> None:
        """One look at every tracked greenlet that is parked (not running, not dead)."""
        import greenlet

        t = time.monotonic()
        me = greenlet.getcurrent()
        counts: dict[int, int] = {}
        for g in list(_tracked):
            frame = g.gr_frame
            if g is me or frame is None or g.dead:
                continue
            key = _key(frame)
            sid = self._ids.get(key)
            if sid is None:
                sid = self._ids[key] = len(self.stacks)
                self.stacks.append(_format(frame))
            counts[sid] = counts.get(sid, 0) + 1
        if counts and len(self.samples) < _MAX_SAMPLES:
            self.samples.append({"t": t, "parked": {str(k): v for k, v in counts.items()}})
        self.cost_s += time.monotonic() - t
        self.looks += 1

    def _run(self) -> None:
        import gevent

        while self._running:
            self.sample()
            gevent.sleep(self.period)

    def start(self) -> Sampler:
        """Start sampling in a greenlet of this worker's hub."""
        import gevent

        self._running = True
        self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> dict:
        """Stop, and return the record."""
        self._running = False
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1)
            self._greenlet = None
        return self.record()

    def record(self) -> dict:
        """``{"period", "cost_s", "looks", "stacks", "samples"}``: what the parent
        classifies."""
        return {"period": self.period, "cost_s": round(self.cost_s, 6), "looks": self.looks,
                "stacks": self.stacks, "samples": self.samples}

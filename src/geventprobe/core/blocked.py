"""Who blocked: the monitor thread's events from the workers, as counted stacks.

Each worker's ``worker/monitor.py`` records, for every time gevent's monitor thread
found the hub blocked, the time, how long it had been blocked and the hub thread's
stack (a ``worker/record.py`` ``BlockedEvent``). Here identical stacks are counted
together, within a phase's time window, and the innermost frame of the user's own code
is marked. The stall watch's alarms (``worker/stall_watch.py``) arrive as the same events;
when most of the alarm's sightings of a stack found the GIL held, the call kept it
(``BlockedStack.gil_held``; the monitor's cannot tell).
"""

from __future__ import annotations

from collections.abc import Iterable

from geventprobe.dsn import redact
from geventprobe.record import BlockedStack
from geventprobe.worker.record import BlockedEvent

MAX_STACKS = 5
"""Stacks kept per phase, most frequent first: the rest is noise around the same cause."""


def _mostly_held(alarms: list[BlockedEvent]) -> bool:
    return 2 * sum(e.gil_held for e in alarms) > len(alarms)


def stacks(events: Iterable[BlockedEvent], phase: str,
           window: tuple[float, float] | None = None) -> list[BlockedStack]:
    """The distinct stacks among ``events`` (those inside ``window`` if given), counted."""
    groups: dict[tuple, list[BlockedEvent]] = {}
    for e in events:
        if window is not None and not window[0] <= e.t <= window[1]:
            continue
        frames = tuple(e.frames)
        if frames:
            groups.setdefault(frames, []).append(e)
    out = []
    for frames, seen in groups.items():
        user = seen[0].user
        out.append(BlockedStack(
            phase=phase,
            count=len(seen),
            blocked_s=round(sum(e.s for e in seen), 3),
            frames=[redact(f) for f in frames],
            user_frame=redact(frames[user]) if user is not None and 0 <= user < len(frames)
            else None,
            innermost=redact(frames[-1]),
            # The monitor thread may catch a GIL-holding call now and then (while the
            # alarm's handler runs Python and hands the GIL over, or between two calls):
            # its sightings say nothing of the GIL. Most of the alarm's decide.
            gil_held=_mostly_held([e for e in seen if e.source == "alarm"]),
        ))
    out.sort(key=lambda s: (-s.count, s.frames))
    return out[:MAX_STACKS]


def in_words(stack: BlockedStack) -> str:
    """``blocked 10 times, 0.5 s in all: app.py:17 in login → hashlib.pbkdf2_hmac(…)``."""
    where = stack.user_frame or stack.innermost or "?"
    inner = stack.innermost if stack.innermost and stack.innermost != where else None
    times = "once" if stack.count == 1 else f"{stack.count} times"
    return f"blocked {times}, {stack.blocked_s:.2f} s in all: {where}" + (
        f" → {inner}" if inner else "")

"""Where the requests waited, from the worker's samples of its parked greenlets.

``worker/parked.py`` records, every 20 ms of the route phase, where each request
greenlet of the app sat: its stack (frame texts, innermost last). Here the samples of a
burst's time window are read back (``read``) and each stack is put in one of two states:

- **working**: parked on I/O or a timer (``gevent/select.py`` poll under psycopg's wait,
  psycogreen's wait callback, a socket, ``gevent.sleep``): it holds what it uses;
- **waiting**: parked on a primitive (a lock, a condition, a queue): it waits for a
  holder. The frames above the primitive say which: a **pool**'s checkout
  (``psycopg_pool``, ``sqlalchemy/pool``…), a **connection**'s lock (psycopg guards each
  connection with one), or a **lock** of the app's own (the innermost frame that is not
  gevent or the standard library is the user's).

``classify`` turns the busiest wait site into a SERIALIZED cause: a pool of N for C
concurrent requests, one shared connection, or a lock, with the user's line they waited
on. Pure functions of recorded data (tests: ``tests/test_waits.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# Frames that only carry a wait out to the hub: gevent itself and the standard library's
# synchronisation and I/O modules.
_PLUMBING = re.compile(r"^(gevent/|greenlet/|python3\.\d+/(threading|queue|selectors|socket|"
                       r"ssl|select|contextlib)\.py:)")
# The innermost frame of a greenlet parked on I/O or a timer (it is doing its work).
_IO = re.compile(r"^(gevent/(select|_socket\w*|socket|ssl|_ssl\w*|os|subprocess|"
                 r"_socketcommon|selectors)\.py:|gevent/hub\.py:\d+ in (sleep|wait|"
                 r"wait_read|wait_write|wait_readwrite)\b|psycogreen/)")
_POOL = re.compile(r"pool", re.IGNORECASE)
_POOL_FUNCS = re.compile(r" in (getconn|_getconn\w*|_do_get|checkout|_checkout|get_connection)"
                         r"\b")
_DRIVERS = re.compile(r"^(psycopg|psycopg2|pymysql|MySQLdb|asyncpg|redis|pymongo)/")


@dataclass(frozen=True)
class WaitSite:
    """One place where request greenlets waited on a primitive."""

    kind: str
    """``pool`` (a pool's checkout), ``connection`` (a driver's connection lock), ``lock``
    (a primitive of the app's own) or ``other`` (a library's wait of another kind)."""
    user_frame: str | None
    """The user's innermost frame: ``app.py:38 in application: with engine.connect()…``."""
    entry: str | None
    """The library call the user's frame made: ``sqlalchemy/engine/base.py:3279 in connect``."""
    wait: str
    """The innermost frame that is not gevent or the standard library."""
    most: int
    """Most greenlets waiting here at once (one worker, one sample)."""
    seen: int
    """Samples in which at least one greenlet waited here."""
    working: int
    """Greenlets working (on I/O or a timer) in that worker while some waited here: the
    holders (the most frequent figure over those samples)."""


@dataclass(frozen=True)
class Waits:
    """What the samples of one time window (a burst) show, every worker together."""

    sites: tuple[WaitSite, ...]
    """Most waiters first."""
    samples: int
    """Samples in the window (all workers)."""
    working_most: int
    """Most greenlets working at once in one worker."""
    cost_s: float
    """What sampling cost the workers, the whole phase (seconds of their time)."""


@dataclass(frozen=True)
class WaitFinding:
    """A SERIALIZED route's cause, from where its requests waited."""

    kind: str
    """``pool``, ``shared-connection``, ``lock`` or ``other``."""
    site: WaitSite
    holders: int | None
    """N: the pool's connections: the requests working while others waited at its checkout
    (else the server connections counted)."""
    concurrency: int | None
    """C: the requests the busiest worker served at once."""
    cause: str
    fix: str


def _path(frame: str) -> str:
    return frame.split(":", 1)[0]


def state(frames: list[str]) -> str:
    """``working`` (parked on I/O or a timer) or ``waiting`` (on a primitive)."""
    return "working" if frames and _IO.match(frames[-1]) else "waiting"


def _site(stack: dict) -> tuple[str, str | None, str | None, str]:
    """(kind, user frame, entry frame, wait frame) of a waiting stack."""
    frames: list[str] = list(stack.get("frames") or [])
    user = stack.get("user")
    user_frame = frames[user] if isinstance(user, int) and 0 <= user < len(frames) else None
    inner = [f for f in frames if not _PLUMBING.match(f)]
    wait = inner[-1] if inner else (frames[-1] if frames else "?")
    entry = None
    if isinstance(user, int) and user + 1 < len(frames):
        entry = next((f for f in frames[user + 1:] if not _PLUMBING.match(f)), None)
    below = frames[user + 1:] if isinstance(user, int) else frames
    libs = [f for f in below if not _PLUMBING.match(f)]
    if any(_POOL.search(_path(f)) or _POOL_FUNCS.search(f) for f in libs):
        kind = "pool"
    elif libs and _DRIVERS.match(libs[-1]):
        kind = "connection"
    elif not libs and user_frame is not None:
        kind = "lock"  # the user's own line waits on a primitive directly
    else:
        kind = "other"
    return kind, user_frame, entry, wait


def parked_of(report) -> dict:
    """A worker's ``parked`` record: from its ``RoutePhase`` or the same as plain JSON."""
    value = report.get("parked") if isinstance(report, dict) else getattr(report, "parked", None)
    return value or {}


def read(workers: dict, window: tuple[float, float] | None = None) -> Waits:
    """The wait sites of every worker's ``parked`` record (inside ``window`` if given);
    ``workers``: pid → ``worker.record.RoutePhase`` (or its JSON)."""
    found: dict[tuple, dict] = {}
    working_most, samples, cost = 0, 0, 0.0
    for report in workers.values():
        record = parked_of(report)
        cost += float(record.get("cost_s") or 0.0)
        stacks = record.get("stacks") or []
        for sample in record.get("samples") or []:
            t = sample.get("t")
            if window is not None and (t is None or not window[0] <= t <= window[1]):
                continue
            samples += 1
            here: Counter = Counter()
            working = 0
            for sid, n in (sample.get("parked") or {}).items():
                stack = stacks[int(sid)] if int(sid) < len(stacks) else {}
                if state(stack.get("frames") or []) == "working":
                    working += n
                else:
                    here[_site(stack)] += n
            working_most = max(working_most, working)
            for key, n in here.items():
                site = found.setdefault(key, {"most": 0, "seen": 0, "working": Counter()})
                site["most"] = max(site["most"], n)
                site["seen"] += 1
                site["working"][working] += 1
    sites = []
    for (kind, user, entry, wait), s in found.items():
        holders = max(s["working"].items(), key=lambda kv: (kv[1], kv[0]))[0]
        sites.append(WaitSite(kind=kind, user_frame=user, entry=entry, wait=wait,
                              most=s["most"], seen=s["seen"], working=holders))
    sites.sort(key=lambda s: (-s.most, -s.seen, s.wait))
    return Waits(sites=tuple(sites), samples=samples, working_most=working_most,
                 cost_s=round(cost, 6))


def _pool_knob(site: WaitSite) -> str:
    text = " ".join(f for f in (site.entry, site.wait) if f)
    if "sqlalchemy/" in text:
        return "create_engine's pool_size + max_overflow"
    if "django/" in text:
        return "Django's OPTIONS pool max_size"
    if "psycopg_pool/" in text:
        return "psycopg_pool's max_size"
    if "psycopg2/pool" in text:
        return "psycopg2.pool's maxconn"
    return "the pool's size"


def classify(waits: Waits, *, concurrency: int | None = None, connections: int | None = None,
             setting: str = "the setting that bounds how many requests a worker serves at once",
             unit: str = "request", min_seen: int = 2) -> WaitFinding | None:
    """The cause of a SERIALIZED route from where its requests waited; None when no site
    was seen in at least ``min_seen`` samples (nothing to say from this evidence).

    ``concurrency``: requests the busiest worker served at once (C); ``connections``: the
    server connections it held (N for a pool when no request was seen working beside the
    waiting ones); ``setting`` and ``unit``: the setting that bounds a worker's concurrency
    and what a greenlet serves, in the words of the kind of worker (``Deployment``).
    """
    sites = [s for s in waits.sites if s.seen >= min_seen]
    if not sites:
        return None
    site = sites[0]
    c = concurrency
    what = {"pool": "for a connection from the pool", "connection": "for the connection's lock",
            "lock": "for the lock"}.get(site.kind, "")
    waited = (f"up to {site.most} {unit}s waited at once {what}".rstrip()
              if site.most > 1 else f"{unit}s waited {what}".rstrip())
    waited += _located(site)
    if site.kind == "pool":
        # The pool's holders: the requests working while others waited at its checkout. A
        # worker's server connections may belong to other pools of the app too.
        n = site.working or connections or 0
        plural = "connection" if n == 1 else "connections"
        load = f"a pool of {n} {plural} for {c} concurrent {unit}s" if c else \
            f"a pool of {n} {plural}"
        return WaitFinding(
            kind="pool", site=site, holders=n, concurrency=c,
            cause=f"{load}: {waited}",
            fix=(f"size the pool ({_pool_knob(site)}) to the {unit}s a worker serves at once"
                 + (f" ({c})" if c else "") + f", or lower {setting} to the pool's size"))
    if site.kind == "connection":
        return WaitFinding(
            kind="shared-connection", site=site, holders=1, concurrency=c,
            cause=(f"one connection shared by {c} concurrent {unit}s: {waited}" if c else
                   f"one connection shared between greenlets: {waited}"),
            fix=(f"give each {unit} (greenlet) its own connection: a pool sized to "
                 f"{setting}, or a connection per {unit}"))
    if site.kind == "lock":
        holders = max(site.working, 1)
        return WaitFinding(
            kind="lock", site=site, holders=holders, concurrency=c,
            cause=f"a lock of the app's, held by {holders} while {waited}",
            fix=("hold the lock only around what must not run at once, never around I/O; or "
                 f"give each {unit} (greenlet) its own client instead of one shared behind "
                 "a lock"))
    return WaitFinding(
        kind="other", site=site, holders=site.working or None, concurrency=c,
        cause=waited[0].upper() + waited[1:],
        fix=f"look at what {where(site.wait)} waits for: the {unit}s queue there one after "
            "another")


def where(frame: str) -> str:
    """``app.py:34 in application`` from ``app.py:34 in application: with …``."""
    match = re.match(r"^(.*? in [^:]+)(?::\s.*)?$", frame)
    return match.group(1) if match else frame


def _source(frame: str) -> str | None:
    match = re.match(r"^.*? in [^:]+:\s(.*)$", frame)
    return match.group(1).strip() if match else None


def _located(site: WaitSite) -> str:
    """`` at app.py:34 in application (`with engine.connect() as conn:`), in
    sqlalchemy/util/queue.py:199 in get``."""
    out = ""
    if site.user_frame:
        source = _source(site.user_frame)
        out += f" at {where(site.user_frame)}" + (f" (`{source}`)" if source else "")
    if site.wait != site.user_frame:
        out += f", in {where(site.wait)}"
    return out


def sites_in_words(sites: Iterable[WaitSite], limit: int = 3) -> list[str]:
    """``12 waiting at app.py:38 … (pool)``, one line per site, for a report's details."""
    return [f"{s.most} waiting at {where(s.user_frame or s.wait)} ({s.kind}; in "
            f"{where(s.wait)})" for s in list(sites)[:limit]]

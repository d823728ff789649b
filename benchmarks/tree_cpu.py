"""CPU of a process and everything it starts, by kind of process and over time.

A benchmark's helper (``time_to_verdict.py --cpu``): a thread looks at the process tree
under one pid every ``period`` s with psutil, names each process's kind once (geventprobe
itself, its watchdog, the import checks, initdb, the postmaster and its background
processes, the backends, a gunicorn master, its workers) and records the CPU (user + system)
each used since the last look, by kind and time. A process that lives and dies between two
looks (most backends: one per connection) is never seen, but its parent's rusage of reaped
children is: what grew there beyond the last look at the children that went is counted for
them (or, unseen, for the parent's usual children: backends, gunicorn workers). The caller
compares the sum with the whole tree's rusage.

It also watches the run directories under the child's ``TMPDIR`` (``geventprobe-run-*``) and
notes when each of the harness's files first appeared (``ready-*``, ``go``, ``result-*``,
``http-go``): the marks that tell a build's boot, probe and request phase apart.
"""

from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass, field

import psutil

PARENT, WATCHDOG, CHECKS, INITDB, POSTGRES, BACKENDS = (
    "geventprobe", "watchdog", "import checks", "initdb", "postgres (postmaster, bg)",
    "postgres backends")
MASTER, WORKERS, OTHER = "gunicorn master", "gunicorn workers", "other"
KINDS = (PARENT, WATCHDOG, CHECKS, INITDB, POSTGRES, BACKENDS, MASTER, WORKERS, OTHER)


@dataclass
class RunDir:
    """When the files of one gunicorn run dir first appeared (monotonic s)."""

    path: str
    seen: float
    gone: float | None = None
    marks: dict[str, float] = field(default_factory=dict)
    """``ready`` (first), ``ready all``, ``go``, ``result`` (first), ``result all``,
    ``http-go``: first seen."""


class TreeSampler:
    """Samples the CPU of ``root`` and its descendants, and the run dirs under ``tmpdir``."""

    def __init__(self, root: int, tmpdir: str, workers: int, period: float = 0.05):
        self.root = root
        self.tmpdir = tmpdir
        self.workers = workers
        self.period = period
        self.kind: dict[int, str] = {}
        self.events: dict[str, list[tuple[float, float]]] = {}
        """CPU seconds used, by kind: (when, how much), one per process and look."""
        self._last: dict[int, tuple[float, float]] = {}
        self._last_t: dict[int, float] = {}
        self._born: dict[int, float] = {}
        self._parent: dict[int, int] = {}
        self._debt: dict[int, float] = {}
        self.dirs: dict[str, RunDir] = {}
        self._offset = time.time() - time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._watch_dirs()
            self._stop.wait(self.period)

    def _classify(self, proc: psutil.Process) -> str:
        if proc.pid == self.root:
            return PARENT
        try:
            cmd = proc.cmdline()
            parent = proc.ppid()
        except psutil.Error:
            return OTHER
        text = " ".join(cmd)
        up = self.kind.get(parent)
        if "geventprobe.processes.watchdog" in text:
            return WATCHDOG
        if len(cmd) > 2 and cmd[1] == "-c" and "import json, os, sys" in cmd[2]:
            return CHECKS
        if os.path.basename(cmd[0] if cmd else "") == "initdb" or up == INITDB:
            return INITDB
        if "listen_addresses=127.0.0.1" in text:
            return POSTGRES
        if up == POSTGRES:
            return BACKENDS if "127.0.0.1(" in text or "[local]" in text else POSTGRES
        if "gunicorn: worker" in text or up == MASTER:
            return WORKERS
        if "gunicorn" in text and up == PARENT:
            return MASTER
        return OTHER

    def _sample(self) -> None:
        try:
            root = psutil.Process(self.root)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        now = time.monotonic()
        # Parents before children, so a child's kind can follow its parent's.
        procs.sort(key=lambda p: (p.create_time(), p.pid))
        seen: dict[int, tuple[float, float]] = {}
        for proc in procs:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    parent = proc.ppid()
                if proc.pid not in self.kind:
                    self.kind[proc.pid] = self._classify(proc)
                    self._born[proc.pid] = proc.create_time() - self._offset
            except psutil.Error:
                continue
            seen[proc.pid] = (t.user + t.system, t.children_user + t.children_system)
            self._parent[proc.pid] = parent
        # Children reaped since the last look: their parent's rusage now holds all they used
        # (their own reaped children included), of which the last look saw this much.
        # Each at its nearest ancestor still alive, whose rusage holds them all (a gunicorn
        # master and its workers reaped together show up at geventprobe's).
        gone: dict[int, list[int]] = {}
        vanished = [pid for pid in self._last if pid not in seen]
        for pid in vanished:
            up = self._parent.get(pid, 0)
            while up in self._last and up not in seen:
                up = self._parent.get(up, 0)
            gone.setdefault(up, []).append(pid)
        for up, pids in gone.items():  # what a reaped process still owed goes up with it
            self._debt[up] = self._debt.get(up, 0.0) + sum(self._debt.pop(p, 0.0) for p in pids)
        for pid, (own, reaped) in seen.items():
            last_own, last_reaped = self._last.get(pid, (0.0, 0.0))
            then = self._last_t.get(pid, self._born.get(pid, now))
            self._add(self.kind[pid], (then + now) / 2, own - last_own)
            went = gone.get(pid, [])
            # What reaped children used since their last sample (or in all, if they lived
            # and died between two looks: short-lived backends). A child seen gone before its
            # parent's rusage holds it leaves a debt, paid from the parent's next growth.
            tail = (reaped - last_reaped) - sum(sum(self._last[c]) for c in went)
            tail += self._debt.pop(pid, 0.0)
            if tail < 0:
                self._debt[pid] = tail
            elif tail > 0:
                kinds = [self.kind[c] for c in went]
                kind = (max(set(kinds), key=kinds.count) if kinds
                        else self._reaped_kind(self.kind[pid]))
                self._add(kind, (then + now) / 2, tail)
            self._last_t[pid] = now
        for pids in gone.values():
            for pid in pids:
                self._last.pop(pid, None)
        self._last.update(seen)

    @staticmethod
    def _reaped_kind(kind: str) -> str:
        """The kind of a process's children that were never seen alive."""
        return {POSTGRES: BACKENDS, MASTER: WORKERS, PARENT: OTHER}.get(kind, kind)

    def _add(self, kind: str, t: float, cpu: float) -> None:
        self.events.setdefault(kind, []).append((t, cpu))

    def _watch_dirs(self) -> None:
        now = time.monotonic()
        live = set(glob.glob(os.path.join(self.tmpdir, "geventprobe-run-*")))
        for path in live:
            d = self.dirs.setdefault(path, RunDir(path, now))
            try:
                names = os.listdir(path)
            except OSError:
                continue
            counts = {p: sum(n.startswith(p + "-") and n.endswith(".json") for n in names)
                      for p in ("ready", "result")}
            for prefix, n in counts.items():
                if n:
                    d.marks.setdefault(prefix, now)
                if n >= self.workers:
                    d.marks.setdefault(f"{prefix} all", now)
            for name in ("go", "http-go"):
                if name in names:
                    d.marks.setdefault(name, now)
        for path, d in self.dirs.items():
            if path not in live and d.gone is None:
                d.gone = now

    def cpu(self, kind: str | None = None, span: tuple[float, float] | None = None) -> float:
        """CPU seconds of ``kind`` (all kinds if None) within ``span`` (all if None), each
        look's growth counted at the middle of its interval."""
        return sum(cpu for k, events in self.events.items() if kind is None or k == kind
                   for t, cpu in events if span is None or span[0] <= t < span[1])

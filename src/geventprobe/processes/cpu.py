"""CPU time of the gunicorn workers, sampled from outside.

Each worker's CPU is the run time the scheduler counted for each of its threads, in
nanoseconds (``/proc/<pid>/task/<tid>/schedstat``, Linux): psutil's ``cpu_times()`` (the
``/proc/<pid>/stat`` figures) counts in 10 ms ticks, which over a window of 0.25 s is
±0.04 CPU-s/s, a fifth of the busy-wait limit. The sampler keeps a (monotonic time, CPU
seconds) series per PID so that the CPU of any window a worker reports can be read off
afterwards by interpolation. A thread that ends keeps what it ran until its last look (the
monitor thread comes and goes between phases). Elsewhere than Linux, psutil's figures.
"""

from __future__ import annotations

import bisect
import math
import os
import re
import threading
import time

import psutil

# Process states of a worker that is not running at all: SIGSTOP, or a debugger's stop.
STOPPED = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
_STATES = {"T": psutil.STATUS_STOPPED, "t": psutil.STATUS_TRACING_STOP,
           "Z": psutil.STATUS_ZOMBIE, "S": psutil.STATUS_SLEEPING, "R": psutil.STATUS_RUNNING,
           "D": psutil.STATUS_DISK_SLEEP}
_STATUS_FIELD = re.compile(r"^State:\s+(\S)", re.MULTILINE)
_SWITCHES_FIELD = re.compile(r"^voluntary_ctxt_switches:\s+(\d+)", re.MULTILINE)


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the main thread of ``pid`` ran on a CPU, and spent runnable waiting for one
    (``/proc/<pid>/schedstat``, ns-exact; NaN if unknown). A gevent worker's hub, so every
    request's Python, runs on that thread."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            fields = f.read().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return math.nan, math.nan


def clocks(pids: list[int]) -> dict[int, tuple[float, float]]:
    """``schedstat`` of each of ``pids`` that can be read now: pid → (ran s, waited s)."""
    out = {}
    for pid in pids:
        ran, waited = schedstat(pid)
        if not math.isnan(ran):
            out[pid] = (ran, waited)
    return out


class CpuSampler:
    """Background thread sampling the CPU time of a fixed set of PIDs, and of the machine.

    Besides CPU time it keeps, per PID, two figures that do not depend on how much
    CPU the machine could spare: the time spent waiting for a CPU while runnable
    (``/proc/<pid>/schedstat``, Linux) and the voluntary context switches (times
    the process went to sleep). A worker that busy-waits never sleeps: it is
    runnable all the time, whether it gets a core or waits for one.
    """

    METRICS = ("cpu", "ran", "run_delay", "voluntary")

    def __init__(self, pids: list[int], period: float = 0.01):
        self.period = period
        self.series: dict[int, dict[str, list[float]]] = {
            p: {"t": [], **{m: [] for m in self.METRICS}} for p in pids}
        self.system: tuple[list[float], list[float]] = ([], [])
        self._procs: dict[int, psutil.Process] = {}
        for pid in pids:
            try:
                self._procs[pid] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                continue
        self.stopped: dict[int, float] = {}
        """Seconds each worker was seen stopped (state T or t), by pid."""
        self.off_cpu: dict[int, float] = {}
        """Each worker's longest stretch without CPU or run-queue time, by pid."""
        self._last: dict[int, tuple[float, str, float, float]] = {}
        self._threads: dict[int, dict[str, float]] = {}
        """Each worker's threads' run time at their last look, by thread id."""
        self._idle_since: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="geventprobe-cpu", daemon=True)

    def __enter__(self) -> CpuSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def _note_running(self, pid: int, now: float, status: str, ran: float, delay: float) -> None:
        """Keep, per worker, how long it was seen stopped and its longest stretch off the
        scheduler (neither running nor waiting to run): evidence that it did not run."""
        previous = self._last.get(pid)
        self._last[pid] = (now, status, ran, delay)
        if previous is None:
            return
        then, was, ran_before, delay_before = previous
        if was in STOPPED and status in STOPPED:
            self.stopped[pid] = self.stopped.get(pid, 0.0) + (now - then)
        elif status in STOPPED:
            self.stopped.setdefault(pid, 0.0)
        idle = ran == ran_before and delay == delay_before  # NaN never equals: unknown
        start = self._idle_since.get(pid)
        if idle and start is None:
            self._idle_since[pid] = then
        elif not idle:
            self._idle_since.pop(pid, None)
        start = self._idle_since.get(pid)
        if start is not None:
            self.off_cpu[pid] = max(self.off_cpu.get(pid, 0.0), now - start)

    def not_running(self, off_cpu_limit: float) -> dict[int, str]:
        """Workers that did not run for part of the window, by pid, with what was seen.

        Stopped (``T``: SIGSTOP, a debugger's ``t``) at any sample, or neither running nor
        waiting for a CPU for longer than ``off_cpu_limit`` seconds. A worker whose hub a
        driver blocks still runs: every reply from the server wakes it.
        """
        found = {}
        for pid in self.series:
            if pid in self.stopped:
                found[pid] = (f"stopped (process state T) for at least "
                              f"{max(self.stopped[pid], self.period):.1f} s")
            elif self.off_cpu.get(pid, 0.0) > off_cpu_limit:
                found[pid] = (f"neither ran nor waited for a CPU for {self.off_cpu[pid]:.1f} s "
                              "(no CPU time, no run-queue time)")
        return found

    def _sample(self) -> None:
        for pid, proc in list(self._procs.items()):
            seen = self._read(pid, proc)
            if seen is None:  # a worker can die between two reads
                del self._procs[pid]
                continue
            cpu, ran, delay, switches, status = seen
            now = time.monotonic()
            self._note_running(pid, now, status, ran, delay)
            series = self.series[pid]
            series["t"].append(now)
            series["cpu"].append(cpu)  # every thread's
            series["ran"].append(ran)  # the main thread's: the hub's, so every request's Python
            series["run_delay"].append(delay)
            series["voluntary"].append(switches)
        total = psutil.cpu_times()
        busy = total.user + total.system + sum(
            getattr(total, f, 0.0) for f in ("nice", "irq", "softirq", "steal"))
        self.system[0].append(time.monotonic())
        self.system[1].append(busy)

    def _read(self, pid: int, proc: psutil.Process
              ) -> tuple[float, float, float, float, str] | None:
        """(CPU s of every thread, the main thread's run time and run-queue wait s, its
        voluntary context switches, its state) of ``pid``; None once it is gone."""
        ran, delay = schedstat(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tids = None
        if tids is None or math.isnan(ran):  # not Linux, or gone: psutil says which
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    switches = proc.num_ctx_switches()
                    state = proc.status()
            except psutil.NoSuchProcess:
                return None
            return t.user + t.system, ran, delay, float(switches.voluntary), state
        threads = self._threads.setdefault(pid, {})
        for tid in tids:
            run = ran if tid == str(pid) else self._schedstat_task(pid, tid)
            if not math.isnan(run):
                threads[tid] = run
        # Threads that ended keep their last figure, so a worker's CPU never goes back.
        cpu = sum(threads.values())
        letter = _STATUS_FIELD.search(status)
        switches = _SWITCHES_FIELD.search(status)
        return (cpu, ran, delay, float(switches.group(1)) if switches else math.nan,
                _STATES.get(letter.group(1), "running") if letter else "running")

    @staticmethod
    def _schedstat_task(pid: int, tid: str) -> float:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                return int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            return math.nan

    @staticmethod
    def _at(times: list[float], values: list[float], t: float) -> float | None:
        if not times or t < times[0] or t > times[-1]:
            return None
        i = bisect.bisect_left(times, t)
        if times[i] == t or i == 0:
            return values[i]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def delta(self, pid: int, metric: str, start: float, end: float) -> float | None:
        """How much ``metric`` of ``pid`` grew between two monotonic times; None if unknown."""
        series = self.series.get(pid)
        if series is None:
            return None
        a = self._at(series["t"], series[metric], start)
        b = self._at(series["t"], series[metric], end)
        if a is None or b is None or math.isnan(a) or math.isnan(b):
            return None
        return max(0.0, b - a)

    def cpu_seconds(self, pid: int, start: float, end: float) -> float | None:
        """CPU seconds ``pid`` used between two monotonic times; None if not covered."""
        return self.delta(pid, "cpu", start, end)

    def machine_busy(self, start: float, end: float) -> float | None:
        """Fraction of all cores busy between two monotonic times (0..1)."""
        a = self._at(*self.system, start)
        b = self._at(*self.system, end)
        if a is None or b is None or end <= start:
            return None
        return (b - a) / ((end - start) * self.cores)

    @property
    def cores(self) -> int:
        """Logical CPUs of the machine."""
        return psutil.cpu_count() or 1

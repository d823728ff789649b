"""CPU time of the gunicorn workers, sampled from outside with psutil.

Per-PID ``cpu_times()`` deltas (user + system) of each live worker: psutil's
``children_*`` fields only count children already reaped (docs/field-facts.md). The
sampler keeps a (monotonic time, CPU seconds) series per PID so that the CPU of
any window a worker reports can be read off afterwards by interpolation. Linux
counts CPU in 10 ms ticks: windows of a few hundred ms keep a tick in the noise.
"""

from __future__ import annotations

import bisect
import math
import threading
import time

import psutil


class CpuSampler:
    """Background thread sampling the CPU time of a fixed set of PIDs, and of the machine.

    Besides CPU time it keeps, per PID, two figures that do not depend on how much
    CPU the machine could spare: the time spent waiting for a CPU while runnable
    (``/proc/<pid>/schedstat``, Linux) and the voluntary context switches (times
    the process went to sleep). A worker that busy-waits never sleeps: it is
    runnable all the time, whether it gets a core or waits for one.
    """

    METRICS = ("cpu", "run_delay", "voluntary")

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

    @staticmethod
    def _run_delay(pid: int) -> float:
        """Seconds ``pid`` spent runnable but waiting for a CPU (NaN where not available)."""
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                return int(f.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            return math.nan

    def _sample(self) -> None:
        for pid, proc in list(self._procs.items()):
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    switches = proc.num_ctx_switches()
            except psutil.NoSuchProcess:  # a worker can die between two reads
                del self._procs[pid]
                continue
            delay = self._run_delay(pid)
            now = time.monotonic()
            series = self.series[pid]
            series["t"].append(now)
            series["cpu"].append(t.user + t.system)
            series["run_delay"].append(delay)
            series["voluntary"].append(float(switches.voluntary))
        total = psutil.cpu_times()
        busy = total.user + total.system + sum(
            getattr(total, f, 0.0) for f in ("nice", "irq", "softirq", "steal"))
        self.system[0].append(time.monotonic())
        self.system[1].append(busy)

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

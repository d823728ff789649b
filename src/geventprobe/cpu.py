"""CPU time of the gunicorn workers, sampled from outside with psutil.

Per-PID ``cpu_times()`` deltas (user + system) of each live worker: psutil's
``children_*`` fields only count children already reaped (FIELD-NOTES §6). The
sampler keeps a (monotonic time, CPU seconds) series per PID so that the CPU of
any window a worker reports can be read off afterwards by interpolation. Linux
counts CPU in 10 ms ticks: windows of a few hundred ms keep a tick in the noise.
"""

from __future__ import annotations

import bisect
import threading
import time

import psutil


class CpuSampler:
    """Background thread sampling the CPU time of a fixed set of PIDs, and of the machine."""

    def __init__(self, pids: list[int], period: float = 0.01):
        self.period = period
        self.series: dict[int, tuple[list[float], list[float]]] = {p: ([], []) for p in pids}
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

    def _sample(self) -> None:
        for pid, proc in list(self._procs.items()):
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:  # a worker can die between two reads
                del self._procs[pid]
                continue
            now = time.monotonic()
            times, cpu = self.series[pid]
            times.append(now)
            cpu.append(t.user + t.system)
        total = psutil.cpu_times()
        busy = total.user + total.system + sum(
            getattr(total, f, 0.0) for f in ("nice", "irq", "softirq", "steal"))
        self.system[0].append(time.monotonic())
        self.system[1].append(busy)

    @staticmethod
    def _at(series: tuple[list[float], list[float]], t: float) -> float | None:
        times, values = series
        if not times or t < times[0] or t > times[-1]:
            return None
        i = bisect.bisect_left(times, t)
        if times[i] == t or i == 0:
            return values[i]
        t0, t1 = times[i - 1], times[i]
        v0, v1 = values[i - 1], values[i]
        return v0 + (v1 - v0) * (t - t0) / (t1 - t0)

    def cpu_seconds(self, pid: int, start: float, end: float) -> float | None:
        """CPU seconds ``pid`` used between two monotonic times; None if not covered."""
        series = self.series.get(pid)
        if series is None:
            return None
        a, b = self._at(series, start), self._at(series, end)
        return None if a is None or b is None else max(0.0, b - a)

    def machine_busy(self, start: float, end: float) -> float | None:
        """Fraction of all cores busy between two monotonic times (0..1)."""
        a, b = self._at(self.system, start), self._at(self.system, end)
        if a is None or b is None or end <= start:
            return None
        return (b - a) / ((end - start) * (psutil.cpu_count() or 1))

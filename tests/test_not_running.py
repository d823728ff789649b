"""The CPU sampler tells a worker that did not run (stopped) from one that waits (blocked)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from geventprobe.processes.cpu import CpuSampler


@pytest.fixture
def child():
    started = []

    def start(code: str) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", code])
        started.append(proc)
        time.sleep(0.3)  # past the interpreter's start-up
        return proc

    yield start
    for proc in started:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait()


def test_a_stopped_process_is_not_running(child):
    proc = child("import time\nwhile True: time.sleep(0.05)\n")
    with CpuSampler([proc.pid]) as sampler:
        time.sleep(0.3)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(1.0)
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    seen = sampler.not_running(off_cpu_limit=30)
    assert "stopped (process state T)" in seen[proc.pid]


def test_a_process_waiting_in_one_long_call_is_running(child):
    # What a hub blocked in a driver's C wait looks like: asleep in one system call.
    proc = child("import time\nwhile True: time.sleep(1.5)\n")
    with CpuSampler([proc.pid]) as sampler:
        time.sleep(2.0)
    assert sampler.not_running(off_cpu_limit=5) == {}
    # ...and what the off-CPU limit is for: a stretch longer than any wait is suspicious.
    assert sampler.off_cpu[proc.pid] > 1.0
    assert "neither ran nor waited" in sampler.not_running(off_cpu_limit=0.5)[proc.pid]


def test_cpu_is_counted_finer_than_the_kernels_10_ms_ticks(child):
    # A window of 0.15 s read in 10 ms ticks is ±0.07 CPU-s/s: a third of the busy-wait
    # limit. The scheduler's own count (schedstat, ns) is what the sampler reads.
    proc = child("import time\nwhile True:\n    t = time.perf_counter() + 0.003\n"
                 "    while time.perf_counter() < t: pass\n    time.sleep(0.004)\n")
    with CpuSampler([proc.pid]) as sampler:
        time.sleep(0.5)
    cpu = sampler.series[proc.pid]["cpu"]
    assert len(cpu) > 20
    assert any(abs(v * 100 - round(v * 100)) > 1e-3 for v in cpu), "only whole ticks"
    # ...and it is the same figure: 3 ms of work in every 7 ms.
    t = sampler.series[proc.pid]["t"]
    assert 0.25 < sampler.cpu_seconds(proc.pid, t[1], t[-1]) / (t[-1] - t[1]) < 0.65

"""The verdict of each task of a celery worker: figures in, class out, rules with numbers.

The sibling of ``route_rules.py``: pure functions of what ``kinds/celery/workers.py``
measured (``Batch``: tasks sent alone, then C at once, through the broker; ``Stall``: a
batch that did not finish), so they are tested exactly on recorded figures. Every task
gets the same rules; the first is geventprobe's own probe task (a connection and a
``pg_sleep(w)`` each), whose verdict is the worker's. In order of severity:

- ``FAILING``: the lone task, or more than ``task_failing_share`` of the C at once,
  raised; or they did not finish in time while the hub ran on time (``task-stall``).
- ``BLOCKING``: the worker's hub was held: a batch never started, or stalled, with the
  heartbeat silent (``task-stall``); the heartbeat ``task_hub_lag_ms`` late while the
  task ran alone (``task-hub-lag``), or ``task_burst_hub_lag_ms`` late while C ran at
  once (``task-burst-hub-lag``: taking C tasks off the broker costs a healthy hub some
  CPU); or C at once waited ``task_queue_factor`` times the lone task's run time in the
  queue (``task-queue``): the consumer that takes tasks off the broker runs on the same
  hub, so a blocked pool shows as queue time while each task's own run time (and
  celery's runtime figure) stays short.
- ``BUSY-WAIT`` (the probe task): the worker burned CPU while every task only waited on
  the server (``task-cpu-during-waits``, ``task-runnable-during-waits``: the driver
  verdict's limits).
- ``SERIALIZED``: the hub ran on time and the queue was empty, yet C at once the p90 of
  the run times, less what sharing the CPU explains, was ``task_serialized_factor`` times
  the lone task's: the tasks waited on each other inside the task (a shared connection, a
  small pool, a lock). A gevent worker runs one task's Python at a time, so quick tasks run
  at once take turns on the CPU: the time the worker was running or waiting for a core
  while the p90 task ran (``Batch.p90_busy_s``) is taken off first, as for routes.
- ``OK`` otherwise.

The causes of a task reuse the routes' where the fault is the same
(``core/route_causes.py``, with a celery ``Deployment``); the worker's own cause is the
driver's, in celery's words (``celery_causes``). docs/celery.md has the measurements and margins.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Sequence

from geventprobe.core import blocked, route_causes
from geventprobe.core.known_errors import Deployment
from geventprobe.dsn import redact
from geventprobe.kinds.celery import causes as celery_causes
from geventprobe.kinds.celery.workers import Batch, CeleryRun, Stall, telling_line
from geventprobe.processes import children
from geventprobe.record import (
    BlockedStack,
    ConnectFigures,
    Evidence,
    TaskBatch,
    TaskResult,
    TaskStall,
    Verdict,
)
from geventprobe.settings import Thresholds
from geventprobe.worker.celery_probe import PROBE_TASK
from geventprobe.worker.monitor import is_user_code, short
from geventprobe.worker.record import Running

DEPLOYMENT_WORDS = {"concurrency_setting": "celery's -c/--concurrency", "unit": "task"}
"""How the causes of a task name the setting that bounds a celery worker's concurrency,
and what one of its greenlets serves (``core/known_errors.Deployment``)."""

#: Ticks due this long after a batch's last task still count (a hub held by the last task
#: reports its lag when it runs again).
_TAIL_S = 0.05

BLOCKING_RULES = frozenset({"task-hub-lag", "task-burst-hub-lag", "task-queue"})
BUSY_WAIT_RULES = frozenset({"task-cpu-during-waits", "task-runnable-during-waits"})


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _short(path: str, cwd: str | None) -> str:
    """``monitor.short`` of a path from the worker's dump: relative to the worker's
    directory for the user's own files (geventprobe runs elsewhere)."""
    if cwd and is_user_code(path) and os.path.isabs(path):
        rel = os.path.relpath(path, cwd)
        if not rel.startswith(".."):
            return rel
    return short(path)


def batch_figures(b: Batch) -> TaskBatch:
    """What the record keeps of a batch."""
    return TaskBatch(
        size=b.size, finished=b.done, failed=b.failed,
        wall_s=_round(b.wall_s) if b.complete else None,
        queue_p50_s=_round(b.queue_median_s), queue_max_s=_round(b.queue_max_s),
        run_p50_s=_round(b.run_median_s), run_p90_s=_round(b.run_p90_s),
        run_max_s=_round(b.run_max_s), celery_runtime_max_s=_round(b.celery_runtime_max_s),
        overlap=_round(b.overlap, 2), peak=b.peak, hub_lag_ms=_ms(b.hub_lag_s),
        cpu_per_s=_round(b.cpu_per_s), wait_cpu_per_s=_round(b.wait_cpu_per_s),
        wait_runnable=_round(b.wait_runnable), wait_sleeps_per_s=_round(b.wait_sleeps_per_s, 1),
        server_connections=b.connections)


def stall_record(stall: Stall, stopped: str | None, cwd: str | None = None) -> TaskStall:
    """What the record keeps of a stall: the counts, and the main thread's stack (the
    user's files relative to ``cwd``, the worker's directory, as its own stacks are)."""
    frames = stall.main_stack
    stack = [redact(f"{_short(path, cwd)}:{line} in {func}") for path, line, func in frames]
    user = next((text for (path, _, _), text in zip(reversed(frames), reversed(stack))
                 if is_user_code(path)), None)
    return TaskStall(
        kind=stall.kind, batch=stall.batch, waited_s=stall.waited_s, why=stall.why,
        sent=stall.sent, received=stall.received, started=stall.started,
        finished=stall.finished, hub_silent_s=stall.hub_silent_s, stack=stack,
        user_frame=user, stopped=stopped)


def hub_held(stall: TaskStall, t_start_s: float) -> bool:
    """The worker's hub was held when it stalled: its heartbeat never ran, or had been
    silent for the start timeout."""
    return stall.hub_silent_s is None or stall.hub_silent_s >= t_start_s or \
        stall.why == "hub held"


def stall_words(stall: TaskStall, what: str) -> str:
    """``the warm-up task (1 sent) was received by the consumer but never started within
    5.0 s; the heartbeat never ran``."""
    if stall.kind == "never-ready":
        return f"the worker never said it was ready (celery's worker_ready) in {stall.waited_s:g} s"
    n = stall.sent
    sent = f"{what} ({n} sent)" if n > 1 else what
    if stall.kind == "never-started":
        got = ("received by the consumer" if stall.received == n else
               f"{stall.received} of {n} received by the consumer" if stall.received else
               "never taken off the broker")
        text = f"{sent} was {got} but never started within {stall.waited_s:.1f} s"
    else:
        text = (f"{sent}: {stall.started} started, {stall.finished} finished within "
                f"{stall.waited_s:.1f} s")
    if stall.hub_silent_s is None:
        text += "; the worker's heartbeat never ran (its hub was held from the moment it was ready)"
    else:
        text += f"; the worker's heartbeat had not ticked for {stall.hub_silent_s:.1f} s"
    return text


def evidence(alone: Batch | None, at_once: Batch | None, stall: TaskStall | None, *,
             probe: bool, t: Thresholds, t_start_s: float) -> list[Evidence]:
    """Every rule applied to one task's batches, fired or not."""
    rules: list[Evidence] = []
    what = "the probe task" if probe else "the task"
    if stall is not None:
        label = {"warm-up": "the warm-up task", "alone": f"{what} sent alone",
                 "at once": f"{what}s sent at once"}.get(stall.batch or "", "the worker")
        rules.append(Evidence(rule="task-stall", value=stall.waited_s, threshold=t_start_s,
                              fired=True, phase="task", text=stall_words(stall, label)))
    lone_run = alone.run_median_s if alone is not None else None
    batches = [b for b in (alone, at_once) if b is not None]
    if alone is not None and alone.hub_lag_s is not None:
        lag_ms = alone.hub_lag_s * 1000
        rules.append(Evidence(
            rule="task-hub-lag", value=round(lag_ms, 3), threshold=t.task_hub_lag_ms,
            fired=lag_ms >= t.task_hub_lag_ms, phase="task",
            text=(f"max hub lag while {what} ran alone {lag_ms:.1f} ms (limit "
                  f"{t.task_hub_lag_ms:g} ms)")))
    if at_once is not None and at_once.hub_lag_s is not None:
        lag_ms = at_once.hub_lag_s * 1000
        rules.append(Evidence(
            rule="task-burst-hub-lag", value=round(lag_ms, 3),
            threshold=t.task_burst_hub_lag_ms, fired=lag_ms >= t.task_burst_hub_lag_ms,
            phase="task",
            text=(f"max hub lag while {at_once.size} ran at once {lag_ms:.1f} ms (limit "
                  f"{t.task_burst_hub_lag_ms:g} ms: taking {at_once.size} tasks off the broker "
                  "and running them costs the hub some CPU)")))
    if at_once is not None and at_once.queue_max_s is not None and lone_run:
        queue = at_once.queue_max_s
        limit = max(t.task_queue_factor * lone_run, t.task_queue_min_ms / 1000)
        rules.append(Evidence(
            rule="task-queue", value=round(queue / lone_run, 3),
            threshold=t.task_queue_factor, fired=queue >= limit, phase="task",
            text=(f"{at_once.size} at once waited up to {queue:.2f} s in the queue (sent → "
                  f"started) = {queue / lone_run:.1f}× the lone task's run of "
                  f"{lone_run:.2f} s, while each ran at most {at_once.run_max_s or 0:.2f} s "
                  f"(limit {t.task_queue_factor:g}× and {t.task_queue_min_ms:g} ms: the "
                  "consumer that takes tasks off the broker shares the hub)")))
    if probe:
        rules += _busy_wait_evidence(alone, at_once, t)
    if at_once is not None and at_once.run_p90_s is not None and lone_run:
        p90 = at_once.run_p90_s
        # What the CPU does not explain of the p90 run: the part the tasks waited on each other.
        busy = min(at_once.p90_busy_s or 0.0, p90)
        left = p90 - busy
        factor = left / lone_run
        cpu = (f"; the worker ran or waited for a core {busy * 1000:.0f} ms of it, leaving "
               f"{left * 1000:.0f} ms = {factor:.2f}× the lone task's {lone_run:.2f} s that "
               "the CPU does not explain" if at_once.p90_busy_s is not None else
               f" = {factor:.2f}× the lone task's {lone_run:.2f} s (the worker's CPU was not "
               "read)")
        rules.append(Evidence(
            rule="task-serialized", value=round(factor, 3),
            threshold=t.task_serialized_factor,
            fired=(factor >= t.task_serialized_factor
                   and (left - lone_run) * 1000 >= t.task_serialized_min_ms),
            phase="task",
            text=(f"{at_once.size} at once ran p90 {p90:.2f} s{cpu} (limit "
                  f"{t.task_serialized_factor:g}× and {t.task_serialized_min_ms:g} ms more; "
                  f"{at_once.size}× if they waited on each other one at a time)")))
    if batches:
        failed = sum(b.failed for b in batches)
        n = at_once.size if at_once is not None else 0
        share = at_once.failed / n if at_once is not None and n else 0.0
        lone_failed = bool(alone is not None and alone.failed)
        states = Counter(task.state or "no state" for b in batches for task in b.tasks
                         if task.failed)
        shown = ", ".join(f"{state} ×{k}" for state, k in sorted(states.items()))
        rules.append(Evidence(
            rule="task-failing", value=round(share, 4), threshold=t.task_failing_share,
            fired=lone_failed or share > t.task_failing_share, phase="task",
            text=(f"{failed} of {sum(b.size for b in batches)} tasks failed"
                  + (f" ({shown})" if shown else "")
                  + f"; the lone task {'failed' if lone_failed else 'succeeded'} (limit: more "
                  f"than {t.task_failing_share:.0%} of those at once, or the lone task)")))
    return rules


def _busy_wait_evidence(alone: Batch | None, at_once: Batch | None,
                        t: Thresholds) -> list[Evidence]:
    """CPU while the probe tasks only waited on the server. The CPU figure over the lone
    task's ``pg_sleep`` (w of nothing but waiting: 20 samples of 10 ms); the runnable share
    and the sleeps over that and over the time all C slept at once (ns-exact, from
    schedstat), the worse of the two."""
    out = []
    cpu_batch = alone if alone is not None and alone.wait_cpu_per_s is not None else at_once
    if cpu_batch is not None and cpu_batch.wait_cpu_per_s is not None:
        cpu = cpu_batch.wait_cpu_per_s
        out.append(Evidence(
            rule="task-cpu-during-waits", value=round(cpu, 4), threshold=t.busy_wait_cpu,
            fired=cpu >= t.busy_wait_cpu, phase="task",
            text=(f"worker CPU while the probe task {cpu_batch.label} only waited on the "
                  f"server {cpu:.3f} CPU-s/s (limit {t.busy_wait_cpu:g}; healthy ≈ 0.04–0.07, "
                  "spinning up to 1.0)")))
    pairs = [(b.wait_runnable, b.wait_sleeps_per_s) for b in (alone, at_once)
             if b is not None and b.wait_runnable is not None
             and b.wait_sleeps_per_s is not None]
    if pairs:
        runnable, sleeps = max(pairs)
        out.append(Evidence(
            rule="task-runnable-during-waits", value=round(runnable, 4),
            threshold=t.busy_wait_runnable,
            fired=runnable >= t.busy_wait_runnable and sleeps <= t.busy_wait_max_sleeps,
            phase="task",
            text=(f"worker runnable {runnable:.0%} of the time and asleep {sleeps:.0f}×/s "
                  f"while the probe tasks only waited (limits ≥ {t.busy_wait_runnable:.0%} "
                  f"and ≤ {t.busy_wait_max_sleeps:g}×/s)")))
    return out


def classify(rules: Sequence[Evidence], stall: TaskStall | None, t_start_s: float) -> Verdict:
    """FAILING, BLOCKING, BUSY-WAIT, SERIALIZED, else OK (the first whose rule fired)."""
    fired = {e.rule for e in rules if e.fired}
    if "task-failing" in fired:
        return Verdict.FAILING
    if stall is not None:
        return Verdict.BLOCKING if hub_held(stall, t_start_s) else Verdict.FAILING
    if fired & BLOCKING_RULES:
        return Verdict.BLOCKING
    if fired & BUSY_WAIT_RULES:
        return Verdict.BUSY_WAIT
    if "task-serialized" in fired:
        return Verdict.SERIALIZED
    return Verdict.OK


def task_stacks(run: CeleryRun, batches: Sequence[Batch], name: str) -> list[BlockedStack]:
    """Who held the hub while the task's batches ran (gevent's monitor thread), counted
    over all of them. A stack the monitor saw once beside one it saw dozens of times is
    noise around the same cause (the hub caught in a log write while it was already
    late): only those seen at least a tenth as often as the first are kept."""
    if run.hub is None or not batches:
        return []
    events = [e for e in run.hub.events()
              if any(b.start <= e.t <= b.end + _TAIL_S for b in batches)]
    found = blocked.stacks(events, f"task {name}")
    if not found:
        return []
    least = max(2, found[0].count / 10) if found[0].count >= 2 else 1
    return [s for s in found if s.count >= least]


def connect_figures(run: CeleryRun, t: Thresholds) -> ConnectFigures | None:
    """The connect phase's figures, as for a gunicorn worker (``rules.connect_evidence``
    reads them): one connection alone, then C at once, with the hub's stall share."""
    c = run.connected
    if c is None or c.connect is None or not c.connect.windows or run.hub is None:
        return None
    single = c.connect.single
    single_ms = (single[1] - single[0]) * 1000
    windows = c.connect.windows
    shares, lags, walls = [], [], []
    for a, b in windows:
        lag = run.hub.lag_in(a, b + 0.005)
        wall = b - a
        lags.append(lag * 1000)
        walls.append(wall * 1000)
        if wall * 1000 >= t.connect_min_window_ms:
            shares.append(min(1.0, lag / wall))
    worst = max(walls)
    return ConnectFigures(
        single_ms=round(single_ms, 3), window_ms=round(worst, 3),
        window_factor=round(worst / single_ms, 3) if single_ms > 0 else 0.0,
        max_hub_lag_ms=round(max(lags), 3), rounds=len(windows),
        stall_share=round(sorted(shares)[len(shares) // 2], 4) if shares else None,
        window_ms_rounds=[round(w, 3) for w in walls], connects=c.connect.connects or None)


def judge_task(run: CeleryRun, name: str, call: str, t: Thresholds, t_start_s: float, *,
               probe: bool, facts: dict, worker: tuple[Verdict, str | None, str | None] | None
               = None) -> TaskResult | None:
    """One task's verdict from its batches (None when none of them ran: the worker stalled
    before it got there)."""
    alone, at_once = run.batch("alone", name), run.batch("at once", name)
    stall = run.stall  # the warm-up is a probe task; a never-ready worker, the probe's
    if stall is not None and not (stall.task == name or (probe and stall.task is None)):
        stall = None
    if alone is None and at_once is None and stall is None:
        return None
    stopped = _stopped(run) if stall is not None else None
    stall_rec = (stall_record(stall, stopped, run.command.cwd) if stall is not None
                 else None)
    rules = evidence(alone, at_once, stall_rec, probe=probe, t=t, t_start_s=t_start_s)
    verdict = classify(rules, stall_rec, t_start_s)
    batches = [b for b in (alone, at_once) if b is not None]
    stacks = task_stacks(run, batches, name)
    cause, advice, first = _words(verdict, rules, batches, stall_rec, stacks, probe=probe,
                                  facts=facts, worker=worker, size=run.size, call=call)
    outside = interrupted(run)
    if outside is not None and (run.not_running or stall is not None):
        # Stopped or killed from outside: what it measured says nothing about the task.
        verdict, cause, advice = Verdict.ERROR, outside, INTERRUPTED_FIX
    duration = max((b.end for b in batches), default=0.0) - min(
        (b.start for b in batches), default=0.0)
    return TaskResult(
        task=name, probe=probe, verdict=verdict, concurrency=run.size, call=redact(call),
        alone=batch_figures(alone) if alone is not None else None,
        at_once=batch_figures(at_once) if at_once is not None else None,
        evidence=rules, cause=cause, advice=advice, first_error=first, blocked_by=stacks,
        stall=stall_rec, duration_s=round(duration, 3))


INTERRUPTED_FIX = ("find what stopped it (a user, a supervisor, a debugger, a frozen cgroup or "
                   "container, the out-of-memory killer: see dmesg) and run again")
_CRASHES = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGFPE, signal.SIGILL)


def interrupted(run: CeleryRun) -> str | None:
    """The worker was stopped (kill -STOP) or ended (kill -9, a crash) while its tasks
    ran, in one sentence; None when it was not. Never a verdict of the driver or the app's
    tasks: gunicorn mode says the same of its workers."""
    pid = run.ready.pid if run.ready is not None else None
    if run.not_running:
        pid, seen = min(run.not_running.items())
        return (f"the celery worker (pid {pid}) did not run during the probe: it was {seen}, "
                "so its figures say nothing about it")
    stop = run.stop
    if run.stall is None or run.stall.why != "exited" or stop is None:
        return None
    code = stop.returncode if stop.returncode is not None else 0
    how = children.describe_exit(code)
    what = f"the celery worker (pid {pid})" if pid else "the celery worker"
    if code < 0 and -code in _CRASHES:
        return (f"{what} crashed mid-run ({how}): a fault in C code, the driver's or another "
                "extension's")
    if code < 0:
        return (f"{what} was {how} mid-run: nothing in its log says why; something outside "
                "geventprobe sent the signal")
    return f"{what} {how} mid-run: {telling_line(run.log_tail).rstrip('.')}"


def _stopped(run: CeleryRun) -> str | None:
    stop = run.stop
    if stop is None:
        return None
    if stop.exited_before:
        return f"nothing to stop: it had ended ({children.describe_exit(stop.returncode)})"
    if stop.ignored_sigterm:
        return (f"SIGTERM ignored for {stop.seconds:.1f} s, then SIGKILL of its process group")
    return stop.signal


def _probe_running(batches: Sequence[Batch]) -> tuple[Running | None, float | None]:
    """What ran on the hub while a probe task waited, and the CPU over that wait: the
    batch the CPU rule reads (the lone task's, else those at once), its first task that
    says."""
    for b in sorted(batches, key=lambda b: b.label != "alone"):
        ran = next((t.probe_running for t in b.tasks if t.probe_running is not None), None)
        if ran is not None:
            return ran, b.wait_cpu_per_s
    return None, None


def _words(verdict: Verdict, rules: Sequence[Evidence], batches: Sequence[Batch],
           stall: TaskStall | None, stacks: list[BlockedStack], *, probe: bool, facts: dict,
           worker, size: int, call: str = "") -> tuple[str | None, str | None, str | None]:
    """(cause, advice, first error) of a task's verdict."""
    first = next((b.first_error for b in batches if b.first_error is not None), None)
    first_text = None
    if first is not None:
        said = first.error or (f"it ended in state {first.state}" if first.state else
                               "it ended without a state")
        first_text = redact(said) + (
            f" ({redact(first.error_origin)})" if first.error_origin else "")
    if verdict is Verdict.OK:
        return None, None, first_text
    if probe:  # the worker's own verdict: the driver's cause, in celery's words
        fired = {e.rule for e in rules if e.fired}
        running, cpu = _probe_running(batches)
        cause, advice = celery_causes.explain(verdict, facts, fired, stall, stacks,
                                              running, cpu)
        return cause, advice, first_text
    if verdict is Verdict.FAILING:
        if stall is not None and first is None:
            return (f"the tasks did not finish within {stall.waited_s:.0f} s while the worker's "
                    "hub ran on time: they wait on something that never comes (a lock, a "
                    "full pool, a remote service)",
                    "look for what the task waits on (the greenlets' stacks are in the "
                    "worker log with --debug); a task that needs longer: raise "
                    "task_timeout_s in the profile", first_text)
        alone = next((b for b in batches if b.label == "alone"), None)
        at_once = next((b for b in batches if b.label == "at once"), None)
        limit = _time_limit(first.error if first is not None else None)
        if limit is not None:
            which = ("the task sent alone" if alone is not None and alone.failed else
                     f"{at_once.failed} of {at_once.size} tasks sent at once"
                     if at_once is not None else "the task")
            return (f"celery's hard time limit of {limit:g} s stopped {which}: {first_text}",
                    f"the task runs longer than its time limit ({limit:g} s): raise it (the "
                    "task's time_limit, the app's task_time_limit or the worker's --time-limit)"
                    " if the work needs that long, or find what makes the task that slow",
                    first_text)
        if alone is not None and alone.failed:
            what = "the task sent alone raised"
        elif at_once is not None:
            what = f"{at_once.failed} of {at_once.size} tasks sent at once raised"
        else:
            what = "the task raised"
        if first is not None and _ARITY.match(first.error or ""):
            return (what + f": {first_text}",
                    f"the task does not take the arguments it was sent ({redact(call)}): give "
                    "the ones its signature takes with --task-args '[...]' (positional, a JSON "
                    "array) and --task-kwargs '{...}' (by name, a JSON object)", first_text)
        return (what + (f": {first_text}" if first_text else ""),
                "fix the error the task raised (above, with the line of your code that "
                "raised it); run it alone with the same arguments to see it outside the "
                "worker", first_text)
    if verdict is Verdict.BLOCKING:
        if worker is not None and worker[0] is Verdict.BLOCKING and worker[1]:
            return (f"the worker's hub is blocked: {worker[1]}", worker[2], first_text)
        if stall is not None:
            cause = stall_words(stall, "the task")
            if stall.user_frame:
                cause += f": the hub was held at {stall.user_frame}"
        else:
            lag = max((e for e in rules if e.fired and e.rule.endswith("hub-lag")),
                      key=lambda e: e.value, default=None)
            cause = (f"the hub stalled {lag.value:.0f} ms while the tasks ran" if lag
                     else "the tasks waited in the queue while the hub was held")
        if stacks:
            cause += f": {blocked.in_words(stacks[0])}"
        busy = _runnable(batches)
        if busy is not None and busy >= CPU_BOUND_SHARE:
            # The hub was held by the task's own computation: no patch or thread helps.
            cause += (f"; the worker was on a CPU (or waiting for one) {busy:.0%} of the time "
                      "the task ran: its own computation holds the hub")
            if not stacks:
                cause += (" (who blocked is not named: gevent's monitor thread needs the GIL "
                          "that work holds)")
            return (cause,
                    "CPU-bound work holds every task of a gevent worker: send this task to a "
                    "queue served by a prefork worker (celery -A APP worker -P prefork -Q "
                    "QUEUE), or make it cheaper; gevent's threadpool does not help while the "
                    "work holds the GIL", first_text)
        return (cause,
                "make the call that holds the hub cooperate with gevent (patch before it is "
                "imported, or run it in gevent's threadpool); CPU-bound work holds every task "
                "of a gevent worker: send it to a queue served by a prefork worker", first_text)
    if verdict is Verdict.SERIALIZED:
        # The routes' causes, in a task's words (issue 20): the worker samples no parked
        # greenlets, so the connections it held for the tasks at once decide.
        d = Deployment(**DEPLOYMENT_WORDS, concurrency=size,
                       connections=batches[-1].connections)
        found = route_causes.for_serialized({}, (0.0, 0.0), d)
        return found.cause, found.fix, first_text
    cause, advice = celery_causes.explain(verdict, facts, {e.rule for e in rules if e.fired},
                                          stall, stacks)
    return cause, advice, first_text


#: A task judged BLOCKING whose worker was on a CPU or queued for one at least this share of
#: its batches held the hub with its own computation (a backtracking regex: 0.93 alone,
#: 0.99 at once; a driver waiting in C: see docs/celery.md).
CPU_BOUND_SHARE = 0.5


def _runnable(batches: Sequence[Batch]) -> float | None:
    """The most, over a task's batches, of the share of the time its worker was on a CPU or
    waiting for one (psutil's CPU time and schedstat's run delay); None when not sampled."""
    shares = [min(1.0, (b.cpu_s + (b.run_delay_s or 0.0)) / b.wall_s)
              for b in batches if b.cpu_s is not None and b.wall_s > 0]
    return max(shares) if shares else None


#: Python's words for a call with the wrong arguments (what --task-args/--task-kwargs set).
_ARITY = re.compile(r"^TypeError: .*(positional argument|keyword argument|takes no arguments)")


def _time_limit(error: str | None) -> float | None:
    """The limit of celery's ``TimeLimitExceeded(2)`` (worker/celery_probe.py words it so)."""
    if not error or not error.startswith("TimeLimitExceeded("):
        return None
    try:
        return float(error[len("TimeLimitExceeded("):].split(")", 1)[0])
    except ValueError:
        return None


def judge_all(run: CeleryRun, calls: Sequence[tuple[str, str]], t: Thresholds,
              t_start_s: float, facts: dict) -> tuple[list[TaskResult], list[str]]:
    """The probe task's verdict (the worker's), then each of the user's tasks; and a note
    for each task that never ran (the worker stalled before it)."""
    out: list[TaskResult] = []
    probe = judge_task(run, PROBE_TASK, f"{PROBE_TASK}({run_wait(run):g})", t, t_start_s,
                       probe=True, facts=facts)
    if probe is not None:
        out.append(probe)
    worker = (probe.verdict, probe.cause, probe.advice) if probe is not None else None
    notes = []
    for name, call in calls:
        result = judge_task(run, name, call, t, t_start_s, probe=False, facts=facts,
                            worker=worker)
        if result is None:
            notes.append(f"{name} was not run: the worker stalled before it (see the probe "
                         "task's stall)")
        else:
            out.append(result)
    return out, notes


def run_wait(run: CeleryRun) -> float:
    """w of the probe task in this run."""
    b = run.batch("alone") or run.batch("at once")
    return b.wait_s if b is not None and b.wait_s is not None else 0.0

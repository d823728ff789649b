"""The verdicts of a celery worker and its tasks, on figures shaped like recorded runs.

Pure: no worker, no broker. The batches below are the shapes measured on the examples
(docs/celery.md: -P gevent -c 16, w = 0.2 s): a healthy worker takes 16 tasks at once and
runs them side by side; a blocked one leaves them in the queue (the consumer shares the
hub) while each runs w; a shared connection takes them at once and runs them one after
another; a spinning wait burns CPU while the tasks only wait; a small pool raises; a
worker started by app.worker_main() never starts a task. Then the worker's verdict and
causes (kinds/celery/app.py, kinds/celery/causes.py), the exit code with tasks, and the
deadline of a batch.
"""

from __future__ import annotations

import dataclasses

import pytest

from geventprobe.core import rules
from geventprobe.core.builds import Build
from geventprobe.kinds.celery import app as celery_app
from geventprobe.kinds.celery import causes as celery_causes
from geventprobe.kinds.celery import task_rules
from geventprobe.kinds.celery.workers import (
    Batch,
    CeleryCommand,
    CeleryRun,
    Stall,
    StopFigures,
    TaskFigures,
)
from geventprobe.record import BuildResult, TaskResult, Verdict
from geventprobe.settings import Thresholds, Workload
from geventprobe.worker.celery_probe import PROBE_TASK
from geventprobe.worker.record import CeleryHub, CeleryReady

T = Thresholds()
W = 0.2
C = 16
START = Workload().task_start_timeout_s


def task(i: int, sent: float, started: float | None, finished: float | None, *,
         state: str = "SUCCESS", error: str | None = None, query=None) -> TaskFigures:
    return TaskFigures(task_id=f"t{i}", name="x", sent=sent, received=started,
                       started=started, finished=finished, state=state if finished else None,
                       error=error, celery_runtime=(finished - started) if finished and
                       started is not None and state == "SUCCESS" else None,
                       error_origin="tasks.py:27 in query" if error else None,
                       probe_query=query)


def batch(label: str, tasks: list[TaskFigures], *, lag: float, name: str = PROBE_TASK,
          wait_cpu: float | None = None, runnable: float | None = None,
          sleeps: float | None = None, connections: int | None = None) -> Batch:
    done = [t.finished for t in tasks if t.finished is not None]
    end = max(done) if len(done) == len(tasks) else 10.0
    b = Batch(label=label, task=name, size=len(tasks), wait_s=W if name == PROBE_TASK else None,
              tasks=tuple(tasks), start=0.0, end=end, deadline_s=20, hub_lag_s=lag,
              connections=connections)
    window = b.common_wait
    if window is not None and wait_cpu is not None:
        span = window[1] - window[0]
        b = dataclasses.replace(b, wait_cpu_s=wait_cpu * span,
                                wait_run_delay_s=max(0.0, (runnable or wait_cpu) - wait_cpu) * span,
                                wait_sleeps=(sleeps if sleeps is not None else 450) * span)
    return b


def lone(*, lag=0.004, run=0.21, wait_cpu=0.05, name=PROBE_TASK, **kw) -> Batch:
    query = (0.01, 0.01 + run - 0.005)
    return batch("alone", [task(0, 0.0, 0.005, 0.005 + run, query=query)], lag=lag,
                 name=name, wait_cpu=wait_cpu, **kw)


def healthy(*, lag=0.035, name=PROBE_TASK, wait_cpu=0.08, **kw) -> Batch:
    tasks = [task(i, 0.0, 0.005 * i, 0.005 * i + 0.25, query=(0.005 * i + 0.03,
                                                              0.005 * i + 0.245))
             for i in range(C)]
    return batch("at once", tasks, lag=lag, name=name, wait_cpu=wait_cpu, **kw)


def blocked(*, name=PROBE_TASK) -> Batch:
    # Each task waits its turn in the queue (the consumer is stuck too), then runs w.
    return batch("at once", [task(i, 0.0, 0.21 * i, 0.21 * i + 0.21) for i in range(C)],
                 lag=0.86, name=name)


def serialized(*, name="tasks.query", connections=1) -> Batch:
    # Taken at once, then queued on the connection's lock inside the task.
    return batch("at once", [task(i, 0.0, 0.01, 0.01 + 0.205 * (i + 1)) for i in range(C)],
                 lag=0.011, name=name, connections=connections)


def run_of(*batches: Batch, stall: Stall | None = None, hub: CeleryHub | None = None,
           stop: StopFigures | None = None) -> CeleryRun:
    return CeleryRun(command=CeleryCommand(("celery",), "/tmp", "app"), queue="geventprobe.x",
                     broker="redis://", size=C, batches=batches, stall=stall, hub=hub,
                     stop=stop)


def verdict(alone: Batch, at_once: Batch, *, probe: bool = True) -> TaskResult:
    name = alone.task
    result = task_rules.judge_task(run_of(alone, at_once), name, name, T, START, probe=probe,
                                   facts={})
    assert result is not None
    return result


def fired(result: TaskResult) -> set[str]:
    return {e.rule for e in result.evidence if e.fired}


def test_a_healthy_worker_is_ok_on_every_rule():
    result = verdict(lone(), healthy())
    assert result.verdict is Verdict.OK and not fired(result)
    assert result.at_once.queue_max_s < 0.1 and result.at_once.overlap > C / 2
    assert result.at_once.peak == C


def test_a_blocked_pool_shows_as_queue_time_and_hub_lag():
    result = verdict(lone(lag=0.21), blocked())
    assert result.verdict is Verdict.BLOCKING
    assert fired(result) == {"task-hub-lag", "task-burst-hub-lag", "task-queue"}
    b = result.at_once
    # The point of reporting them apart: celery's runtime says every task was quick.
    assert b.queue_max_s > 3.0 and b.run_max_s < 2 * W and b.celery_runtime_max_s < 2 * W
    assert b.overlap == pytest.approx(1.0, abs=0.05)


def test_the_queue_alone_decides_blocking_when_the_heartbeat_missed_it():
    result = verdict(lone(lag=0.004), dataclasses.replace(blocked(), hub_lag_s=0.05))
    assert result.verdict is Verdict.BLOCKING and fired(result) == {"task-queue"}


def test_a_burst_that_costs_the_hub_some_cpu_is_not_blocking():
    # Measured on healthy workers: up to 106 ms late while 16 tasks were taken at once.
    result = verdict(lone(), healthy(lag=0.106))
    assert result.verdict is Verdict.OK


def test_a_shared_connection_is_serialized_with_its_cause():
    name = "tasks.query"
    result = verdict(lone(name=name), serialized(name=name), probe=False)
    assert result.verdict is Verdict.SERIALIZED and fired(result) == {"task-serialized"}
    assert "1 server connection for 16 concurrent tasks" in result.cause
    assert "connection per task" in result.advice and "gunicorn" not in result.advice
    assert result.at_once.queue_max_s < 0.1  # taken at once: the wait is inside the task


def test_a_pool_smaller_than_the_concurrency():
    name = "tasks.query"
    result = verdict(lone(name=name), serialized(name=name, connections=4), probe=False)
    assert result.verdict is Verdict.SERIALIZED
    assert result.cause.startswith("4 server connections for 16 concurrent tasks: the pool")


def quick(run_p90: float, busy: float | None, connections: int) -> Batch:
    """16 tasks taken at once whose run times' p90 is ``run_p90``, the worker running or
    waiting for a core ``busy`` s of it (issue 24)."""
    runs = [0.03] * 14 + [run_p90, run_p90 + 0.01]
    tasks = [task(i, 0.0, 0.004 * i, 0.004 * i + r) for i, r in enumerate(runs)]
    return dataclasses.replace(batch("at once", tasks, lag=0.07, name="tasks.conn",
                                     connections=connections), p90_busy_s=busy)


def test_quick_tasks_that_take_turns_on_the_cpu_are_not_serialized():
    # Recorded (benchmarks/apps/task_costs, tasks.conn with 10 ms of CPU after its query,
    # two CPU hogs): alone 37.1 ms; 16 at once p90 150.2 ms, of which the worker ran or
    # waited for a core 149 ms; 7 server connections (one per task, opened and closed).
    alone = lone(name="tasks.conn", run=0.0371)
    result = verdict(alone, quick(0.1502, 0.149, 7), probe=False)
    assert result.verdict is Verdict.OK, result.evidence
    (rule,) = [e for e in result.evidence if e.rule == "task-serialized"]
    assert rule.value == pytest.approx(0.0012 / 0.0371, abs=1e-3)
    assert "the worker ran or waited for a core 149 ms of it, leaving 1 ms" in rule.text
    # Read without the CPU (the rule before issue 24): a pool that does not exist.
    before = verdict(alone, quick(0.1502, None, 7), probe=False)
    assert before.verdict is Verdict.SERIALIZED
    assert before.cause.startswith("7 server connections for 16 concurrent tasks: the pool")


def test_a_pool_of_two_stays_serialized_with_the_cpu_taken_off():
    # Recorded (examples/celery/small_pool): alone 212.7 ms; 16 at once p90 1.599 s, the
    # worker running or waiting for a core 167 ms of it; 2 server connections.
    name = "tasks.query"
    tasks = [task(i, 0.0, 0.01, 0.01 + 0.2127 * (i // 2 + 1)) for i in range(C)]
    at_once = dataclasses.replace(batch("at once", tasks, lag=0.011, name=name,
                                        connections=2), p90_busy_s=0.167)
    result = verdict(lone(name=name, run=0.2127), at_once, probe=False)
    assert result.verdict is Verdict.SERIALIZED and fired(result) == {"task-serialized"}
    assert result.cause.startswith("2 server connections for 16 concurrent tasks: the pool")
    (rule,) = [e for e in result.evidence if e.rule == "task-serialized"]
    assert rule.value >= 2 * T.task_serialized_factor


def test_a_spinning_wait_is_busy_wait_on_the_probe_task_only():
    alone = lone(wait_cpu=0.88, runnable=1.0, sleeps=30)
    result = verdict(alone, healthy(wait_cpu=0.91, runnable=1.0, sleeps=39))
    assert result.verdict is Verdict.BUSY_WAIT
    assert fired(result) == {"task-cpu-during-waits", "task-runnable-during-waits"}
    # A task of the user's does other work than waiting: its CPU is no evidence.
    name = "tasks.query"
    mine = verdict(lone(name=name, wait_cpu=0.88), healthy(name=name, wait_cpu=0.9),
                   probe=False)
    assert mine.verdict is Verdict.OK


def test_tasks_that_raise_are_failing_with_the_first_error():
    name = "tasks.query"
    tasks = [task(i, 0.0, 0.01, 0.21 if i < 6 else 0.51, state="SUCCESS" if i < 6 else
                  "FAILURE", error=None if i < 6 else "psycopg_pool.PoolTimeout: couldn't "
                  "get a connection after 0.50 sec") for i in range(C)]
    result = verdict(lone(name=name), batch("at once", tasks, lag=0.08, name=name),
                     probe=False)
    assert result.verdict is Verdict.FAILING and "task-failing" in fired(result)
    assert result.cause.startswith("10 of 16 tasks sent at once raised: psycopg_pool.PoolTimeout")
    assert result.first_error.endswith("(tasks.py:27 in query)")
    assert "preload" not in result.advice


def _ended(error: str | None, state: str | None, name: str = "tasks.hard") -> Batch:
    t = dataclasses.replace(task(0, 0.0, 0.005, 1.005), state=state, error=error,
                            error_origin=None, celery_runtime=None)
    return batch("alone", [t], lag=0.004, name=name)


def test_a_call_with_the_wrong_arguments_points_at_task_args():
    """Debatable in issue 25, decided: a wrong arity's fix names --task-args/--task-kwargs."""
    error = "TypeError: query() takes from 0 to 1 positional arguments but 2 were given"
    alone = _ended(error, "FAILURE", name="tasks.query")
    result = task_rules.judge_task(run_of(alone, healthy(name="tasks.query")), "tasks.query",
                                   "tasks.query(0.1, 2)", T, START, probe=False, facts={})
    assert result.verdict is Verdict.FAILING
    assert "(tasks.query(0.1, 2))" in result.advice and "--task-args" in result.advice
    other = verdict(_ended("TypeError: unsupported operand", "FAILURE", name="tasks.query"),
                    healthy(name="tasks.query"), probe=False)
    assert "--task-args" not in other.advice


@pytest.mark.parametrize(("cpu", "cpu_bound"), [(0.99, True), (0.03, False)],
                         ids=["regex", "c-call"])
def test_a_task_that_holds_the_hub_gets_the_fix_its_cpu_says(cpu, cpu_bound):
    """Debatable in issue 25, decided: a GIL-holding regex task (the worker 0.93-0.99 CPU-s/s)
    was told to try gevent's threadpool, which cannot help while the GIL is held; a call that
    waits in C (0.02-0.03, psycopg2 without psycogreen) keeps that advice."""
    name = "tasks.scan"
    alone = dataclasses.replace(lone(lag=0.15, run=0.23, name=name), cpu_s=cpu * 0.23,
                                run_delay_s=0.0)
    result = verdict(alone, healthy(name=name), probe=False)
    assert result.verdict is Verdict.BLOCKING
    assert ("its own computation holds the hub" in result.cause) is cpu_bound
    assert ("threadpool does not help" in result.advice) is cpu_bound
    assert ("run it in gevent's threadpool" in result.advice) is not cpu_bound


def test_celerys_time_limit_is_named_with_the_limit():
    """Issue 25 row 6: a task its hard time limit stopped read `raised: ?`."""
    result = verdict(_ended("TimeLimitExceeded(1)", "FAILURE"), healthy(name="tasks.hard"),
                     probe=False)
    assert result.verdict is Verdict.FAILING
    assert result.cause == ("celery's hard time limit of 1 s stopped the task sent alone: "
                            "TimeLimitExceeded(1)")
    assert "time_limit" in result.advice and result.first_error == "TimeLimitExceeded(1)"


def test_a_task_that_ended_without_a_state_is_never_a_question_mark():
    """A record of a worker that gave no state (an older geventprobe's, or celery's trace cut
    short): words, not `?`."""
    result = verdict(_ended(None, None), healthy(name="tasks.hard"), probe=False)
    assert result.verdict is Verdict.FAILING
    texts = [result.cause, result.first_error] + [e.text for e in result.evidence]
    assert not any("?" in text for text in texts), texts
    assert result.first_error == "it ended without a state"


def _stall(kind="never-started", hub_silent=None, why="none started") -> Stall:
    stacks = ("Current thread 0x1 (most recent call first):\n"
              '  File "/v/lib/python3.11/site-packages/kombu/utils/eventio.py", line 83 in poll\n'
              '  File "/app/worker.py", line 29 in <module>\n')
    return Stall(kind=kind, batch="warm-up", task=PROBE_TASK, waited_s=5.0, received=1,
                 started=0, finished=0, sent=1, hub_silent_s=hub_silent, stacks=stacks,
                 greenlets=None, why=why)


def test_a_worker_that_never_starts_a_task_is_blocking_with_its_stack():
    warm = batch("warm-up", [task(0, 0.0, None, None)], lag=None)
    run = run_of(warm, stall=_stall(), stop=StopFigures("SIGKILL", 1.0, -9,
                                                         ignored_sigterm=True))
    result = task_rules.judge_task(run, PROBE_TASK, PROBE_TASK, T, START, probe=True,
                                   facts={"select_patched": False, "patches": []})
    assert result.verdict is Verdict.BLOCKING and fired(result) == {"task-stall"}
    assert "never started within 5.0 s" in result.evidence[0].text
    assert "heartbeat never ran" in result.evidence[0].text
    assert result.stall.user_frame == "/app/worker.py:29 in <module>"
    assert result.stall.stack[-1] == "kombu/utils/eventio.py:83 in poll"
    assert "SIGTERM ignored" in result.stall.stopped
    assert "patched nothing" in result.cause and "monkey.patch_all()" in result.advice


def test_tasks_that_never_finish_while_the_hub_runs_are_failing():
    name = "tasks.query"
    stall = dataclasses.replace(_stall("stalled", hub_silent=0.01, why="deadline"),
                                task=name, batch="alone", started=1)
    alone = batch("alone", [task(0, 0.0, 0.01, None)], lag=0.003, name=name)
    result = task_rules.judge_task(run_of(alone, stall=stall), name, name, T, START,
                                   probe=False, facts={})
    assert result.verdict is Verdict.FAILING
    assert "did not finish" in result.cause and "hub ran on time" in result.cause


def test_a_task_the_worker_never_got_to_is_a_note():
    run = run_of(batch("warm-up", [task(0, 0.0, None, None)], lag=None), stall=_stall())
    tasks, notes = task_rules.judge_all(run, [("tasks.query", "tasks.query()")], T, START,
                                        {"select_patched": False})
    assert [t.task for t in tasks] == [PROBE_TASK]
    assert notes and notes[0].startswith("tasks.query was not run")


# ---------------------------------------------------------------- causes in celery's words


def test_psycogreen_in_worker_process_init_is_named_as_never_run():
    facts = {"driver": "psycopg2", "select_patched": True,
             "psycopg2": {"version": "2.9.13", "wait_callback": None},
             "worker_process_init_receivers": ["tasks.py:22 in make_psycopg2_green"],
             "celery": {"signals": {"worker_init": 1.0, "worker_ready": 2.0}}}
    cause, advice = celery_causes.explain(Verdict.BLOCKING, facts, {"task-queue"})
    assert "tasks.py:22 in make_psycopg2_green" in cause and "never under -P gevent" in cause
    assert "worker_init" in advice and "not in worker_process_init" in advice
    assert "post_worker_init" not in advice


def test_psycopg_imported_before_the_start_script_patched():
    facts = {"driver": "psycopg", "select_patched": True,
             "psycopg": {"version": "3.3.9", "wait": "wait_c"},
             "driver_import": {"select_patched": False, "where": "before celery was imported, "
                               "by the program that starts the worker, by worker.py:3"},
             "patches": [{"what": "patch_all", "where": "by worker.py:5"}]}
    cause, advice = celery_causes.explain(Verdict.BLOCKING, facts, {"task-queue"})
    assert "imported before gevent patched select" in cause and "worker.py:3" in cause
    assert "celery program" in advice and "gunicorn" not in advice


def test_a_blocked_hub_with_a_cooperating_driver_points_at_who_blocked():
    facts = {"driver": "psycopg", "select_patched": True,
             "psycopg": {"version": "3.3.9", "wait": "wait_poll"}, "patches": [{}]}
    cause, _ = celery_causes.explain(Verdict.BLOCKING, facts, {"task-hub-lag"})
    assert "although the driver cooperates" in cause


# ---------------------------------------------------------------- the worker's row


def _subject() -> celery_app.CeleryApp:
    return celery_app.CeleryApp(build=Build("tasks", False, None, {}, "your celery worker"),
                                command=CeleryCommand(("celery",), "/tmp", "app"),
                                broker_url=None)


def _ready() -> CeleryReady:
    return CeleryReady(pid=1, at=0.0, hostname="h", pool="celery.concurrency.gevent.TaskPool",
                       concurrency=C, consumes=["geventprobe.x"], user_queues=["celery"],
                       tasks=["tasks.query"], signals={}, versions={}, facts={})


def test_the_workers_row_takes_its_probe_tasks_verdict():
    run = dataclasses.replace(run_of(lone(lag=0.21), blocked()), ready=_ready())
    row = celery_app.judge(_subject(), run, Workload(), T, 0.0)
    assert row.verdict is Verdict.BLOCKING and row.tasks[0].probe
    assert row.metrics is None and row.facts["celery"]["concurrency"] == C


def test_a_probe_task_that_raises_is_a_failed_probe():
    tasks = [task(i, 0.0, 0.01, 0.02, state="FAILURE",
                  error="OperationalError: too many clients") for i in range(C)]
    failing = batch("at once", tasks, lag=0.01)
    run = dataclasses.replace(run_of(lone(), failing), ready=_ready())
    row = celery_app.judge(_subject(), run, Workload(), T, 0.0)
    assert row.verdict is Verdict.ERROR and "too many clients" in row.error
    assert rules.exit_code([row]) == 2


def _row(worker: Verdict, task_verdict: Verdict) -> BuildResult:
    probe = TaskResult(task=PROBE_TASK, probe=True, verdict=worker, concurrency=C, call="",
                       alone=None, at_once=None, evidence=[])
    mine = dataclasses.replace(probe, task="tasks.query", probe=False, verdict=task_verdict)
    return BuildResult(build="tasks", description="", baseline=False, expected=None,
                       verdict=worker, cause=None, advice=None, evidence=[], facts={},
                       metrics=None, workers=[], tasks=[probe, mine])


@pytest.mark.parametrize(("task_verdict", "fail_on", "code"), [
    (Verdict.OK, ("blocking", "busy-wait", "serialized", "failing"), 0),
    (Verdict.SERIALIZED, ("blocking", "busy-wait", "serialized", "failing"), 1),
    (Verdict.SERIALIZED, ("blocking",), 0),
    (Verdict.FAILING, ("failing",), 1),
])
def test_a_tasks_verdict_counts_toward_the_exit_code(task_verdict, fail_on, code):
    assert rules.exit_code([_row(Verdict.OK, task_verdict)], fail_on=fail_on) == code


@pytest.mark.parametrize(("code", "log", "said"), [
    (-9, (), "was killed by SIGKILL mid-run: nothing in its log says why"),
    (-11, (), "crashed mid-run (killed by SIGSEGV): a fault in C code"),
    (3, ("Traceback (most recent call last):", "SystemExit: 3"), "exited with code 3 mid-run: "
     "SystemExit: 3"),
], ids=["kill-9", "segfault", "exit"])
def test_a_worker_that_ended_mid_run_is_an_error_not_a_verdict(code, log, said):
    """Issue 25 row 9: a worker that ended while a task ran was FAILING ("they wait on
    something that never comes")."""
    name = "tasks.slow"
    alone = batch("alone", [task(0, 0.0, 0.01, None)], lag=0.004, name=name)
    stall = dataclasses.replace(_stall("stalled", hub_silent=0.0, why="exited"), batch="alone",
                                task=name, started=1)
    run = dataclasses.replace(run_of(alone, stall=stall, stop=StopFigures(
        "none", 0.0, code, exited_before=True)), log_tail=log)
    result = task_rules.judge_task(run, name, name, T, START, probe=False, facts={})
    assert result.verdict is Verdict.ERROR and said in result.cause
    assert result.advice == task_rules.INTERRUPTED_FIX
    assert result.stall.stopped.startswith("nothing to stop: it had ended (")


def test_a_worker_seen_stopped_makes_every_task_an_error():
    name = "tasks.slow"
    run = dataclasses.replace(run_of(lone(name=name), healthy(name=name)),
                              not_running={41: "stopped (process state T) for at least 3.0 s"})
    result = task_rules.judge_task(run, name, name, T, START, probe=False, facts={})
    assert result.verdict is Verdict.ERROR
    assert result.cause.startswith("the celery worker (pid 41) did not run during the probe")

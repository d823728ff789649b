"""A celery worker's report (``run --celery``): the worker's row, its tasks, their details.

``SECTIONS`` is the celery kind's ``KindReport`` (``kinds/interface.py``): the report
(``report/run.py``, ``builds.py``, ``setup.py``, ``repro.py``) finds it by the kind's name
in the record (``kinds.report_of``) and reads the headline, the deployment, the verdict
table, the findings, the tasks under the worker's explanation, its facts and its
reproduction from it: the one place the words and figures of tasks are chosen. Queue time and
run time are shown apart, with celery's own runtime beside ours: where they disagree is
the point (a blocked pool shows only as queue time, while celery, and Flower, report
every task as quick).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from geventprobe.record import BuildResult, RunResult, TaskBatch, TaskResult, Verdict
from geventprobe.report import repro
from geventprobe.report.cells import (
    VERDICT_STYLE,
    blocked_line,
    driver_version,
    impl_name,
    label,
    num,
    verdict_cell,
    wait_name,
    wait_short,
)
from geventprobe.report.document import (
    COMPACT,
    SUMMARY,
    VERBOSE,
    Block,
    Cell,
    Column,
    Heading,
    Paragraph,
    Table,
)

HEADLINE = "geventprobe: your celery worker under -P gevent"
STACK_FRAMES = 6
"""Frames of a stalled worker's main thread shown (innermost last); the JSON has them all."""


def probe_task(b: BuildResult) -> TaskResult | None:
    """The worker's own probe task (its verdict is the worker's)."""
    return next((t for t in b.tasks if t.probe), None)


def _seconds(value: float | None) -> str:
    return num(value, "{:,.2f}")


def _worst(t: TaskResult | None, attr: str) -> float | None:
    if t is None:
        return None
    values = [getattr(x, attr) for x in (t.alone, t.at_once)
              if x is not None and getattr(x, attr) is not None]
    return max(values) if values else None


def deciding(b: BuildResult) -> str:
    """The worker's deciding evidence in a few words: ``queue 3.26 s, hub 861 ms``."""
    t = probe_task(b)
    if b.verdict is Verdict.ERROR:
        return "probe failed"
    if t is None:
        return "–"
    if t.stall is not None:
        return "never started" if t.stall.kind == "never-started" else t.stall.kind
    if b.verdict is Verdict.BUSY_WAIT:
        return f"CPU {num(_worst(t, 'wait_cpu_per_s'), '{:.2f}')}/s in waits"
    stalled = next((e for e in b.evidence if e.fired and e.rule == "connect-stall"), None)
    queue = t.at_once.queue_max_s if t.at_once else None
    text = f"queue {_seconds(queue)} s, hub {num(_worst(t, 'hub_lag_ms'), '{:,.0f}')} ms"
    if stalled is not None:
        text += f"; hub stalled {stalled.value:.0%} of connects"
    return text


def worker_table(result: RunResult) -> Table:
    """The verdict table of a celery run: the worker's row, its probe task's figures C at
    once (queue and run apart, celery's runtime beside ours), the connect phase."""
    columns = [Column("worker"), Column("driver"), Column("impl", importance=3),
               Column("wait"), Column("verdict"), Column("evidence", importance=COMPACT),
               Column("queue max s", True, 1), Column("run max s", True, 2),
               Column("celery max s", True, 2), Column("hub lag ms", True, 1),
               Column("connect stall", True, 4)]
    rows = []
    for b in result.builds:
        t = probe_task(b)
        at_once = t.at_once if t is not None else None
        stall = next((e for e in b.evidence if e.rule == "connect-stall"), None)
        rows.append([
            Cell(label(b), "strong"),
            Cell(driver_version(b), None, driver_version(b).split(" ")[-1]),
            Cell(impl_name(b)), Cell(wait_name(b), None, wait_short(b)), verdict_cell(b),
            Cell(deciding(b), None, deciding(b).split(";")[0]),
            Cell(_seconds(at_once and at_once.queue_max_s)),
            Cell(_seconds(at_once and at_once.run_max_s)),
            Cell(_seconds(at_once and at_once.celery_runtime_max_s)),
            Cell(num(_worst(t, "hub_lag_ms"), "{:,.1f}")),
            Cell(num(stall.value if stall is not None and stall.value else None, "{:.0%}"))])
    return Table(columns, rows)


def legend(result: RunResult) -> str | None:
    """What the verdict table's columns mean, with this run's sizes."""
    t = next((probe_task(b) for b in result.builds if probe_task(b) is not None), None)
    if t is None:
        return None
    c = t.concurrency
    return (f"The worker's probe task (its own connection and `pg_sleep`, sent through the "
            f"broker) alone, then {c} at once. **queue** = sent → started: the broker, the "
            "consumer taking it off the broker, the pool (the consumer runs on the same hub, "
            "so a blocked hub shows here); **run** = started → finished by geventprobe's "
            "clock; **celery** = the runtime celery itself reports (its events, Flower); "
            "**hub lag** = latest heartbeat while the tasks ran; **connect stall** = share "
            f"of the {c} connects at once during which the hub did not run.")


def deployment(result: RunResult) -> list[Block]:
    """The worker that was probed, and what geventprobe changed around it."""
    a = result.app or {}
    out: list[Block] = [Paragraph(f"`{a.get('command')}` in {a.get('chdir')}",
                                  lead="your celery worker:")]
    row = result.builds[0] if result.builds else None
    c = (row.facts.get("celery") or {}) if row is not None else {}
    versions = c.get("versions") or {}
    parts = []
    if c.get("pool"):
        parts.append(f"pool {c['pool'].rsplit('.', 2)[-2] if '.' in c['pool'] else c['pool']}")
    if c.get("concurrency"):
        parts.append(f"concurrency {c['concurrency']}")
    if versions.get("celery"):
        parts.append(f"celery {versions['celery']}, kombu {versions.get('kombu')}")
    parts.append(f"broker: {a.get('broker')}")
    out.append(Paragraph("; ".join(parts), indent=1))
    # How the worker was started decides the verdict: that line always; the rest with -v.
    out += [Paragraph(f"geventprobe {o}", style="dim", indent=1,
                      detail=SUMMARY if o.startswith("started") else VERBOSE)
            for o in a.get("overrides") or []]
    if c:
        removed = ("removed" if c.get("queue_removed")
                   else f"NOT removed: {c.get('queue_cleanup_error')}")
        stop = c.get("stop") or {}
        how = ("it had exited on its own" if stop.get("exited_before") else
               f"SIGKILL after ignoring SIGTERM for {stop.get('seconds', 0):.1f} s"
               if stop.get("ignored_sigterm") else
               f"{stop.get('signal')} once every figure was in" if stop else "–")
        out.append(Paragraph(f"our queue {c.get('queue')} {removed}; the worker was stopped "
                             f"with {how}", style="dim", indent=1, detail=VERBOSE))
    return out


def _batch_cells(b: TaskBatch | None) -> list[Cell]:
    if b is None:
        return [Cell("–")] * 6
    done = "" if b.finished == b.size else f" ({b.finished}/{b.size} done)"
    return [Cell(_seconds(b.wall_s) + done, None, _seconds(b.wall_s)),
            Cell(_seconds(b.queue_max_s)), Cell(_seconds(b.run_p50_s)),
            Cell(_seconds(b.run_max_s)), Cell(_seconds(b.celery_runtime_max_s)),
            Cell(num(b.overlap, "{:.1f}"))]


def task_table(tasks: Sequence[TaskResult]) -> Table:
    """Each task: alone, then C at once, queue and run apart, celery's runtime beside."""
    # Queue, run and celery's runtime side by side come first: a blocked pool shows in
    # the queue while both run figures look healthy.
    columns = [Column("task"), Column("verdict"), Column("alone s", True, 3),
               Column("at once s", True, 2), Column("queue max s", True, 1),
               Column("run p50 s", True, 3), Column("run max s", True, 1),
               Column("celery max s", True, 1), Column("overlap", True, 4),
               Column("hub lag ms", True, 2), Column("conns", True, 5)]
    rows = []
    for t in tasks:
        alone = t.alone.wall_s if t.alone is not None else None
        conns = t.at_once.server_connections if t.at_once is not None else None
        rows.append([Cell(t.task + (" (probe)" if t.probe else ""), "strong",
                          "probe" if t.probe else None),
                     Cell(t.verdict.value, VERDICT_STYLE[t.verdict]),
                     Cell(_seconds(alone)), *_batch_cells(t.at_once),
                     Cell(num(_worst(t, "hub_lag_ms"), "{:,.1f}")),
                     Cell(num(conns, "{:d}"))])
    c = tasks[0].concurrency if tasks else 0
    return Table(columns, rows,
                 title=f"tasks through the broker: one alone, then {c} at once",
                 caption=(f"at once = wall time of the {c}; queue = sent → started (a blocked "
                          "hub shows here: the consumer shares it); run = started → finished; "
                          "celery = the runtime celery reports (Flower); overlap = Σ run / "
                          f"span ({c} side by side, 1 one at a time); conns = most server "
                          "connections the worker held"))


def stall_lines(t: TaskResult) -> list[Block]:
    """Where a stalled worker's main thread was, and how it was stopped."""
    s = t.stall
    if s is None:
        return []
    out: list[Block] = []
    if s.stack:
        shown = s.stack[-STACK_FRAMES:]
        more = len(s.stack) - len(shown)  # the whole stack is in the JSON record
        out.append(Paragraph(" ← ".join(reversed(shown))
                             + (f" ← {more} more frame{'s' if more > 1 else ''} (in the "
                                "JSON record)" if more > 0 else ""),
                             lead="main thread:", indent=1))
        if s.user_frame and s.user_frame not in shown:
            out.append(Paragraph(s.user_frame, lead="your code:", indent=1))
    if s.stopped:
        out.append(Paragraph(f"the worker was stopped: {s.stopped}", indent=1))
    return out


def task_details(tasks: Sequence[TaskResult]) -> list[Block]:
    """Each of the user's tasks that is not OK: its evidence, cause, fix, first error and
    who blocked."""
    out: list[Block] = []
    for t in tasks:
        if t.probe or t.verdict is Verdict.OK:
            continue
        out.append(Heading(f"{t.call}: {t.verdict.value}", VERDICT_STYLE[t.verdict], level=4))
        out += [Paragraph(e.text, lead="evidence:", indent=1) for e in t.evidence if e.fired]
        if t.cause:
            out.append(Paragraph(t.cause, lead="cause:", indent=1))
        if t.advice:
            out.append(Paragraph(t.advice, lead="fix:", indent=1))
        if t.first_error:
            out.append(Paragraph(t.first_error, lead="first error:", indent=1))
        out += [Paragraph(blocked_line(s), lead="who blocked:", indent=1) for s in t.blocked_by]
        out += stall_lines(t)
    return out


def findings(result: RunResult) -> str | None:
    """The findings paragraph of a celery run."""
    out = []
    for b in result.builds:
        t = probe_task(b)
        name = label(b)
        if b.verdict is Verdict.ERROR:
            out.append(f"The probe failed in your celery worker {name} ({b.error or b.cause}).")
            continue
        if t is None:
            continue
        at_once = t.at_once
        if t.stall is not None:
            out.append(f"**Your celery worker {name} never ran the probe's tasks**: "
                       f"{t.stall.kind.replace('-', ' ')} within {t.stall.waited_s:.1f} s.")
        elif at_once is not None:
            figures = (f"{at_once.size} probe tasks at once took {_seconds(at_once.wall_s)} s; "
                       f"they waited up to {_seconds(at_once.queue_max_s)} s in the queue and "
                       f"each ran at most {_seconds(at_once.run_max_s)} s (celery reported "
                       f"{_seconds(at_once.celery_runtime_max_s)} s); the hub was late by up to "
                       f"{num(_worst(t, 'hub_lag_ms'), '{:,.1f}')} ms")
            if b.verdict is Verdict.OK:
                out.append(f"**Your celery worker {name} cooperates with gevent**: {figures}.")
            else:
                out.append(f"**Your celery worker {name} is {b.verdict.value}**: {figures}.")
        if b.cause and b.verdict is not Verdict.OK:
            out.append(f"Cause: {b.cause}.")
        for task in b.tasks:
            if task.probe:
                continue
            out.append(f"**Task {task.task} is {task.verdict.value}**"
                       + (f": {task.cause}." if task.cause else "."))
    return " ".join(out) or None


def _reproduction(build: BuildResult, result: RunResult | None) -> repro.Reproduction:
    """Your celery worker, started as geventprobe started it, the task that showed the class."""
    app = (result.app if result else None) or {}
    task, found = repro.first_not_ok([t for t in build.tasks if not t.probe], lambda t: t.verdict)
    # A worker that never ran the probe task never got yours: the record still names them.
    names = [task.task] if task else [c.split("(")[0] for c in app.get("tasks") or []]
    parts = ["python", repro.HARNESS, ".", shlex.quote(app.get("command") or build.build),
             "--task", names[0] if names else "your.task"]
    argv = list(result.command) if result else []
    for flag, harness_flag in (("--task-args", "--args"), ("--task-kwargs", "--kwargs")):
        if names and flag in argv[:-1]:
            parts += [harness_flag, shlex.quote(argv[argv.index(flag) + 1])]
    parts += ["-n", str(task.concurrency if task else app.get("concurrency") or 16)]
    verdict = repro.shown_verdict(build, found)
    which = (f"task {names[0]}" if names else
             "a task of yours that queries (name it in --task)")
    return repro.Reproduction(build.build, verdict, ".", (), "pip install 'celery[redis]' gevent  "
                        "# and your app's requirements, and redis-server", " ".join(parts),
                        f"Your celery worker, {which}, started as geventprobe started it, run "
                        f"from its directory: the harness should print {verdict.value}.")


def details(b: BuildResult) -> list[Block]:
    """A celery worker's tasks: where a stalled worker was held, then a table (the probe task
    first) and each task that is not OK, as ``route_table`` and ``route_details`` do for a
    gunicorn app's routes."""
    if not b.tasks:
        return []
    probe = probe_task(b)
    out: list[Block] = stall_lines(probe) if probe is not None else []
    if any(t.alone is not None or t.at_once is not None for t in b.tasks):
        out.append(task_table(b.tasks))  # not a row of dashes for a stall
    return out + task_details(b.tasks)


def _celery(b: BuildResult, *keys):
    """What the worker said about itself as celery (``facts["celery"]``), by keys."""
    value = b.facts.get("celery")
    for key in keys:
        value = (value or {}).get(key)
    return value


def _patch_all(b: BuildResult):
    found = [p for p in b.facts.get("patches") or () if p.get("what") == "patch_all"]
    return found[0].get("where") if found else "never"


class _Sections:
    """The celery kind's sections of the report document (``KindReport``)."""

    headline = HEADLINE
    probed = "a celery worker"
    facts_intro = ("What the celery worker reported about itself once it was ready, and again "
                   "after its tasks ran.")
    # A celery worker's record keeps its tasks' figures (queue, run, hub lag per batch), not
    # the per-worker hub-lag timeline and SELECT 1 spread a chart draws.
    no_charts = ("a celery run has no charts yet (its record keeps each task's queue and run "
                 "times, not the hub-lag timeline a chart draws): render it with --format "
                 "html, markdown or text")
    facts_rows = (
        ("celery", lambda b: _celery(b, "versions", "celery")),
        ("celery pool", lambda b: _celery(b, "pool")),
        ("celery concurrency", lambda b: _celery(b, "concurrency")),
        ("driver imported", lambda b: (b.facts.get("driver_import") or {}).get("where")
         if "celery" in b.facts else None),
        ("gevent `monkey.patch_all()` called",
         lambda b: _patch_all(b) if "celery" in b.facts else None),
        ("`worker_process_init` receivers (never sent under -P gevent)",
         lambda b: ", ".join(b.facts.get("worker_process_init_receivers") or []) or None),
    )
    deployment = staticmethod(deployment)
    table = staticmethod(worker_table)
    legend = staticmethod(legend)
    findings = staticmethod(findings)
    details = staticmethod(details)
    reproduction = staticmethod(_reproduction)


SECTIONS = _Sections()

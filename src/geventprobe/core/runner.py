"""The one way through a run: plan -> run -> settle once -> record. No printing here.

``run`` takes a ``RunPlan`` (``core/plan.py`` resolves it once from the command line),
lets the target prepare (a version matrix makes its environments), opens a ``Session``
(the server, the import checks, the time limit), runs the calibration controls if
asked, lets the target probe its rows (``core/target.py``), settles every verdict once
(``rules.settle``), asks the target for its headline, and returns the ``RunResult``:
the record every renderer reads, built here and nowhere else. Progress goes to a
listener (the CLI draws it).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timezone

from geventprobe import __version__
from geventprobe.core import calibrate, environment, rules
from geventprobe.core.progress import Listener, NullListener
from geventprobe.core.session import Session
from geventprobe.dsn import redact
from geventprobe.processes import children
from geventprobe.record import SCHEMA_VERSION, RunResult
from geventprobe.settings import RunPlan

__all__ = ["Listener", "NullListener", "run"]


def run(plan: RunPlan, listener: Listener | None = None) -> RunResult:
    """Probe what ``plan`` says; return the whole, settled record."""
    listener = listener or NullListener()
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    target = plan.target.prepare(listener)
    imports = target.imports()
    if imports:  # a celery worker imports what it imports: nothing to check here
        listener.phase("checking which builds import")
    calibration = None
    with Session(plan, listener, imports) as session:
        if plan.calibrate:
            mark = time.monotonic()
            calibration = calibrate.run_controls(session, listener)
            session.timings["calibration"] = time.monotonic() - mark
        probed = target.probe(session, listener)
    rows, code, inconclusive = rules.settle(probed.rows, plan.fail_on, calibration)
    verdict = target.headline(rows, code, calibration)
    return RunResult(
        schema_version=SCHEMA_VERSION,
        tool_version=__version__,
        started_at=started_wall.isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - started, 3),
        command=[redact(a) for a in plan.command],
        preload=plan.preload,
        profile={"source": plan.profile.source,
                 "workload": dataclasses.asdict(plan.profile.workload),
                 "thresholds": dataclasses.asdict(plan.profile.thresholds)},
        environment=environment.collect(),
        server=dataclasses.asdict(session.server_info),
        builds=rows,
        summary=f"{verdict}; exit {code}",
        exit_code=code,
        verdict=verdict,
        # A killed watchdog (replaced meanwhile) is the run's business too.
        notes=probed.notes + inconclusive + children.take_notices(),
        calibration=calibration,
        matrix=probed.matrix,
        app=target.app_record(),
        proxy=session.proxy,
        timings={k: round(v, 3) for k, v in session.timings.items()},
    )

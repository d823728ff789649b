"""The kinds of workers geventprobe probes, each in a package of its own, and their registry.

A kind owns how it is asked for and planned, how its workers are started, what they
report, how it is judged, its causes and fixes in its own words, and the sections it adds
to the report (``interface.KindReport``). ``celery`` (a ``celery -P gevent`` worker and its
tasks) is the first moved here; the WSGI runs (the driver builds, a gunicorn app) are the
report's built-in sections until they move too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geventprobe.core.plan import RunRequest
    from geventprobe.kinds.interface import KindPlan, KindReport
    from geventprobe.record import RunResult
    from geventprobe.settings import Profile, ProjectSettings

# The kind's name, as its run records it in ``RunResult.app["kind"]`` -> its report module
# (which holds ``SECTIONS``, a ``KindReport``; ``module:NAME``: another of its objects). One
# line per kind of run.
_REPORTS = {
    "celery": "geventprobe.kinds.celery.report",
    "uwsgi": "geventprobe.kinds.uwsgi.report",
    "uwsgi-builds": "geventprobe.kinds.uwsgi.report:BUILDS",
}


# The kinds that plan their own runs, in the order they are asked: each planner module holds
# ``OPTIONS`` (its flags, click options of ``geventprobe run``) and ``plan``. One line per kind.
_PLANNERS = (
    "geventprobe.kinds.uwsgi.plan",
    "geventprobe.kinds.celery.plan",
)


def options() -> list:
    """The flags every kind declares for ``geventprobe run`` (click options); their values
    reach the planners in ``RunRequest.options``."""
    return [option for name in _PLANNERS for option in importlib.import_module(name).OPTIONS]


def plan(request: RunRequest, project: ProjectSettings, profile: Profile) -> KindPlan | None:
    """The plan of the first kind the request asks for; None: the WSGI runs (the driver
    builds, a gunicorn app), which ``core/plan.py`` plans itself. A kind refuses the flags
    that cannot go with it (``ProbeError``, one line)."""
    for name in _PLANNERS:
        found = importlib.import_module(name).plan(request, project, profile)
        if found is not None:
            return found
    return None


def known(name: str | None) -> bool:
    """Whether this release renders a run of the kind ``name`` (None, "": the WSGI runs)."""
    return not name or name in _REPORTS


def report_of(result: RunResult | None) -> KindReport | None:
    """The sections of the kind of worker ``result`` probed; None for the report's built-in
    ones (the driver builds, a gunicorn app). A saved run of a kind this release does not
    know is refused when it is loaded (``report/load.py``)."""
    name = ((result.app or {}).get("kind") if result is not None else None) or ""
    found = _REPORTS.get(name)
    if not found:
        return None
    module, _, attr = found.partition(":")
    return getattr(importlib.import_module(module), attr or "SECTIONS")

"""The uWSGI kind's sections of the report document (``SECTIONS``, a ``KindReport``).

A uWSGI app's row is a WSGI row like a gunicorn app's (the same figures, the same verdict
table, legend and routes), so it reuses the report's WSGI sections; what differs is said in
uWSGI's words: the deployment (their command, patch flag, lazy-apps, what geventprobe
changed), the findings' wording, the facts its workers add, and the reproduction (the
harness under plain uWSGI).
"""

from __future__ import annotations

import shlex

from geventprobe.record import BuildResult, RunResult
from geventprobe.report import findings as wsgi_findings
from geventprobe.report import repro
from geventprobe.report import run as wsgi_run
from geventprobe.report.document import Block, Paragraph

HEADLINE = "geventprobe: your app under uWSGI --gevent"
BUILDS_HEADLINE = "geventprobe: PostgreSQL drivers under uWSGI --gevent"


def deployment(result: RunResult) -> list[Block]:
    """The deployment probed, and what geventprobe changed in it."""
    a = result.app or {}
    out: list[Block] = [
        Paragraph(f"{a.get('app')} in {a.get('chdir')}", lead="your app:"),
        Paragraph(f"{a.get('command')}; {a.get('processes')} processes; gevent "
                  f"{a.get('gevent')}; patch flag {a.get('patch')}; lazy-apps "
                  f"{'on' if a.get('lazy_apps') else 'off'}; harakiri "
                  f"{a.get('harakiri') or 'off'}; imports: "
                  f"{', '.join(a.get('imports') or []) or 'none'}", indent=1)]
    if a.get("routes_found"):
        out.append(Paragraph(wsgi_run.found_routes(a["routes_found"], result), indent=1))
    out += [Paragraph(f"geventprobe set {o}", style="dim", indent=1)
            for o in a.get("overrides") or []]
    return out


def findings(result: RunResult) -> str | None:
    """The WSGI paragraph in uWSGI's words, with uWSGI's version in the setup."""
    return _with_version(wsgi_findings.wsgi(result, where="under your uWSGI configuration",
                                            servers=()), result)


def _with_version(text: str, result: RunResult) -> str:
    """``text`` and the uWSGI version its workers reported (the setup names no server)."""
    version = next((_uwsgi(b, "version") for b in result.builds if _uwsgi(b, "version")), None)
    return text + (f" uWSGI {version}." if version else "")


def _plain_uwsgi(a: dict, gevent: int) -> list[str]:
    """``uwsgi`` as the reproduction starts it: one process, ``gevent`` async cores, the
    patch flag and lazy-apps of the run (``a``: its deployment record)."""
    flags = ["uwsgi", "--master", "--processes", "1", "--gevent", str(gevent)]
    patch = a.get("patch")
    if patch and patch != "none":
        flags.append(patch)
    if a.get("lazy_apps"):
        flags.append("--lazy-apps")
    return flags


def details(b: BuildResult) -> list[Block]:
    """Nothing beyond the WSGI row's own details (its routes)."""
    return []


def _reproduction(build: BuildResult, result: RunResult | None) -> repro.Reproduction:
    """The harness on the app's directory under plain uWSGI, one process, the route that
    showed the class (or one to name)."""
    a = (result.app if result else None) or {}
    route, found = repro.first_not_ok(build.routes, lambda r: r.verdict)
    gevent = int(a.get("gevent") or 16)
    n = min(route.concurrency if route else 16, max(1, gevent - 1))
    flags = _plain_uwsgi(a, gevent)
    for name in a.get("imports") or []:
        flags += ["--import", name]
    loader, _, target = str(a.get("app") or build.build).partition(" = ")
    flags += [f"--{loader}" if target else "--module", target or build.build]
    request = route.route if route else "GET /a-route-of-yours-that-queries"
    command = " ".join(["python", repro.HARNESS, ".", shlex.quote(shlex.join(flags)),
                        "--request", shlex.quote(request), "-n", str(n)])
    verdict = repro.shown_verdict(build, found)
    which = (f"route {request}" if route else
             "a route of yours that queries the database (name it in --request)")
    return repro.Reproduction(
        build.build, verdict, ".", (), "pip install pyuwsgi gevent  # and your app's "
        "requirements", command,
        f"Your app, {which}, under plain uWSGI (one process, its gevent loop, your patch flag),"
        f" run from your app's directory: the harness should print {verdict.value}.")


def builds_deployment(result: RunResult) -> list[Block]:
    """The uWSGI configuration the built-in builds ran under, and what geventprobe changed."""
    a = result.app or {}
    out: list[Block] = [Paragraph(str(a.get("command")), lead="uWSGI:")]
    if a.get("how") == "command":  # theirs: what uWSGI made of it
        out.append(Paragraph(f"{a.get('processes')} processes; gevent {a.get('gevent')}; patch "
                             f"flag {a.get('patch')}; lazy-apps "
                             f"{'on' if a.get('lazy_apps') else 'off'}", indent=1))
    out += [Paragraph(f"geventprobe set {o}", style="dim", indent=1)
            for o in a.get("overrides") or []
            if not o.startswith(("http-socket", "need-app"))]
    return out


def builds_findings(result: RunResult) -> str | None:
    """The drivers' paragraph, in uWSGI's words."""
    patch = (result.app or {}).get("patch") or "none"
    return _with_version(wsgi_findings.wsgi(
        result, where=f"inside real uWSGI gevent workers (patch flag {patch})", servers=(),
        drivers=True), result)


def _builds_reproduction(build: BuildResult, result: RunResult | None) -> repro.Reproduction:
    """The build's one-file app under plain uWSGI, one process, the run's patch flag."""
    a = (result.app if result else None) or {}
    # One async core more than the requests: the harness pings the hub beside them.
    flags = _plain_uwsgi(a, int(a.get("gevent") or 16) + 1)
    patch = a.get("patch") or "none"
    version = _uwsgi(build, "version")
    return repro.build_reproduction(build, result, repro.PlainServer(
        name="uWSGI", argv=tuple(flags), app=("--module", "app:application"),
        words="one plain uWSGI gevent worker",
        imported=f"the driver imported at the app's top, loaded as uWSGI loads it ({patch})",
        pip=f'"pyuwsgi=={version}"' if version else '"pyuwsgi"'))


def _uwsgi(b: BuildResult, key: str):
    return (b.facts.get("uwsgi") or {}).get(key)


class _Sections:
    """The uWSGI kind's sections of the report document (``KindReport``)."""

    headline = HEADLINE
    probed = "a uWSGI app"
    facts_intro = ("What each uWSGI gevent worker reported about itself once its gevent loop "
                   "ran.")
    no_charts = ("no build of this run has figures to chart (the app's workers did not report "
                 "them)")
    facts_rows = (
        ("uWSGI", lambda b: _uwsgi(b, "version")),
        ("uWSGI patch flag", lambda b: ("--gevent-early-monkey-patch"
                                        if _uwsgi(b, "early_monkey_patch") else
                                        "--gevent-monkey-patch" if _uwsgi(b, "monkey_patch")
                                        else "none") if b.facts.get("uwsgi") else None),
        ("uWSGI lazy-apps", lambda b: (("on" if _uwsgi(b, "lazy_apps") else "off")
                                       if b.facts.get("uwsgi") else None)),
        ("driver imported", lambda b: (b.facts.get("driver_import") or {}).get("where")),
    )
    deployment = staticmethod(deployment)
    table = staticmethod(wsgi_run.verdict_table)
    legend = staticmethod(wsgi_run.legend)
    findings = staticmethod(findings)
    details = staticmethod(details)
    reproduction = staticmethod(_reproduction)


SECTIONS = _Sections()


class _BuildsSections(_Sections):
    """The driver builds under uWSGI (``run --server uwsgi``): the WSGI builds' table, uWSGI's
    configuration and words."""

    headline = BUILDS_HEADLINE
    probed = "the built-in driver builds under uWSGI"
    facts_intro = ("What each build's uWSGI gevent workers reported about themselves once "
                   "their gevent loop ran.")
    no_charts = "no build of this run has figures to chart"
    deployment = staticmethod(builds_deployment)
    findings = staticmethod(builds_findings)
    reproduction = staticmethod(_builds_reproduction)


BUILDS = _BuildsSections()

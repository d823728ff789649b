"""``--route auto``: the app's parameterless GET routes, found for the user. No printing.

A throwaway child (``worker/list_routes.py``) imports the app the way gunicorn would, in
the user's directory and environment, bounded in time, and lists the routes Django's
URLconf or Flask's ``url_map`` declares. Here they are sorted into:

- **found**: a fixed path that answers GET (or does not say which methods it answers, as a
  Django function view): probed like a ``--route``;
- **skipped**, with the reason: a path that needs parameters (``/items/<int:pk>``), a
  regular expression that matches many paths, a route without GET (``POST`` only);
- **excluded**: dropped by a ``--route-exclude`` glob (``/admin/*``), matched against the
  path and against ``GET /path``.

A route that needs a login is found like any other: without cookies it answers a redirect
or 401/403 at probe time, and the report says so beside it (``report/run.py``).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from dataclasses import dataclass

from geventprobe.app.routes import Route, parse_route
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.worker import record
from geventprobe.worker.probe_route import PATH as PROBE_PATH
from geventprobe.worker.record import AppRoutes, FoundRoute

FRAMEWORKS = {"django": "Django URLconf", "flask": "Flask url_map"}


@dataclass(frozen=True)
class Found:
    """The routes ``--route auto`` found, skipped and excluded (``RunResult.app``'s
    ``routes_found``)."""

    framework: str
    routes: tuple[Route, ...]
    """The routes to probe, in the order the framework declares them."""
    skipped: tuple[tuple[str, str], ...]
    """(the route as declared, why it is not probed)."""
    excluded: tuple[str, ...]
    """Found, then dropped by ``--route-exclude``."""

    def record(self) -> dict:
        """As recorded in ``RunResult.app["routes_found"]``."""
        return {"framework": self.framework, "found": [str(r) for r in self.routes],
                "skipped": [{"route": r, "reason": why} for r, why in self.skipped],
                "excluded": list(self.excluded)}


def _why_skipped(route: FoundRoute) -> str | None:
    """Why a declared route is not probed (None: it is)."""
    if route.params:
        return f"needs parameters: {', '.join(route.params)}"
    if not route.fixed:
        return "a regular expression, not one path"
    if route.methods and "GET" not in route.methods:
        return f"no GET: answers {', '.join(route.methods)}"
    return None


def sort(listed: AppRoutes, excludes: tuple[str, ...] = ()) -> Found:
    """The routes of ``listed`` sorted into found, skipped and excluded."""
    found: list[Route] = []
    skipped: list[tuple[str, str]] = []
    excluded: list[str] = []
    for declared in listed.routes:
        shown = (f"{'/'.join(declared.methods)} {declared.path}"
                 if declared.methods and "GET" not in declared.methods else declared.path)
        why = _why_skipped(declared)
        if why is None:
            try:
                route = parse_route(declared.path)
            except ProbeError:
                why = "not a path a request can carry"
        if why is not None:
            if shown not in (s for s, _ in skipped):
                skipped.append((shown, why))
            continue
        if route.path == PROBE_PATH or route in found or str(route) in excluded:
            continue
        if any(fnmatch.fnmatchcase(route.path, p) or fnmatch.fnmatchcase(str(route), p)
               for p in excludes):
            excluded.append(str(route))
            continue
        found.append(route)
    return Found(framework=listed.framework or "", routes=tuple(found),
                 skipped=tuple(skipped), excluded=tuple(excluded))


def find(args: list[str], chdir: str, env: dict[str, str], timeout: float,
         excludes: tuple[str, ...] = (), server_known: bool = True) -> Found:
    """List the routes of the app ``gunicorn ARGS`` serves, in a throwaway child (killed
    after ``timeout`` s), and sort them; ProbeError, one line, when they cannot be listed.
    ``server_known``: the child was given the run's server (``--dsn``); without it an app
    that connects at import cannot, and the message says so."""
    tmp = children.make_temp_dir("geventprobe-routes-")
    try:
        out = os.path.join(tmp, "routes.json")
        proc = children.spawn([sys.executable, "-m", "geventprobe.worker.list_routes", out, "--",
                               *args], env=env, cwd=chdir, log_path=os.path.join(tmp, "log"))
        with children.running(proc, signal.SIGKILL, timeout=1):
            code = children.wait(proc, timeout)
        if code is None:
            raise ProbeError(f"--route auto: importing your app to list its routes did not "
                             f"finish within {timeout:.0f} s (does it wait for something at "
                             "import?): name the routes with --route instead")
        try:
            listed = record.read(AppRoutes, out)
        except record.RecordError as exc:
            raise ProbeError(f"--route auto: cannot read your app's routes: {exc}") from None
        except (OSError, ValueError):
            with open(os.path.join(tmp, "log"), errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            raise ProbeError("--route auto: listing your app's routes failed: "
                             + redact(lines[-1] if lines else f"exit code {code}")) from None
    finally:
        children.remove_temp_dir(tmp)
    if not listed.ok:
        error = redact(listed.error or "unknown error")
        if listed.stage == "framework":
            raise ProbeError(f"--route auto lists the routes of a Django or Flask app, and "
                             f"{error}: name its routes with --route PATH instead")
        if listed.stage == "import":
            hint = ("" if server_known else " (it is imported before the run's embedded "
                    "server starts: an app that connects at import needs --dsn)")
            raise ProbeError(f"--route auto: your app failed to import{hint}: {error}: fix "
                             "it, or name its routes with --route PATH")
        raise ProbeError(f"--route auto: cannot list your app's routes: {error}: name them "
                         "with --route PATH instead")
    return sort(listed, excludes)

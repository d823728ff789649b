"""Bisect: the first release of psycopg (or gevent) whose build blocks or busy-waits.

Lists the releases from ``--good`` to ``--bad`` with pip's ``index versions``
(so pip's own index settings apply), probes both ends to confirm them, then
binary-searches the releases in between, each probed like one cell of a version
matrix: in its own cached isolated environment, against one server shared by
every step. A release that cannot be tested here (no wheel of the build for
this Python: psycopg-binary 3.1.7 was never released) is skipped, as
``git bisect skip`` does, and named if it hides the boundary.

The search itself (``search``) is a pure function of a judge, tested exactly;
``run`` supplies the judge that probes. No printing here.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from packaging.version import InvalidVersion, Version

from geventprobe import __version__
from geventprobe.core import environment
from geventprobe.core.builds import Build
from geventprobe.core.progress import Listener, NullListener
from geventprobe.core.session import Session
from geventprobe.dsn import redact
from geventprobe.errors import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE, ProbeError
from geventprobe.record import BuildResult, MatrixEnv, Verdict
from geventprobe.settings import RunPlan
from geventprobe.versions import matrix, venvs

PACKAGES = ("psycopg", "gevent")
"""What can be bisected."""
GOOD, BAD, SKIP, ERROR = "good", "bad", "skip", "error"
# The build's own distribution, released separately from psycopg: a release of psycopg
# without it cannot test that build, and need not be installed to find that out.
_BUILD_DISTRIBUTION = {"binary": "psycopg-binary", "c": "psycopg-c"}


# ---------------------------------------------------------------------------------------------
# The releases


def _parse_index_versions(output: str) -> list[str] | None:
    for line in output.splitlines():
        if line.strip().startswith("Available versions:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    return None


def list_releases(package: str, *, pre: bool = False, timeout: float = 120.0,
                  unreachable: list[str] | None = None) -> list[str]:
    """Every release of ``package`` on the package index for this Python, oldest first.

    ``unreachable`` collects what pip said of an index it could not reach: pip then lists
    what the other configured indexes have, and a release seems missing when it is not.
    """
    # -vv: pip tells a connection failure only at debug level (unless it retries).
    argv = [sys.executable, "-m", "pip", "index", "versions", package,
            "--disable-pip-version-check", "-vv"]
    if pre:
        argv.append("--pre")
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                             env=venvs.clean_environ(), check=False)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"the package index did not list the releases of {package} within "
                         f"{timeout:.0f} s: check the network and pip's index settings "
                         "(pip config list)") from None
    if "No module named pip" in out.stderr:
        raise ProbeError("bisect lists releases with pip, which this Python lacks: "
                         f"{sys.executable} -m ensurepip")
    found = _parse_index_versions(out.stdout)
    offline = venvs.index_unreachable(out.stdout + "\n" + out.stderr)
    if offline and unreachable is not None:
        unreachable.append(offline)
    if found is None and offline:
        raise ProbeError(f"cannot list the releases of {package}: {offline}: check the network "
                         "and pip's index settings (pip config list)")
    if found is None:
        errors = [ln.strip() for ln in out.stderr.splitlines() if ln.startswith("ERROR")]
        why = errors[0] if errors else (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise ProbeError(f"cannot list the releases of {package} from the package index "
                         f"({why}): check the network and pip's index settings "
                         "(pip config list)")
    valid = []
    for v in found:
        try:
            valid.append((Version(v), v))
        except InvalidVersion:
            continue  # ancient non-PEP 440 releases cannot be ordered: leave them out
    return [v for _, v in sorted(valid)]


def releases_between(releases: list[str], good: str, bad: str, package: str,
                     unreachable: list[str] | None = None) -> list[str]:
    """The releases from ``good`` to ``bad``, both included, oldest first.

    ``unreachable``: what pip said of an index it could not reach while listing them.
    """
    g, b = _ends(good, bad)
    by_version = {Version(v): v for v in releases}
    ordered = sorted(by_version)
    for flag, want in (("--good", g), ("--bad", b)):
        if want not in by_version:
            i = bisect_left(ordered, want)
            near = [str(by_version[v]) for v in ordered[max(0, i - 2):i + 2]]
            if unreachable:  # the release may well exist: the index that has it was down
                raise ProbeError(
                    f"cannot tell whether {flag} {want} is a release of {package}: "
                    f"{unreachable[0]}, and the other indexes pip is configured with do not "
                    "have it: check the network and pip's index settings (pip config list)")
            raise ProbeError(f"{flag} {want} is not a release of {package} on the package "
                             f"index for this Python: the nearest are {', '.join(near)}")
    return [by_version[v] for v in ordered if g <= v <= b]


# ---------------------------------------------------------------------------------------------
# The search


@dataclass(frozen=True)
class Outcome:
    """Where the search ended."""

    first_bad: str | None
    """The oldest release known bad with a known good one right before it (or skipped ones)."""
    last_good: str | None
    """The newest release known good before ``first_bad``."""
    untested: list[str] = field(default_factory=list)
    """Releases between the two that could not be tested: the boundary may be at any of them."""
    problem: str | None = None
    """``good-not-good``, ``bad-not-bad``, ``good-untestable``, ``bad-untestable`` or ``error``:
    why the search stopped without an answer."""
    at: str | None = None
    """The release the problem was found at."""


def search(releases: list[str], judge: Callable[[str], str]) -> Outcome:
    """Binary search for the first bad release; ``releases[0]`` is claimed good, the last bad.

    ``judge(release)`` answers ``good``, ``bad``, ``skip`` (cannot be tested here) or
    ``error`` (the probe failed: stop). The ends are judged first, to confirm the claim.
    """
    for index, wanted, name in ((0, GOOD, "good"), (-1, BAD, "bad")):
        got = judge(releases[index])
        if got == ERROR:
            return Outcome(None, None, problem=ERROR, at=releases[index])
        if got == SKIP:
            return Outcome(None, None, problem=f"{name}-untestable", at=releases[index])
        if got != wanted:
            return Outcome(None, None, problem=f"{name}-not-{name}", at=releases[index])
    lo, hi = 0, len(releases) - 1
    skipped: set[int] = set()
    while True:
        candidates = [i for i in range(lo + 1, hi) if i not in skipped]
        if not candidates:
            break
        i = candidates[len(candidates) // 2]
        got = judge(releases[i])
        if got == ERROR:
            return Outcome(releases[hi], releases[lo], problem=ERROR, at=releases[i])
        if got == GOOD:
            lo = i
        elif got == BAD:
            hi = i
        else:
            skipped.add(i)
    return Outcome(releases[hi], releases[lo], untested=releases[lo + 1:hi])


def max_steps(count: int) -> int:
    """Probes a search over ``count`` releases takes at most, skips aside (ends included)."""
    return 2 + (math.ceil(math.log2(count - 1)) if count > 2 else 0)


# ---------------------------------------------------------------------------------------------
# Probing


@dataclass(frozen=True)
class BisectStep:
    """One release the search looked at, in the order it did."""

    release: str
    judgement: str
    """``good``, ``bad``, ``skip`` or ``error``."""
    result: BuildResult | None
    """The probe's row (None when skipped without probing)."""
    environment: MatrixEnv | None
    """The isolated environment it ran in."""
    reason: str | None = None
    """Why it was skipped or failed."""


@dataclass(frozen=True)
class BisectResult:
    """A whole ``geventprobe bisect``."""

    schema_version: int
    tool_version: str
    started_at: str
    """ISO 8601, UTC."""
    duration_s: float
    command: list[str]
    """The command line, secrets redacted."""
    package: str
    """What was bisected: ``psycopg`` or ``gevent``."""
    build: str
    good: str
    bad: str
    preload: bool
    releases: list[str]
    """Every release from ``good`` to ``bad`` on the index, oldest first."""
    held: dict[str, str]
    """The other packages, held to geventprobe's own versions."""
    steps: list[BisectStep]
    first_bad: str | None
    """The answer; None when the search could not give one."""
    last_good: str | None
    untested: list[str]
    """Releases that could not be tested where they would have mattered."""
    conclusion: str
    """One line: the answer, or why there is none."""
    exit_code: int
    """0 found; 2 a probe failed or an end cannot be tested; 3 inconclusive (an end is not
    what was claimed, or untestable releases hide the boundary)."""
    server: dict
    environment: dict
    """The parent's machine and installed versions."""

    def step(self, release: str | None) -> BisectStep | None:
        """The step that probed ``release``, if any."""
        return next((s for s in self.steps if s.release == release), None)


@dataclass(frozen=True)
class BisectOptions:
    """What ``bisect`` needs, already validated."""

    run: RunPlan
    """Workload, server, ``--preload``, command line."""
    builds: list[Build]
    """The build to probe (``--build``): exactly one."""
    package: str
    good: str
    bad: str


def _judgement(result: BuildResult) -> str:
    if result.verdict is Verdict.OK:
        return GOOD
    if result.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT):
        return BAD
    return SKIP if result.verdict is Verdict.UNAVAILABLE else ERROR


def _conclusion(o: Outcome, opts: BisectOptions, build: str, steps: dict[str, BisectStep]
                ) -> tuple[str, int]:
    pkg = opts.package
    at = steps.get(o.at) if o.at else None
    got = at.result.verdict.value if at and at.result else "untestable"
    if o.problem == ERROR:
        why = (at.result.error or at.result.cause) if at and at.result else "no result"
        return f"the probe failed at {pkg} {o.at}: {why}", EXIT_USAGE
    if o.problem in ("good-untestable", "bad-untestable"):
        flag = "--good" if o.problem.startswith("good") else "--bad"
        why = at.reason if at and at.reason else "unavailable"
        return (f"{flag} {o.at} cannot be tested here ({why}): choose a release with a "
                f"{build} build for this Python", EXIT_USAGE)
    if o.problem == "good-not-good":
        return (f"--good {o.at} is {got} here, not OK: pass an older --good (nothing to "
                "bisect between two bad releases)", EXIT_INCONCLUSIVE)
    if o.problem == "bad-not-bad":
        return (f"--bad {o.at} is {got} here, not BLOCKING or BUSY-WAIT: pass a release that "
                "is bad in this setup (--preload changes which are)", EXIT_INCONCLUSIVE)
    bad = steps[o.first_bad].result
    verdict = bad.verdict.value if bad else "bad"
    if o.untested:
        return (f"the first bad release is one of {', '.join(o.untested)}, {o.first_bad} "
                f"({build} {verdict} at {o.first_bad}, OK at {o.last_good}; "
                f"{', '.join(o.untested)} could not be tested here)", EXIT_INCONCLUSIVE)
    return (f"first bad release: {pkg} {o.first_bad} ({build} {verdict}; {o.last_good}, the "
            f"release before it, is OK)", EXIT_OK)


def _ends(good: str, bad: str) -> tuple[Version, Version]:
    versions = []
    for flag, text in (("--good", good), ("--bad", bad)):
        try:
            versions.append(Version(text))
        except InvalidVersion:
            raise ProbeError(f"{flag} {text!r} is not a release version: pass releases as on "
                             "PyPI, e.g. --good 3.1.4 --bad 3.1.12") from None
    if versions[0] == versions[1]:
        raise ProbeError(f"--good and --bad are the same release {good}: give --good a release "
                         "known to work and --bad a later one known not to")
    if versions[0] > versions[1]:
        raise ProbeError(f"--good {good} must be an older release than --bad {bad}: swap them")
    return versions[0], versions[1]


def _check(opts: BisectOptions) -> Build:
    _ends(opts.good, opts.bad)
    if opts.package not in PACKAGES:
        raise ProbeError(f"cannot bisect {opts.package!r}: choose --package from "
                         f"{', '.join(PACKAGES)}")
    if len(opts.builds) != 1:
        raise ProbeError("bisect probes one build: pass one with --build, e.g. --build binary")
    build = opts.builds[0]
    if build.baseline and opts.package == "psycopg":
        raise ProbeError(f"{build.name} does not use psycopg 3, so psycopg releases cannot "
                         "change it: bisect --build binary, c or python")
    return build


def _pre(opts: BisectOptions) -> bool:
    """True when an end is a pre-release: then pre-releases are bisected too."""
    return any(Version(v).is_prerelease for v in (opts.good, opts.bad))


def releases_for(opts: BisectOptions) -> list[str]:
    """The releases from ``--good`` to ``--bad`` on the package index, oldest first."""
    _check(opts)
    unreachable: list[str] = []
    releases = list_releases(opts.package, pre=_pre(opts), unreachable=unreachable)
    return releases_between(releases, opts.good, opts.bad, opts.package, unreachable)


def run(opts: BisectOptions, listener: Listener | None = None, *,
        releases: list[str] | None = None) -> BisectResult:
    """List the releases (unless given), confirm the ends, binary-search the first bad one."""
    listener = listener or NullListener()
    build = _check(opts)
    started_wall = datetime.now(timezone.utc)
    started = time.monotonic()
    pre = _pre(opts)
    if releases is None:
        listener.phase(f"listing the releases of {opts.package} on the package index")
        releases = releases_for(opts)
    published = None
    distribution = _BUILD_DISTRIBUTION.get(build.name) if opts.package == "psycopg" else None
    if distribution:
        published = set(list_releases(distribution, pre=pre))
    steps: dict[str, BisectStep] = {}
    order: list[str] = []
    probed = [0]

    with Session(opts.run, listener) as session, venvs.worker_shim() as shim:

        def judge(release: str) -> str:
            order.append(release)
            if published is not None and release not in published:
                reason = (f"no {distribution} {release} on the package index for "
                          f"{venvs.python_tag()}")
                steps[release] = BisectStep(release, SKIP, None, None, reason)
                listener.phase(f"{opts.package} {release}: skipped ({reason})")
                return SKIP
            probed[0] += 1
            listener.phase(f"step {probed[0]}: {opts.package} {release}")
            vs = matrix.VersionSet(**{opts.package: release})
            cell = matrix.plan([build], [vs], named=True)[0]
            env = matrix.prepare(cell, listener)
            result = matrix.probe_cell(session, cell, env, shim, listener)[0]
            judgement = _judgement(result)
            reason = result.cause if judgement in (SKIP, ERROR) else None
            steps[release] = BisectStep(release, judgement, result, matrix.matrix_env(cell, env),
                                        reason)
            return judgement

        outcome = search(releases, judge)
    conclusion, code = _conclusion(outcome, opts, build.name, steps)
    held = {"psycopg": matrix.ours("psycopg"), "gevent": matrix.ours("gevent"),
            "gunicorn": matrix.ours("gunicorn")}
    held = {k: v for k, v in held.items() if v and k != opts.package}
    return BisectResult(
        schema_version=1, tool_version=__version__,
        started_at=started_wall.isoformat(timespec="seconds"),
        duration_s=round(time.monotonic() - started, 3),
        command=[redact(a) for a in opts.run.command], package=opts.package, build=build.name,
        good=opts.good, bad=opts.bad, preload=opts.run.preload, releases=releases, held=held,
        steps=[steps[r] for r in order], first_bad=None if outcome.problem else outcome.first_bad,
        last_good=None if outcome.problem else outcome.last_good, untested=outcome.untested,
        conclusion=conclusion, exit_code=code,
        server=dataclasses.asdict(session.server_info), environment=environment.collect(),
    )


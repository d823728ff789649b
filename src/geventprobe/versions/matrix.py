"""Version matrix: the same probe across psycopg / gevent releases, each in its own environment.

``geventprobe run --psycopg 3.1.12,3.3.8 [--gevent VERSIONS]`` plans one cell per
version set (the product of the lists), makes (or reuses) an isolated environment
per cell with ``venvs`` before the server starts, then probes each cell's builds there
(``HarnessBuild`` with the environment's interpreter) against the run's one server: a
``VersionMatrix`` is the run's target, so the core settles its rows once, like any
run's, into one ``RunResult`` with a row per version × build and the environments in
``RunResult.matrix``.

What the user did not ask to vary is held to what geventprobe's own environment
has installed (gevent, gunicorn, psycopg2-binary, psycogreen), so that a row's
verdict changes only with what was varied. The psycopg2 baselines do not depend
on psycopg, so they run once per gevent version, in an environment of their own.
No printing here: progress goes to the listener.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from packaging.version import InvalidVersion, Version

from geventprobe.core import builds, drivers, rules
from geventprobe.core.builds import Availability, Build
from geventprobe.core.progress import Listener
from geventprobe.core.session import Session
from geventprobe.core.target import Probed
from geventprobe.errors import ProbeError
from geventprobe.processes import preflight
from geventprobe.record import BuildResult, Calibration, MatrixEnv, Verdict
from geventprobe.versions import venvs

VARIABLE = ("psycopg", "gevent")
"""The packages a matrix can vary."""
NOT_BY_DEFAULT = ("c",)
"""Builds a matrix runs only when named in ``--builds``: psycopg-c compiles per version."""


def ours(package: str) -> str | None:
    """The version of ``package`` in geventprobe's own environment (what is held constant)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def parse_versions(text: str | None, option: str) -> list[str] | None:
    """The releases listed in ``--psycopg``/``--gevent`` (comma-separated), validated."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ProbeError(f"{option} {text!r} names no release: list them, e.g. "
                         f"{option} 3.1.12,3.3.8")
    for item in items:
        try:
            Version(item)
        except InvalidVersion:
            raise ProbeError(f"{option}: {item!r} is not a release version: list releases "
                             f"as on PyPI, e.g. {option} 3.1.12,3.3.8") from None
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class VersionSet:
    """The releases one cell of the matrix asks for; None: held to ours."""

    psycopg: str | None = None
    gevent: str | None = None


def version_sets(psycopg: list[str] | None, gevent: list[str] | None) -> list[VersionSet]:
    """Every combination of the listed releases, in the order given."""
    return [VersionSet(p, g) for p in (psycopg or [None]) for g in (gevent or [None])]


@dataclass(frozen=True)
class Cell:
    """One environment of the plan and the builds that run in it."""

    label: str
    """``psycopg 3.1.12 · gevent 24.2.1``: the varied versions, in words."""
    versions: dict[str, str]
    """Package → the version pinned in the environment (varied or held to ours)."""
    varied: tuple[str, ...]
    builds: tuple[Build, ...]
    spec: venvs.EnvSpec


def _req(package: str, version: str | None) -> str:
    return f"{package}=={version}" if version else package


def row_suffix(versions: dict[str, str] | None, varied) -> str:
    """The varied versions of a row, in words (empty when nothing varied applies to it)."""
    versions = versions or {}
    return " · ".join(f"{p} {versions[p]}" for p in varied if p in versions)


def row_name(result: BuildResult, varied) -> str:
    """``binary · psycopg 3.1.12``: a row's build with its varied versions."""
    suffix = row_suffix(result.versions, varied)
    return f"{result.build} · {suffix}" if suffix else result.build


def _tested_cell(vs: VersionSet, builds: list[Build], varied: tuple[str, ...]) -> Cell:
    psycopg = vs.psycopg or ours("psycopg")
    versions = {"psycopg": psycopg, "gevent": vs.gevent or ours("gevent"),
                "gunicorn": ours("gunicorn")}
    core = tuple(_req(p, versions[p]) for p in ("psycopg", "gevent", "gunicorn"))
    # gunicorn 27's gevent worker imports packaging (docs/field-facts.md).
    core += ("packaging",)
    extras = []
    for build in builds:
        # psycopg-binary/-c must be psycopg's own version (docs/field-facts.md): pin it, or let
        # the extra pin it when psycopg itself is unpinned.
        if build.name in ("binary", "c"):
            package = "psycopg-binary" if build.name == "binary" else "psycopg-c"
            extras.append((build.name, (_req(package, psycopg) if psycopg
                                        else f"psycopg[{build.name}]",)))
    versions = {k: v for k, v in versions.items() if v}
    label = row_suffix(versions, varied) or f"psycopg {psycopg or 'latest'}"
    return Cell(label, versions, varied, tuple(builds),
                venvs.EnvSpec(label, core, tuple(extras)))


def _baseline_cell(gevent: str | None, builds: list[Build], varied: tuple[str, ...]) -> Cell:
    versions = {"psycopg2-binary": ours("psycopg2-binary"), "gevent": gevent or ours("gevent"),
                "gunicorn": ours("gunicorn")}
    core = tuple(_req(p, versions[p]) for p in ("psycopg2-binary", "gevent", "gunicorn"))
    core += ("packaging",)
    extras = []
    if any(b.name == "psycopg2-green" for b in builds):
        versions["psycogreen"] = ours("psycogreen")
        extras.append(("psycopg2-green", (_req("psycogreen", versions["psycogreen"]),)))
    versions = {k: v for k, v in versions.items() if v}
    label = "psycopg2 baselines"
    if "gevent" in varied:
        label += f" · gevent {versions.get('gevent', 'latest')}"
    return Cell(label, versions, varied, tuple(builds),
                venvs.EnvSpec(label, core, tuple(extras)))


def plan(builds: list[Build], sets: list[VersionSet], *, named: bool) -> list[Cell]:
    """The environments to make and the builds each runs: one per version set, plus one per
    gevent version for the psycopg2 baselines (they do not depend on psycopg)."""
    varied = tuple(p for p in VARIABLE if any(getattr(vs, p) for vs in sets))
    if not named:
        builds = [b for b in builds if b.name not in NOT_BY_DEFAULT]
    tested = [b for b in builds if not b.baseline]
    baselines = [b for b in builds if b.baseline]
    cells = [_tested_cell(vs, tested, varied) for vs in sets] if tested else []
    if baselines:
        for gevent in dict.fromkeys(vs.gevent for vs in sets):
            cells.append(_baseline_cell(gevent, baselines, varied))
    return cells


def rows(cells: list[Cell]) -> int:
    """How many table rows (version × build) a plan makes."""
    return sum(len(c.builds) for c in cells)


def install_hint(build: str, versions: dict[str, str]) -> str:
    """The command that installs ``build`` at the matrix's versions."""
    pin = f"=={versions['psycopg']}" if versions.get("psycopg") else ""
    return {
        "binary": f'pip install "psycopg[binary]{pin}"',
        "c": f'apt-get install libpq-dev && pip install "psycopg[c]{pin}"',
        "python": f'apt-get install libpq5 && pip install "psycopg{pin}"',
        "psycopg2": f"pip install {_req('psycopg2-binary', versions.get('psycopg2-binary'))}",
        "psycopg2-green": (f"pip install {_req('psycopg2-binary', versions.get('psycopg2-binary'))}"
                           f" {_req('psycogreen', versions.get('psycogreen'))}"),
    }[build]


class _RowListener:
    """Passes progress on, naming the version set of every build it mentions."""

    def __init__(self, inner: Listener, cell: Cell):
        self.inner = inner
        self.label = cell.label

    def phase(self, text: str) -> None:
        self.inner.phase(f"{self.label}: {text}")

    def build_started(self, build: str, index: int, total: int) -> None:
        self.inner.build_started(f"{build} · {self.label}", index, total)

    def build_finished(self, result: BuildResult) -> None:
        self.inner.build_finished(dataclasses.replace(result, build=f"{result.build} · "
                                                                    f"{self.label}"))


def prepare(cell: Cell, listener: Listener) -> venvs.Env:
    """Make (or reuse) the cell's environment, reporting progress."""
    return venvs.ensure(cell.spec, listener.phase)


def matrix_env(cell: Cell, env: venvs.Env) -> MatrixEnv:
    """The record of one environment, for ``RunResult.matrix``."""
    requirements = list(cell.spec.core) + [r for _, reqs in cell.spec.extras for r in reqs]
    return MatrixEnv(
        name=env.name, label=cell.label, versions=dict(cell.versions), varied=list(cell.varied),
        builds=[b.name for b in cell.builds], requirements=requirements,
        installed=dict(env.installed), installer=env.installer, cached=env.cached,
        seconds=round(env.seconds, 2), path=env.path, python=venvs.python_tag(),
        missing=dict(env.missing), error=env.error)


def probe_cell(session: Session, cell: Cell, env: venvs.Env, shim: str,
               listener: Listener) -> list[BuildResult]:
    """The cell's builds in its environment, against the session's server: one row per
    build, not yet settled (also ``bisect``'s probe of one release)."""
    listener = _RowListener(listener, cell)
    results: dict[str, BuildResult] = {}
    if env.error is None:
        runnable = [b for b in cell.builds if b.name not in env.missing]
        if runnable:
            listener.phase("checking which builds import")
            base_env = venvs.run_environ(shim)
            preflight.check_imports(env.python, base_env)  # gevent, gunicorn: one line if not
            check = builds.ImportCheck(runnable, python=env.python, base_env=base_env)
            try:
                available = check.result()
            finally:
                check.close()
            importable = [b for b in runnable if available[b.name].ok]
            for build in runnable:
                if not available[build.name].ok:
                    result = drivers.unavailable(build, available[build.name])
                else:
                    listener.build_started(build.name, importable.index(build),
                                           len(importable))
                    subject = drivers.HarnessBuild(build, session.plan.preload,
                                                   python=env.python, base_env=base_env)
                    result = session.probe(subject, label=f"{build.name} · {cell.label}")
                results[build.name] = result
                listener.build_finished(result)
    out = []
    for build in cell.builds:
        result = results.get(build.name)
        if result is None:
            reason = env.error or env.missing.get(build.name) or "not run"
            hint = install_hint(build.name, cell.versions)
            result = drivers.unavailable(build, Availability(build.name, False, None, reason,
                                                             hint))
            listener.build_finished(result)
        elif result.verdict is Verdict.UNAVAILABLE:
            # The import check's hint names our own versions: name the matrix's instead.
            hint = install_hint(build.name, cell.versions)
            result = dataclasses.replace(result, install=hint, advice=hint)
        out.append(dataclasses.replace(result, versions=dict(cell.versions),
                                       environment=env.name))
    return out


def _with_ratios(results: list[BuildResult]) -> list[BuildResult]:
    """Ratios against the psycopg2-green row of the same gevent version."""
    groups: dict[str | None, list[BuildResult]] = {}
    for r in results:
        groups.setdefault((r.versions or {}).get("gevent"), []).append(r)
    fixed: dict[int, BuildResult] = {}
    for members in groups.values():
        for old, new in zip(members, drivers.with_ratios(members)):
            fixed[id(old)] = new
    return [fixed[id(r)] for r in results]


@dataclass(frozen=True)
class VersionMatrix:
    """``run --psycopg/--gevent`` (a ``Target``): every build at every version set, each cell
    in its own isolated environment, one row per version × build."""

    cells: tuple[Cell, ...]
    """The plan (``of``)."""
    named: bool = False
    """True when the user listed the builds (the c build then runs too)."""
    envs: tuple[venvs.Env, ...] = ()
    """The cells' environments, once ``prepare`` made them."""

    @classmethod
    def of(cls, builds: Sequence[Build], sets: list[VersionSet], *, named: bool
           ) -> VersionMatrix:
        """The matrix of ``builds`` at every version set; refused when no build is left."""
        cells = plan(list(builds), sets, named=named)
        if not cells:
            raise ProbeError("no build to run in the matrix: name builds with --builds, e.g. "
                             "--builds binary,python")
        return cls(tuple(cells), named)

    def steps(self) -> int:
        """One step per row (version × build)."""
        return rows(list(self.cells))

    def prepare(self, listener: Listener) -> VersionMatrix:
        """The same matrix with every cell's environment made (or reused from the cache),
        before the server starts and the run's time limit runs."""
        envs = []
        for i, cell in enumerate(self.cells):
            listener.phase(f"environment {i + 1} of {len(self.cells)}: {cell.label}")
            envs.append(prepare(cell, listener))
        return dataclasses.replace(self, envs=tuple(envs))

    def imports(self) -> Sequence[Build]:
        """None in our environment: each cell checks its own."""
        return []

    def probe(self, session: Session, listener: Listener) -> Probed:
        """Every cell's builds in its environment, with ratios per gevent version."""
        notes = []
        if not self.named:
            notes.append("the c build is left out of a version matrix unless named in "
                         "--builds (it compiles psycopg-c for each version)")
        results: list[BuildResult] = []
        with venvs.worker_shim() as shim:
            for cell, env in zip(self.cells, self.envs):
                results.extend(probe_cell(session, cell, env, shim, listener))
        if any(b.name == "psycopg2" for c in self.cells for b in c.builds) and not any(
                r.build == "psycopg2" and r.verdict is not Verdict.UNAVAILABLE
                for r in results):
            notes.append("no live positive control: the psycopg2 baseline is unavailable, so "
                         "this run cannot show that the detector sees a blocked hub")
        return Probed(_with_ratios(results), notes,
                      matrix=[matrix_env(c, e) for c, e in zip(self.cells, self.envs)])

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """The drivers' summary, each row named with its versions."""
        varied = self.cells[0].varied
        return rules.summary([dataclasses.replace(r, build=row_name(r, varied)) for r in rows],
                             code)

    def app_record(self) -> dict | None:
        """None: the built-in harness."""
        return None


def requested(psycopg_text: str | None, gevent_text: str | None) -> list[VersionSet] | None:
    """The version sets ``--psycopg``/``--gevent`` ask for; None when neither was given."""
    psycopg = parse_versions(psycopg_text, "--psycopg")
    gevent = parse_versions(gevent_text, "--gevent")
    return version_sets(psycopg, gevent) if psycopg or gevent else None

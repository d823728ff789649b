"""Where a run's settings come from: named profiles, the project's pyproject.toml, the flags.

Lowest precedence first, each layer overriding the keys it sets:

1. ``configs/default.toml``;
2. a named profile, ``configs/<name>.toml`` (``--profile``, else ``profile`` in
   ``[tool.geventprobe]``): ``quick`` for a fast look, ``ci`` for a pre-deploy
   gate (stricter thresholds, calibration on);
3. the ``[tool.geventprobe]`` table of the nearest ``pyproject.toml`` at or above
   the working directory that has one (the convention of ruff and pytest);
4. ``--config PATH``, a TOML profile file;
5. command-line flags.

Every key is checked; a wrong one is refused with its file and name (exit 2).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from importlib import resources

from geventprobe.config import (
    Profile,
    default_profile,
    parse_fail_on,
    parse_profile,
    profile_from_tables,
    read_profile_file,
    tomllib,
)
from geventprobe.errors import ProbeError

PROFILE_NAMES = ("default", "quick", "ci")
TABLE = "tool.geventprobe"

# Top-level keys of [tool.geventprobe] -> type; [workload] and [thresholds] are tables.
_KEYS: dict[str, type | tuple] = {
    "profile": str,
    "app": str,
    "gunicorn_config": str,
    "chdir": str,
    "builds": (str, list),
    "preload": bool,
    "fail_on": (str, list),
    "calibrate": bool,
    "rtt_ms": (int, float),
    "routes": list,
}
_TABLES = ("workload", "thresholds")


@dataclass(frozen=True)
class ProjectSettings:
    """What ``[tool.geventprobe]`` in the project's pyproject.toml says (paths made absolute)."""

    path: str | None = None
    """The pyproject.toml it came from; None when none was found."""
    profile: str | None = None
    app: str | None = None
    """``MODULE:CALLABLE`` for ``run --app``."""
    gunicorn_config: str | None = None
    chdir: str | None = None
    """The directory gunicorn runs in; the pyproject's own directory unless set."""
    builds: str | None = None
    preload: bool | None = None
    routes: tuple = ()
    """``--route`` for ``run --app``: the app's routes to drive (``routes = ["/login"]``)."""
    tables: dict = field(default_factory=dict)
    """[workload], [thresholds] and [run] overrides, applied over the named profile."""

    @property
    def source(self) -> str:
        """How error messages and the report name this layer."""
        return f"{self.path} [{TABLE}]"


def _norm(key: str) -> str:
    # pyproject tools spell keys both ways (ruff: line-length, pytest: ini_options).
    return key.replace("-", "_")


def find_pyproject(start: str) -> tuple[str, dict] | None:
    """The nearest pyproject.toml at or above ``start`` with a [tool.geventprobe] table."""
    folder = os.path.abspath(start)
    while True:
        path = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(path):
            try:
                with open(path, "rb") as f:
                    data = tomllib.load(f)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ProbeError(f"{path}: not valid TOML ({exc}): fix the file") from exc
            table = data.get("tool", {}).get("geventprobe")
            if table is not None:
                return path, table
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def project_settings(table: dict, path: str) -> ProjectSettings:
    """Validate a [tool.geventprobe] table read from ``path``."""
    source = f"{path} [{TABLE}]"
    if not isinstance(table, dict):
        raise ProbeError(f"{source} must be a table")
    base = os.path.dirname(os.path.abspath(path))
    values: dict = {}
    tables: dict = {}
    for raw_key, value in table.items():
        key = _norm(raw_key)
        if key == "dsn":
            raise ProbeError(f"{source}: key dsn: a connection string does not belong in a file "
                             "kept in git: set GEVENTPROBE_DSN in the environment instead")
        if key in _TABLES:
            if not isinstance(value, dict):
                raise ProbeError(f"{source}: {raw_key} must be a table ([{TABLE}.{raw_key}])")
            tables[key] = {_norm(k): v for k, v in value.items()}
            continue
        if key not in _KEYS:
            valid = ", ".join(sorted([*_KEYS, *_TABLES]))
            raise ProbeError(f"{source}: unknown key {raw_key}: valid keys are {valid}")
        expected = _KEYS[key]
        if not isinstance(value, expected) or (key == "rtt_ms" and isinstance(value, bool)):
            kind = {bool: "true or false", str: "a string", (int, float): "a number of ms",
                    list: "a list of strings"}.get(expected, "a string or a list")
            raise ProbeError(f"{source}: {raw_key} must be {kind}, got {value!r}")
        values[key] = value
    run: dict = {}
    if "fail_on" in values:
        run["fail_on"] = list(parse_fail_on(values.pop("fail_on"), f"{source}: fail_on")) \
            or ["none"]
    if "calibrate" in values:
        run["calibrate"] = values.pop("calibrate")
    if run:
        tables["run"] = run
    if "rtt_ms" in values:  # a workload key, allowed at the top for `rtt_ms = 20`
        workload = tables.setdefault("workload", {})
        if "rtt_ms" in workload:
            raise ProbeError(f"{source}: rtt_ms is set twice (also in [{TABLE}.workload]): "
                             "keep one")
        workload["rtt_ms"] = values.pop("rtt_ms")
    if "profile" in values and values["profile"] not in PROFILE_NAMES:
        raise ProbeError(f"{source}: unknown profile {values['profile']!r}: choose from "
                         f"{', '.join(PROFILE_NAMES)}")
    if "routes" in values:
        from geventprobe.routes import parse_route

        bad = [r for r in values["routes"] if not isinstance(r, str)]
        if bad:
            raise ProbeError(f"{source}: routes must be a list of strings such as "
                             f"[\"/login\", \"POST /cart\"], got {bad[0]!r}")
        try:
            values["routes"] = tuple(str(parse_route(r)) for r in values["routes"])
        except ProbeError as exc:
            raise ProbeError(f"{source}: {exc}") from None
    if isinstance(values.get("builds"), list):
        values["builds"] = ",".join(str(b) for b in values["builds"])
    for key in ("gunicorn_config", "chdir"):
        if key in values and not values[key].startswith("python:"):
            values[key] = os.path.normpath(os.path.join(base, values[key]))
    values.setdefault("chdir", base)
    return ProjectSettings(path=path, tables=tables, **values)


def load_project(start: str | None = None) -> ProjectSettings:
    """The project's settings, from the nearest pyproject.toml that has some."""
    found = find_pyproject(start or os.getcwd())
    if found is None:
        return ProjectSettings()
    return project_settings(found[1], found[0])


def named_text(name: str) -> str:
    """The TOML text of a shipped profile."""
    if name not in PROFILE_NAMES:
        raise ProbeError(f"unknown profile {name!r}: choose from {', '.join(PROFILE_NAMES)}, or "
                         "pass your own file with --config PATH")
    return resources.files("geventprobe.configs").joinpath(f"{name}.toml").read_text()


def resolve(profile_name: str | None = None, config_path: str | None = None,
            project: ProjectSettings | None = None) -> Profile:
    """The profile a run uses: default, named profile, pyproject, --config, in that order."""
    project = project or ProjectSettings()
    profile = default_profile()
    layers = ["configs/default.toml"]
    name = profile_name or project.profile or "default"
    if name != "default":
        source = f"configs/{name}.toml"
        profile = parse_profile(named_text(name), source, profile)
        layers.append(source)
    if project.tables:
        profile = profile_from_tables(project.tables, project.source, profile)
        layers.append(project.source)
    if config_path is not None:
        profile = read_profile_file(config_path, profile)
        layers.append(config_path)
    return dataclasses.replace(profile, source=" + ".join(layers))


def with_sizes(profile: Profile, workers: int | None, greenlets: int | None) -> Profile:
    """``profile`` with the ``--workers`` / ``--greenlets`` flags applied (they win)."""
    sizes = {k: v for k, v in (("workers", workers), ("greenlets", greenlets)) if v is not None}
    if not sizes:
        return profile
    return dataclasses.replace(profile, workload=dataclasses.replace(profile.workload, **sizes))


def with_rtt(profile: Profile, rtt_ms: float | None) -> Profile:
    """``profile`` with ``--rtt`` applied (it wins); None leaves the profile's ``rtt_ms``."""
    if rtt_ms is None:
        return profile
    return dataclasses.replace(profile, workload=dataclasses.replace(profile.workload,
                                                                     rtt_ms=float(rtt_ms)))

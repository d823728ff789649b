"""Profiles: workload sizes and verdict thresholds, read from TOML.

``configs/default.toml`` (shipped as ``geventprobe.configs``) is what runs with
no flag; ``--config PATH`` reads another file, whose keys override the default
ones. Unknown keys and wrong types are refused with the key's name.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from importlib import resources

from geventprobe.errors import ProbeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Workload:
    """What each worker does."""

    workers: int = 4
    """gunicorn ``--workers``."""
    greenlets: int = 16
    """Concurrent greenlets per worker, each with its own connection."""
    wait_seconds: float = 0.15
    """w: every greenlet runs ``SELECT pg_sleep(w)`` at once."""
    wait_rounds: int = 3
    """Number of wait windows per worker."""
    heartbeat_ms: float = 2.0
    """Period of the hub-lag heartbeat greenlet."""
    select1_seconds: float = 1.0
    """Duration of the closed ``SELECT 1`` loop."""
    statement_timeout_ms: int = 30000
    """``statement_timeout`` of every probe connection."""
    connect_timeout_s: int = 10
    """libpq ``connect_timeout`` of every probe connection."""
    boot_timeout_s: float = 60.0
    """How long gunicorn and all its workers may take to get ready."""

    def blocked_seconds(self) -> float:
        """How long the wait windows last if every query blocks the hub (the worst case)."""
        return self.greenlets * self.wait_seconds * self.wait_rounds

    def probe_timeout_s(self) -> float:
        """Upper bound for the whole in-worker workload, blocked or not."""
        return 30.0 + 1.5 * self.blocked_seconds() + self.select1_seconds

    def connections(self) -> int:
        """Server connections one build needs at once."""
        return self.workers * self.greenlets

    def to_worker(self) -> dict:
        """What the harness reads from ``GEVENTPROBE_WORKLOAD``."""
        data = dataclasses.asdict(self)
        data["go_timeout_s"] = self.boot_timeout_s + 30.0
        return data


@dataclass(frozen=True)
class Thresholds:
    """The verdict rules' limits (see configs/default.toml for what each means)."""

    blocking_wait_factor: float = 2.0
    """BLOCKING when a worker's median window took this many times w or more."""
    blocking_hub_lag_fraction: float = 0.5
    """BLOCKING when a heartbeat inside a window was late by this fraction of w or more."""
    busy_wait_cpu: float = 0.2
    """BUSY-WAIT when a worker used this many CPU-s per wall-s while only waiting."""


@dataclass(frozen=True)
class Profile:
    """A complete profile: workload and thresholds, and where it came from."""

    workload: Workload
    thresholds: Thresholds
    source: str


def _apply(cls, base, table: dict, section: str, source: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dataclasses.asdict(base)
    for key, value in table.items():
        if key not in fields:
            raise ProbeError(f"{source}: unknown key [{section}].{key}: "
                             f"valid keys are {', '.join(sorted(fields))}")
        expected = type(values[key])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProbeError(f"{source}: [{section}].{key} must be a number, got {value!r}")
        if expected is int and not isinstance(value, int):
            raise ProbeError(f"{source}: [{section}].{key} must be a whole number, got {value!r}")
        if value <= 0:
            raise ProbeError(f"{source}: [{section}].{key} must be greater than 0, got {value!r}")
        values[key] = expected(value)
    return cls(**values)


def _parse(text: str, source: str, base: Profile) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProbeError(f"{source}: not valid TOML ({exc}): fix the file") from exc
    unknown = set(data) - {"workload", "thresholds"}
    if unknown:
        raise ProbeError(f"{source}: unknown section [{sorted(unknown)[0]}]: "
                         "valid sections are [workload] and [thresholds]")
    workload = _apply(Workload, base.workload, data.get("workload", {}), "workload", source)
    thresholds = _apply(Thresholds, base.thresholds, data.get("thresholds", {}), "thresholds",
                        source)
    return Profile(workload, thresholds, source)


def default_profile() -> Profile:
    """The shipped ``configs/default.toml``."""
    text = resources.files("geventprobe.configs").joinpath("default.toml").read_text()
    return _parse(text, "configs/default.toml", Profile(Workload(), Thresholds(), "built-in"))


def load_profile(path: str | None) -> Profile:
    """The default profile, overridden by the TOML file at ``path`` if given."""
    profile = default_profile()
    if path is None:
        return profile
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ProbeError(f"cannot read --config {path} ({exc.strerror}): "
                         "pass the path of a TOML profile") from exc
    return _parse(text, path, profile)

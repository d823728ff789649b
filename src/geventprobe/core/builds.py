"""The build matrix: which driver setups are probed, and whether each can be imported.

psycopg 3's three implementations are the builds under test; psycopg2 with and
without psycogreen are baselines with a known class, so that every run carries
a live negative and positive control.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from geventprobe.errors import ProbeError


@dataclass(frozen=True)
class Build:
    """One driver setup."""

    name: str
    """The name users pass to ``--builds``."""
    baseline: bool
    """True for the psycopg2 references, False for the psycopg 3 builds under test."""
    expected: str | None
    """The class a baseline must get, or None for builds under test."""
    env: dict
    """Environment the gunicorn run gets (``PSYCOPG_IMPL``...)."""
    description: str
    """One line for the table's legend."""


BUILDS: tuple[Build, ...] = (
    Build("binary", False, None, {"PSYCOPG_IMPL": "binary"},
          "psycopg 3, binary wheel (psycopg-binary)"),
    Build("c", False, None, {"PSYCOPG_IMPL": "c"},
          "psycopg 3, C extension built against the local libpq (psycopg-c)"),
    Build("python", False, None, {"PSYCOPG_IMPL": "python"},
          "psycopg 3, pure Python over the system libpq"),
    Build("psycopg2-green", True, "OK", {},
          "psycopg2 with psycogreen.gevent.patch_psycopg() in post_worker_init"),
    Build("psycopg2", True, "BLOCKING", {}, "psycopg2 without a wait callback"),
)
BY_NAME = {b.name: b for b in BUILDS}

# Imports the build the way the harness will, in a fresh process, and says what it got.
_CHECK = r"""
import json, os, sys
build = sys.argv[1]
out = {"ok": False}
try:
    if build.startswith("psycopg2"):
        import psycopg2
        out["version"] = psycopg2.__version__.split()[0]
        if build == "psycopg2-green":
            import psycogreen.gevent
    else:
        import psycopg
        out["version"] = psycopg.__version__
        out["impl"] = psycopg.pq.__impl__
        if out["impl"] != os.environ.get("PSYCOPG_IMPL"):
            raise ImportError("psycopg loaded the %s implementation" % out["impl"])
    out["ok"] = True
except BaseException as exc:
    out["error"] = ("%s: %s" % (type(exc).__name__, exc)).strip().splitlines()[0]
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Availability:
    """Whether a build imports here, and if not why and how to get it."""

    build: str
    ok: bool
    version: str | None
    reason: str | None
    install: str | None


def _psycopg_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("psycopg")
    except metadata.PackageNotFoundError:
        return None


def install_command(build: str) -> str:
    """The exact command that makes ``build`` importable."""
    pin = _psycopg_version()
    eq = f"=={pin}" if pin else ""
    return {
        "binary": f'pip install "psycopg[binary]{eq}"',
        # psycopg-c must match psycopg exactly and compiles against libpq (docs/field-facts.md).
        "c": f'apt-get install libpq-dev && pip install "psycopg[c]{eq}"',
        "python": "apt-get install libpq5  (the pure-Python build loads the system libpq)",
        "psycopg2": "pip install psycopg2-binary",
        "psycopg2-green": "pip install psycopg2-binary psycogreen",
    }[build]


def parse_builds(text: str | None, source: str = "--builds") -> tuple[list[Build], bool]:
    """Builds named by ``--builds`` (comma-separated), and whether the user named them.

    None means all of them; an empty text is refused rather than read as "all"
    (``--builds "$UNSET_VARIABLE"`` is a mistake, not a wish).
    """
    if text is None:
        return list(BUILDS), False
    if not text.strip():
        raise ProbeError(f"{source} is empty: name at least one build ({', '.join(BY_NAME)}), "
                         f"or leave {source} out to probe all of them")
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown or not names:
        raise ProbeError(f"unknown build {unknown[0] if unknown else repr(text)} in {source}: "
                         f"choose from {', '.join(BY_NAME)}")
    seen: list[Build] = []
    for name in names:
        if BY_NAME[name] not in seen:
            seen.append(BY_NAME[name])
    return seen, True


class ImportCheck:
    """Import each build in its own fresh interpreter, all at once, in the background.

    Started first, so the embedded server can start meanwhile; ``result()`` waits for the
    answers. ``python`` and ``base_env``: check in another environment (a version matrix's
    isolated one) instead of ours.
    """

    def __init__(self, builds: list[Build], timeout: float = 60.0, *, python: str | None = None,
                 base_env: dict[str, str] | None = None):
        import os

        self.timeout = timeout
        self.running: dict[str, subprocess.Popen] = {}
        try:
            for build in builds:
                env = dict(os.environ if base_env is None else base_env)
                env.pop("PSYCOPG_WAIT_FUNC", None)  # a bad value would fail for the wrong reason
                env.update(build.env)
                self.running[build.name] = subprocess.Popen(
                    [python or sys.executable, "-c", _CHECK, build.name], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except BaseException:
            self.close()
            raise

    def result(self) -> dict[str, Availability]:
        """Every build's availability, once each check answered (or timed out)."""
        result = {}
        try:
            for name, proc in self.running.items():
                try:
                    out, _ = proc.communicate(timeout=self.timeout)
                    data = json.loads(out.strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError):
                    proc.kill()
                    proc.communicate()
                    data = {"ok": False, "error": "the import check did not answer"}
                result[name] = Availability(
                    build=name,
                    ok=bool(data.get("ok")),
                    version=data.get("version"),
                    reason=None if data.get("ok") else data.get("error"),
                    install=None if data.get("ok") else install_command(name),
                )
        finally:
            self.close()
        return result

    def close(self) -> None:
        """Kill and reap the checks still running (the run was interrupted)."""
        for proc in self.running.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def check(builds: list[Build], timeout: float = 60.0, *, python: str | None = None,
          base_env: dict[str, str] | None = None) -> dict[str, Availability]:
    """Import each build in its own fresh interpreter, all at once, and wait for the answers."""
    return ImportCheck(builds, timeout, python=python, base_env=base_env).result()

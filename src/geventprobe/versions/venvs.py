"""Isolated virtual environments for a version matrix: created once, cached, reused.

Each environment holds one set of pinned packages (psycopg, gevent, gunicorn...)
and nothing of geventprobe's own environment: the harness reaches it through a
*shim*, a temp dir holding only ``geventprobe/__init__.py`` and
``geventprobe/worker/``, put on ``PYTHONPATH`` of the gunicorn it runs (the
main environment's site-packages would leak its own psycopg into the probe).

Environments live under the platform's user cache dir, or ``$GEVENTPROBE_CACHE_DIR``
(``geventprobe cache list|clear``), one directory per key: the requirements and
the Python (version, implementation, ABI, platform, interpreter). An environment
is built in a ``.building-*`` directory and renamed into place when its core
packages are in, so a half-built one is never reused; a lock file per key makes
two geventprobe processes wait for each other instead of building it twice.

The installer is ``uv`` when it is on ``PATH`` (much faster), else ``venv`` + pip
(geventprobe's own pip installs into the new environment with ``pip --python``,
which spares bootstrapping pip into each one). ``GEVENTPROBE_INSTALLER=pip|uv``
forces one. Nothing here prints: progress goes to a callback.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata, resources
from pathlib import Path

from geventprobe.cache_dir import CACHE_ENV, cache_root
from geventprobe.errors import ProbeError
from geventprobe.files import write_atomic
from geventprobe.processes import children

"""Environment variable: where the cache lives (tests point it at a temp dir)."""
INSTALLER_ENV = "GEVENTPROBE_INSTALLER"
"""Environment variable: ``uv`` or ``pip`` forces the installer; unset or ``auto`` picks."""
LAYOUT = 1
"""Bumped when an environment's layout changes: older ones are then rebuilt, not reused."""
MANIFEST = "geventprobe-env.json"
INSTALL_TIMEOUT_S = 900.0
"""psycopg-c compiles from source; nothing else takes more than seconds once downloaded."""

# Packages whose source builds take minutes or need a compiler: a missing wheel must
# say "no wheel for this Python", not start compiling gevent.
_ONLY_BINARY = ("gevent", "greenlet", "psycopg-binary", "psycopg2-binary")
# Variables that would make the environment's Python see another environment's packages.
_LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV",
                    "__PYVENV_LAUNCHER__", "CONDA_PREFIX")

Progress = Callable[[str], None]


def _quiet(_text: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# Where the cache is, and which Python it is for


def envs_root() -> Path:
    """The directory holding one subdirectory per cached environment."""
    return cache_root() / "envs"


def base_python() -> str:
    """The interpreter environments are created from (the one running geventprobe)."""
    return sys.executable


def interpreter() -> dict:
    """What makes an environment usable by this Python only: part of every cache key."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return {
        "implementation": platform.python_implementation().lower(),
        "version": platform.python_version(),
        "abiflags": getattr(sys, "abiflags", ""),
        "platform": sysconfig.get_platform(),
        "base_executable": os.path.realpath(base),
    }


def python_tag() -> str:
    """``CPython 3.11 linux-x86_64``: how messages name this Python."""
    info = interpreter()
    short = ".".join(info["version"].split(".")[:2])
    return f"{platform.python_implementation()} {short} {info['platform']}"


# ---------------------------------------------------------------------------------------------
# What an environment holds


@dataclass(frozen=True)
class EnvSpec:
    """The packages one isolated environment holds; its cache key is derived from them."""

    label: str
    """Human name, e.g. ``psycopg 3.1.12 · gevent 26.9.0`` (not part of the key)."""
    core: tuple[str, ...]
    """Requirements installed first: if they do not install, the environment is unavailable."""
    extras: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(name, requirements) installed one at a time after the core, so that a missing wheel
    makes only that name (a build) unavailable."""

    def key(self) -> str:
        """A hash of the requirements and the Python."""
        data = {"layout": LAYOUT, "python": interpreter(), "core": sorted(self.core),
                "extras": sorted([name, sorted(reqs)] for name, reqs in self.extras)}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def dirname(self) -> str:
        """``py3.11-psycopg-3.1.12-gevent-26.9.0-<hash>``: readable, and unique per key."""
        short = ".".join(platform.python_version().split(".")[:2])
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", self.label).strip("-").lower()[:60]
        return f"py{short}-{slug}-{self.key()[:12]}"


@dataclass(frozen=True)
class Env:
    """An environment ready to run builds in, or why it could not be made."""

    spec: EnvSpec
    name: str
    """Directory name in the cache."""
    path: str | None
    """Where it is; None when it could not be created."""
    python: str | None
    """Its interpreter."""
    installer: str
    """``uv`` or ``pip``."""
    cached: bool
    """True when an existing environment was reused as it was."""
    seconds: float
    """Time spent making it ready (creation and installs; about 0 when cached)."""
    installed: dict[str, str] = field(default_factory=dict)
    """Distribution → version, as installed."""
    missing: dict[str, str] = field(default_factory=dict)
    """Extra name → the installer's reason it did not install."""
    error: str | None = None
    """Why the core packages did not install (then nothing can run here)."""


# ---------------------------------------------------------------------------------------------
# Installers


def clean_environ() -> dict[str, str]:
    """Our environment without what would leak another environment into a child Python."""
    return {k: v for k, v in os.environ.items() if k not in _LEAKY_VARIABLES}


def _main_pip_supports_target() -> bool:
    """True when geventprobe's own pip can install into another interpreter (pip >= 22.3)."""
    try:
        version = metadata.version("pip")
    except metadata.PackageNotFoundError:
        return False
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    return tuple(parts[:2]) >= (22, 3)


def installer_name() -> str:
    """The installer that will be used: ``$GEVENTPROBE_INSTALLER``, else uv if on PATH, else pip."""
    wanted = (os.environ.get(INSTALLER_ENV) or "auto").strip().lower()
    if wanted not in ("auto", "uv", "pip"):
        raise ProbeError(f"{INSTALLER_ENV}={wanted!r} is not an installer: set it to uv, pip "
                         "or auto")
    if wanted == "uv" and not shutil.which("uv"):
        raise ProbeError(f"{INSTALLER_ENV}=uv but uv is not on PATH: pip install uv, or unset "
                         f"{INSTALLER_ENV}")
    if wanted == "auto":
        wanted = "uv" if shutil.which("uv") else "pip"
    if wanted == "pip" and not _main_pip_supports_target() and not _has_ensurepip():
        raise ProbeError("no installer for the version matrix: neither uv nor pip is available "
                         "to this Python: pip install uv (or python -m ensurepip)")
    return wanted


def _has_ensurepip() -> bool:
    import importlib.util

    return importlib.util.find_spec("ensurepip") is not None


def _pip_options() -> list[str]:
    return ["install", "--no-input", "--disable-pip-version-check", "--no-compile",
            "--progress-bar", "off", "--only-binary", ",".join(_ONLY_BINARY)]


def _create_argv(installer: str, path: str) -> list[str]:
    if installer == "uv":
        return [shutil.which("uv") or "uv", "venv", "--quiet", "--python", base_python(), path]
    if _main_pip_supports_target():
        return [base_python(), "-m", "venv", "--without-pip", path]
    return [base_python(), "-m", "venv", path]


def _install_argv(installer: str, env_python: str, requirements: tuple[str, ...]) -> list[str]:
    if installer == "uv":
        argv = [shutil.which("uv") or "uv", "pip", "install", "--python", env_python]
        for name in _ONLY_BINARY:
            argv += ["--only-binary", name]
        return argv + list(requirements)
    if _main_pip_supports_target():
        return [base_python(), "-m", "pip", "--python", env_python, *_pip_options(),
                *requirements]
    return [env_python, "-m", "pip", *_pip_options(), *requirements]


def _run(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """Run an installer step; (exit code or None on timeout, its output). Always reaped."""
    # The installer's own temp files (pip's build dirs) go into a dir we remove whatever
    # happens: a pip stopped mid-build leaves its dirs behind.
    work = children.make_temp_dir("geventprobe-install-")
    log = os.path.join(work, "install.log")
    try:
        env = clean_environ()
        env.update(PIP_NO_INPUT="1", TMPDIR=work)
        proc = children.spawn(argv, env=env, log_path=log)
        # SIGINT first: pip and uv clean up after a Ctrl-C; SIGKILL if they linger.
        with children.running(proc, signal.SIGINT, timeout=10):
            try:
                code: int | None = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                code = None
        with open(log, errors="replace") as f:
            return code, f.read()
    finally:
        children.remove_temp_dir(work)


# What pip says when an index does not answer: "Could not fetch URL ...: connection error"
# (at -vv) and urllib3's "Retrying ... NewConnectionError(...)" (when it retries).
_FETCH_FAILED = re.compile(r"Could not fetch URL (\S+?):? (?:connection error: )?(.*)$")
_CONNECTION_BROKEN = re.compile(r"Failed to establish a new connection|NewConnectionError|"
                                r"ConnectTimeoutError|Max retries exceeded|NameResolutionError|"
                                r"Temporary failure in name resolution|Name or service not known"
                                r"|ProxyError|Connection refused|Network is unreachable")
_HOST_PORT = re.compile(r"host='([^']+)', port=(\d+)")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


def index_unreachable(output: str) -> str | None:
    """``the package index URL could not be reached (REASON)``, from an installer's output,
    when it says a connection failed; None otherwise.

    pip goes on to the other configured indexes (``extra-index-url``, ``find-links``) when
    one cannot be reached: a release then looks missing when the index was.
    """
    for line in output.splitlines():
        line = line.strip().removesuffix(" - skipping")
        if not _CONNECTION_BROKEN.search(line) and "connection error" not in line:
            continue
        errno = _ERRNO.search(line)
        fetch = _FETCH_FAILED.search(line)
        if fetch:
            reason = errno.group(1) if errno else fetch.group(2)[:120]
            return f"the package index {fetch.group(1)} could not be reached ({reason.strip()})"
        where = _HOST_PORT.search(line)
        at = f" at {where.group(1)}:{where.group(2)}" if where else ""
        reason = errno.group(1).strip() if errno else "connection failed"
        return f"the package index{at} could not be reached ({reason})"
    return None


def installer_reason(output: str, installer: str, requirements: tuple[str, ...] = ()) -> str:
    """One line saying why an install failed, from the installer's own output."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    unreachable = index_unreachable(output)
    if unreachable:
        # Not "no such release": the index that has it did not answer.
        return (f"{unreachable}, so {installer} could not get {' '.join(requirements) or 'it'}: "
                "check the network, or pip's index settings (pip config list)")
    pip_missing = next((ln for ln in lines if "No matching distribution found for" in ln), None)
    if pip_missing:
        req = pip_missing.split("found for", 1)[1].strip()
        return (f"no {req} installable on {python_tag()} (no wheel for this Python, or no such "
                f"release on the package index); {installer}: {pip_missing}")
    for i, ln in enumerate(lines):
        if "No solution found" in ln:
            # uv explains on the following lines ("cause: Because..." in a pipe, "╰─▶ Because"
            # on a terminal): keep the explanation, not the banner.
            why = [re.sub(r"^(cause:|╰─▶)\s*", "", x) for x in lines[i + 1:i + 4]
                   if not x.startswith(("hint:", "help:"))]
            text = re.sub(r"\s+", " ", " ".join(why)) or ln
            return (f"not installable on {python_tag()} (no wheel for this Python, or no such "
                    f"release); uv: {text[:300]}")
    hint = ""
    if any("pg_config" in ln for ln in lines):
        hint = " (compiling it needs pg_config and the libpq headers: apt-get install libpq-dev)"
    errors = [ln for ln in lines if ln.startswith(("ERROR:", "error:"))
              and "subprocess-exited-with-error" not in ln]
    if errors:
        return f"{installer}: {errors[0][:300]}{hint}"
    tail = lines[-1][:300] if lines else "no output"
    return f"{installer} failed: {tail}{hint}"


# ---------------------------------------------------------------------------------------------
# The cache


@contextlib.contextmanager
def _locked(path: Path, progress: Progress, what: str) -> Iterator[None]:
    """An exclusive lock on ``path``: another geventprobe building ``what`` makes us wait."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"{what}: waiting for another geventprobe building it")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_manifest(path: Path) -> dict | None:
    try:
        with open(path / MANIFEST) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_manifest(path: Path, data: dict) -> None:
    write_atomic(path / MANIFEST, json.dumps(data, indent=2, sort_keys=True))


def env_python(path: Path) -> Path:
    """The interpreter of the environment at ``path``."""
    return path / "bin" / "python"


_LIST_INSTALLED = ("import json, importlib.metadata as m; print(json.dumps({d.metadata['Name']"
                   ".lower(): d.version for d in m.distributions() if d.metadata['Name']}))")


def _installed(python: Path) -> dict[str, str]:
    try:
        out = subprocess.run([str(python), "-c", _LIST_INSTALLED], capture_output=True,
                             text=True, timeout=60, env=clean_environ(), check=True)
        return dict(sorted(json.loads(out.stdout).items()))
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}


def _usable(path: Path, manifest: dict | None, key: str) -> bool:
    return (manifest is not None and manifest.get("key") == key
            and manifest.get("layout") == LAYOUT and os.access(env_python(path), os.X_OK))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _compiles(requirement: str) -> bool:
    """psycopg's c build (``psycopg-c``, ``psycopg[c]``): compiled from source, minutes."""
    return re.match(r"psycopg(-c|\[c\])(?![\w.-])", requirement.strip()) is not None


def _create(spec: EnvSpec, root: Path, final: Path, installer: str, progress: Progress,
            timeout: float) -> str | None:
    """Build the environment with its core packages into ``final``; the error, or None."""
    building = root / f".building-{final.name}-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        progress(f"{spec.label}: creating an isolated environment with {installer}")
        code, out = _run(_create_argv(installer, str(building)), timeout=120)
        if code != 0:
            return installer_reason(out, installer)
        python = str(env_python(building))
        # The core and the extras that install from wheels in one installer call (each call
        # costs pip 1.0-1.3 s here even from its cache); if that fails, the core alone, and
        # each extra on its own afterwards (``ensure``), so that the failure is named.
        together = [name for name, reqs in spec.extras if not any(map(_compiles, reqs))]
        requirements = spec.core + tuple(r for name, reqs in spec.extras if name in together
                                         for r in reqs)
        progress(f"{spec.label}: installing {' '.join(requirements)}")
        code, out = _run(_install_argv(installer, python, requirements), timeout)
        if code != 0 and together and code is not None:
            together = []
            progress(f"{spec.label}: installing {' '.join(spec.core)}")
            code, out = _run(_install_argv(installer, python, spec.core), timeout)
        if code is None:
            return f"{installer} did not finish within {timeout:.0f} s"
        if code != 0:
            return installer_reason(out, installer, spec.core)
        _write_manifest(building, {
            "layout": LAYOUT, "key": spec.key(), "label": spec.label, "core": list(spec.core),
            "extras": {name: list(reqs) for name, reqs in spec.extras},
            "extras_ok": sorted(together),
            "missing": {}, "python": interpreter(), "installer": installer,
            "created_at": _now(), "last_used": _now(), "installed": {},
        })
        shutil.rmtree(final, ignore_errors=True)  # a stale or broken one under the same key
        os.rename(building, final)
        return None
    finally:
        shutil.rmtree(building, ignore_errors=True)


def ensure(spec: EnvSpec, progress: Progress | None = None, *,
           timeout: float = INSTALL_TIMEOUT_S) -> Env:
    """The environment for ``spec``: reused from the cache, or created now.

    Extras that did not install are tried again on the next use (a network error
    must not be remembered as "no wheel").
    """
    progress = progress or _quiet
    installer = installer_name()
    root = envs_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ProbeError(f"cannot create the environment cache {root} ({exc.strerror}): set "
                         f"{CACHE_ENV} to a writable directory") from exc
    name = spec.dirname()
    final = root / name
    started = time.monotonic()
    with _locked(root / f"{name}.lock", progress, spec.label):
        manifest = _read_manifest(final)
        cached = _usable(final, manifest, spec.key())
        if not cached:
            error = _create(spec, root, final, installer, progress, timeout)
            if error is not None:
                return Env(spec, name, None, None, installer, False,
                           time.monotonic() - started, error=error)
            manifest = _read_manifest(final) or {}
        python = env_python(final)
        ok = set(manifest.get("extras_ok", []))
        missing: dict[str, str] = {}
        for extra, reqs in spec.extras:
            if extra in ok:
                continue
            cached = False
            progress(f"{spec.label}: installing {' '.join(reqs)}")
            code, out = _run(_install_argv(installer, str(python), reqs), timeout)
            if code == 0:
                ok.add(extra)
            else:
                missing[extra] = (installer_reason(out, installer, reqs) if code is not None
                                  else f"{installer} did not finish within {timeout:.0f} s")
        if not cached or not manifest.get("installed"):
            manifest["installed"] = _installed(python)
        manifest.update(extras_ok=sorted(ok), missing=missing, last_used=_now())
        manifest.setdefault("create_seconds", round(time.monotonic() - started, 2))
        _write_manifest(final, manifest)
    seconds = time.monotonic() - started
    progress(f"{spec.label}: " + (f"reusing the cached environment {final}" if cached else
                                  f"environment ready in {seconds:.1f} s ({final})"))
    # Extras are installed with today's installer; the record names the one that made it.
    return Env(spec, name, str(final), str(python), manifest.get("installer", installer), cached,
               seconds, installed=dict(manifest.get("installed", {})), missing=missing)


@dataclass(frozen=True)
class CachedEnv:
    """One environment in the cache, as ``geventprobe cache list`` shows it."""

    name: str
    label: str
    path: str
    size_bytes: int
    python: str
    installer: str
    created_at: str | None
    last_used: str | None
    packages: dict[str, str]
    """The packages that matter here (drivers, gevent, gunicorn) → version."""
    missing: list[str]
    """Extras that did not install the last time."""


_SHOWN = ("psycopg", "psycopg-binary", "psycopg-c", "psycopg2-binary", "psycogreen", "gevent",
          "greenlet", "gunicorn")


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def list_envs() -> list[CachedEnv]:
    """Every complete environment in the cache, oldest use first."""
    root = envs_root()
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.name.startswith("."):
            continue
        manifest = _read_manifest(path) or {}
        python = manifest.get("python") or {}
        installed = manifest.get("installed") or {}
        found.append(CachedEnv(
            name=path.name, label=manifest.get("label", "(no manifest: incomplete)"),
            path=str(path), size_bytes=_size(path),
            python=f"{python.get('implementation', '?')} {python.get('version', '?')}",
            installer=manifest.get("installer", "?"), created_at=manifest.get("created_at"),
            last_used=manifest.get("last_used"),
            packages={k: installed[k] for k in _SHOWN if k in installed},
            missing=sorted(manifest.get("missing") or {}),
        ))
    return sorted(found, key=lambda e: e.last_used or "")


@dataclass(frozen=True)
class Cleared:
    """What ``geventprobe cache clear`` did."""

    removed: list[str]
    freed_bytes: int
    busy: list[str]
    """Environments another geventprobe was using: left alone."""


def clear() -> Cleared:
    """Remove every cached environment not in use right now."""
    root = envs_root()
    removed, busy, freed = [], [], 0
    if not root.is_dir():
        return Cleared([], 0, [])
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        name = path.name
        if name.startswith(".building-"):
            name = name[len(".building-"):].rsplit("-", 1)[0]
        lock = root / f"{name}.lock"
        with open(lock, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                busy.append(path.name)
                continue
            size = _size(path)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
            freed += size
            fcntl.flock(f, fcntl.LOCK_UN)
    for lock in root.glob("*.lock"):
        if not (root / lock.stem).exists():
            with contextlib.suppress(OSError):
                lock.unlink()
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty
    return Cleared(removed, freed, busy)


# ---------------------------------------------------------------------------------------------
# Running in an environment


def _copy_tree(source, target: Path) -> None:
    """Copy a package (an importlib Traversable) without its caches."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "__pycache__" or item.name.endswith(".pyc"):
            continue
        if item.is_dir():
            _copy_tree(item, target / item.name)
        else:
            (target / item.name).write_bytes(item.read_bytes())


@contextlib.contextmanager
def worker_shim() -> Iterator[str]:
    """A temp dir holding only ``geventprobe/__init__.py`` and ``geventprobe/worker/``.

    Put on ``PYTHONPATH`` of an isolated environment's gunicorn, it makes the harness
    importable there without exposing anything else of geventprobe's environment.
    Copied from the installed package, so it is always the harness of this geventprobe.
    """
    root = children.make_temp_dir("geventprobe-shim-")
    try:
        package = Path(root) / "geventprobe"
        package.mkdir()
        init = resources.files("geventprobe").joinpath("__init__.py").read_bytes()
        (package / "__init__.py").write_bytes(init)
        _copy_tree(resources.files("geventprobe.worker"), package / "worker")
        yield root
    finally:
        children.remove_temp_dir(root)


def run_environ(shim: str) -> dict[str, str]:
    """The environment a gunicorn of an isolated environment runs with: the shim, no leaks."""
    env = clean_environ()
    env["PYTHONPATH"] = shim
    env["PYTHONNOUSERSITE"] = "1"  # ~/.local site-packages would leak too
    return env

"""Isolated environments: cache location and keys, installer messages, the harness shim,
and real environments made with pip (and uv, where it is on PATH)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from geventprobe.errors import ProbeError
from geventprobe.versions import venvs


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private environment cache; the pip installer unless a test says otherwise."""
    path = tmp_path / "cache"
    monkeypatch.setenv(venvs.CACHE_ENV, str(path))
    monkeypatch.setenv(venvs.INSTALLER_ENV, "pip")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cache_dir_is_set_by_env_var_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(venvs.CACHE_ENV, str(tmp_path / "c"))
    assert venvs.cache_root() == tmp_path / "c"
    assert venvs.envs_root() == tmp_path / "c" / "envs"
    monkeypatch.delenv(venvs.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert venvs.cache_root() == tmp_path / "xdg" / "geventprobe"


def test_key_follows_the_requirements_not_the_label():
    a = venvs.EnvSpec("psycopg 3.1.12", ("psycopg==3.1.12", "gevent==26.9.0"))
    same = venvs.EnvSpec("another name", ("gevent==26.9.0", "psycopg==3.1.12"))
    other = venvs.EnvSpec("psycopg 3.1.12", ("psycopg==3.1.13", "gevent==26.9.0"))
    extra = venvs.EnvSpec("psycopg 3.1.12", a.core, (("binary", ("psycopg-binary==3.1.12",)),))
    assert a.key() == same.key()
    assert len({a.key(), other.key(), extra.key()}) == 3
    assert a.dirname().startswith("py3.") and "psycopg-3.1.12" in a.dirname()
    assert a.key()[:12] in a.dirname()


PIP_NO_WHEEL = """\
WARNING: Location 'file:///opt/pypi-more/simple/psycopg-binary/' is ignored
ERROR: Could not find a version that satisfies the requirement psycopg-binary==3.1.7 (from versions: 3.1.4, 3.1.5, 3.1.6, 3.1.8)
ERROR: No matching distribution found for psycopg-binary==3.1.7
"""  # noqa: E501
UV_NO_WHEEL = """\
Using Python 3.11.7 environment at: u1
error: No solution found when resolving dependencies
  cause: Because there is no version of psycopg-binary==3.1.7 and you require psycopg-binary==3.1.7, we can conclude that your requirements are unsatisfiable.
"""  # noqa: E501
PIP_COMPILE = """\
  error: subprocess-exited-with-error
  Error: pg_config executable not found.
ERROR: Failed building wheel for psycopg-c
"""


@pytest.mark.parametrize(("output", "installer", "expected"), [
    (PIP_NO_WHEEL, "pip", ["no psycopg-binary==3.1.7 installable on", "no wheel for this Python",
                           "No matching distribution found"]),
    (UV_NO_WHEEL, "uv", ["no wheel for this Python", "no version of psycopg-binary==3.1.7"]),
    (PIP_COMPILE, "pip", ["Failed building wheel for psycopg-c", "apt-get install libpq-dev"]),
    ("", "pip", ["pip failed: no output"]),
])
def test_installer_reasons_are_one_line(output, installer, expected):
    reason = venvs.installer_reason(output, installer)
    assert "\n" not in reason
    for text in expected:
        assert text in reason


def test_installer_choice(monkeypatch):
    monkeypatch.setenv(venvs.INSTALLER_ENV, "pip")
    assert venvs.installer_name() == "pip"
    monkeypatch.setenv(venvs.INSTALLER_ENV, "conda")
    with pytest.raises(ProbeError, match="not an installer"):
        venvs.installer_name()
    monkeypatch.setenv(venvs.INSTALLER_ENV, "uv")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ProbeError, match="uv is not on PATH"):
        venvs.installer_name()
    monkeypatch.setenv(venvs.INSTALLER_ENV, "auto")
    assert venvs.installer_name() == "pip"  # no uv on that PATH


def test_shim_exposes_the_harness_and_nothing_of_our_environment(tmp_path):
    """In a bare venv, the shim imports the harness, but not our psycopg or gevent."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    script = (
        "import json, sys\n"
        "import geventprobe.worker.probe, geventprobe.worker.harness_app as app\n"
        "try:\n    import gevent\n    gevent_found = True\n"
        "except ImportError:\n    gevent_found = False\n"
        "print(json.dumps({'import_error': app.IMPORT_ERROR, 'gevent': gevent_found,"
        " 'path': sys.path, 'prefix': sys.prefix}))\n")
    with venvs.worker_shim() as shim:
        files = sorted(os.path.relpath(os.path.join(d, f), shim)
                       for d, _, fs in os.walk(shim) for f in fs)
        out = subprocess.run([str(venvs.env_python(bare)), "-c", script],
                             env=venvs.run_environ(shim), capture_output=True, text=True,
                             check=True)
    assert not os.path.exists(shim)
    assert files[0] == "geventprobe/__init__.py"
    assert all(f.startswith("geventprobe/worker/") for f in files[1:])
    assert "geventprobe/worker/probe.py" in files
    data = json.loads(out.stdout)
    # The harness imported; the driver and gevent of OUR environment did not leak in.
    assert "No module named 'psycopg'" in data["import_error"]
    assert data["gevent"] is False
    assert not any(p.startswith(sys.prefix) for p in data["path"]), data["path"]
    assert data["prefix"] == str(bare)


def _make(spec: venvs.EnvSpec) -> venvs.Env:
    seen: list[str] = []
    env = venvs.ensure(spec, seen.append)
    assert seen, "no progress was reported"
    return env


@pytest.mark.integration
def test_pip_environment_is_made_cached_listed_and_cleared(cache):
    spec = venvs.EnvSpec("packaging only", ("packaging",))
    first = _make(spec)
    assert first.error is None and not first.cached and first.installer == "pip"
    assert "packaging" in first.installed
    assert os.path.isdir(first.path) and first.path.startswith(str(cache))
    again = _make(spec)
    assert again.cached and again.path == first.path
    listed = venvs.list_envs()
    assert [e.label for e in listed] == ["packaging only"]
    assert listed[0].size_bytes > 0
    done = venvs.clear()
    assert done.removed == [first.name] and not done.busy
    assert venvs.list_envs() == []
    assert not os.path.exists(first.path)


@pytest.mark.integration
def test_missing_wheel_makes_only_its_extra_unavailable(cache):
    spec = venvs.EnvSpec("no such wheel", ("packaging",),
                         (("binary", ("psycopg-binary==3.1.7",)),))
    env = _make(spec)
    assert env.error is None, env.error
    assert set(env.missing) == {"binary"}
    assert "no psycopg-binary==3.1.7 installable" in env.missing["binary"]


@pytest.mark.integration
def test_wheel_extras_install_with_the_core_in_one_call(cache):
    # Each installer call costs pip about a second even from its cache: the core and the
    # extras that come as wheels go in one; psycopg's c build (compiled) would go alone.
    seen: list[str] = []
    env = venvs.ensure(venvs.EnvSpec("packaging and psycogreen", ("packaging",),
                                     (("green", ("psycogreen",)),)), seen.append)
    assert env.error is None and env.missing == {} and "psycogreen" in env.installed
    installs = [line for line in seen if ": installing " in line]
    assert installs == ["packaging and psycogreen: installing packaging psycogreen"], seen
    assert venvs._compiles("psycopg-c==3.1.12") and venvs._compiles("psycopg[c]")
    assert not venvs._compiles("psycopg-binary==3.1.12")


@pytest.mark.integration
def test_core_that_does_not_install_leaves_nothing_behind(cache):
    env = _make(venvs.EnvSpec("no such release", ("packaging==0.0.0.1",)))
    assert env.path is None and "packaging==0.0.0.1" in env.error
    assert [p.name for p in venvs.envs_root().iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("uv"), reason="uv is not on PATH (the pip path is tested)")
def test_uv_environment(cache, monkeypatch):
    monkeypatch.setenv(venvs.INSTALLER_ENV, "uv")
    env = _make(venvs.EnvSpec("packaging with uv", ("packaging",),
                              (("binary", ("psycopg-binary==3.1.7",)),)))
    assert env.installer == "uv" and env.error is None
    assert "packaging" in env.installed
    assert "no version of psycopg-binary==3.1.7" in env.missing["binary"]


def test_cache_commands(run_cli, tmp_path):
    env = {venvs.CACHE_ENV: str(tmp_path / "c")}
    proc = run_cli("cache", "list", env=env)
    assert proc.returncode == 0 and "no cached environments" in proc.stdout
    proc = run_cli("cache", "clear", env=env)
    assert proc.returncode == 0 and "removed 0 environments" in proc.stderr

"""Version matrix: the plan (pure), bad input (CLI), and real runs in isolated environments.

The integration tests make real environments with pip (``GEVENTPROBE_INSTALLER=pip``,
as on CI, where uv is not installed) in the session's ``env_cache`` and run real
gunicorn gevent workers in them against the embedded PostgreSQL. They assert
classifications and what the output says, never timings.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from geventprobe.core.builds import parse_builds
from geventprobe.errors import ProbeError
from geventprobe.versions import matrix

SMALL = ["--workers", "2", "--greenlets", "8"]


def test_versions_are_parsed_and_validated():
    assert matrix.parse_versions(" 3.1.12, 3.3.8,3.1.12", "--psycopg") == ["3.1.12", "3.3.8"]
    assert matrix.parse_versions(None, "--psycopg") is None
    with pytest.raises(ProbeError, match=r"'3\.1\.x' is not a release version"):
        matrix.parse_versions("3.1.x", "--psycopg")
    with pytest.raises(ProbeError, match="names no release"):
        matrix.parse_versions(",", "--gevent")
    assert matrix.requested(None, None) is None


def test_version_sets_are_the_product():
    sets = matrix.requested("3.1.12,3.3.8", "24.2.1,26.9.0")
    assert [(s.psycopg, s.gevent) for s in sets] == [
        ("3.1.12", "24.2.1"), ("3.1.12", "26.9.0"), ("3.3.8", "24.2.1"), ("3.3.8", "26.9.0")]


def test_plan_pins_each_build_and_runs_baselines_once_per_gevent():
    builds, named = parse_builds(None)
    cells = matrix.plan(builds, matrix.requested("3.1.12,3.3.8", None), named=named)
    assert [c.label for c in cells] == ["psycopg 3.1.12", "psycopg 3.3.8", "psycopg2 baselines"]
    # c compiles psycopg-c per version: only when named.
    assert [b.name for b in cells[0].builds] == ["binary", "python"]
    assert "psycopg==3.1.12" in cells[0].spec.core
    assert dict(cells[0].spec.extras) == {"binary": ("psycopg-binary==3.1.12",)}
    # What was not varied is held to our own environment's versions.
    assert cells[0].versions["gevent"] == matrix.ours("gevent")
    assert f"gevent=={matrix.ours('gevent')}" in cells[0].spec.core
    assert [b.name for b in cells[2].builds] == ["psycopg2-green", "psycopg2"]
    assert not any(r.startswith("psycopg==") for r in cells[2].spec.core)
    assert matrix.rows(cells) == 6


def test_plan_with_named_c_and_two_gevents():
    builds, named = parse_builds("c,psycopg2")
    cells = matrix.plan(builds, matrix.requested("3.3.8", "24.2.1,26.9.0"), named=named)
    assert [c.label for c in cells] == [
        "psycopg 3.3.8 · gevent 24.2.1", "psycopg 3.3.8 · gevent 26.9.0",
        "psycopg2 baselines · gevent 24.2.1", "psycopg2 baselines · gevent 26.9.0"]
    assert dict(cells[0].spec.extras) == {"c": ("psycopg-c==3.3.8",)}
    assert "gevent==24.2.1" in cells[0].spec.core


def test_install_hint_names_the_matrix_version():
    assert matrix.install_hint("binary", {"psycopg": "3.1.7"}) == \
        'pip install "psycopg[binary]==3.1.7"'
    assert matrix.install_hint("psycopg2-green", {"psycopg2-binary": "2.9.13"}).startswith(
        "pip install psycopg2-binary==2.9.13 psycogreen")


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--psycopg", "3.1.x"], "--psycopg: '3.1.x' is not a release version"),
    (["run", "--gevent", ","], "--gevent ',' names no release"),
    (["run", "--psycopg", "3.3.8", "--calibrate"], "--calibrate cannot be combined"),
])
def test_bad_matrix_input_one_line_exit_2(run_cli, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.integration
def test_old_release_blocks_without_preload_and_environments_are_reused(run_cli, tmp_path,
                                                                       env_cache, schema):
    """The issue's acceptance: 3.1.12 BLOCKING (no gevent support), 3.3.8 OK; then cached."""
    env = {"GEVENTPROBE_CACHE_DIR": env_cache, "GEVENTPROBE_INSTALLER": "pip"}
    out = tmp_path / "r.json"
    proc = run_cli("run", "--psycopg", "3.1.12,3.3.8", "--builds", "binary", *SMALL,
                   "--json", str(out), env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    rows = {b["versions"]["psycopg"]: b for b in result["builds"]}
    assert set(rows) == {"3.1.12", "3.3.8"}
    old, new = rows["3.1.12"], rows["3.3.8"]
    assert old["verdict"] == "BLOCKING", old["evidence"]
    assert "3.1.12 < 3.1.14" in old["cause"] and "#527" in old["cause"]
    assert old["facts"]["psycopg"]["wait"] == "wait_c"
    assert old["facts"]["driver_imported_in_master"] is False  # no --preload
    assert new["verdict"] == "OK", new["evidence"]
    for version, row in rows.items():
        # The workers imported the matrix's psycopg, from the isolated environment.
        assert row["facts"]["psycopg"]["version"] == version
        assert row["facts"]["prefix"].startswith(env_cache)
        assert row["environment"] in row["facts"]["prefix"]
    envs = {e["versions"]["psycopg"]: e for e in result["matrix"]}
    assert envs["3.1.12"]["installed"]["psycopg-binary"] == "3.1.12"
    assert envs["3.1.12"]["installer"] == "pip" and envs["3.1.12"]["varied"] == ["psycopg"]
    assert "binary · psycopg 3.1.12" in proc.stdout and "BLOCKING" in proc.stdout

    again = run_cli("run", "--psycopg", "3.1.12,3.3.8", "--builds", "binary", *SMALL,
                    "--json", str(out), env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    assert all(e["cached"] for e in json.loads(out.read_text())["matrix"])
    assert again.stderr.count("reusing the cached environment") == 2
    assert "2 reused from the cache" in again.stdout


@pytest.mark.integration
def test_release_without_a_wheel_is_unavailable_with_the_reason(run_cli, tmp_path, env_cache):
    env = {"GEVENTPROBE_CACHE_DIR": env_cache, "GEVENTPROBE_INSTALLER": "pip"}
    out = tmp_path / "r.json"
    proc = run_cli("run", "--psycopg", "3.1.7", "--builds", "binary", *SMALL, "--json", str(out),
                   env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr  # nothing could be tested
    row = json.loads(out.read_text())["builds"][0]
    assert row["verdict"] == "UNAVAILABLE"
    assert "no psycopg-binary==3.1.7 installable" in row["cause"]
    assert row["install"] == 'pip install "psycopg[binary]==3.1.7"'
    assert "UNAVAILABLE" in proc.stdout and "Traceback" not in proc.stderr

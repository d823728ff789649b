"""The CLI as a user runs it: bad input gets one line and exit 2, never a traceback."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--builds", "binary,nope"], "unknown build nope in --builds"),
    (["run", "--workers", "0"], "'--workers': 0 is not in the range"),
    (["run", "--greenlets", "1"], "'--greenlets': 1 is not in the range"),
    (["run", "--config", "/nonexistent/p.toml"], "cannot read --config /nonexistent/p.toml"),
    (["run", "--json", "/nonexistent/dir/r.json"], "cannot write --json /nonexistent/dir/r.json"),
])
def test_bad_input_one_line_exit_2(run_cli, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_bad_profile_key_names_it(run_cli, tmp_path):
    profile = tmp_path / "p.toml"
    profile.write_text("[thresholds]\nblocking_factor = 3\n")
    proc = run_cli("run", "--config", str(profile))
    assert proc.returncode == 2
    assert "unknown key [thresholds].blocking_factor" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_server_is_one_line(run_cli):
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    proc = run_cli("run", "--builds", "binary", "--dsn", "host=127.0.0.1 port=1 password=s3cr3t")
    assert proc.returncode == 2
    assert "cannot connect to PostgreSQL" in proc.stderr
    assert "s3cr3t" not in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


def test_version_and_help(run_cli):
    assert run_cli("--version").returncode == 0
    proc = run_cli("run", "--help")
    assert proc.returncode == 0 and "--preload" in proc.stdout and "Exit 0" in proc.stdout

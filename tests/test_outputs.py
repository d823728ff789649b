"""Output files (``--json``, ``--markdown``, ``report -o``, ``bisect --json``): symlinks are
written through, ``-`` is standard output, and a path that cannot be written is one line
before the run, or one line and nothing left behind after it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from geventprobe import files
from geventprobe.errors import ProbeError

DATA = Path(__file__).parent / "data"
RESULT = str(DATA / "run-default.json")


def error_line(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1, proc.stderr
    assert "internal error" not in errors[0]
    return errors[0]


# --- the writer itself ---------------------------------------------------------------------------

def test_write_goes_through_a_symlink(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to("target.txt")
    files.write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["link.json", "target.txt"]


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to("made.json")
    files.write_atomic(link, "x")
    assert link.is_symlink() and (tmp_path / "made.json").read_text() == "x"


def test_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)
    files.write_atomic(target, "new")
    assert (target.stat().st_mode & 0o777) == 0o640


def test_a_failed_write_is_one_line_and_leaves_nothing(tmp_path):
    # What a check before the run cannot see: the path became a directory meanwhile.
    (tmp_path / "out.json").mkdir()
    with pytest.raises(ProbeError, match=r"cannot write --json .*out\.json \(Is a directory\)"):
        files.write_atomic(tmp_path / "out.json", "x", "--json")
    assert os.listdir(tmp_path) == ["out.json"] and not os.listdir(tmp_path / "out.json")


def test_dash_is_standard_output(capsys):
    files.write_atomic("-", "hello\n")
    assert capsys.readouterr().out == "hello\n"


def test_dev_null_is_written_in_place():
    files.write_atomic("/dev/null", "x")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize(("path", "message"), [
    ("{tmp}", "is a directory"),
    ("/proc/x.json", "/proc is not a writable directory"),
    ("{tmp}/missing/x.json", "missing is not a directory"),
])
def test_check_refuses_what_cannot_be_written(tmp_path, path, message):
    with pytest.raises(ProbeError, match=message):
        files.check_writable(path.format(tmp=tmp_path), "--json")
    assert os.listdir(tmp_path) == []


def test_two_outputs_on_one_file_are_refused(tmp_path):
    (tmp_path / "link.md").symlink_to("r.json")
    with pytest.raises(ProbeError, match="--json and --markdown both write to the same file"):
        files.check_outputs([("--json", str(tmp_path / "r.json")),
                             ("--markdown", str(tmp_path / "link.md"))])
    with pytest.raises(ProbeError, match="standard output"):
        files.check_outputs([("--json", "-"), ("--markdown", "/dev/stdout")])


# --- the commands, before anything runs ---------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--json", "{tmp}"], "cannot write --json {tmp}: it is a directory"),
    (["--json", "/proc/x.json"], "cannot write --json /proc/x.json: /proc is not a writable"),
    (["--json", "{tmp}/same", "--markdown", "{tmp}/same"],
     "--json and --markdown both write to the same file"),
    (["--json", "-", "--markdown", "-"], "both write to standard output"),
], ids=["directory", "proc", "same-file", "both-stdout"])
def test_run_refuses_outputs_before_the_run(run_cli, tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    line = error_line(run_cli("run", "--builds", "binary", *args))
    assert message.format(tmp=tmp_path) in line
    assert [p for p in os.listdir(tmp_path) if p != "same"] == []


@pytest.mark.parametrize("command", [["bisect", "--good", "3.1.4", "--bad", "3.2.0"],
                                     ["calibrate"]], ids=["bisect", "calibrate"])
def test_other_commands_refuse_a_directory(run_cli, tmp_path, command):
    line = error_line(run_cli(*command, "--json", str(tmp_path)))
    assert f"cannot write --json {tmp_path}: it is a directory" in line


def test_report_writes_through_a_symlink(run_cli, tmp_path):
    target = tmp_path / "target.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    proc = run_cli("report", RESULT, "-o", str(link))
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and target.read_text().startswith("## geventprobe")
    assert sorted(os.listdir(tmp_path)) == ["link.md", "target.md"]


def test_report_to_a_directory_is_one_line(run_cli, tmp_path):
    line = error_line(run_cli("report", RESULT, "-o", str(tmp_path)))
    assert "it is a directory" in line
    assert os.listdir(tmp_path) == []


def test_report_dash_is_stdout(run_cli):
    proc = run_cli("report", RESULT, "--format", "json", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema_version"]
    assert "wrote" not in proc.stderr


# --- a real run ----------------------------------------------------------------------------------

@pytest.mark.integration
def test_run_json_to_stdout_and_markdown_through_a_symlink(run_cli, tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    proc = run_cli("run", "--workers", "1", "--greenlets", "4", "--builds", "binary",
                   "--json", "-", "--markdown", str(link))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)  # stdout is the JSON alone
    assert result["builds"][0]["build"] == "binary"
    assert "binary" in proc.stderr and "OK" in proc.stderr  # the report went to stderr
    assert link.is_symlink() and target.read_text().startswith("## geventprobe")
    assert sorted(os.listdir(tmp_path)) == ["link.md", "report.md"]

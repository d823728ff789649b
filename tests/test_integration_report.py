"""Reports of real runs: real PostgreSQL, real gunicorn gevent workers, the real CLI.

- `run --markdown --json` against a server reached with a DSN that carries a
  password (the embedded server trusts local connections, so the password is
  simply unused): no output anywhere holds it, nor, with --redact-hosts, the
  server's address; `report` re-renders the same Markdown byte for byte.
- The reproduction scripts, run on their own against a real server, say
  "serialised" for BLOCKING setups and not for OK ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import by_build

from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.report import load, repro

pytestmark = pytest.mark.integration

SMALL = ["--workers", "2", "--greenlets", "8"]
SECRET = "Sup3r-S3cret-pw"
ENV_SECRET = "Env-S3cret-pw"
DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_script(source: str, dsn: str, tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    path = tmp_path / name
    path.write_text(source)
    # A clean environment: only what a maintainer's shell would have, the DSN as argv.
    return subprocess.run([sys.executable, str(path), dsn], capture_output=True, text=True,
                          timeout=120, check=False, cwd=tmp_path)


def test_reports_of_a_run_with_a_password(run_cli, tmp_path, schema):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    summary = tmp_path / "step-summary.md"
    summary.write_text("previous step\n")
    texts: dict[str, str] = {}
    with EmbeddedPostgres(max_connections=90) as pg:
        dsn = f"{pg.dsn} password={SECRET}"
        # 16 greenlets: python's 8 stalled connects on loopback take 16-23 ms a window, under
        # the 25 ms the connect rule judges (its BLOCKING needed a busy machine).
        proc = run_cli("run", "--workers", "2", "--greenlets", "16", "--preload",
                       "--builds", "binary,python,psycopg2",
                       "--dsn", dsn, "--redact-hosts", "--json", str(out_json),
                       "--markdown", str(out_md),
                       env={"GITHUB_STEP_SUMMARY": str(summary), "PGPASSWORD": ENV_SECRET})
        assert proc.returncode == 1, proc.stdout + proc.stderr  # binary BLOCKS with --preload
        texts["run stdout"], texts["run stderr"] = proc.stdout, proc.stderr

        result = json.loads(out_json.read_text())
        jsonschema.validate(result, schema)
        builds = by_build(result)
        assert builds["binary"]["verdict"] == "BLOCKING"
        # Its queries cooperate, its connects do not (the selector bound at import).
        assert builds["python"]["verdict"] == "BLOCKING"
        assert "--dsn" in result["command"]

        # The reproduction script in the report, run on its own, shows the serialisation.
        md = out_md.read_text()
        scripts = dict(re.findall(r"<code>repro_(\S+)\.py</code>.*?```python\n(.*?)```", md,
                                  re.S))
        assert set(scripts) == {"binary", "python", "psycopg2"}
        ran = run_script(scripts["binary"], pg.dsn, tmp_path, "repro_binary.py")
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "RESULT: serialised" in ran.stdout and "wait_c" in ran.stdout
        ran = run_script(scripts["python"], pg.dsn, tmp_path, "repro_python.py")
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "RESULT: connects serialised" in ran.stdout and "wait_poll" in ran.stdout

    # report re-renders the same record: same Markdown, byte for byte
    proc = run_cli("report", str(out_json), "--format", "markdown")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == md
    texts["report markdown"] = proc.stdout
    for fmt in ("text", "json"):
        proc = run_cli("report", str(out_json), "--format", fmt)
        assert proc.returncode == 0, proc.stderr
        texts[f"report {fmt}"] = proc.stdout + proc.stderr
    out_html, out_png = tmp_path / "r.html", tmp_path / "charts.png"
    for fmt, path in (("html", out_html), ("png", out_png)):
        proc = run_cli("report", str(out_json), "--format", fmt, "-o", str(path))
        assert proc.returncode == 0, proc.stderr
        texts[f"report {fmt} stderr"] = proc.stderr
    assert "data:image/png;base64," in out_html.read_text()  # the charts, embedded
    assert out_png.read_bytes().startswith(PNG_MAGIC)

    step = summary.read_text()
    assert step.startswith("previous step\n") and "binary and python BLOCK the gevent hub" in step
    for path in (out_json, out_md, out_html, summary):
        texts[path.name] = path.read_text()
    texts["charts.png"] = out_png.read_bytes().decode("latin-1")
    for name, content in texts.items():
        assert SECRET not in content, f"the DSN's password leaked into {name}"
        assert ENV_SECRET not in content, f"PGPASSWORD leaked into {name}"
        assert "127.0.0.1" not in content, f"--redact-hosts missed the host in {name}"


@pytest.mark.parametrize(("record", "name", "says"), [
    ("run-default", "psycopg2", "RESULT: serialised"),       # no wait callback: BLOCKING
    ("run-default", "psycopg2-green", "RESULT: overlapped:"),  # psycogreen: OK
    ("run-default", "python", "RESULT: overlapped:"),
])
def test_reproduction_scripts_reproduce(tmp_path, record, name, says):
    result = load.load(str(DATA / f"{record}.json"))
    b = next(x for x in result.builds if x.build == name)
    with EmbeddedPostgres(max_connections=20) as pg:
        ran = run_script(repro.script(b, result), pg.dsn, tmp_path, f"repro_{name}.py")
    assert says in ran.stdout, ran.stdout + ran.stderr
    assert ran.returncode == (0 if b.verdict.value == "OK" else 1)

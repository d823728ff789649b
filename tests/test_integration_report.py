"""Reports of real runs: real PostgreSQL, real gunicorn gevent workers, the real CLI.

- `run --markdown --json` against a server reached with a DSN that carries a
  password (the embedded server trusts local connections, so the password is
  simply unused): no output anywhere holds it, nor, with --redact-hosts, the
  server's address; `report` re-renders the same Markdown byte for byte.
- The reproductions (the harness on a one-file app that rebuilds a build's setup), run on
  their own with plain gunicorn against a real server, show BLOCKING for a BLOCKING build
  and OK for an OK one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from conftest import by_build
from golden import standin

from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.report import load, repro

pytestmark = pytest.mark.integration

SMALL = ["--workers", "2", "--greenlets", "8"]
SECRET = "Sup3r-S3cret-pw"
ENV_SECRET = "Env-S3cret-pw"
DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_reproduction(files: dict[str, str], command: str, dsn: str,
                     tmp_path: Path) -> subprocess.CompletedProcess:
    """Write ``files`` (``harness.py`` among them) under ``tmp_path`` and run ``command`` there
    as a shell would (``VAR=value`` first), this Python for ``python``; the server through
    DATABASE_URL, as a maintainer's shell would give it."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    argv = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    while "=" in argv[0]:
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    assert argv[0] == "python"
    env["DATABASE_URL"] = dsn
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          timeout=180, check=False, cwd=tmp_path, env=env)


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

        # The reproduction in the report, run on its own with the harness it embeds, shows
        # the class: the files as the Markdown shows them, the command as it writes it.
        md = out_md.read_text()
        files = dict(re.findall(r"<code>(\S+)</code>: [^<]*</summary>\n\n```python\n(.*?)\n```",
                                md, re.S))
        assert set(files) == {"harness.py", "repro_binary/app.py", "repro_python/app.py",
                              "repro_psycopg2/app.py"}
        command = re.search(r"\n(PSYCOPG_IMPL=binary python harness.py .*)\n```", md).group(1)
        ran = run_reproduction(files, command, pg.dsn, tmp_path)
        assert ran.returncode == 1, ran.stdout + ran.stderr
        assert "\nBLOCKING: " in ran.stdout
        # python's queries cooperate: only its connects held the hub, which loopback hides.
        assert "only where connecting is slow" in md.replace("\n", " ")

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
        # The harness embedded in the Markdown and HTML binds its own servers to 127.0.0.1:
        # the program's text, not the probed server's address.
        assert "127.0.0.1" not in standin(content), f"--redact-hosts missed the host in {name}"


@pytest.mark.parametrize("name", ["psycopg2", "psycopg2-green"])
def test_reproductions_reproduce(tmp_path, name):
    """psycopg2 without a wait callback BLOCKING, with psycogreen OK: the harness with plain
    gunicorn says what the probed workers said (the negative control too)."""
    result = load.load(str(DATA / "run-default.json"))
    b = next(x for x in result.builds if x.build == name)
    rep = repro.reproduction(b, result)
    files = {f"{rep.directory}/{n}": text for n, text in rep.files}
    files["harness.py"] = repro.harness_source()
    with EmbeddedPostgres(max_connections=40) as pg:
        ran = run_reproduction(files, rep.command, pg.dsn, tmp_path)
    assert f"\n{b.verdict.value}: " in ran.stdout, ran.stdout + ran.stderr
    assert ran.returncode == (0 if b.verdict.value == "OK" else 1)

"""Reports of recorded runs: loading, what the findings say, charts, reproductions,
redaction, the job summary and the report command. Whole outputs are pinned by the goldens
(tests/test_golden.py); the tests here check what a golden cannot: hand-made variants,
well-formed HTML, real charts, secrets, the CLI.

The records in tests/data were written by `geventprobe run --workers 2 --greenlets 8 --json`
on a 2-core Linux VM (PostgreSQL 15.18, psycopg 3.3.8, psycopg2 2.9.13, gevent 26.9.0):
run-default (every build OK, psycopg2 BLOCKING), run-preload (the same with --preload:
binary and c BLOCKING) and run-busy-wait (GEVENTPROBE_CONTROL=busy-wait: binary BUSY-WAIT).
run-preload-http is a later --preload run that also sent HTTP requests at the workers
(request latency), made with `--dsn '... password=...' --redact-hosts`.
run-app-causes is `geventprobe run --profile quick --app app:application --chdir
examples/route_causes` with its five routes (psycopg 3.3.9, SQLAlchemy 2.1.9, the project's
directory shown as /srv/geventprobe): one FAILING, two SERIALIZED and two BLOCKING routes,
each with its cause.
run-app-cpu is `geventprobe run --profile quick --app shop.wsgi:application --chdir
examples/django_catalogue --route /health/` (issue 24 and 25: the quick route OK with the note
that its burst was CPU sharing, and the warm-up's note: each worker's first request stalled
its hub at `shop/urls.py`; the project's directory shown as /srv/geventprobe).
run-celery and run-celery-stall are `geventprobe run --celery tasks --chdir
examples/celery/psycopg2_plain --task tasks.query` (the worker and its task BLOCKING) and
`--celery-cmd "python worker.py" --chdir examples/celery/worker_main --task tasks.query`
(no task ever started: the stall, its stack and the SIGKILL), from a copy of the repository
in /srv/geventprobe (celery 5.7.0, redis 7.0, psycopg 3.3.9, psycopg2 2.9.13).
run-celery-ok and run-celery-blocking (issue 25, for compare's golden) are `geventprobe run
--celery tasks --chdir examples/celery/psycopg3_cli` and `.../psycopg2_plain`, each with
`--task tasks.query --task-kwargs '{"seconds": 0.2}'`, on 2026-12-04 (psycopg 3.3.9, psycopg2
2.9.13, celery 5.7.0, redis 7.0.15); the worktree's path in them rewritten to /srv/geventprobe.
run-uwsgi and run-uwsgi-ok (issue 26) are `geventprobe run --uwsgi-cmd "uwsgi --master
--processes 2 --gevent 17 --gevent-monkey-patch --wsgi-file app.py" --route /query` in
examples/uwsgi/psycopg3_top (BLOCKING, and its route) and the same with
--gevent-early-monkey-patch (OK), pyuwsgi 2.0.30, psycopg 3.3.9; paths as above.
run-uwsgi-builds is `geventprobe run --server uwsgi --uwsgi-cmd "uwsgi --master --processes 2
--gevent 16 --gevent-monkey-patch"` on 2026-12-05: the five builds under uWSGI's usual flag
(psycopg 3's three BLOCKING, psycogreen OK, psycopg2 BLOCKING).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
from golden import standin

from geventprobe.dsn import redact_hosts, scrub_result
from geventprobe.errors import ProbeError
from geventprobe.record import Calibration, ControlOutcome, Evidence, Verdict
from geventprobe.report import (
    cells,
    charts,
    findings,
    job_summary,
    json_format,
    load,
    repro,
    run,
)
from geventprobe.report.document import Charts
from geventprobe.report.formats import Html, Markdown, Text

DATA = Path(__file__).parent / "data"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def recorded(name: str):
    return load.load(str(DATA / f"run-{name}.json"))


def build(result, name: str):
    return next(b for b in result.builds if b.build == name)


def _subset(small, big, path="") -> None:
    """Every key and value of ``small`` is in ``big`` (``big`` may have new defaults)."""
    if isinstance(small, dict):
        for k, v in small.items():
            assert k in big, f"{path}.{k} lost"
            _subset(v, big[k], f"{path}.{k}")
    elif isinstance(small, list):
        assert len(small) == len(big), path
        for i, (a, b) in enumerate(zip(small, big)):
            _subset(a, b, f"{path}[{i}]")
    else:
        assert small == big, path


# ---------------------------------------------------------------- load


@pytest.mark.parametrize("name", ["default", "preload", "busy-wait", "preload-http"])
def test_load_round_trips_a_recorded_run(name, schema):
    raw = json.loads((DATA / f"run-{name}.json").read_text())
    again = json_format.to_dict(recorded(name))
    _subset(raw, again)
    jsonschema.validate(again, schema)


def _deref(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    for key in ("anyOf", "oneOf"):
        if key in node:  # {"anyOf": [{"$ref": ...}, {"type": "null"}]}
            node = next(_deref(schema, n) for n in node[key] if n.get("type") != "null")
    return node


def _schema_covers(schema: dict, cls, node: dict, path: str) -> None:
    props = _deref(schema, node).get("properties", {})
    for f in dataclasses.fields(cls):
        assert f.name in props, f"{path}.{f.name} is not in result.schema.json"
        kind, sub = load._resolve(str(f.type)), props[f.name]
        while kind[0] in ("optional", "list", "dict"):
            if kind[0] == "list":
                sub = _deref(schema, sub).get("items", {})
            elif kind[0] == "dict":
                sub = _deref(schema, sub).get("additionalProperties", {})
            kind = kind[1]
        if kind[0] == "type" and dataclasses.is_dataclass(kind[1]):
            _schema_covers(schema, kind[1], sub, f"{path}.{f.name}")


def test_the_schema_describes_every_field_of_the_record(schema):
    from geventprobe.record import RunResult

    _schema_covers(schema, RunResult, schema, "result")


def test_load_builds_typed_records():
    r = recorded("preload")
    b = build(r, "binary")
    assert b.verdict is Verdict.BLOCKING
    assert b.metrics.select1.p50_us > 0 and b.evidence[0].rule == "wait-factor"
    assert r.calibration is None  # recorded before calibration existed: the default


@pytest.mark.parametrize(("content", "message"), [
    ('{"schema_version": 2, "tool_version": "9.0"}', "schema_version 2; this geventprobe "
                                                     "reads version 1"),
    ("not json", "is not JSON"),
    ("[1, 2]", "not a geventprobe result"),
    ('{"schema_version": 1, "builds": []}', "result.tool_version is missing"),
])
def test_load_refuses_what_it_cannot_read(tmp_path, content, message):
    path = tmp_path / "r.json"
    path.write_text(content)
    with pytest.raises(ProbeError) as info:
        load.load(str(path))
    assert message in str(info.value)


def test_load_refuses_an_unknown_verdict(tmp_path):
    raw = json.loads((DATA / "run-default.json").read_text())
    raw["builds"][0]["verdict"] = "SLOW"
    path = tmp_path / "r.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ProbeError, match=r"builds\[0\]\.verdict: unknown value 'SLOW'"):
        load.load(str(path))


# ---------------------------------------------------------------- what the findings say


def markdown(r) -> str:
    return Markdown().render(run.document(r))


def html(r) -> str:
    return Html().render(run.document(r))


def test_findings_say_inconclusive_when_a_baseline_misses():
    r = recorded("default")
    missed = dataclasses.replace(build(r, "psycopg2"), verdict=Verdict.OK)
    r = dataclasses.replace(r, builds=[b if b.build != "psycopg2" else missed for b in r.builds])
    assert findings.paragraph(r).startswith("**INCONCLUSIVE**: baseline psycopg2 got OK")


def calibrated(result):
    rule = Evidence("wait-factor", 8.1, 2.0, True, "8 concurrent pg_sleep(0.15) took 8.10× w")
    outcomes = [
        ControlOutcome("psycopg2-no-callback", "psycopg2 without a wait callback", "psycopg2",
                       "BLOCKING", "BLOCKING", True, 8.1, 1210.0, 0.002, 0.05, 4.05, [rule]),
        ControlOutcome("spinning-wait", "a wait that never sleeps", "binary", "BUSY-WAIT",
                       "OK", False, 1.02, 3.0, 0.05, 0.9, 0.25, []),
    ]
    cal = Calibration(outcomes=outcomes, passed=False, saturated=True,
                      reason="the machine was 90% busy with other programs", duration_s=12.5)
    return dataclasses.replace(result, calibration=cal)


def test_a_run_with_calibration_shows_it_first(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)  # text only: skip drawing
    r = calibrated(recorded("default"))
    md = markdown(r)
    # Before the verdict table, as the terminal shows it; the runnable column included.
    outcome = md.index("calibration INCONCLUSIVE: the machine was 90% busy")
    assert outcome < md.index("| build | driver |")
    assert "| control | build | expected | got | wait× | hub lag ms | CPU/s waits | runnable |" \
        in md
    assert "| spinning-wait | binary | BUSY-WAIT | OK ✗ |" in md
    assert "Calibration not run" not in md
    assert "calibration INCONCLUSIVE" in html(r)
    # and it survives the JSON round trip
    again = load.from_dict(json_format.to_dict(r))
    assert again.calibration == r.calibration


def test_request_latency_is_shown_beside_the_evidence():
    r = recorded("preload-http")
    t = run.verdict_table(r)
    assert t.columns[-1].name == "req p99 ms"
    by = {row[0].text: row for row in t.rows}
    assert float(by["binary"][-1].text.replace(",", "")) > 1000  # queued behind the hub
    assert float(by["python"][-1].text.replace(",", "")) < 100
    assert "HTTP requests to those workers had a p99 of" in findings.paragraph(r)


def test_the_recorded_redacted_run_has_no_secret_or_host():
    raw = (DATA / "run-preload-http.json").read_text()
    assert "password=***" in raw and "host=***" in raw
    assert "127.0.0.1" not in raw


def test_version_matrix_rows_are_told_apart(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)  # text only: skip drawing
    r = recorded("preload")
    old, new = build(r, "binary"), build(r, "python")
    rows = [dataclasses.replace(old, versions={"psycopg": "3.1.12", "gevent": "26.9.0"}),
            dataclasses.replace(new, build="binary",
                                versions={"psycopg": "3.3.8", "gevent": "26.9.0"})]
    r = dataclasses.replace(r, builds=rows)
    md = markdown(r)
    assert "| binary @ psycopg 3.1.12, gevent 26.9.0 | psycopg 3.3.8 |" in md
    assert "<code>repro_binary_psycopg_3.1.12_gevent_26.9.0/app.py</code>" in md
    assert "binary @ psycopg 3.1.12, gevent 26.9.0" in html(r)


def test_markdown_table_cells_cannot_break_the_table():
    from geventprobe.report.formats.markdown import table

    assert table(["a"], [["x | y"]]).splitlines()[-1] == "| x \\| y |"


def test_a_baseline_as_expected_is_one_line_and_a_missed_one_keeps_its_details():
    from test_golden import _term

    r = recorded("preload")
    short = _term(run.document(r)).splitlines()
    head = short.index("psycopg2: BLOCKING (baseline, as expected)")
    assert not short[head + 1].startswith("  ")  # no evidence, cause or fix under it
    assert "fix: call psycogreen" in _term(run.document(r), verbose=True)
    assert "**fix:** call psycogreen" in markdown(r)  # a reference document keeps them
    missed = dataclasses.replace(build(r, "psycopg2-green"), verdict=Verdict.BLOCKING,
                                 cause="no wait callback", advice="call patch_psycopg()")
    r = dataclasses.replace(r, builds=[missed if b.build == "psycopg2-green" else b
                                       for b in r.builds])
    out = _term(run.document(r))
    assert "psycopg2-green: BLOCKING (baseline, expected OK)\n  cause: no wait callback" in out
    assert "  fix: call patch_psycopg()" in out


def test_a_baseline_whose_worker_gunicorn_killed_says_so_on_its_line():
    from test_golden import _term

    r = recorded("default")
    killed = dataclasses.replace(build(r, "psycopg2"), metrics=None, workers=[],
                                 worker_timeouts=1)
    r = dataclasses.replace(r, builds=[killed if b.build == "psycopg2" else b for b in r.builds])
    out = _term(run.document(r), width=100)
    assert ("psycopg2: BLOCKING (baseline, as expected; gunicorn killed 1 worker(s): WORKER "
            "TIMEOUT)\npsycopg 3 builds") in out  # its one entry, and nothing under it
    # A narrow table's evidence, where there are no figures.
    assert cells.deciding(killed) == "1 killed (WORKER TIMEOUT)"
    verbose = " ".join(_term(run.document(r), verbose=True).split())
    assert verbose.count("WORKER TIMEOUT") == 1  # -v does not say it again


# ---------------------------------------------------------------- HTML, text, charts


class _Tags(HTMLParser):
    VOID: ClassVar[set[str]] = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http:", "https:", "//")):
                self.external.append(attrs[key])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


@pytest.mark.parametrize("name", sorted(p.name for p in (DATA / "golden").glob("*.html")))
def test_every_html_golden_is_well_formed_and_self_contained(name):
    parser = _Tags()
    parser.feed((DATA / "golden" / name).read_text())
    assert parser.stack == [] and parser.external == []


def test_html_embeds_the_real_charts():
    doc = html(recorded("preload"))
    parser = _Tags()
    parser.feed(doc)
    assert parser.stack == [] and parser.external == []
    assert len(parser.images) == 1
    prefix = "data:image/png;base64,"
    assert parser.images[0].startswith(prefix)
    assert base64.b64decode(parser.images[0][len(prefix):]).startswith(PNG_MAGIC)


def test_html_without_matplotlib_says_how_to_get_the_charts(monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)
    doc = html(recorded("preload"))
    assert "data:image/png" not in doc
    assert "need matplotlib" in doc and "geventprobe[charts]" in doc
    block = next(b for b in run.document(recorded("preload")).body if isinstance(b, Charts))
    with pytest.raises(charts.ChartsUnavailable, match=r"pip install \"geventprobe\[charts\]\""):
        charts.render_png(block)


def test_png_has_a_row_per_build_with_figures():
    from PIL import Image  # installed with matplotlib

    block = next(b for b in run.document(recorded("busy-wait")).body if isinstance(b, Charts))
    data = charts.render_png(block)
    assert data.startswith(PNG_MAGIC)
    with Image.open(__import__("io").BytesIO(data)) as img:
        width, height = img.size
    assert width == 1300 and height == 100 + 230 * 3  # 13 in wide, 2.3 in per build at 100 dpi


def test_text_report_is_plain():
    out = Text().render(run.document(recorded("preload")))
    assert "\x1b[" not in out  # no colour codes
    assert not any(line != line.rstrip() for line in out.splitlines())


# ---------------------------------------------------------------- reproductions (the harness)


def _app_py(r, name):
    rep = repro.reproduction(build(r, name), r)
    files = dict(rep.files)
    compile(files["app.py"], f"{rep.directory}/app.py", "exec")
    return rep, files["app.py"]


def test_repro_rebuilds_the_preload_import_order():
    """psycopg imported in the gunicorn master: the app imports it at its top, under
    --preload, in one gevent worker; 8 at once, as the probe's greenlets."""
    r = recorded("preload")
    rep, app = _app_py(r, "binary")
    assert rep.directory == "repro_binary" and rep.verdict is Verdict.BLOCKING
    assert "\nimport psycopg\n" in app and "W = 0.15" in app
    assert rep.command == ("PSYCOPG_IMPL=binary python harness.py repro_binary 'gunicorn -k "
                           "gevent -w 1 --preload app:application' --request 'GET /wait' -n 8")
    assert rep.needs == ('pip install "psycopg[binary]==3.3.8" "gevent==26.9.0" '
                         '"gunicorn==27.0.1"')
    assert "The harness should print BLOCKING." in rep.says


def test_repro_patches_first_when_the_workers_did():
    r = recorded("default")
    rep, app = _app_py(r, "c")
    assert "--preload" not in rep.command and rep.command.startswith("PSYCOPG_IMPL=c ")
    assert "imported after gevent patched" in app


def test_repro_of_psycopg2_with_and_without_psycogreen():
    r = recorded("default")
    _, plain = _app_py(r, "psycopg2")
    green_rep, green = _app_py(r, "psycopg2-green")
    assert "patch_psycopg()" not in plain and "no wait callback" in plain
    assert "patch_psycopg()" in green and '"psycogreen==1.0.2"' in green_rep.needs


def test_repro_of_the_busy_wait_control_spins():
    r = recorded("busy-wait")
    rep, app = _app_py(r, "binary")
    assert "psycopg.waiting.wait = spinning_wait" in app and "poll.poll(0)" in app
    assert "The harness should print BUSY-WAIT." in rep.says


def test_repro_of_your_routes_runs_your_app():
    """--app with routes: the harness on your directory, your config, the first route that
    was not OK, the route's class (the driver cooperated)."""
    r = recorded("app-causes")
    rep = repro.reproduction(r.builds[0], r)
    assert rep.files == () and rep.directory == "."
    assert rep.command == ("python harness.py . 'gunicorn -k gevent -w 1 app:application' "
                           "--request 'GET /pool-timeout' -n 8")
    assert rep.verdict is Verdict.FAILING


def test_repro_of_a_celery_worker_uses_its_command_and_task():
    r = recorded("celery")
    rep = repro.reproduction(r.builds[0], r)
    assert rep.command == ("python harness.py . 'celery -A tasks worker -P gevent -c 16 -l info "
                           "--without-mingle --without-gossip' --task tasks.query --kwargs "
                           "'{\"seconds\": 0.2}' -n 16")
    assert rep.verdict is Verdict.BLOCKING
    stalled = recorded("celery-stall")  # the user's task never ran: named from the record
    assert "--task tasks.query" in repro.reproduction(stalled.builds[0], stalled).command


def test_repro_embeds_the_harness_once_and_never_a_dsn():
    r = recorded("preload")
    md = Markdown().render(run.document(r))
    assert md.count("<code>harness.py</code>") == 1
    assert md.count(repro.harness_source().rstrip()) == 1
    for b in r.builds:
        rep = repro.reproduction(b, r)
        text = rep.command + "".join(t for _, t in rep.files)
        assert "host=" not in text and "password" not in text and "127.0.0.1" not in text


# ---------------------------------------------------------------- redaction

SECRET = "Sup3r-S3cret"


def leaky(result):
    """The record as if a password and a host had slipped into every free-text field."""
    dsn = f"host=db.internal.example hostaddr=10.20.30.40 port=5432 password={SECRET}"
    b = build(result, "psycopg2")
    b = dataclasses.replace(b, error=f'connection to server at "db.internal.example" '
                                     f"(10.20.30.40) failed for {dsn}", cause=dsn)
    return dataclasses.replace(
        result, command=["geventprobe", "run", "--dsn", dsn,
                         f"--dsn=postgresql://alice:{SECRET}@db.internal.example/app"],
        server=dict(result.server, dsn=dsn), notes=[f"saw {dsn}"],
        builds=[b if x.build == "psycopg2" else x for x in result.builds])


@pytest.mark.parametrize("hosts", [False, True])
def test_no_output_carries_a_password(hosts, monkeypatch):
    monkeypatch.setattr(charts, "available", lambda: False)  # text only: skip drawing
    clean = scrub_result(leaky(recorded("preload")), hosts=hosts)
    doc = run.document(clean)
    outputs = [Markdown().render(doc), Html().render(doc), Text().render(doc),
               json_format.render(clean)]
    for out in outputs:
        assert SECRET not in out
        if hosts:
            assert "db.internal.example" not in out and "10.20.30.40" not in out
            # The embedded server's address; the harness the Markdown and HTML embed binds
            # its own servers to 127.0.0.1: the program's text, not a host of the run.
            assert "127.0.0.1" not in standin(out)
    assert "port=5432" in json_format.render(clean)  # only what is secret goes


@pytest.mark.parametrize(("text_in", "gone", "kept"), [
    ("host=db1.example port=5432 dbname=app", ["db1.example"], ["port=5432", "dbname=app"]),
    ("postgresql://bob@db1.example:6432,db2:6433/app", ["db1.example", "db2"],
     [":6432", ":6433", "/app"]),
    ("postgres://[2001:db8::1]:5432/app", ["2001:db8::1"], [":5432/app"]),
    ("at 10.0.0.7 and fe80::1%eth0", ["10.0.0.7", "fe80::1"], ["at "]),
    ("host='/var/run/postgresql' port=5432", ["/var/run/postgresql"], ["port=5432"]),
    ("started 13:46:56, psycopg 3.3.8, server 15.18", [], ["13:46:56", "3.3.8", "15.18"]),
])
def test_redact_hosts(text_in, gone, kept):
    out = redact_hosts(text_in)
    for g in gone:
        assert g not in out
    for k in kept:
        assert k in out


def test_redact_hosts_masks_named_hosts_wherever_they_stand():
    out = redact_hosts('could not connect to server "dbprimary": dbprimary-replica, dbname=x',
                       ["dbprimary"])
    assert out == 'could not connect to server "***": dbprimary-replica, dbname=x'


# ---------------------------------------------------------------- GitHub job summary


def test_step_summary_fits_githubs_limit(tmp_path):
    doc = run.document(recorded("preload"))
    full = job_summary.step_summary(doc)
    assert standin(full) == (DATA / "golden" / "preload.md").read_text()
    short = job_summary.step_summary(doc, budget=len(full.encode()) - 1)
    assert "Shortened to fit" in short and "BLOCK the gevent hub" in short
    assert "| binary | psycopg 3.3.8 |" in short  # the verdict table stays
    assert len(job_summary.step_summary(doc, budget=200).encode()) <= 200
    path = tmp_path / "summary.md"
    path.write_text("x" * (job_summary.STEP_SUMMARY_LIMIT - 3000))
    job_summary.append(doc, str(path))
    assert path.stat().st_size <= job_summary.STEP_SUMMARY_LIMIT
    assert "## geventprobe" in path.read_text()


# ---------------------------------------------------------------- the report command


def test_report_cli_rerenders_without_running(run_cli, tmp_path):
    src = str(DATA / "run-preload.json")
    proc = run_cli("report", src)
    assert proc.returncode == 0, proc.stderr
    assert standin(proc.stdout) == (DATA / "golden" / "preload.md").read_text()
    proc = run_cli("report", src, "--format", "text")
    assert proc.stdout == (DATA / "golden" / "preload.text.txt").read_text()
    out = tmp_path / "r.html"
    proc = run_cli("report", src, "--format", "html", "-o", str(out))
    assert proc.returncode == 0 and f"wrote {out}" in proc.stderr
    assert out.read_text().startswith("<!DOCTYPE html>")
    proc = run_cli("report", src, "--format", "json")
    assert proc.stdout == (DATA / "golden" / "preload.json").read_text()


@pytest.mark.parametrize(("args", "message"), [
    (["report", "/nonexistent.json"], "cannot read /nonexistent.json"),
    (["report", str(DATA / "run-preload.json"), "--format", "png"],
     "--format png writes binary data: add -o PATH.png"),
    (["report", str(DATA / "run-preload.json"), "-o", "/nonexistent/dir/r.md"],
     "cannot write -o /nonexistent/dir/r.md"),
    (["report", str(DATA / "run-preload.json"), "--format", "pdf"], "'pdf' is not one of"),
    # Issue 25 row 13: the truth, not "every build was UNAVAILABLE or failed".
    (["report", str(DATA / "run-celery.json"), "--format", "png", "-o", "/dev/null"],
     "geventprobe: error: a celery run has no charts yet (its record keeps each task's queue "
     "and run times, not the hub-lag timeline a chart draws): render it with --format html, "
     "markdown or text"),
    (["report", str(DATA / "run-calibrate.json"), "--format", "png", "-o", "/dev/null"],
     "this run probed no build (geventprobe calibrate): it has no charts"),
])
def test_report_cli_bad_input_is_one_line(run_cli, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_run_refuses_an_unwritable_markdown_path_before_running(run_cli):
    proc = run_cli("run", "--markdown", "/nonexistent/dir/r.md")
    assert proc.returncode == 2
    assert "cannot write --markdown /nonexistent/dir/r.md" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unwritable_step_summary_does_not_fail_the_run(monkeypatch, tmp_path, capsys):
    from geventprobe.cli import report as report_cli

    monkeypatch.setenv("GITHUB_STEP_SUMMARY", "/nonexistent/dir/summary.md")
    report_cli.write_run_outputs(run.document(recorded("default")), str(tmp_path / "r.md"))
    assert standin((tmp_path / "r.md").read_text()) == \
        (DATA / "golden" / "default.md").read_text()
    assert "warning: cannot append to $GITHUB_STEP_SUMMARY /nonexistent/dir/summary.md" \
        in capsys.readouterr().err


def test_the_exit_code_is_a_slot_of_the_document_not_words_of_the_verdict():
    """An output file that cannot be written makes a run exit 2: the report says exit 2
    beside the verdict the run found, and the record's words stay as the core built them.
    A record written before the verdict was kept apart shows its summary as it is."""
    old = load.load(str(DATA / "run-default.json"))
    assert old.verdict == "" and old.summary.endswith("; exit 0")
    assert run.document(old).verdict_line == old.summary  # no "; exit 0; exit 0"
    words = old.summary.rsplit("; exit ", 1)[0]
    live = dataclasses.replace(old, verdict=words)
    assert run.document(live).verdict_line == old.summary
    failed = run.document(live, exit_code=2)
    assert failed.verdict == words and failed.verdict_line == f"{words}; exit 2"
    assert failed.failed and not run.document(live).failed
    assert Markdown().render(failed).count("; exit 2") == 1
    assert live.summary.endswith("; exit 0") and live.exit_code == 0


def test_a_saved_run_of_a_kind_this_release_does_not_know_is_refused_in_one_line():
    """Its sections would be drawn with another kind's words (a WSGI run's): refused when
    loaded, naming the kind and what to do; the kinds it knows load as before."""
    raw = json.loads((DATA / "run-celery.json").read_text())
    assert load.from_dict(raw).app["kind"] == "celery"
    raw["app"]["kind"] = "dramatiq"
    with pytest.raises(ProbeError) as err:
        load.from_dict(raw, "saved.json")
    assert str(err.value).startswith("saved.json is a run of a kind of worker this "
                                     "geventprobe does not know ('dramatiq'): render it with")
    assert "\n" not in str(err.value)

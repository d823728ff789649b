"""geventprobe compare on recorded runs: verdict changes, figure changes, refusals.

run-preload and run-default (tests/data) are the same workload on the same machine,
with and without --preload: the question "did removing --preload fix it?".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from geventprobe.compare import FigureChange, compare
from geventprobe.errors import ProbeError
from geventprobe.record import Verdict
from geventprobe.report import load

DATA = Path(__file__).parent / "data"
PRELOAD = str(DATA / "run-preload.json")
DEFAULT = str(DATA / "run-default.json")


def changes(c) -> dict:
    return {b.build: b for b in c.builds}


def test_removing_preload_fixed_the_c_builds():
    c = compare(load.load(PRELOAD), load.load(DEFAULT))
    assert c.refused is None and not c.regressed
    by = changes(c)
    assert (by["binary"].before, by["binary"].after, by["binary"].change) == (
        Verdict.BLOCKING, Verdict.OK, "fixed")
    assert by["c"].change == "fixed"
    assert by["python"].change == "unchanged" and by["psycopg2"].change == "unchanged"
    wait = next(f for f in by["binary"].figures if f.figure == "wait×")
    assert wait.before == pytest.approx(8.055, abs=0.01) and wait.ratio < 0.2
    # what the workers reported differently explains it
    facts = {d.what: (d.before, d.after) for d in by["binary"].facts}
    assert facts["psycopg wait"] == ("wait_c", "wait_poll")
    assert [(d.what, d.confounding) for d in c.differences] == [("--preload", False)]
    assert c.summary == "fixed: binary BLOCKING → OK, c BLOCKING → OK"


def test_adding_preload_is_a_regression():
    c = compare(load.load(DEFAULT), load.load(PRELOAD))
    assert [b.build for b in c.regressed] == ["binary", "c"]


def test_a_different_workload_is_refused_unless_forced():
    before = load.load(DEFAULT)
    after = load.load(PRELOAD)
    workload = dict(after.profile["workload"], greenlets=16)
    after = dataclasses.replace(after, profile=dict(after.profile, workload=workload),
                                environment=dict(after.environment, cpu_count=8))
    c = compare(before, after)
    assert c.refused is not None
    assert "workload.greenlets (8 → 16)" in c.refused and "CPUs (2 → 8)" in c.refused
    forced = compare(before, after, force=True)
    assert forced.forced and "compared anyway" in forced.summary
    assert changes(forced)["binary"].change == "regressed"


def test_timeouts_do_not_confound():
    after = load.load(DEFAULT)
    workload = dict(after.profile["workload"], boot_timeout_s=120.0)
    after = dataclasses.replace(after, profile=dict(after.profile, workload=workload))
    c = compare(load.load(DEFAULT), after)
    assert c.refused is None
    assert [d.what for d in c.differences] == ["workload.boot_timeout_s"]


def test_runs_without_a_common_build_are_refused():
    before = load.load(DEFAULT)
    after = dataclasses.replace(before, builds=[])
    for force in (False, True):  # forced, it said "every build kept its verdict", exit 0
        with pytest.raises(ProbeError, match=r"^the two runs have no build in common"):
            compare(before, after, force=force)


def test_runs_of_different_kinds_are_refused_even_forced():
    """Issue 25, debatable, decided: a celery run against a driver run said "no build in
    common", and with --force "every build kept its verdict", exit 0."""
    celery = load.load(Path(DEFAULT).parent / "run-celery.json")
    for force in (False, True):
        with pytest.raises(ProbeError) as info:
            compare(load.load(DEFAULT), celery, force=force)
        assert str(info.value) == ("the two runs probed different things (the first the "
                                   "built-in driver builds, the second a celery worker): "
                                   "compare two runs of the same kind")


def test_builds_in_one_run_only():
    before = load.load(DEFAULT)
    after = dataclasses.replace(before, builds=[b for b in before.builds if b.build != "c"])
    by = changes(compare(before, after))
    assert by["c"].change == "removed" and by["c"].after is None


def test_figure_ratio():
    assert FigureChange("wait×", 8.0, 1.0, True).ratio == pytest.approx(0.125)
    assert FigureChange("wait×", 0.0, 1.0, True).ratio is None
    assert FigureChange("wait×", None, 1.0, True).ratio is None


def test_compare_cli(run_cli):
    """Each format as the CLI writes it (a pipe: 100 columns) is its golden, whole."""
    golden = DATA / "golden"
    proc = run_cli("compare", PRELOAD, DEFAULT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (golden / "compare-preload-default.terminal-100.txt").read_text()
    proc = run_cli("compare", DEFAULT, PRELOAD, "--format", "markdown")
    assert proc.returncode == 1  # a build regressed
    assert proc.stdout == (golden / "compare-default-preload.md").read_text()
    proc = run_cli("compare", PRELOAD, DEFAULT, "--format", "json")
    assert proc.stdout == (golden / "compare-preload-default.json").read_text()
    data = json.loads(proc.stdout)
    assert data["builds"][0]["change"] == "fixed"
    assert data["builds"][0]["figures"][0]["ratio"] < 0.2


def test_compare_cli_refuses_in_one_line(run_cli, tmp_path):
    raw = json.loads(Path(DEFAULT).read_text())
    raw["profile"]["thresholds"]["busy_wait_cpu"] = 0.5
    other = tmp_path / "other.json"
    other.write_text(json.dumps(raw))
    proc = run_cli("compare", PRELOAD, str(other))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1 and "thresholds.busy_wait_cpu (0.2 → 0.5)" in errors[0]
    assert "--force" in errors[0] and "Traceback" not in proc.stderr
    assert run_cli("compare", PRELOAD, str(other), "--force").returncode == 0


def test_compare_cli_bad_file(run_cli):
    proc = run_cli("compare", PRELOAD, "/nonexistent.json")
    assert proc.returncode == 2 and "cannot read /nonexistent.json" in proc.stderr


def test_version_matrix_rows_compare_by_build_and_versions():
    r = load.load(DEFAULT)
    binary = next(b for b in r.builds if b.build == "binary")
    rows = [dataclasses.replace(binary, versions={"psycopg": v}) for v in ("3.1.12", "3.3.8")]
    c = compare(dataclasses.replace(r, builds=rows), dataclasses.replace(r, builds=rows[1:]))
    assert [(b.build, b.change) for b in c.builds] == [
        ("binary @ psycopg 3.1.12", "removed"), ("binary @ psycopg 3.3.8", "unchanged")]


def test_connect_figures_and_route_verdicts_are_compared():
    from test_render_width import with_new_content

    from geventprobe.record import Verdict as V
    from geventprobe.report import comparison

    before = with_new_content(load.load(PRELOAD))
    b = next(x for x in before.builds if x.build == "binary")
    fixed = dataclasses.replace(b, routes=[dataclasses.replace(b.routes[0], verdict=V.OK),
                                           b.routes[1]])
    after = dataclasses.replace(before, builds=[fixed if x.build == "binary" else x
                                                for x in before.builds])
    c = compare(before, after)
    binary = changes(c)["binary"]
    assert [f.figure for f in binary.figures][-2:] == ["connect×", "connect hub lag ms"]
    assert [(d.what, d.before, d.after) for d in binary.facts] == [
        ("route GET /orders", "SERIALIZED", "OK")]
    assert "connect×" not in [f.figure for f in changes(c)["c"].figures]  # not measured
    from geventprobe.report.formats import Markdown

    md = Markdown().render(comparison.document(c))
    assert "**binary:** route GET /orders SERIALIZED → OK" in md and "| connect× |" in md


def test_a_celery_workers_seconds_keep_the_digits_that_show_the_change():
    """Issue 25 row 14: two celery runs (psycopg 3, then psycopg2 without psycogreen): the
    queue time went from 0.0558 s to 3.1917 s. Rounded to whole seconds it read "0 → 3",
    and the run time "0 → 0"; at 80 columns no figure of the worker was left at all."""
    from geventprobe.report import comparison
    from tests.golden import terminal

    c = compare(load.load(str(DATA / "run-celery-ok.json")),
                load.load(str(DATA / "run-celery-blocking.json")))
    (b,) = c.builds
    assert b.change == "regressed"
    cells = dict(zip(comparison.figure_names(c), comparison.table(c).rows[0][4:]))
    assert cells["task queue max s"].text == "0.056 → 3.19"
    assert cells["task run max s"].text == "0.267 → 0.215"
    assert cells["task hub lag ms"].text == "25.3 → 848.1"
    assert [comparison.seconds(v) for v in (0.0657, 3.2175, 0.2099, 41.26)] == [
        "0.066", "3.22", "0.210", "41.3"]
    narrow = terminal(comparison.document(c), 80)
    assert "0.056 → 3.19" in narrow, narrow

"""Bisect: the search on recorded verdicts (pure), bad input (CLI), and the real thing.

The integration test bisects psycopg 3.1.4..3.1.12 (build binary) in real
isolated environments under real gunicorn gevent workers: measured on this
project's machine, 3.1.4 picks a cooperative wait (wait_selector) and 3.1.5 is
the first release whose binary build always uses wait_c.
"""

from __future__ import annotations

import json

import pytest

from geventprobe.errors import ProbeError
from geventprobe.versions import bisect

RELEASES = ["3.1.4", "3.1.5", "3.1.6", "3.1.7", "3.1.8", "3.1.9", "3.1.10", "3.1.11", "3.1.12"]


def judge_by(verdicts: dict[str, str]):
    asked: list[str] = []

    def judge(release: str) -> str:
        asked.append(release)
        return verdicts[release]

    return judge, asked


def recorded(first_bad: str, skip=(), **overrides) -> dict[str, str]:
    i = RELEASES.index(first_bad)
    verdicts = {r: (bisect.GOOD if n < i else bisect.BAD) for n, r in enumerate(RELEASES)}
    verdicts.update({r: bisect.SKIP for r in skip})
    verdicts.update(overrides)
    return verdicts


@pytest.mark.parametrize("first_bad", RELEASES[1:])
def test_search_finds_every_boundary_in_few_probes(first_bad):
    judge, asked = judge_by(recorded(first_bad))
    outcome = bisect.search(RELEASES, judge)
    assert outcome.problem is None and outcome.untested == []
    assert outcome.first_bad == first_bad
    assert outcome.last_good == RELEASES[RELEASES.index(first_bad) - 1]
    assert asked[:2] == ["3.1.4", "3.1.12"]  # the ends are confirmed first
    assert len(asked) == len(set(asked)) <= bisect.max_steps(len(RELEASES))


def test_untestable_release_is_skipped_like_git_bisect_skip():
    # psycopg-binary 3.1.7 was never released: the search goes around it...
    judge, _ = judge_by(recorded("3.1.5", skip=["3.1.7"]))
    assert bisect.search(RELEASES, judge).first_bad == "3.1.5"
    # ...and says so when it hides the boundary.
    judge, _ = judge_by(recorded("3.1.8", skip=["3.1.7"]))
    outcome = bisect.search(RELEASES, judge)
    assert (outcome.last_good, outcome.untested, outcome.first_bad) == ("3.1.6", ["3.1.7"],
                                                                        "3.1.8")


@pytest.mark.parametrize(("overrides", "problem", "at"), [
    ({"3.1.4": bisect.BAD}, "good-not-good", "3.1.4"),
    ({"3.1.12": bisect.GOOD}, "bad-not-bad", "3.1.12"),
    ({"3.1.4": bisect.SKIP}, "good-untestable", "3.1.4"),
    ({"3.1.8": bisect.ERROR}, "error", "3.1.8"),
])
def test_search_stops_with_the_reason(overrides, problem, at):
    judge, _ = judge_by(recorded("3.1.5", **overrides))
    outcome = bisect.search(RELEASES, judge)
    assert (outcome.problem, outcome.at) == (problem, at)


def test_index_versions_output_is_parsed():
    out = ("psycopg (3.3.9)\nAvailable versions: 3.3.9, 3.1.12, 3.1.4\n  INSTALLED: 3.3.8\n"
           "  LATEST:    3.3.9\n")
    assert bisect._parse_index_versions(out) == ["3.3.9", "3.1.12", "3.1.4"]
    assert bisect._parse_index_versions("ERROR: no network\n") is None


def test_releases_between_checks_the_ends():
    assert bisect.releases_between(RELEASES, "3.1.5", "3.1.7", "psycopg") == [
        "3.1.5", "3.1.6", "3.1.7"]
    with pytest.raises(ProbeError, match="swap them"):
        bisect.releases_between(RELEASES, "3.1.7", "3.1.5", "psycopg")
    with pytest.raises(ProbeError, match=r"3\.1\.99 is not a release of psycopg.*3\.1\.12"):
        bisect.releases_between(RELEASES, "3.1.4", "3.1.99", "psycopg")


@pytest.mark.parametrize(("args", "message"), [
    (["--good", "3.1.12", "--bad", "3.1.4"], "must be an older release than --bad 3.1.4"),
    (["--good", "3.1.x", "--bad", "3.1.4"], "--good '3.1.x' is not a release version"),
    (["--good", "3.1.4", "--bad", "3.1.12", "--build", "psycopg2"],
     "psycopg2 does not use psycopg 3"),
    (["--good", "3.1.4", "--bad", "3.1.12", "--build", "binary,c"], "bisect probes one build"),
    (["--good", "3.1.4", "--bad", "3.1.12", "--package", "greenlet"], "cannot bisect 'greenlet'"),
])
def test_bad_bisect_input_one_line_exit_2(run_cli, args, message):
    proc = run_cli("bisect", *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.integration
def test_bisect_names_the_first_bad_psycopg_release(run_cli, tmp_path, env_cache):
    """The issue's acceptance: psycopg 3.1.4 (good) .. 3.1.12 (bad), build binary -> 3.1.5."""
    env = {"GEVENTPROBE_CACHE_DIR": env_cache, "GEVENTPROBE_INSTALLER": "pip"}
    out = tmp_path / "b.json"
    proc = run_cli("bisect", "--good", "3.1.4", "--bad", "3.1.12", "--build", "binary",
                   "--json", str(out), env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert (result["first_bad"], result["last_good"]) == ("3.1.5", "3.1.4")
    steps = {s["release"]: s for s in result["steps"]}
    assert steps["3.1.5"]["result"]["verdict"] == "BLOCKING"
    assert steps["3.1.5"]["result"]["facts"]["psycopg"]["wait"] == "wait_c"
    assert steps["3.1.4"]["result"]["verdict"] == "OK"
    assert steps["3.1.4"]["result"]["facts"]["psycopg"]["wait"] != "wait_c"
    assert len(steps) <= bisect.max_steps(len(result["releases"]))
    # The evidence for the answer and for its neighbour, in words.
    assert "first bad release: psycopg 3.1.5" in proc.stdout
    assert "what changed: the workers' wait function went from" in proc.stdout
    assert "3.1.5 < 3.1.14" in proc.stdout

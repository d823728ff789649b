"""Named profiles, [tool.geventprobe] in pyproject.toml, precedence, and --fail-on."""

from __future__ import annotations

import dataclasses
import os

import pytest

from geventprobe import settings
from geventprobe.core.rules import exit_code
from geventprobe.errors import ProbeError
from geventprobe.record import BuildResult, Verdict
from geventprobe.settings import Thresholds, default_profile, parse_fail_on


def test_every_named_profile_loads():
    for name in settings.PROFILE_NAMES:
        assert settings.resolve(name).source.startswith("configs/default.toml")
    assert settings.resolve("default") == default_profile()


def test_quick_is_smaller_and_ci_is_stricter_with_calibration():
    default, quick, ci = (settings.resolve(n) for n in ("default", "quick", "ci"))
    assert quick.workload.workers < default.workload.workers
    assert quick.workload.greenlets < default.workload.greenlets
    assert ci.calibrate and not default.calibrate and not quick.calibrate
    for key in ("blocking_wait_factor", "blocking_hub_lag_fraction", "busy_wait_cpu"):
        assert getattr(ci.thresholds, key) < getattr(default.thresholds, key), key
    assert ci.fail_on == ("blocking", "busy-wait", "serialized", "failing")


def test_unknown_profile_names_the_choices():
    with pytest.raises(ProbeError, match=r"unknown profile 'fast'.*default, quick, ci"):
        settings.resolve("fast")


def write(path, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_nearest_pyproject_with_the_table_wins(tmp_path):
    write(tmp_path / "pyproject.toml", '[tool.geventprobe]\nprofile = "quick"\n')
    # A nearer pyproject.toml without the table is skipped, as ruff and pytest do.
    write(tmp_path / "svc" / "pyproject.toml", '[project]\nname = "svc"\n')
    found = settings.load_project(str(tmp_path / "svc" / "deep"))
    assert found.path == str(tmp_path / "pyproject.toml") and found.profile == "quick"


def test_project_paths_are_relative_to_the_pyproject(tmp_path):
    write(tmp_path / "pyproject.toml",
          '[tool.geventprobe]\napp = "site.wsgi:application"\n'
          'gunicorn-config = "deploy/gunicorn.conf.py"\n')
    p = settings.load_project(str(tmp_path))
    assert p.app == "site.wsgi:application"
    assert p.gunicorn_config == str(tmp_path / "deploy" / "gunicorn.conf.py")
    assert p.chdir == str(tmp_path)  # gunicorn runs where the project is, unless told


def test_precedence_default_named_pyproject_config(tmp_path):
    write(tmp_path / "pyproject.toml",
          '[tool.geventprobe]\nprofile = "ci"\nfail_on = ["blocking"]\n'
          '[tool.geventprobe.workload]\ngreenlets = 6\nwait-rounds = 4\n'
          '[tool.geventprobe.thresholds]\nbusy_wait_cpu = 0.3\n')
    config = write(tmp_path / "p.toml", "[workload]\nwait_rounds = 2\n")
    project = settings.load_project(str(tmp_path))
    p = settings.resolve(None, config, project)
    assert p.workload.workers == 2  # from ci.toml
    assert p.workload.greenlets == 6  # pyproject over ci.toml
    assert p.workload.wait_rounds == 2  # --config over pyproject (kebab-case accepted there)
    assert p.thresholds.busy_wait_cpu == 0.3 and p.calibrate  # pyproject; ci's calibration
    assert p.fail_on == ("blocking",)
    assert "configs/ci.toml" in p.source and "[tool.geventprobe]" in p.source
    # --profile on the command line wins over the project's profile.
    assert not settings.resolve("quick", None, project).calibrate


@pytest.mark.parametrize(("table", "message"), [
    ('profiel = "ci"', "unknown key profiel: valid keys are"),
    ('profile = "fast"', "unknown profile 'fast'"),
    ('preload = "yes"', "preload must be true or false"),
    ('dsn = "postgresql://u:pw@db/app"', "set GEVENTPROBE_DSN"),
    ('fail_on = ["blocking", "slow"]', "unknown verdict 'slow'"),
    ("workload = 3", "workload must be a table"),
    ("[tool.geventprobe.workload]\nworkerz = 2", "unknown key [workload].workerz"),
    ("[tool.geventprobe.thresholds]\nbusy_wait_cpu = -1", "[thresholds].busy_wait_cpu must be"),
])
def test_bad_project_settings_name_the_key(tmp_path, table, message):
    write(tmp_path / "pyproject.toml", f"[tool.geventprobe]\n{table}\n")
    with pytest.raises(ProbeError) as info:
        settings.resolve(None, None, settings.load_project(str(tmp_path)))
    assert message in str(info.value)
    assert "pyproject.toml" in str(info.value)
    assert "pw" not in str(info.value)


def test_http_rate_zero_turns_the_request_phase_off(tmp_path):
    config = write(tmp_path / "p.toml", "[workload]\nhttp_rate = 0\n")
    p = settings.resolve(None, config)
    assert p.workload.http_rate == 0
    w = p.workload  # no route pool: the greenlets, and one worker's connect window of 24
    assert w.connections() == (w.workers - 1) * w.greenlets + w.connect_min_connects


def test_the_budget_counts_the_connect_window_of_a_worker_with_few_greenlets():
    # One worker connects at a time, 24 at once (connect_min_connects), the others holding
    # their greenlets' 8 each; the route's pool opens after: 3 × 8 + 24, not 4 × (8 + 4).
    w = dataclasses.replace(settings.resolve(None, None).workload, workers=4, greenlets=8)
    assert w.connections() == 3 * 8 + 24
    w = dataclasses.replace(w, greenlets=16)
    assert w.connections() == 4 * (16 + w.http_pool)


def test_run_section_in_profile_files(tmp_path):
    config = write(tmp_path / "p.toml", '[run]\ncalibrate = true\nfail_on = "busy-wait"\n')
    p = settings.resolve(None, config)
    assert p.calibrate and p.fail_on == ("busy-wait",)
    bad = write(tmp_path / "bad.toml", "[run]\ncalibrate = 1\n")
    with pytest.raises(ProbeError, match=r"\[run\].calibrate must be true or false"):
        settings.resolve(None, bad)


@pytest.mark.parametrize(("text", "parsed"), [
    ("blocking,busy-wait", ("blocking", "busy-wait")),
    ("BLOCKING", ("blocking",)),
    (" busy-wait ", ("busy-wait",)),
    ("none", ()),
    (["blocking"], ("blocking",)),
])
def test_fail_on_parses(text, parsed):
    assert parse_fail_on(text, "--fail-on") == parsed


@pytest.mark.parametrize("text", ["slow", "", "none,blocking", 3])
def test_fail_on_refuses(text):
    with pytest.raises(ProbeError):
        parse_fail_on(text, "--fail-on")


def result(build: str, verdict: Verdict) -> BuildResult:
    return BuildResult(build=build, description="", baseline=False, expected=None,
                       verdict=verdict, cause=None, advice=None, evidence=[], facts={},
                       metrics=None, workers=[])


def test_fail_on_decides_which_findings_exit_1():
    busy = [result("c", Verdict.BUSY_WAIT), result("binary", Verdict.OK)]
    assert exit_code(busy) == 1
    assert exit_code(busy, fail_on=("blocking",)) == 0
    assert exit_code(busy, fail_on=("busy-wait",)) == 1
    assert exit_code([result("app", Verdict.BLOCKING)], fail_on=()) == 0
    assert exit_code([result("app", Verdict.ERROR)], fail_on=()) == 2  # a failure still fails


def test_default_thresholds_unchanged_by_profiles():
    # The verdict rules' defaults are what the calibrated README figures were judged with.
    assert settings.resolve("default").thresholds == Thresholds()


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--profile", "fast"], "unknown profile 'fast'"),
    (["run", "--fail-on", "blocking,slow"], "unknown verdict 'slow'"),
    (["run", "--gunicorn-config", "g.py"], "go with --app MODULE:CALLABLE"),
    (["run", "--app", "app:application", "--builds", "binary"], "drop --builds"),
    (["run", "--app", "not a spec!"], "is not MODULE:CALLABLE"),
    (["run", "--app", "app:application", "--chdir", "/nonexistent/x"], "is not a directory"),
    (["run", "--app", "app:application", "--gunicorn-config", "/nonexistent/g.py"],
     "cannot read --gunicorn-config /nonexistent/g.py"),
])
def test_bad_run_flags_one_line_exit_2(run_cli, args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_bad_pyproject_is_one_line_exit_2(run_cli, tmp_path):
    write(tmp_path / "pyproject.toml", "[tool.geventprobe.workload]\nworkerz = 2\n")
    proc = run_cli("run", cwd=str(tmp_path))
    assert proc.returncode == 2
    assert "unknown key [workload].workerz" in proc.stderr and "pyproject.toml" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("line", "message"), [
    # issue 19, row 22: a share above 1 can never be reached, so the rule could never fire.
    ("[thresholds]\nroute_failing_share = 1.5",
     "[thresholds].route_failing_share must be at most 1 (a share of the requests), got 1.5"),
    ("[thresholds]\nconnect_stall_share = 2", "connect_stall_share must be at most 1"),
    ("[thresholds]\nbusy_wait_runnable = 1.2", "busy_wait_runnable must be at most 1"),
    # A factor of 1 or less fires on every healthy run (about 1 when nothing waits).
    ("[thresholds]\nblocking_wait_factor = 1.0", "blocking_wait_factor must be more than 1"),
    ("[thresholds]\nroute_serialized_factor = 0.5", "route_serialized_factor must be more than 1"),
    # The ranges the command line enforces, for the same keys in a file.
    ("[workload]\ngreenlets = 1", "[workload].greenlets must be at least 2"),
    ("[workload]\nworkers = 65", "[workload].workers must be at most 64"),
])
def test_shares_and_factors_out_of_range_are_refused(tmp_path, line, message):
    config = write(tmp_path / "p.toml", line + "\n")
    with pytest.raises(ProbeError) as info:
        settings.resolve(None, config)
    assert message in str(info.value)


def test_shares_at_their_bounds_are_accepted(tmp_path):
    config = write(tmp_path / "p.toml", "[thresholds]\nroute_failing_share = 1\n"
                   "connect_stall_share = 1.0\nbusy_wait_runnable = 0.99\n"
                   "blocking_wait_factor = 1.2\n[workload]\ngreenlets = 2\nworkers = 64\n")
    p = settings.resolve(None, config)
    assert p.thresholds.route_failing_share == 1.0 and p.workload.workers == 64


def test_a_small_server_narrows_the_connect_window_instead_of_refusing():
    # A server with 9 free connections and a run of one worker of 2 greenlets: the window
    # opens 9, not the 24 the profile asks (refused before with "needs 24").
    w = dataclasses.replace(settings.resolve(None, None).workload, workers=1, greenlets=2)
    fitted = w.fitted(9)
    assert fitted.connect_min_connects == 9 and fitted.connections() <= 9
    assert w.fitted(100) is w
    # Never under the greenlets: a server too small for those is still refused by the budget.
    assert w.fitted(1).connect_min_connects == 2

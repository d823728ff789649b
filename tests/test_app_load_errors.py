"""``run --app`` with an app that cannot load: always the app's own exception and line.

gunicorn's master raises ``HaltServer('Worker failed to boot.')`` once a worker
failed to import the app; the worker has already written its own record by
then. The report must name the worker's record (the app's exception and its
line), never the master's HaltServer, and must not call it a ``--preload``
failure when there was no preload. The outcome depended on a race, so every
case runs several times.
"""

from __future__ import annotations

import pytest

from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.worker.record import AppError

pytestmark = pytest.mark.integration

REPEAT = 4  # 10 when checking a change here: the old race lost 6 of 15

# app.py, then what the one error line must say (exception and line)
CASES = {
    "missing-dependency": ("import not_a_real_dependency_xyz\napplication = None\n",
                           "app:application",
                           "No module named 'not_a_real_dependency_xyz'", "app.py, line 1"),
    "missing-module": (None, "no_such_module_xyz:application",
                       "No module named 'no_such_module_xyz'", None),
    "missing-callable": ("x = 1\n", "app:no_such_callable", "no_such_callable", None),
    "raises": ("x = 1\nraise RuntimeError('app refused to start')\n", "app:application",
               "RuntimeError: app refused to start", "app.py, line 2"),
    "sys-exit": ("import sys\nsys.exit(3)\n", "app:application", "SystemExit: 3",
                 "app.py, line 2"),
}


@pytest.fixture(scope="module")
def pg_dsn():
    with EmbeddedPostgres(max_connections=40) as pg:
        yield pg.dsn


@pytest.mark.parametrize("attempt", range(REPEAT))
@pytest.mark.parametrize("case", list(CASES))
def test_app_load_failure_names_the_apps_own_error(run_cli, pg_dsn, tmp_path, case, attempt):
    source, app, error, origin = CASES[case]
    if source is not None:
        (tmp_path / "app.py").write_text(source)
    proc = run_cli("run", "--profile", "quick", "--app", app, "--workers", "2",
                   "--chdir", str(tmp_path), env={"GEVENTPROBE_DSN": pg_dsn})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("geventprobe: error: your app failed to load while the gunicorn "
                           "worker imported the app"), last
    assert "HaltServer" not in last and "--preload" not in last, last
    assert error in last, last
    if origin:
        assert origin in last, last


WORKER = AppError(pid=12, where="while the gunicorn worker imported the app",
                  error="ModuleNotFoundError: No module named 'x'", origin="app.py, line 1")
HALT = AppError(pid=10, where="while the gunicorn master loaded the app (--preload)",
                error="HaltServer: <HaltServer 'Worker failed to boot.' 3>", origin=None)
MASTER = AppError(pid=10, where="while the gunicorn master loaded the app (--preload)",
                  error="ModuleNotFoundError: No module named 'x'", origin="app.py, line 1")


def test_the_workers_record_wins_over_the_masters():
    from geventprobe.processes.gunicorn_workers import app_error

    assert app_error({10: HALT, 12: WORKER}, preload=False) is WORKER
    assert app_error({10: HALT}, preload=False) is None  # never HaltServer as the cause
    assert app_error({10: MASTER}, preload=True) == MASTER
    assert "--preload" not in app_error({10: MASTER}, preload=False).where

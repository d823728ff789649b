"""The slow tier: every example through the harness AND through geventprobe, each against
the class its manifest expects (``pytest -m slow tests/test_harness_agreement.py``, ~7 min
on a 2-core machine; the default tier's share is tests/test_harness_runs.py).

For each case of each ``examples/**/example.json``: the harness (plain server, no
geventprobe) must show ``expect``; ``geventprobe run`` with the case's ``geventprobe``
arguments (quick profile, in the example's directory) must give it too: the first of the
user's routes or tasks that is not OK, else the app's or worker's own verdict
(``manifests.geventprobe_class``). A manifest whose ``expect`` is changed fails both.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from manifests import EXAMPLES, case_id, cases, geventprobe_class
from test_harness_runs import Harness

from geventprobe.processes.postgres import SUPERUSER, EmbeddedPostgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CASES = cases()


@pytest.fixture(scope="module")
def pg():
    with EmbeddedPostgres(max_connections=150) as server:
        yield server


@pytest.mark.parametrize("example, c", CASES, ids=[case_id(e, c) for e, c in CASES])
def test_the_harness_agrees(example, c, pg):
    args = [str(EXAMPLES / example)] + (["--case", c["name"]] if c.get("name") else [])
    run = Harness(*args, dsn=f"postgresql://{SUPERUSER}@127.0.0.1:{pg.port}/postgres").wait()
    try:
        assert run.figures["shows"] == c["expect"], run.stdout + run.stderr
    finally:
        run.assert_nothing_left()


@pytest.mark.parametrize("example, c", CASES, ids=[case_id(e, c) for e, c in CASES])
def test_geventprobe_agrees(example, c, pg, run_cli, tmp_path):
    out = tmp_path / "r.json"
    # `python worker.py` is this venv's python, as a user's shell in it would find it
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    proc = run_cli("run", "--profile", "quick", "--chdir", str(EXAMPLES / example),
                   *c["geventprobe"], "--json", str(out),
                   env={"GEVENTPROBE_DSN": pg.dsn, "PATH": path, **c.get("env", {})},
                   timeout=600)
    assert out.exists(), proc.stdout + proc.stderr
    (build,) = json.loads(out.read_text())["builds"]
    assert geventprobe_class(build) == c["expect"], (proc.stdout, build["verdict"])
    assert proc.returncode == (0 if c["expect"] == "OK" else 1)

"""A command line becomes one frozen plan, once: profile layers, flags, the target.

Pure (the app case reads the example's gunicorn settings in a throwaway child, nothing
else is started): the target each set of flags gets, the DSN's own ``connect_timeout``
applied without changing any profile in place, and the combinations refused up front.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from geventprobe import settings
from geventprobe.app.gunicorn_app import GunicornApp
from geventprobe.core import plan
from geventprobe.core.calibrate import CalibrationOnly
from geventprobe.core.drivers import DriverBuilds
from geventprobe.errors import ProbeError
from geventprobe.settings import ProjectSettings
from geventprobe.versions.matrix import VersionMatrix

NONE = ProjectSettings()
EXAMPLES = Path(__file__).parent.parent / "examples"


def request(**flags) -> plan.RunRequest:
    return plan.RunRequest(command=["geventprobe", "run"], **flags)


def test_the_built_in_builds():
    p = plan.for_run(request(builds="binary,psycopg2", workers=2, preload=True), NONE)
    assert isinstance(p.target, DriverBuilds) and p.target.named
    assert [b.name for b in p.target.builds] == ["binary", "psycopg2"]
    assert p.workload.workers == 2 and p.preload and p.target.steps() == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.preload = False


def test_the_dsns_connect_timeout_is_applied_without_changing_a_profile():
    base = settings.resolve(None, None, NONE)
    p = plan.for_run(request(dsn="host=db connect_timeout=7"), NONE)
    assert p.workload.connect_timeout_s == 7
    assert base.workload.connect_timeout_s != 7  # the resolved profile was not changed
    assert settings.resolve(None, None, NONE) == base


def test_a_version_matrix_and_what_it_refuses():
    p = plan.for_run(request(builds="binary", psycopg="3.1.12,3.3.8"), NONE)
    assert isinstance(p.target, VersionMatrix) and p.target.steps() == 2
    with pytest.raises(ProbeError, match="--calibrate cannot be combined with --psycopg"):
        plan.for_run(request(psycopg="3.3.8", calibrate=True), NONE)
    with pytest.raises(ProbeError, match="--app probes the driver your app imports"):
        plan.for_run(request(app="app:application", psycopg="3.3.8"), NONE)


def test_the_users_app_takes_its_workers_and_preload_from_its_config():
    p = plan.for_run(request(app="app:application", chdir=str(EXAMPLES / "preload")), NONE)
    assert isinstance(p.target, GunicornApp) and p.target.steps() == 1
    assert p.preload is True and p.workload.workers == p.target.workers == 2
    assert p.target.app_record()["app"] == "app:application"
    assert list(p.target.imports()) == []


def test_calibrate_alone():
    p = plan.for_calibrate(["geventprobe", "calibrate"], workers=1)
    assert isinstance(p.target, CalibrationOnly) and p.calibrate and p.target.steps() == 0

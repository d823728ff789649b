"""Pure helpers: statistics, metrics from a worker report, config, redaction, build names."""

from __future__ import annotations

import pytest

from geventprobe.core import stats
from geventprobe.core.builds import parse_builds
from geventprobe.core.metrics import worker_figures
from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.settings import load_profile
from geventprobe.worker.record import ProbeResult


def test_nearest_rank_percentiles():
    values = list(range(1, 101))
    s = stats.summarize(values)
    assert (s.p50_us, s.p90_us, s.p99_us, s.max_us) == (50, 90, 99, 100)
    assert stats.summarize([]).p50_us is None


def test_histogram_buckets_are_ordered_and_count_everything():
    h = stats.histogram([1, 2, 3, 50, 51, 1000])
    assert sum(h.values()) == 6
    assert [int(k) for k in h] == sorted(int(k) for k in h)


class FakeCpu:
    """Samples of a worker that used 0.5 CPU-s/s, waited 0.1 s/s for a CPU, slept 100×/s."""

    def delta(self, pid, metric, start, end):
        return {"cpu": 0.5, "run_delay": 0.1, "voluntary": 100.0}[metric] * (end - start)

    def cpu_seconds(self, pid, start, end):
        return self.delta(pid, "cpu", start, end)


def test_worker_figures_from_a_report():
    w = 0.1
    report = ProbeResult(
        pid=42, wait_seconds=w,
        windows=[[10.0, 10.1], [10.2, 10.5]],
        # ticks due inside the windows were late by 1 ms and 80 ms; the one outside by 900 ms
        heartbeat_expected=[10.05, 10.3, 10.9],
        heartbeat_lag=[0.001, 0.08, 0.9],
        select1_latencies_us=[100, 200, 300, 400],
        select1_window=[11.0, 13.0],
    )
    f = worker_figures(report, FakeCpu())
    assert f.wait_factors == [pytest.approx(1.0), pytest.approx(3.0)]
    assert f.wait_factor == pytest.approx(2.0)
    assert f.max_hub_lag_ms == pytest.approx(80.0)
    assert f.cpu_during_waits == pytest.approx(0.5)
    assert f.runnable_during_waits == pytest.approx(0.6)
    assert f.sleeps_per_s_during_waits == pytest.approx(100.0)
    assert f.select1_qps == pytest.approx(2.0)
    assert f.cpu_per_query_us == pytest.approx(0.5 * 2.0 / 4 * 1e6)


def test_default_profile_ships_in_the_package():
    p = load_profile(None)
    assert p.workload.workers == 4 and p.workload.greenlets == 16
    assert p.thresholds.blocking_wait_factor == 2.0


@pytest.mark.parametrize(("text", "message"), [
    ("[thresholds]\nbusy_wait_cpuu = 0.2\n", "unknown key [thresholds].busy_wait_cpuu"),
    ("[workload]\nworkers = 'four'\n", "[workload].workers must be a number"),
    ("[workload]\nworkers = 2.5\n", "must be a whole number"),
    ("[workload]\nworkers = 0\n", "must be greater than 0"),
    ("[nope]\n", "unknown section [nope]"),
    ("workers = = 3", "not valid TOML"),
])
def test_bad_profiles_name_the_key(tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProbeError, match=None) as info:
        load_profile(str(path))
    assert message in str(info.value)


def test_profile_overrides_default(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("[workload]\ngreenlets = 4\n[thresholds]\nbusy_wait_cpu = 0.3\n")
    p = load_profile(str(path))
    assert p.workload.greenlets == 4 and p.workload.workers == 4
    assert p.thresholds.busy_wait_cpu == 0.3


@pytest.mark.parametrize("dsn", [
    "postgresql://alice:s3cr3t@db.example:5432/app",
    "host=db user=alice password=s3cr3t dbname=app",
    "host=db password='s3cr3t' dbname=app",
    "postgres://db/app?user=alice&password=s3cr3t",
    "connection to server failed for postgresql://alice:s3cr3t@db/app: timeout",
])
def test_redact_removes_passwords(dsn):
    out = redact(dsn)
    assert "s3cr3t" not in out and "***" in out


def test_redact_removes_pgpassword(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "hunter22")
    assert "hunter22" not in redact("auth failed for hunter22")


@pytest.mark.parametrize("variable, value", [
    ("GEVENTPROBE_DSN", "host=db user=app password=Tr0ub4dor dbname=app"),
    ("GEVENTPROBE_DSN", "postgresql://app:Tr0ub4dor@db/app"),
    ("DATABASE_URL", "postgresql://app:Tr0ub4dor@db/app?sslmode=require"),
    ("PGPASSWORD", "Tr0ub4dor"),
])
def test_a_known_password_is_masked_in_free_text(monkeypatch, variable, value):
    # issue 19 row 23: an app's error message quoting the password, no DSN syntax around it.
    monkeypatch.setenv(variable, value)
    assert redact("RuntimeError: login refused with Tr0ub4dor, try again") == \
        "RuntimeError: login refused with ***, try again"


def test_remembered_passwords_as_written_and_as_read(monkeypatch):
    from geventprobe import dsn

    monkeypatch.setattr(dsn, "_remembered", set())
    dsn.remember("postgresql://app:p%40ss%20word@db/app")
    dsn.remember("host=db password='it\\'s' dbname=x")
    out = redact("tried p@ss word, p%40ss%20word and it's")
    assert out == "tried ***, *** and ***"
    # A short password is masked where it stands alone, not inside every other word.
    dsn.remember("host=db password=ab")
    assert redact("ab: cab abc ab") == "***: cab abc ***"


def test_build_names():
    builds, named = parse_builds(None)
    assert [b.name for b in builds] == ["binary", "c", "python", "psycopg2-green", "psycopg2"]
    assert not named
    builds, named = parse_builds("psycopg2, binary,binary")
    assert [b.name for b in builds] == ["psycopg2", "binary"] and named
    with pytest.raises(ProbeError, match="unknown build nope"):
        parse_builds("binary,nope")

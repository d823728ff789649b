"""The embedded server's cluster: made by initdb once, then copied from the user cache dir."""

from __future__ import annotations

import os

import psycopg
import pytest

from geventprobe.cache_dir import CACHE_ENV
from geventprobe.processes.postgres import EmbeddedPostgres


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(path))
    return path


def _answers(pg: EmbeddedPostgres) -> bool:
    with psycopg.connect(pg.dsn) as conn:
        return conn.execute("SELECT 1").fetchone() == (1,)


def test_the_second_server_is_copied_from_the_first(cache):
    with EmbeddedPostgres(max_connections=20) as pg:
        assert not pg.from_template and _answers(pg)
    kept = list((cache / "pgdata").iterdir())
    assert len(kept) == 1 and (kept[0] / "PG_VERSION").is_file()
    with EmbeddedPostgres(max_connections=20) as pg:
        assert pg.from_template and _answers(pg)
        assert not os.path.exists(os.path.join(pg.root, "initdb.log"))


def test_a_kept_cluster_the_server_refuses_is_dropped(cache):
    with EmbeddedPostgres(max_connections=20):
        pass
    kept = next((cache / "pgdata").iterdir())
    (kept / "PG_VERSION").write_text("9\n")  # a cluster of another major version
    with EmbeddedPostgres(max_connections=20) as pg:
        assert not pg.from_template and _answers(pg)
    assert not kept.exists()


def test_a_server_with_a_password_runs_initdb(cache):
    with EmbeddedPostgres(max_connections=20, password="s3cret") as pg:
        assert not pg.from_template
    assert not (cache / "pgdata").exists()

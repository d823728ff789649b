"""The embedded server's cluster: made by initdb once, then copied from the user cache dir."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import psycopg
import pytest

from geventprobe.cache_dir import CACHE_ENV
from geventprobe.processes import children
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


def _no_temp_dir_named(monkeypatch) -> None:
    for name in ("TMPDIR", "TEMP", "TMP"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # tempfile caches what it found


def test_temp_dirs_go_to_memory_unless_the_user_names_one(monkeypatch, tmp_path):
    _no_temp_dir_named(monkeypatch)
    roomy = os.path.isdir(children.MEMORY_DIR) and \
        shutil.disk_usage(children.MEMORY_DIR).free >= children.MEMORY_ROOM
    assert children.temp_root() == (children.MEMORY_DIR if roomy else tempfile.gettempdir())
    monkeypatch.setattr(children, "MEMORY_ROOM", 1 << 62)  # more than any machine has
    assert children.temp_root() == tempfile.gettempdir() != children.MEMORY_DIR
    monkeypatch.setenv("TMP", str(tmp_path))
    assert children.temp_root() == str(tmp_path)
    monkeypatch.setenv("TMPDIR", "/proc")  # named, so used (and refused), not skipped
    assert children.temp_root() == "/proc"


def test_the_cluster_lives_in_memory_and_leaves_nothing_there(monkeypatch, cache):
    if not os.path.isdir(children.MEMORY_DIR) or \
            shutil.disk_usage(children.MEMORY_DIR).free < children.MEMORY_ROOM:
        pytest.skip(f"{children.MEMORY_DIR} is missing or has under 1 GiB free here: the "
                    "cluster goes to the system temp dir (tested by every other run)")
    _no_temp_dir_named(monkeypatch)
    before = set(os.listdir(children.MEMORY_DIR))
    with EmbeddedPostgres(max_connections=20) as pg:
        assert pg.root.startswith(children.MEMORY_DIR + "/") and _answers(pg)
        # Killed, it can clean nothing up: what it had in shared memory was in its data dir.
        os.kill(pg.proc.pid, signal.SIGKILL)
        pg.proc.wait()
    assert set(os.listdir(children.MEMORY_DIR)) - before == set()

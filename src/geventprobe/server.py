"""What the parent asks the PostgreSQL server before a run: is it there, which version.

The parent is not gevent-patched, so it may use any driver that imports; it
tries psycopg first and falls back to psycopg2 (a mismatched psycopg-c makes
``import psycopg`` fail, FIELD-NOTES §2).
"""

from __future__ import annotations

from dataclasses import dataclass

from geventprobe.dsn import redact
from geventprobe.errors import ProbeError


@dataclass(frozen=True)
class ServerInfo:
    """The PostgreSQL server the probe ran against."""

    version: str
    """``SHOW server_version``."""
    version_num: int
    """``SHOW server_version_num``."""
    max_connections: int
    """``SHOW max_connections``."""
    connections_in_use: int
    """Backends in ``pg_stat_activity`` when the run started."""
    embedded: bool
    """True when geventprobe started this server itself."""
    dsn: str
    """Where it was reached, password redacted."""


def _connect(dsn: str, connect_timeout: int):
    try:
        import psycopg

        return psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True,
                               application_name="geventprobe")
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(dsn, connect_timeout=connect_timeout,
                                application_name="geventprobe")
        conn.autocommit = True
        return conn


def first_error_line(exc: BaseException) -> str:
    """The first line of a driver error, redacted (libpq messages can quote the DSN)."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def query_server(dsn: str, *, embedded: bool, connect_timeout: int = 10) -> ServerInfo:
    """Connect once and read the server's version and connection budget."""
    try:
        conn = _connect(dsn, connect_timeout)
    except Exception as exc:
        raise ProbeError(
            f"cannot connect to PostgreSQL ({first_error_line(exc)}): "
            "check --dsn, or omit it to use the embedded server"
        ) from exc
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
            " current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        version, num, max_conn, in_use = cur.fetchone()
    finally:
        conn.close()
    return ServerInfo(
        version=version,
        version_num=int(num),
        max_connections=int(max_conn),
        connections_in_use=int(in_use),
        embedded=embedded,
        dsn=redact(dsn) if dsn else "(from PG* environment)",
    )

"""What the parent asks the PostgreSQL server before a run: is it there, which version.

The parent is not gevent-patched, so it may use any driver that imports; it
tries psycopg first and falls back to psycopg2 (a mismatched psycopg-c makes
``import psycopg`` fail, docs/field-facts.md).

It sends one read-only query (settings and a count of ``pg_stat_activity``),
on a connection with ``application_name=geventprobe``, a ``statement_timeout``
and ``default_transaction_read_only=on``. A failed connection becomes one line
that names the problem (refused, no answer, wrong password, no such database,
not PostgreSQL, server full...) and its fix, with any password redacted.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

from geventprobe.dsn import redact, remember, remember_secret
from geventprobe.errors import ProbeError

APPLICATION_NAME = "geventprobe"
PARENT_STATEMENT_TIMEOUT_MS = 10000


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
    reserved_connections: int = 0
    """Slots our role may not use: ``superuser_reserved_connections`` (+ ``reserved_connections``
    on PostgreSQL 16+) unless we connect as a superuser."""
    role_connection_limit: int = -1
    """``rolconnlimit`` of the role we connect as (-1: none)."""
    role_connections_in_use: int = 0
    """Backends of that role when the run started."""

    def free_connections(self) -> int:
        """How many more connections this role can open now."""
        free = self.max_connections - self.reserved_connections - self.connections_in_use
        if self.role_connection_limit >= 0:
            free = min(free, self.role_connection_limit - self.role_connections_in_use)
        return max(0, free)


def _connect(dsn: str, connect_timeout: int):
    options = (f"-c statement_timeout={PARENT_STATEMENT_TIMEOUT_MS} "
               "-c default_transaction_read_only=on")
    try:
        import psycopg

        return psycopg.connect(dsn, connect_timeout=connect_timeout, autocommit=True,
                               application_name=APPLICATION_NAME, options=options)
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(dsn, connect_timeout=connect_timeout,
                                application_name=APPLICATION_NAME, options=options)
        conn.autocommit = True
        return conn


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The database errors of whichever driver ``_connect`` used (DB-API ``Error``)."""
    errors = []
    for name in ("psycopg", "psycopg2"):
        module = sys.modules.get(name)
        if module is not None:
            errors.append(module.Error)
    return tuple(errors)


def first_error_line(exc: BaseException) -> str:
    """The first line of a driver error, redacted (libpq messages can quote the DSN)."""
    text = str(exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__)


def parse_dsn(dsn: str) -> dict[str, str]:
    """The DSN's keywords (libpq's own parser); ProbeError naming the problem if malformed.

    The DSN's password is a known secret from here on: a parse error may quote a fragment
    of it that no DSN syntax gives away.
    """
    if not dsn:
        return {}
    remember(dsn)
    try:
        try:
            from psycopg.conninfo import conninfo_to_dict

            params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
        except ImportError:
            from psycopg2.extensions import parse_dsn as _parse

            params = _parse(dsn)
    except ImportError:
        return {}
    except Exception as exc:
        problem = first_error_line(exc).removeprefix("invalid dsn: ")
        raise ProbeError(_malformed(redact(problem))) from exc
    # psycopg's parser takes any port; libpq would only fail later, as an unknown host.
    port = params.get("port", "")
    if port and not all(p.strip().isdigit() for p in port.split(",")):
        raise ProbeError(_malformed(f'port "{redact(port)}" is not a number'))
    return params


def _malformed(problem: str) -> str:
    return (f"malformed DSN ({problem}): write it as libpq key=value pairs "
            "(host=db port=5432 dbname=app user=me) or as a URI (postgresql://me@db:5432/app)")


def _params(dsn: str) -> dict[str, str]:
    try:
        return parse_dsn(dsn)
    except ProbeError:
        return {}


def _where(dsn: str) -> str:
    """``host:port`` the DSN (or the PG* environment) points at, for messages; with no host at
    all libpq uses its default unix socket, never localhost's TCP port."""
    params = _params(dsn)
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or ""
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    if not host:
        from geventprobe.processes.delay_proxy import SOCKET_DIRS

        found = [d for d in SOCKET_DIRS if os.path.exists(f"{d}/.s.PGSQL.{port}")]
        host = found[0] if found else ""
        if not host:
            return f"the default unix socket (port {port}; the DSN names no host)"
    if host.startswith("/"):
        return f"the unix socket in {host} (port {port})"
    return f"{host}:{port}"


def password_used(dsn: str, connect_timeout: int) -> str | None:
    """The password libpq found for ``dsn`` in the user's password file (``~/.pgpass`` or
    ``PGPASSFILE``), when neither the DSN nor ``PGPASSWORD`` gives one; else None.

    The ``--rtt`` proxy listens on another port than the server's, which a ``.pgpass`` entry
    names: its workers get this password in their DSN instead (through their environment,
    never a command line). libpq itself reads the file (``PQpass``), with its own rules.
    """
    if parse_dsn(dsn).get("password") or os.environ.get("PGPASSWORD"):
        return None
    try:
        conn = _connect(dsn, connect_timeout)
    except Exception:
        return None  # query_server has just connected: a failure here is said by the workers
    try:
        info = getattr(conn, "info", None)
        password = getattr(info, "password", None)
    finally:
        conn.close()
    if password:
        remember_secret(password)  # masked wherever it appears from now on
    return password or None


def explain_connect_error(exc: BaseException, dsn: str, connect_timeout: int,
                          needed: int | None = None) -> str:
    """One line: what went wrong connecting to the server, and how to fix it."""
    remember(dsn)
    detail = first_error_line(exc)
    text = str(exc).lower()
    where = _where(dsn)
    params = _params(dsn)
    user = params.get("user") or os.environ.get("PGUSER") or "(your login name)"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user

    def line(problem: str, fix: str) -> str:
        return f"cannot connect to PostgreSQL at {where}: {problem}: {fix}"

    if "timeout expired" in text:
        return line(f"no answer within {connect_timeout} s (connect_timeout)",
                    "check the host and port in the DSN, that the server is up, and that no "
                    "firewall drops the connection")
    if "connection refused" in text:
        return line("connection refused (nothing listens there)",
                    "check the port in the DSN and that PostgreSQL is running and listening "
                    "on that address (listen_addresses)")
    if ("could not translate host name" in text or "failed to resolve host" in text
            or "name or service not known" in text):
        return line("unknown host name", "check the host in the DSN")
    if "network is unreachable" in text or "no route to host" in text:
        return line("host unreachable", "check the host in the DSN and this machine's network")
    if "password authentication failed" in text:
        return line(f"wrong password for user {user}",
                    "fix the password in GEVENTPROBE_DSN (or PGPASSWORD, ~/.pgpass)")
    if "no password supplied" in text:
        return line(f"the server wants a password for user {user} and none was given",
                    "put password=... in GEVENTPROBE_DSN, or set PGPASSWORD or ~/.pgpass")
    if "database" in text and "does not exist" in text:
        return line(f'database "{dbname}" does not exist',
                    "name an existing database in the DSN (dbname=postgres always exists)")
    if "role" in text and "does not exist" in text:
        return line(f'role "{user}" does not exist', "name an existing user in the DSN")
    if "too many clients" in text or "remaining connection slots" in text:
        more = f"; the run needs {needed} at once" if needed else ""
        return line(f"the server refuses more connections ({detail}){more}",
                    "wait for other clients to disconnect, lower --workers/--greenlets, or "
                    "raise the server's max_connections")
    if "no pg_hba.conf entry" in text:
        return line("the server does not accept this client (no pg_hba.conf entry)",
                    "connect as a user/database the server's pg_hba.conf allows, or ask its "
                    "administrator")
    if ("invalid response to ssl negotiation" in text
            or "expected authentication request" in text or "received invalid response" in text):
        return line(f"something answers there but it is not PostgreSQL ({detail})",
                    "check the port in the DSN (another program holds it)")
    if "server closed the connection unexpectedly" in text:
        return line(f"the connection was closed at once ({detail})",
                    "check the host and port in the DSN, and the server's log")
    return line(detail, "check the DSN (--dsn or GEVENTPROBE_DSN), or omit it to use the "
                        "embedded server")


def query_server(dsn: str, *, embedded: bool, connect_timeout: int = 10,
                 needed: int | None = None) -> ServerInfo:
    """Connect once and read the server's version and connection budget."""
    parse_dsn(dsn)  # a malformed DSN gets its own message, not a connection failure
    try:
        conn = _connect(dsn, connect_timeout)
    except Exception as exc:
        raise ProbeError(explain_connect_error(exc, dsn, connect_timeout, needed)) from exc
    try:
        cur = conn.cursor()
        # Connected, then the connection went (the server restarted, a proxy or pooler in
        # between went away) or the query ran out of the statement_timeout set above: one
        # line, not an internal error.
        cur.execute(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int,"
            " current_setting('max_connections')::int,"
            " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
            " (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),"
            " current_setting('superuser_reserved_connections')::int,"
            " coalesce(current_setting('reserved_connections', true), '0')::int,"
            " (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user),"
            " (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user"
            "  AND backend_type = 'client backend')"
        )
        (version, num, max_conn, in_use, superuser, su_reserved, reserved, role_limit,
         role_in_use) = cur.fetchone()
    except _driver_errors() as exc:
        remember(dsn)
        # psycopg 3 says ``broken``; psycopg2's ``closed`` is 2 once the connection is lost.
        lost = getattr(conn, "broken", False) or getattr(conn, "closed", 0) == 2
        what = "closed the connection" if lost else "refused the query"
        raise ProbeError(f"PostgreSQL at {_where(dsn)} {what} while geventprobe read its "
                         f"settings ({first_error_line(exc)}): check the server's log, and run "
                         "again") from exc
    finally:
        with contextlib.suppress(Exception):  # a connection already gone
            conn.close()
    return ServerInfo(
        version=version,
        version_num=int(num),
        max_connections=int(max_conn),
        connections_in_use=int(in_use),
        embedded=embedded,
        dsn=redact(dsn) if dsn else "(from PG* environment)",
        # Superusers may use the reserved slots. The counts include this query's own
        # backend, which is gone by the time the workers connect: one spare, on purpose.
        reserved_connections=0 if superuser else int(su_reserved) + int(reserved),
        role_connection_limit=-1 if superuser or role_limit is None else int(role_limit),
        role_connections_in_use=int(role_in_use),
    )

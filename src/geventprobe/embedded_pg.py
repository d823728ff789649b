"""A throwaway PostgreSQL cluster: initdb into a temp dir, serve on loopback, delete.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to an
unprivileged user (``postgres`` if the system has one, else ``nobody``). The
server listens on 127.0.0.1 and on a unix socket in its own temp dir, trusts
local connections (it holds no data and lives for one run) and is sized for the
run's connections.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

from geventprobe import procs
from geventprobe.errors import ProbeError

SUPERUSER = "geventprobe"
INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) or pass --dsn to use your own server"
)


@dataclass(frozen=True)
class PgBinaries:
    """Where the server programs are."""

    bindir: str

    @property
    def initdb(self) -> str:
        return os.path.join(self.bindir, "initdb")

    @property
    def postgres(self) -> str:
        return os.path.join(self.bindir, "postgres")


def _version_key(path: str) -> tuple:
    parts = os.path.basename(os.path.dirname(path)).split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def find_binaries() -> PgBinaries:
    """Find initdb and postgres: PATH, then ``pg_config --bindir``, then Debian's layout."""
    candidates: list[str] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True)
            candidates.append(out.stdout.strip())
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(p + "/x"),
                    reverse=True)
    candidates.extend(debian)
    for bindir in candidates:
        binaries = PgBinaries(bindir)
        if all(os.access(p, os.X_OK) for p in (binaries.initdb, binaries.postgres)):
            return binaries
    raise ProbeError(f"no PostgreSQL server programs (initdb, postgres) found: {INSTALL_HINT}")


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account the cluster runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ProbeError("running as root and no 'postgres' or 'nobody' account to run "
                     "PostgreSQL as: create one (useradd postgres) or pass --dsn")


def _first_untraversable(path: str, uid: int, gid: int) -> str | None:
    """The first directory on ``path`` that ``uid`` may not enter, if any."""
    path = os.path.abspath(path)
    while True:
        st = os.stat(path)
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid == gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedPostgres:
    """Context manager: a running throwaway cluster; ``dsn`` tells workers where it is."""

    def __init__(self, max_connections: int, start_timeout: float = 60.0):
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.root: str | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"

    @property
    def log_path(self) -> str:
        return os.path.join(self.root or "", "postgres.log")

    def __enter__(self) -> EmbeddedPostgres:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        binaries = find_binaries()
        account = _unprivileged_user()
        try:
            # Short path: the unix socket lives here and socket paths max out at 107 bytes.
            self.root = tempfile.mkdtemp(prefix="geventprobe-pg-")
        except OSError as exc:
            raise ProbeError(f"cannot create a temp dir for the embedded server ({exc}): "
                             "set TMPDIR to a writable directory") from exc
        uid = gid = None
        if account is not None:
            uid, gid = account.pw_uid, account.pw_gid
            os.chown(self.root, uid, gid)
            blocked = _first_untraversable(os.path.dirname(self.root), uid, gid)
            if blocked:
                raise ProbeError(
                    f"the embedded server runs as user {account.pw_name}, who cannot enter "
                    f"{blocked}: set TMPDIR to a directory it can reach (e.g. TMPDIR=/tmp)")
        data = os.path.join(self.root, "data")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", HOME=self.root)
        init = subprocess.run(
            [binaries.initdb, "-D", data, "-U", SUPERUSER, "--auth=trust", "--no-sync",
             "-E", "UTF8", "--locale=C", "--no-instructions"],
            capture_output=True, text=True, user=uid, group=gid,
            extra_groups=[] if uid is not None else None, cwd=self.root, env=env, check=False,
        )
        if init.returncode != 0:
            last = (init.stderr or init.stdout).strip().splitlines()[-1:]
            raise ProbeError(f"initdb failed ({' '.join(last)}): {INSTALL_HINT}")
        for attempt in range(3):
            self.port = free_port()
            self.proc = procs.spawn(
                [binaries.postgres, "-D", data, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                 "-c", f"max_connections={self.max_connections}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "shared_buffers=32MB",
                 "-c", "logging_collector=off"],
                env=env, log_path=self.log_path, cwd=self.root, user=uid, group=gid,
            )
            if self._wait_ready():
                return
            procs.stop(self.proc, signal.SIGINT)
            if "could not bind" not in self._log_tail() or attempt == 2:
                break
        raise ProbeError(f"the embedded PostgreSQL did not start ({self._log_tail()}): "
                         "see its log above, or pass --dsn")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if "FATAL" in ln or "ERROR" in ln]
            return lines[-1] if lines else "no error in its log"
        except OSError:
            return "no log"

    def _wait_ready(self) -> bool:
        sock = os.path.join(self.root, f".s.PGSQL.{self.port}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            # The socket file appears once the postmaster accepts connections; the
            # pid file's last line says "ready" once recovery is over.
            if os.path.exists(sock) and self._pidfile_ready():
                return True
            time.sleep(0.05)
        return False

    def _pidfile_ready(self) -> bool:
        try:
            with open(os.path.join(self.root, "data", "postmaster.pid")) as f:
                return "ready" in f.read()
        except OSError:
            return False

    def close(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and delete its directory."""
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGINT, timeout=10)
            self.proc = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

"""A throwaway PostgreSQL cluster: initdb into a temp dir, serve on loopback, delete.

PostgreSQL refuses to run as root, so when we are root the cluster belongs to an
unprivileged user (``postgres`` if the system has one, else ``nobody``). The
server listens on 127.0.0.1 and on a unix socket in its own temp dir, trusts
local connections (it holds no data and lives for one run) and is sized for the
run's connections.

``GEVENTPROBE_PG_BINDIR`` names the directory of the server programs to use
(``initdb``, ``postgres``) instead of searching PATH, ``pg_config`` and Debian's
layout; pointed at an empty directory it makes the "no PostgreSQL" path testable.

``initdb`` runs once per server install and user: its cluster is kept in the user cache
dir (``pgdata/``) and copied for the next runs (``cp -a``, 0.08 s against 0.85 s; 0.3-0.5 s
into a ``/tmp`` whose file creation is slow, 0.06 s into memory: ``children.temp_root``); a
kept cluster the server refuses is dropped and ``initdb`` runs again.

Every process runs in its own session (initdb too: it starts postgres children
of its own) and is stopped with its whole group; the temp dir is registered with
``procs`` so it is removed even if the run is interrupted mid-start. While the
server runs, a guard makes every wait loop of the run notice if it died.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass

from geventprobe.errors import ProbeError
from geventprobe.processes import children

SUPERUSER = "geventprobe"
BINDIR_ENV = "GEVENTPROBE_PG_BINDIR"
INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; "
    "macOS: brew install postgresql) or pass --dsn to use your own server"
)
BIND_ATTEMPTS = 3
_INITDB_OPTIONS = ("--no-sync", "-E", "UTF8", "--locale=C", "--no-instructions")
# The postmaster logs which shutdown it was asked for, and by which signal (PostgreSQL docs,
# "Shutting Down the Server").
_SHUTDOWN = re.compile(r"received (smart|fast|immediate) shutdown request")
_SHUTDOWN_SIGNAL = {"smart": "SIGTERM", "fast": "SIGINT", "immediate": "SIGQUIT"}


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

    def usable(self) -> bool:
        """Both programs exist and are executable."""
        return all(os.access(p, os.X_OK) for p in (self.initdb, self.postgres))


def _version_key(path: str) -> tuple:
    parts = os.path.basename(os.path.dirname(path)).split(".")
    return tuple(int(p) if p.isdigit() else 0 for p in parts)


def find_binaries() -> PgBinaries:
    """Find initdb and postgres: $GEVENTPROBE_PG_BINDIR alone if set, else PATH,
    ``pg_config --bindir``, then Debian's layout."""
    forced = os.environ.get(BINDIR_ENV)
    if forced:
        binaries = PgBinaries(forced)
        if binaries.usable():
            return binaries
        raise ProbeError(f"no PostgreSQL server programs (initdb, postgres) in "
                         f"{BINDIR_ENV}={forced}: point it at PostgreSQL's bin directory, "
                         f"unset it, or pass --dsn to use your own server")
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
        if binaries.usable():
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


def _template_path(binaries: PgBinaries, uid: int | None) -> str | None:
    """Where a cluster made by this PostgreSQL's ``initdb`` (trust, no password) is kept for
    the next runs: the user cache dir's ``pgdata/``, one per server install (its programs'
    path, size and time: an upgrade makes a new one) and owner. None when there is no cache
    dir."""
    from geventprobe.cache_dir import cache_root

    try:
        st = os.stat(binaries.postgres)
        root = cache_root()
    except (OSError, RuntimeError):  # RuntimeError: no home directory to find it in
        return None
    owner = os.geteuid() if uid is None else uid
    key = hashlib.sha256(f"{os.path.realpath(binaries.bindir)}|{st.st_size}|{st.st_mtime_ns}|"
                         f"{owner}|{SUPERUSER}|{' '.join(_INITDB_OPTIONS)}".encode())
    return str(root / "pgdata" / key.hexdigest()[:16])


def _copy_tree(source: str, target: str) -> bool:
    """``cp -a``: modes and owners kept (measured: 0.08 s for a new cluster's 39 MB and 992
    files, against 0.65 s for Python's copytree and chown)."""
    try:
        done = subprocess.run(["cp", "-a", source, target], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _copy_template(template: str, data: str) -> bool:
    """Copy a kept cluster into ``data``; False when there is none or it cannot be copied
    (then ``data`` does not exist)."""
    if not os.path.isfile(os.path.join(template, "PG_VERSION")):
        return False
    if _copy_tree(template, data):
        return True
    shutil.rmtree(data, ignore_errors=True)
    return False


def _keep_template(data: str, template: str) -> None:
    """Keep a copy of the cluster ``initdb`` just made for the next runs (measured: 0.8 s of
    CPU and 0.85 s for ``initdb``, 0.08 s to copy its result): copied aside, then renamed into
    place whole, so another run never sees half of one. Best effort: nothing is lost
    without it."""
    parent = os.path.dirname(template)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".new-", dir=parent)
    except OSError:
        return
    try:
        if _copy_tree(data, os.path.join(tmp, "data")):
            os.rename(os.path.join(tmp, "data"), template)
    except OSError:
        pass  # another run kept one first
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _server_env(root: str) -> dict[str, str]:
    """A minimal environment: when we are root the server runs as another user, who can
    read its /proc/<pid>/environ, so nothing of ours (GEVENTPROBE_DSN, PG*) goes along."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
           "HOME": root}
    if os.environ.get("TZ"):
        env["TZ"] = os.environ["TZ"]
    return env


class EmbeddedPostgres:
    """Context manager: a running throwaway cluster; ``dsn`` tells workers where it is.

    With ``password`` the superuser gets that password and TCP connections must
    give it (scram-sha-256); unix-socket connections stay trusted. Without it,
    every local connection is trusted.
    """

    def __init__(self, max_connections: int, start_timeout: float = 60.0,
                 password: str | None = None):
        self.max_connections = max_connections
        self.start_timeout = start_timeout
        self.password = password
        self.root: str | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log_seen = 0
        self._shutdown_mode: str | None = None
        self.from_template = False
        """The cluster was copied from the one kept in the user cache dir (no initdb)."""

    @property
    def dsn(self) -> str:
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        return f"{dsn} password={self.password}" if self.password else dsn

    @property
    def log_path(self) -> str:
        return os.path.join(self.root or "", "postgres.log")

    def __enter__(self) -> EmbeddedPostgres:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        children.add_guard(self.check_alive)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            # A step that failed because the server stopped (a refused first connect when a
            # fast shutdown came before it) says so: the server's stop is the cause.
            if isinstance(exc, ProbeError):
                self.check_alive()
        finally:
            self.close()

    def _start(self) -> None:
        binaries = find_binaries()
        account = _unprivileged_user()
        # Short path: the unix socket lives here and socket paths max out at 107 bytes.
        self.root = children.make_temp_dir("geventprobe-pg-")
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
        env = _server_env(self.root)
        # A cluster made for an earlier run, kept in the user cache dir, saves initdb.
        template = None if self.password else _template_path(binaries, uid)
        from_template = self.from_template = (template is not None
                                              and _copy_template(template, data))
        if not from_template:
            self._initdb(binaries, data, env, uid, gid)
            if template is not None:
                _keep_template(data, template)
        for attempt in range(BIND_ATTEMPTS):
            self.port = free_port()
            self.proc = children.spawn(
                [binaries.postgres, "-D", data, "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
                 "-c", f"max_connections={self.max_connections}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "shared_buffers=32MB",
                 # Its dynamic shared memory as files in the data dir, removed with it: the
                 # default (posix) leaves a /dev/shm/PostgreSQL.<n> behind whenever the
                 # postmaster is SIGKILLed (204 of them, 105 MB, were found here after a day
                 # of test runs that kill it on purpose).
                 "-c", "dynamic_shared_memory_type=mmap",
                 "-c", "logging_collector=off"],
                env=env, log_path=self.log_path, cwd=self.root, user=uid, group=gid,
            )
            if self._wait_ready():
                return
            pid, mode = self.proc.pid, self._shutdown_asked()
            exited = self.proc.poll() is not None
            children.stop(self.proc, signal.SIGINT)
            self.proc = None
            if from_template and exited and mode is None and \
                    self._log_line("could not bind") is None:
                # A kept cluster this server refuses (a stale or damaged one): drop it and
                # make the cluster the usual way.
                with contextlib.suppress(OSError):
                    shutil.rmtree(template)
                shutil.rmtree(data, ignore_errors=True)
                self._initdb(binaries, data, env, uid, gid)
                from_template = self.from_template = False
                continue
            if mode is not None:  # not a failure to start: something stopped it meanwhile
                raise ProbeError(
                    f"the embedded PostgreSQL (pid {pid}) was asked to shut down while it "
                    f"was starting ({mode} shutdown: {_SHUTDOWN_SIGNAL[mode]} from outside "
                    "geventprobe): find what stopped it (a user, a service manager) and run "
                    "again")
            # Another program can take the port between free_port() and the server's bind.
            bind_error = self._log_line("could not bind")
            if bind_error is None:
                break
            if attempt == BIND_ATTEMPTS - 1:
                detail = bind_error.split("LOG:", 1)[-1].strip()
                raise ProbeError(
                    f"the embedded PostgreSQL could not listen on 127.0.0.1: the ports it "
                    f"picked were taken by other programs {BIND_ATTEMPTS} times "
                    f"({detail}): free some ports, or pass --dsn")
        raise ProbeError(f"the embedded PostgreSQL did not start ({self._log_tail()}): "
                         "check that its programs work (postgres --version), or pass --dsn")

    def _initdb(self, binaries: PgBinaries, data: str, env: dict, uid, gid) -> None:
        auth = ["--auth=trust"]
        pwfile = None
        if self.password:
            # The password goes through a file only its owner can read, never argv.
            pwfile = os.path.join(self.root, "pwfile")
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.password + "\n")
            if uid is not None:
                os.chown(pwfile, uid, gid)
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        log = os.path.join(self.root, "initdb.log")
        # Its own session: initdb starts postgres children, and stopping the group gets them.
        proc = children.spawn(
            [binaries.initdb, "-D", data, "-U", SUPERUSER, *auth, *_INITDB_OPTIONS],
            env=env, log_path=log, cwd=self.root, user=uid, group=gid)
        with children.running(proc, signal.SIGTERM, timeout=5):
            code = children.wait(proc, self.start_timeout)
        if pwfile:
            os.unlink(pwfile)
        if code != 0:
            try:
                with open(log, errors="replace") as f:
                    last = [ln.strip() for ln in f if ln.strip()][-1:]
            except OSError:
                last = []
            what = "timed out" if code is None else children.describe_exit(code)
            raise ProbeError(f"initdb {what} ({' '.join(last) or 'no output'}): "
                             f"check the PostgreSQL installation in {binaries.bindir}, "
                             "or pass --dsn")

    def _log_line(self, text: str) -> str | None:
        """The last line of the server's log that contains ``text``."""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if text in ln]
        except OSError:
            return None
        return lines[-1] if lines else None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f
                         if "FATAL" in ln or "ERROR" in ln or "PANIC" in ln]
            return lines[-1] if lines else "no error in its log"
        except OSError:
            return "no log"

    def _wait_ready(self) -> bool:
        sock = os.path.join(self.root, f".s.PGSQL.{self.port}")
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            children.check_guards()
            if self.proc.poll() is not None:
                return False
            # The socket file appears once the postmaster accepts connections; the
            # pid file's last line says "ready" once recovery is over.
            if os.path.exists(sock) and self._pidfile_ready():
                return True
            time.sleep(0.01)  # a server from a kept cluster is up in about 0.2 s
        return False

    def _pidfile_ready(self) -> bool:
        try:
            with open(os.path.join(self.root, "data", "postmaster.pid")) as f:
                return "ready" in f.read()
        except OSError:
            return False

    def _shutdown_asked(self) -> str | None:
        """``smart``, ``fast`` or ``immediate`` once the server logged that something asked it
        to shut down; reads only what the log gained since the last look."""
        try:
            size = os.path.getsize(self.log_path)
            if size <= self._log_seen:
                return None
            with open(self.log_path, "rb") as f:
                f.seek(self._log_seen)
                text = f.read(size - self._log_seen).decode("utf-8", "replace")
        except OSError:
            return None
        # A line may be half written: look again at its start next time.
        self._log_seen = size - (len(text.rsplit("\n", 1)[-1].encode()) if text else 0)
        found = _SHUTDOWN.search(text)
        return found.group(1) if found else None

    def check_alive(self) -> None:
        """Raise ProbeError if the server died, or was asked to shut down, while the run needs
        it (a run guard). A shutdown request is seen at once, in the server's log: a smart
        shutdown (SIGTERM) waits for every client to leave, and the workers' errors
        (``server closed the connection unexpectedly``) may come before the server's exit."""
        proc = self.proc
        if proc is None:
            return
        # Also once it has exited: a fast shutdown ends quickly, and its exit code (0) alone
        # would not say who asked for it. Sticky: every later look says the same.
        mode = self._shutdown_mode = self._shutdown_mode or self._shutdown_asked()
        if mode is not None:
            raise ProbeError(
                f"the embedded PostgreSQL (pid {proc.pid}) was asked to shut down mid-run "
                f"({mode} shutdown: {_SHUTDOWN_SIGNAL[mode]} from outside geventprobe): the run "
                "was stopped and everything it started removed; find what stopped it (a "
                "user, a service manager) and run again")
        if proc.poll() is None:
            return
        raise ProbeError(
            f"the embedded PostgreSQL (pid {proc.pid}) {children.describe_exit(proc.returncode)} "
            f"mid-run ({self._log_tail()}): the run was stopped and everything it started "
            "removed; find what stopped it (out of memory? dmesg) and run again")

    def close(self) -> None:
        """Stop the server (fast shutdown, then SIGKILL) and delete its directory."""
        children.remove_guard(self.check_alive)
        if self.proc is not None:
            children.stop(self.proc, signal.SIGINT, timeout=10)
            self.proc = None
        if self.root is not None:
            children.remove_temp_dir(self.root)
            self.root = None

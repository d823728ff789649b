"""The ``--rtt`` delay proxy: delay, order, closing both sides, unix sockets, cleanup.

The proxy runs as a real process (``DelayProxy``), in front of a real echo server,
a real unix-socket server, and a real PostgreSQL. Timings are asserted as lower
bounds (the delay must be there) and generous upper bounds (a classification: it
is a delay line, not a stall); the proxy's own accuracy is measured in
benchmarks/proxy_delay.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import psutil
import psycopg
import pytest
from conftest import by_build

from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.delay_proxy import DelayProxy, Upstream, proxied_dsn, upstream_for
from geventprobe.processes.postgres import SUPERUSER, EmbeddedPostgres
from geventprobe.settings import (
    Profile,
    Thresholds,
    Workload,
    parse_profile,
    project_settings,
    resolve,
)

RTT_MS = 20.0


class Server:
    """A loopback (or unix) server running ``handler(conn)`` for each connection in a thread."""

    def __init__(self, handler, unix_path: str | None = None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.upstream = Upstream(unix_path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.upstream = Upstream("127.0.0.1", self.sock.getsockname()[1])
        self.sock.listen()
        self.handler = handler
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            with conn:
                self.handler(conn)
        except BaseException as exc:
            self.errors.append(exc)

    def close(self):
        self.sock.close()


def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


@pytest.fixture
def echo_server():
    server = Server(echo)
    yield server
    server.close()


def connect(proxy: DelayProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk, "EOF before all the bytes came back"
        out += chunk
    return bytes(out)


def test_each_round_trip_costs_the_rtt(echo_server):
    with DelayProxy(echo_server.upstream, RTT_MS) as proxy, connect(proxy) as sock:
        trips = []
        for _ in range(20):
            t = time.monotonic()
            sock.sendall(b"x" * 64)
            recv_exactly(sock, 64)
            trips.append((time.monotonic() - t) * 1000)
    # At least the RTT, always (each direction is due RTT/2 after the kernel got it);
    # a delay line, not a stall: the typical trip is nowhere near two RTTs.
    assert min(trips) >= RTT_MS
    assert sorted(trips)[len(trips) // 2] < 2 * RTT_MS
    f = proxy.figures
    assert f.rtt_ms == RTT_MS and f.connections == 1 and f.chunks == 40
    assert f.extra_delay_us.count == 40 and f.extra_delay_us.p50_us >= 0
    assert f.upstream == echo_server.upstream.describe()


def test_a_delay_line_not_a_throttle(echo_server):
    """Ten chunks sent 2 ms apart come back 2 ms apart after one RTT, in order, intact."""
    payloads = [os.urandom(1000 + i) for i in range(10)]
    with DelayProxy(echo_server.upstream, RTT_MS) as proxy, connect(proxy) as sock:
        t = time.monotonic()
        for p in payloads:
            sock.sendall(p)
            time.sleep(0.002)
        back = recv_exactly(sock, sum(len(p) for p in payloads))
        elapsed = (time.monotonic() - t) * 1000
    assert back == b"".join(payloads)
    # Serialised per chunk, 10 chunks would take 10 RTTs; pipelined they take ~1 RTT + 20 ms.
    assert RTT_MS <= elapsed < 5 * RTT_MS


def test_a_megabyte_arrives_whole_and_in_order(echo_server):
    blob = os.urandom(1 << 20)
    with DelayProxy(echo_server.upstream, 1.0) as proxy, connect(proxy) as sock:
        sender = threading.Thread(target=sock.sendall, args=(blob,))
        sender.start()
        back = recv_exactly(sock, len(blob))
        sender.join()
    assert back == blob


def test_client_close_reaches_the_server_after_its_data():
    seen: list = []

    def record(conn):
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                seen.append((data, time.monotonic()))
                return
            data += chunk

    server = Server(record)
    try:
        with DelayProxy(server.upstream, RTT_MS) as proxy:
            sock = connect(proxy)
            t = time.monotonic()
            sock.sendall(b"goodbye")
            sock.close()
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.005)
    finally:
        server.close()
    assert seen, "the server never saw the end of the stream"
    data, at = seen[0]
    assert data == b"goodbye"  # what was queued was delivered before the EOF
    assert (at - t) * 1000 >= RTT_MS / 2
    assert not server.errors


def test_server_close_reaches_the_client_after_its_data():
    server = Server(lambda conn: conn.sendall(b"hello, then EOF"))
    try:
        with DelayProxy(server.upstream, RTT_MS) as proxy, connect(proxy) as sock:
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    finally:
        server.close()
    assert data == b"hello, then EOF"


def test_a_reset_closes_both_sides():
    def reset(conn):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    server = Server(reset)
    try:
        # The server resets at once: on a loaded machine the reset can reach the client
        # before its connect() returns, which then raises it (seen under the full suite).
        with DelayProxy(server.upstream, RTT_MS) as proxy, \
                pytest.raises(ConnectionResetError), connect(proxy) as sock:
            sock.recv(100)
    finally:
        server.close()


def test_unix_socket_upstream():
    folder = tempfile.mkdtemp(prefix="gp-proxy-test-")
    try:
        server = Server(echo, unix_path=os.path.join(folder, ".s.PGSQL.5432"))
        with DelayProxy(server.upstream, RTT_MS) as proxy, connect(proxy) as sock:
            t = time.monotonic()
            sock.sendall(b"over a unix socket")
            assert recv_exactly(sock, 18) == b"over a unix socket"
            assert (time.monotonic() - t) * 1000 >= RTT_MS
        server.close()
        assert proxy.figures.upstream.endswith(".s.PGSQL.5432")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, ".s.PGSQL.5432"))
        os.rmdir(folder)


def test_unreachable_upstream_closes_the_client():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with DelayProxy(Upstream("127.0.0.1", port), RTT_MS) as proxy, connect(proxy) as sock:
        assert sock.recv(10) == b""
        proxy.check_alive()  # the proxy itself carries on


def test_stop_leaves_no_process_thread_or_dir(echo_server):
    threads = threading.active_count()
    with DelayProxy(echo_server.upstream, RTT_MS) as proxy, connect(proxy) as sock:
        sock.sendall(b"x")
        recv_exactly(sock, 1)
        pid, folder = proxy.proc.pid, proxy.dir
        assert psutil.Process(pid).cwd() == folder
    assert not psutil.pid_exists(pid)
    assert not os.path.exists(folder)
    assert threading.active_count() == threads
    assert proxy.figures.connections == 1
    assert pid not in children._live


def test_the_proxy_dies_with_its_parent(tmp_path):
    """kill -9 of the process that started it: the proxy goes, and removes its dir."""
    info = tmp_path / "proxy.json"
    code = textwrap.dedent(f"""
        import json, time
        from geventprobe.processes.delay_proxy import DelayProxy, Upstream
        proxy = DelayProxy(Upstream("127.0.0.1", 9), 20).__enter__()
        with open({str(info)!r}, "w") as f:
            json.dump({{"pid": proxy.proc.pid, "dir": proxy.dir}}, f)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 15
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert info.exists(), "the parent did not start its proxy"
        time.sleep(0.1)
        started = json.loads(info.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while psutil.pid_exists(started["pid"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = psutil.pid_exists(started["pid"]) and \
            psutil.Process(started["pid"]).status() != psutil.STATUS_ZOMBIE
        assert not alive, "the proxy outlived its parent"
        assert not os.path.exists(started["dir"])
    finally:
        parent.kill()
        parent.wait()


def test_stopped_by_sigterm_it_writes_its_figures(echo_server):
    proxy = DelayProxy(echo_server.upstream, RTT_MS).__enter__()
    try:
        with connect(proxy) as sock:
            sock.sendall(b"abc")
            recv_exactly(sock, 3)
        os.kill(proxy.proc.pid, signal.SIGTERM)
        proxy.proc.wait(5)
        with pytest.raises(ProbeError, match=r"delay proxy .* mid-run"):
            proxy.check_alive()
    finally:
        proxy.close()
    assert proxy.figures.chunks == 2


# ---------------------------------------------------------------- DSNs and settings


def test_proxied_dsn_keeps_everything_but_the_address(monkeypatch):
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    dsn = "host=127.0.0.1 port=5999 user=alice dbname=shop password='s3 cr3t' sslmode=prefer"
    up = upstream_for(dsn)
    assert (up.host, up.port) == ("127.0.0.1", 5999)
    params = psycopg.conninfo.conninfo_to_dict(proxied_dsn(dsn, 40001))
    assert params == {"host": "127.0.0.1", "hostaddr": "127.0.0.1", "port": "40001",
                      "user": "alice", "dbname": "shop", "password": "s3 cr3t",
                      "sslmode": "prefer"}


def test_a_host_name_stays_for_tls_and_a_uri_works():
    dsn = "postgresql://bob:pw@localhost:6001/app?sslmode=verify-full"
    assert upstream_for(dsn).describe() == "localhost:6001"
    params = psycopg.conninfo.conninfo_to_dict(proxied_dsn(dsn, 40002))
    assert params["host"] == "localhost" and params["hostaddr"] == "127.0.0.1"
    assert params["port"] == "40002" and params["sslmode"] == "verify-full"
    assert params["password"] == "pw"


def test_unix_socket_dsn_and_environment(monkeypatch):
    assert upstream_for("host=/run/pg port=5433").host == "/run/pg/.s.PGSQL.5433"
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", "6100")
    up = upstream_for("")
    assert (up.host, up.port) == ("127.0.0.1", 6100)


@pytest.mark.parametrize("dsn, message", [
    ("host=a,b port=5432", "several hosts"),
    ("service=prod", "service file"),
    ("host=@abstract", "abstract"),
    ("host=no-such-host.invalid", "cannot resolve"),
])
def test_dsns_the_proxy_cannot_stand_in_front_of(dsn, message):
    with pytest.raises(ProbeError, match=message):
        upstream_for(dsn)


def test_rtt_in_profiles_and_pyproject(tmp_path):
    base = Profile(Workload(), Thresholds(), "test")
    assert parse_profile("[workload]\nrtt_ms = 20\n", "p.toml", base).workload.rtt_ms == 20.0
    assert parse_profile("[workload]\nrtt_ms = 0\n", "p.toml", base).workload.rtt_ms == 0.0
    for bad, why in (("-1", "0 or more"), ("5000", "at most 1000"), ('"x"', "a number")):
        with pytest.raises(ProbeError, match=why):
            parse_profile(f"[workload]\nrtt_ms = {bad}\n", "p.toml", base)
    project = project_settings({"rtt_ms": 1.5}, str(tmp_path / "pyproject.toml"))
    assert resolve(project=project).workload.rtt_ms == 1.5
    assert Workload(rtt_ms=3.0).to_worker()["rtt_ms"] == 3.0  # what the worker reads
    with pytest.raises(ProbeError, match="a number of ms"):
        project_settings({"rtt_ms": True}, str(tmp_path / "pyproject.toml"))


# ---------------------------------------------------------------- a real PostgreSQL


@pytest.fixture(scope="module")
def postgres():
    try:
        with EmbeddedPostgres(max_connections=30) as pg:
            yield pg
    finally:
        children.cleanup()


def _timed_session(dsn: str) -> tuple[float, float]:
    t = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        connected = time.monotonic()
        conn.execute("SELECT 1").fetchone()
        done = time.monotonic()
    return (connected - t) * 1000, (done - connected) * 1000


@pytest.mark.integration
def test_postgresql_through_the_proxy(postgres):
    with DelayProxy(upstream_for(postgres.dsn), RTT_MS) as proxy:
        connect_ms, select_ms = _timed_session(proxied_dsn(postgres.dsn, proxy.port))
    # libpq asks for TLS first (one round trip), then starts up (another).
    assert connect_ms >= 2 * RTT_MS
    assert RTT_MS <= select_ms < 5 * RTT_MS
    assert proxy.figures.connections == 1
    # Nothing left of that session: its backend got the Terminate and the end of the stream.
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        deadline = time.monotonic() + 5
        while True:
            others = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                                  "'client backend' AND pid <> pg_backend_pid()").fetchone()[0]
            if others == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert others == 0


@pytest.mark.integration
def test_postgresql_over_its_unix_socket(postgres):
    path = os.path.join(postgres.root, f".s.PGSQL.{postgres.port}")
    with DelayProxy(Upstream(path), RTT_MS) as proxy:
        dsn = proxied_dsn(f"host={postgres.root} port={postgres.port} user={SUPERUSER} "
                          "dbname=postgres", proxy.port)
        connect_ms, select_ms = _timed_session(dsn)
    assert connect_ms >= 2 * RTT_MS and select_ms >= RTT_MS
    assert proxy.figures.upstream == path


# ---------------------------------------------------------------- the CLI


@pytest.mark.integration
def test_run_with_rtt_records_the_proxy_and_raises_no_false_alarm(run_cli, tmp_path, schema):
    import jsonschema

    out = tmp_path / "r.json"
    proc = run_cli("run", "--builds", "binary", "--workers", "1", "--greenlets", "4",
                   "--rtt", "20", "--json", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    jsonschema.validate(result, schema)
    assert by_build(result)["binary"]["verdict"] == "OK"
    assert result["profile"]["workload"]["rtt_ms"] == 20
    proxy = result["proxy"]
    assert proxy["rtt_ms"] == 20 and proxy["upstream"].startswith("127.0.0.1:")
    assert proxy["connections"] >= 4 and proxy["chunks"] > 0
    assert proxy["extra_delay_us"]["count"] == proxy["chunks"]


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "5000"])
def test_bad_rtt_is_one_line(run_cli, value):
    proc = run_cli("run", "--rtt", value)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rtt" in lines[0], proc.stderr


def test_the_apps_database_url_leads_through_the_proxy(monkeypatch):
    from geventprobe.app.gunicorn_app import GunicornApp
    from geventprobe.core.builds import BY_NAME

    monkeypatch.delenv("DATABASE_URL", raising=False)
    plan = GunicornApp(build=BY_NAME["binary"], argv=[], cwd=".", workers=1, preload=False,
                       deployment={})
    dsn = proxied_dsn("host=127.0.0.1 port=5999 user=alice dbname=shop password=pw", 40003)
    url = plan.env(dsn)["DATABASE_URL"]
    params = psycopg.conninfo.conninfo_to_dict(url)
    assert params["hostaddr"] == "127.0.0.1" and params["port"] == "40003"
    assert params["user"] == "alice" and params["dbname"] == "shop"


@pytest.mark.integration
def test_a_killed_proxy_stops_the_run_with_one_line(probe_tmp, tmp_path):
    from conftest import our_processes

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = probe_tmp
    run = subprocess.Popen([sys.executable, "-m", "geventprobe", "run", "--builds", "binary",
                            "--workers", "1", "--greenlets", "4", "--rtt", "20"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        proxy = []
        while not proxy and time.monotonic() < deadline and run.poll() is None:
            proxy = [p for p in our_processes(probe_tmp)
                     if "geventprobe.processes.delay_proxy" in " ".join(p.info["cmdline"] or [])]
            time.sleep(0.1)
        assert proxy, "the run never started its proxy"
        # At once: gunicorn is starting. (1 s later, once the connect phase stopped after one
        # round when it decided, the kill came as the request phase ended: exit 0 with two
        # request errors, until the run looked at its guards after the request phase.)
        proxy[0].kill()
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
        run.wait()
    assert run.returncode == 2, out + err
    assert "Traceback" not in err
    assert "delay proxy" in err.strip().splitlines()[-1]


def _drop_at_the_query(upstream_port: int) -> tuple[int, threading.Thread]:
    """A loopback relay to the server that closes both sides when the client sends its first
    query (a message starting with Q or P, after the startup exchange): a server, proxy or
    pooler that goes away between the connect and the answer."""
    listener = socket.create_server(("127.0.0.1", 0))

    def relay():
        with listener:
            client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", upstream_port))
        with client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [], 10)
                if not ready:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data or (sock is client and data[:1] in (b"P", b"Q")):
                        return
                    (server if sock is client else client).sendall(data)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


@pytest.mark.integration
def test_a_connection_closed_while_the_server_is_asked_is_one_line():
    # Seen in a full suite: the --rtt proxy killed as the run asked the server through it
    # gave "internal error: OperationalError: consuming input failed" (the connect was
    # explained, the query after it was not).
    from geventprobe.processes.server import query_server

    with EmbeddedPostgres(max_connections=10) as pg:
        port, relay = _drop_at_the_query(pg.port)
        dsn = f"host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres sslmode=disable"
        with pytest.raises(ProbeError) as raised:
            query_server(dsn, embedded=False, connect_timeout=5)
        relay.join(5)
    said = str(raised.value)
    assert "\n" not in said
    assert said.startswith(f"PostgreSQL at 127.0.0.1:{port} closed the connection"), said
    assert "server closed the connection unexpectedly" in said and "server's log" in said


@pytest.mark.integration
def test_a_proxy_killed_before_the_first_connection_through_it_is_named():
    from geventprobe.core.session import _through_proxy

    with EmbeddedPostgres(max_connections=10) as pg, children.owned(), \
            DelayProxy(upstream_for(pg.dsn), 20) as proxy:
        pid = proxy.proc.pid
        proxy.proc.kill()
        proxy.proc.wait()
        with pytest.raises(ProbeError) as raised:
            _through_proxy(proxied_dsn(pg.dsn, proxy.port), True, Workload(), proxy.port,
                           upstream_for(pg.dsn))
    assert str(raised.value).startswith(f"the --rtt delay proxy (pid {pid}) killed by SIGKILL"), \
        raised.value

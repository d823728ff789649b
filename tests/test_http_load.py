"""The open-loop HTTP load generator against small real servers on loopback.

Behaviour, not speed: requests keep coming at their due times whatever the
server does, queueing counts (a lower bound, which a slow machine only makes
larger), errors are counted by kind, and everything is bounded.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from geventprobe.app.http_load import LoadSpec, OpenLoopLoad, _status, run_for


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # http.server names it
        body = b"ok\n"
        self.send_response(self.server.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A real HTTP server on a free loopback port; ``.status`` sets its answer."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.status = 200
    # shutdown() waits for serve_forever's next look (every 0.5 s by default).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_every_request_is_sent_and_answered(http_server):
    spec = LoadSpec(ports=(http_server.server_address[1],), path="/__geventprobe__", rate=50,
                    max_requests=5, max_seconds=10, query="SELECT 1")
    figures = run_for(spec, seconds=3)
    assert (figures.sent, figures.completed, figures.errors) == (5, 5, 0)
    assert figures.latency.count == 5 and figures.latency.p50_us > 0
    assert sum(figures.latency_histogram.values()) == 5
    assert figures.query == "SELECT 1" and figures.path == "/__geventprobe__"


def test_http_errors_are_counted_by_kind(http_server):
    http_server.status = 500
    spec = LoadSpec(ports=(http_server.server_address[1],), path="/x", rate=50, max_requests=3)
    figures = run_for(spec, seconds=3)
    assert figures.completed == 0 and figures.error_kinds == {"HTTP 500": 3}
    assert figures.latency.count == 0 and figures.latency.p99_us is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connections_are_errors_not_latencies():
    spec = LoadSpec(ports=(_free_port(),), path="/x", rate=50, max_requests=3)
    figures = run_for(spec, seconds=2)
    assert figures.error_kinds == {"connection refused": 3}


def test_queueing_behind_a_stalled_server_is_counted():
    """A server that accepts nothing for a while, like a worker whose hub is blocked.

    The connections wait in the kernel's listen backlog. Each latency runs from
    the moment its request was due, so the stall is in the figures: at least
    the first request waited the whole stall.
    """
    stall = 0.6
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve_after_stall():
        time.sleep(stall)
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    thread = threading.Thread(target=serve_after_stall, daemon=True)
    thread.start()
    try:
        spec = LoadSpec(ports=(port,), path="/x", rate=20, max_requests=4, timeout_s=20)
        figures = run_for(spec, seconds=2, grace_s=10)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert figures.completed == 4, figures.error_kinds
    # The open loop went on sending while the server stalled (not one at a time)...
    assert figures.sent == 4
    # ...and the first request, due at the start, waited the whole stall.
    assert figures.latency.max_us >= stall * 1e6 * 0.9


def test_unanswered_requests_time_out_or_are_unfinished():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # accepts into the backlog, never answers
    try:
        port = listener.getsockname()[1]
        timed = run_for(LoadSpec(ports=(port,), path="/x", rate=50, max_requests=2,
                                 timeout_s=0.3), seconds=1.5)
        assert timed.error_kinds == {"timeout": 2}
        cut = run_for(LoadSpec(ports=(port,), path="/x", rate=50, max_requests=2,
                               timeout_s=60), seconds=0.5, grace_s=0)
        assert cut.error_kinds == {"unfinished when the probe ended": 2}
    finally:
        listener.close()


def test_bounded_by_count_and_time(http_server):
    port = http_server.server_address[1]
    by_count = run_for(LoadSpec(ports=(port,), path="/x", rate=200, max_requests=7), seconds=1)
    assert by_count.sent == 7
    # No request is due later than max_seconds after the start, however long it runs.
    by_time = run_for(LoadSpec(ports=(port,), path="/x", rate=20, max_requests=10_000,
                               max_seconds=0.2), seconds=1)
    assert by_time.sent <= 5 and by_time.duration_s <= 0.2


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0"])
def test_loopback_only(host):
    with pytest.raises(ValueError, match="loopback"):
        LoadSpec(ports=(80,), path="/x", rate=1, host=host)


def test_stop_without_start_is_harmless():
    load = OpenLoopLoad(LoadSpec(ports=(1,), path="/x", rate=1))
    with load:
        pass
    assert load.stop().sent == 0


@pytest.mark.parametrize(("raw", "status"), [
    (b"HTTP/1.1 200 OK\r\n\r\nok", 200),
    (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", 503),
    (b"", None),
    (b"garbage", None),
])
def test_status_line(raw, status):
    assert _status(raw) == status

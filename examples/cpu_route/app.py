"""A login route that hashes the password in the request (PBKDF2, about 0.3 s of CPU).

``hashlib.pbkdf2_hmac`` runs in C and never yields to gevent: while one request hashes,
every other request of that worker waits, and the hub's heartbeat stops. Expected:
BLOCKING, with ``app.py`` and ``login`` as the user's frame in the stack.

    geventprobe run --app app:application --chdir examples/cpu_route \
        --route "POST /login"
"""

import hashlib

SALT = b"geventprobe-example"
ITERATIONS = 600_000  # about 0.3 s of CPU per hash on this 2-core VM


def login(password: bytes) -> str:
    """Check a password the slow, safe way (the CPU work is the point)."""
    return hashlib.pbkdf2_hmac("sha256", password, SALT, ITERATIONS).hex()


def application(environ, start_response):
    """``/login`` hashes a password; everything else says hello."""
    if environ.get("PATH_INFO") == "/login":
        body = (login(b"correct horse battery staple")[:16] + "\n").encode()
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

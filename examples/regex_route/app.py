"""A route whose C call holds the GIL for its whole duration: a backtracking regular expression.

``re`` matches in C without releasing the GIL: ``(a|aa)+$`` against a run of ``a`` that
ends in ``!`` tries every way to split the run before it gives up (0.18–0.28 s a
call on a 2-core VM). Meanwhile the hub cannot run, and neither can any other thread of the
worker: gevent's monitor thread needs the GIL to look, so it sees nothing. Expected:
BLOCKING, who blocked ``app.py`` in ``validate`` (``PATTERN.match``).

    geventprobe run --app app:application --chdir examples/regex_route --route /validate

Measured by hand (docs/causes.md): plain gunicorn, 2 gevent workers, 20 requests at once:
0.18–0.19 s alone, 2.1–2.4 s for the 20 (p50 1.1–1.4 s), all 200.
"""

import re

# Catastrophic backtracking: the number of ways to split N "a"s grows like Fibonacci(N).
PATTERN = re.compile(r"^(a|aa)+$")
SUBJECT = "a" * 30 + "!"


def validate(value: str) -> bool:
    """Check the input against the pattern (the C call that holds the GIL)."""
    return PATTERN.match(value) is not None


def application(environ, start_response):
    """``/validate`` runs the match; everything else says hello."""
    if environ.get("PATH_INFO") == "/validate":
        body = b"valid\n" if validate(SUBJECT) else b"invalid\n"
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

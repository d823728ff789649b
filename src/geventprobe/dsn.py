"""Connection strings: parsing and redaction, so no password ever leaves the machine."""

from __future__ import annotations

import os
import re

REDACTED = "***"

# key=value conninfo: password='quoted \' value' or password=bare
_KV_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
# URI, anywhere in a text: scheme://user:password@host
_URI_PASSWORD = re.compile(r"(?i)(postgres(?:ql)?://[^:/?#@\s]*:)([^@/?#\s]*)(@)")
# URI query parameter: ?password=...&
_URI_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&#]*)")


def redact(text: str) -> str:
    """``text`` with every DSN or conninfo password replaced by ``***``.

    Works on whole DSNs and on free text that may quote one (an error message).
    """
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _URI_QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    text = _KV_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    secret = os.environ.get("PGPASSWORD")
    if secret:
        text = text.replace(secret, REDACTED)
    return text


def uses_environment() -> bool:
    """True when libpq's PG* variables say where the server is (then no embedded server)."""
    return any(os.environ.get(k) for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"))

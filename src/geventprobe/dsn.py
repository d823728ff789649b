"""Connection strings: parsing and redaction, so no password ever leaves the machine.

``redact`` removes passwords (always applied); ``redact_hosts`` also masks host
names and IP addresses (``--redact-hosts``); ``scrub`` applies either to every
string of a result record, so that every renderer reads an already clean record.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Iterable
from enum import Enum
from typing import TypeVar

T = TypeVar("T")

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


_SCHEME = re.compile(r"^\s*([A-Za-z][A-Za-z0-9+.-]*)://")


def foreign_scheme(dsn: str) -> str | None:
    """The scheme of a URL that is not PostgreSQL's (``mysql``, ``postgresql+psycopg``...),
    or None: libpq would only say ``missing "="`` about it."""
    match = _SCHEME.match(dsn or "")
    if match is None or match.group(1).lower() in ("postgresql", "postgres"):
        return None
    return match.group(1)


def own_connect_timeout(dsn: str | None) -> int | None:
    """The ``connect_timeout`` the user set, in the DSN or else in ``PGCONNECT_TIMEOUT``.

    It wins over the profile's ``connect_timeout_s``, as libpq would have it; None when
    neither sets one (or the DSN does not parse: connecting will say why).
    """
    value = None
    if dsn:
        from psycopg.conninfo import conninfo_to_dict

        try:
            value = conninfo_to_dict(dsn).get("connect_timeout")
        except Exception:
            value = None
    if value is None:
        value = os.environ.get("PGCONNECT_TIMEOUT") or None
    try:
        # libpq reads it as whole seconds and treats anything below 2 as 2 (0: forever).
        seconds = int(str(value).strip()) if value is not None else None
    except ValueError:
        return None
    return None if seconds is None or seconds <= 0 else max(2, seconds)


def uses_environment() -> bool:
    """True when libpq's PG* variables say where the server is (then no embedded server)."""
    return any(os.environ.get(k) for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"))


# --redact-hosts: key=value hosts (host=, hostaddr=) and their URI query forms.
_KV_HOST = re.compile(r"(?i)(\bhost(?:addr)?\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s'\"&#]+)")
# URI authority: scheme://[user[:pw]@]host[:port][,host[:port]...]
_URI_AUTHORITY = re.compile(r"(?i)(postgres(?:ql)?://(?:[^@/?#\s]*@)?)([^/?#\s]*)")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)"
                   r"(?![\w.])")
# Candidates only: each is checked with ipaddress, so times like 13:46:56 stay.
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:%\w+)?"
                             r"(?![\w:])")


def _mask_authority(match: re.Match) -> str:
    hosts = []
    for part in match.group(2).split(","):
        # Keep the port: it says nothing about where the server is, and helps a reader.
        if part.startswith("["):
            port = part[part.find("]") + 1:] if "]" in part else ""
        else:
            port = part[part.rfind(":"):] if ":" in part else ""
        hosts.append((REDACTED + port) if part else part)
    return match.group(1) + ",".join(hosts)


def _mask_ipv6(match: re.Match) -> str:
    text = match.group(0)
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return text
    return REDACTED


def hosts_in(dsn: str) -> list[str]:
    """The host names and addresses a DSN or conninfo names (for masking them elsewhere too)."""
    found: list[str] = []
    for m in _KV_HOST.finditer(dsn):
        found.extend(h.strip("'") for h in m.group(2).split(","))
    for m in _URI_AUTHORITY.finditer(dsn):
        for part in m.group(2).split(","):
            host = part[1:part.find("]")] if part.startswith("[") else part.split(":")[0]
            found.append(host)
    return [h for h in found if h and h != REDACTED]


def redact_hosts(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with host names and IP addresses replaced by ``***`` (``--redact-hosts``).

    Masks ``host=``/``hostaddr=`` values, the host part of ``postgresql://`` URIs,
    every IPv4 and IPv6 literal, and each of ``names`` wherever it stands alone
    (libpq error messages quote the host: ``connection to server at "db1" ...``).
    """
    text = _URI_AUTHORITY.sub(_mask_authority, text)
    text = _KV_HOST.sub(lambda m: m.group(1) + REDACTED, text)
    for name in sorted(set(names), key=len, reverse=True):
        if name and name != REDACTED:
            text = re.sub(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", REDACTED, text)
    text = _IPV4.sub(REDACTED, text)
    return _IPV6_CANDIDATE.sub(_mask_ipv6, text)


def scrub(value: T, *, hosts: bool = False, names: Iterable[str] = ()) -> T:
    """A copy of ``value`` (a result record, or any dataclass/dict/list) with every string redacted.

    Passwords always; host names and IPs too when ``hosts`` is true (``names``
    are extra host names to mask wherever they appear). Enum members are kept:
    they are fixed vocabulary, never user data.
    """
    names = tuple(names)

    def clean(v):
        if isinstance(v, Enum):
            return v
        if isinstance(v, str):
            v = redact(v)
            return redact_hosts(v, names) if hosts else v
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return dataclasses.replace(v, **{f.name: clean(getattr(v, f.name))
                                             for f in dataclasses.fields(v) if f.init})
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(clean(x) for x in v)
        return v

    return clean(value)


def scrub_result(result: T, *, hosts: bool = False) -> T:
    """A run result with passwords redacted and, with ``hosts``, every host name and IP masked.

    The host names of the server's DSN and of the recorded command line are masked
    wherever they appear (an error message may quote one without ``host=``).
    """
    names: list[str] = []
    if hosts:
        names += hosts_in(str((getattr(result, "server", None) or {}).get("dsn", "")))
        for arg in getattr(result, "command", None) or []:
            names += hosts_in(arg)
    return scrub(result, hosts=hosts, names=names)

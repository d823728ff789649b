"""Connection strings: parsing and the one password scrubber, so no password leaves the machine.

``redact`` removes passwords from any text (always applied): those written the way a DSN
writes them (``password=...``, ``postgresql://user:PASSWORD@``, ``?password=``) and,
wherever they appear, the passwords this run knows (``known_secrets``): the DSN's from
``--dsn`` or ``GEVENTPROBE_DSN``, ``PGPASSWORD``, the one in the ``DATABASE_URL`` an
app is given, and a celery broker's (``--broker`` or ``GEVENTPROBE_BROKER``). An app's
error message that quotes the password in free text is masked too.
``redact_hosts`` also masks host names and IP addresses (``--redact-hosts``); ``scrub``
applies either to every string of a result record, so that every renderer reads an
already clean record. Parent side only.

Only ``os``, ``re`` and ``urllib.parse`` at module level, all loaded by Python's own
start-up already: the entry point imports this module first thing, to take a ``--dsn``
password out of the process title before anything heavy is imported (``startup.py``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import unquote

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see above)
if TYPE_CHECKING:
    from typing import TypeVar

    T = TypeVar("T")

REDACTED = "***"

# key=value conninfo: password='quoted \' value' or password=bare
_KV_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
# The same in a URI's query string, where & and # end the value.
_QUERY_VALUE = re.compile(r"(?i)\bpassword\s*=\s*([^\s&#']+)")
# URI, anywhere in a text: scheme://user:password@host
_URI_PASSWORD = re.compile(r"(?i)(postgres(?:ql)?://[^:/?#@\s]*:)([^@/?#\s]*)(@)")
# URI query parameter: ?password=...&
_URI_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)([^&#]*)")
# The password part of any URL (a foreign scheme is refused, but its message is redacted).
_ANY_URI_PASSWORD = re.compile(r"(?i)[a-z][\w+.-]*://[^:/?#@\s]*:([^@/?#\s]*)@")
# Variables that carry a password of this run (their values are read on every redact).
SECRET_VARIABLES = ("PGPASSWORD", "GEVENTPROBE_DSN", "DATABASE_URL", "GEVENTPROBE_BROKER")
# A known secret shorter than this is masked only where it stands alone (a word of its
# own): masking every "ab" of a report would leave nothing to read.
_ANYWHERE_FROM = 4

_remembered: set[str] = set()
_from_environment: tuple[tuple, frozenset[str]] = ((), frozenset())


def secrets_in(dsn: str) -> set[str]:
    """The password(s) a DSN, conninfo or URL holds, as written and as libpq reads them
    (quotes and escapes removed, percent-encoding decoded). Works on a malformed DSN too."""
    found: set[str] = set()
    for match in _KV_PASSWORD.finditer(dsn or ""):
        raw = match.group(2)
        if raw.startswith("'") and raw.endswith("'") and len(raw) >= 2:
            found.add(raw)
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found.update((raw, unquote(raw)))
    for match in _QUERY_VALUE.finditer(dsn or ""):
        found.update((match.group(1), unquote(match.group(1))))
    for match in _ANY_URI_PASSWORD.finditer(dsn or ""):
        found.update((match.group(1), unquote(match.group(1))))
    return {s for s in found if s and s != REDACTED}


def remember(dsn: str | None) -> None:
    """Mask the password(s) of ``dsn`` wherever they appear from now on (``--dsn``)."""
    if dsn:
        _remembered.update(secrets_in(dsn))


def remember_secret(secret: str | None) -> None:
    """Mask ``secret`` (a password found elsewhere: ``~/.pgpass``) wherever it appears."""
    if secret and secret != REDACTED:
        _remembered.add(secret)


def known_secrets() -> frozenset[str]:
    """Every password this run knows: remembered ones and those of ``SECRET_VARIABLES``."""
    global _from_environment
    values = tuple(os.environ.get(k) for k in SECRET_VARIABLES)
    if values != _from_environment[0]:
        found: set[str] = set()
        password, *urls = values
        if password:
            found.add(password)
        for text in urls:  # GEVENTPROBE_DSN, DATABASE_URL, a celery run's GEVENTPROBE_BROKER
            found |= secrets_in(text or "")
        _from_environment = (values, frozenset(found))
    return _from_environment[1] | _remembered


def _mask_known(text: str) -> str:
    for secret in sorted(known_secrets(), key=len, reverse=True):
        if secret not in text:
            continue
        if len(secret) >= _ANYWHERE_FROM:
            text = text.replace(secret, REDACTED)
        else:
            text = re.sub(rf"(?<![\w]){re.escape(secret)}(?![\w])", REDACTED, text)
    return text


def redact(text: str) -> str:
    """``text`` with every password replaced by ``***``: DSN and conninfo passwords by their
    syntax, and every password the run knows wherever it appears (``known_secrets``).

    Works on whole DSNs and on free text that may quote one (an error message).
    """
    text = _URI_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), text)
    text = _URI_QUERY_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    text = _KV_PASSWORD.sub(lambda m: m.group(1) + REDACTED, text)
    return _mask_known(text)


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
    import ipaddress

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
    import dataclasses
    from enum import Enum

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


def conninfo_to_uri(dsn: str) -> str:
    """A simple ``key=value`` conninfo as a ``postgresql://`` URI (as most apps read it)."""
    if "://" in dsn:
        return dsn
    from urllib.parse import quote

    parts = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn))
    parts = {k: v.strip("'") for k, v in parts.items()}
    user = quote(parts.pop("user", ""), safe="")
    password = parts.pop("password", None)
    host = parts.pop("host", "")
    port = parts.pop("port", "")
    dbname = quote(parts.pop("dbname", ""), safe="")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    netloc = (f"[{host}]" if ":" in host else quote(host, safe="/")) + (f":{port}" if port
                                                                          else "")
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in parts.items())
    return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


def database_url(dsn: str | None, environ: dict[str, str] | None = None) -> dict[str, str]:
    """``{"DATABASE_URL": ...}`` for the server at ``dsn``, for an app started against it: the
    variable most apps read, unless ``environ`` (ours by default) sets it already; empty then,
    or without a ``dsn``."""
    environ = os.environ if environ is None else environ
    if not dsn or environ.get("DATABASE_URL"):
        return {}
    return {"DATABASE_URL": conninfo_to_uri(dsn)}

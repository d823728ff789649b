"""Why a uWSGI app's driver blocks, and the fix, in uWSGI's words.

The core's rules decide the verdict from the workers' figures (``core/judge.py``); the
cause it computes from the facts speaks of gunicorn's master and config file. Under uWSGI
the same facts have other causes (measured with pyuwsgi 2.0.30 and psycopg 3.3.9, one
worker, 16 requests at once each waiting 0.2 s on the server; docs/uwsgi.md):

- ``--gevent-monkey-patch`` patches each worker when its gevent loop starts, after the
  app was loaded: psycopg imported by the app binds the C wait (``wait_c``): 3.41 s for
  16 (BLOCKING); ``--gevent-early-monkey-patch`` patches before the app loads: 0.28 s.
- no patch flag: uWSGI runs the gevent loop and patches nothing: 3.41 s.
- psycopg2 without psycogreen: 3.32 s; with ``psycogreen.gevent.patch_psycopg()`` at the
  app's top: 0.27 s with either flag.
"""

from __future__ import annotations

from geventprobe.core import causes
from geventprobe.record import Verdict

EARLY = ("use --gevent-early-monkey-patch (gevent-early-monkey-patch = true in the ini) "
         "instead of --gevent-monkey-patch: uWSGI then patches before it loads the app; or "
         "import the driver inside the views, after the worker patched")
NO_FLAG = ("add --gevent-early-monkey-patch (gevent-early-monkey-patch = true in the ini): "
           "uWSGI then patches before it loads the app (or call "
           "`from gevent import monkey; monkey.patch_all()` at the very top of the module "
           "uWSGI loads)")
PSYCOGREEN = ("call psycogreen.gevent.patch_psycopg() at the top of the module uWSGI loads "
              "(pip install psycogreen); it works with either patch flag")


def _patch_words(options: dict) -> str:
    patch = options.get("patch")
    if patch == "--gevent-monkey-patch":
        return ("uWSGI's --gevent-monkey-patch patches each worker when its gevent loop "
                "starts, after the app was loaded")
    if patch == "none":
        return "uWSGI runs the gevent loop but patches nothing without a patch flag"
    return f"the app imported it before gevent patched ({patch})"


def _fix(options: dict) -> str:
    return NO_FLAG if options.get("patch") == "none" else EARLY


def driver_blocking(facts: dict, options: dict) -> tuple[str, str] | None:
    """(cause, fix) when the workers' driver waits in C, in uWSGI's words; None when it
    cooperates (a stall is then someone else's: never blame the driver)."""
    if not facts.get("driver") or not causes.waits_in_c(facts):
        return None
    if facts.get("driver") == "psycopg2":
        return ("psycopg2 has no wait callback, so libpq waits in C and the hub stops "
                "(uWSGI's patch flags do not give psycopg2 one)", PSYCOGREEN)
    pg = facts.get("psycopg") or {}
    imported = facts.get("driver_import") or {}
    where = f" ({imported['where']})" if imported.get("where") else ""
    if imported and imported.get("select_patched") is False:
        return (f"psycopg chose wait_c, which waits in C without yielding, because it was "
                f"imported before gevent patched select{where}: {_patch_words(options)}",
                _fix(options))
    if not facts.get("select_patched"):
        return (f"gevent did not patch select in this worker ({_patch_words(options)}), so "
                f"psycopg chose wait_c{where}", _fix(options))
    cause, advice = causes.explain(Verdict.BLOCKING, facts, False)
    return (cause or f"psycopg's wait function {pg.get('wait')} waits in C",
            advice or EARLY)


def connect_blocking(facts: dict, options: dict) -> tuple[str, str] | None:
    """(cause, fix) when only connection setup blocked: psycopg's selector, bound at
    import, is the standard library's."""
    selector = (facts.get("psycopg") or {}).get("selector") or ""
    if facts.get("driver") != "psycopg" or not selector.startswith("selectors."):
        return None
    imported = facts.get("driver_import") or {}
    where = f" ({imported['where']})" if imported.get("where") else ""
    return (f"psycopg sets connections up with psycopg.waiting.DefaultSelector = {selector}, "
            f"the standard library's, bound because psycopg was imported before gevent "
            f"patched select{where}: {_patch_words(options)}; every connect waits in C and "
            "stalls the hub", _fix(options))


def harakiri(facts: dict, options: dict, seconds: float) -> tuple[str, str]:
    """(cause, fix) when uWSGI's harakiri killed a worker whose request held the hub."""
    found = driver_blocking(facts, options)
    if found is not None:
        return found
    return (f"a worker's hub was blocked longer than uWSGI's harakiri ({seconds:g} s)",
            "find the call that waits or computes without yielding to gevent (--route on the "
            "app's routes names the line) and move it out of the request")

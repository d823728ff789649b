"""Read the effective gunicorn settings of the user's deployment, without starting it.

``python -m geventprobe.worker.inspect_conf OUT.json -- GUNICORN ARGS...`` runs
in the user's working directory and environment (``GUNICORN_CMD_ARGS`` included)
and lets gunicorn itself load the configuration through ``app_conf.py``, the
way the real run will: config file, then ``GUNICORN_CMD_ARGS``, then the command
line. It writes what the parent needs to know before starting gunicorn (worker
class and whether it is gevent's, worker count, preload...) or the user's own
error message, to OUT.json (a ``record.GunicornSettings``). It never imports the app.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import traceback

from geventprobe.worker import record
from geventprobe.worker.record import GunicornSettings


def _origin(exc: BaseException) -> str | None:
    """``file, line N`` of the innermost frame that is not gunicorn's, ours or importlib's."""
    ours = os.path.dirname(os.path.abspath(__file__))
    for fr in reversed(traceback.extract_tb(exc.__traceback__)):
        if fr.filename.startswith(ours) or "/gunicorn/" in fr.filename:
            continue
        if not fr.filename.startswith("<frozen"):
            return f"{os.path.relpath(fr.filename)}, line {fr.lineno}"
        return None
    return None


def _message(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def _from_output(text: str) -> str:
    """gunicorn's own complaint, from what it printed before exiting."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    wanted = [ln for ln in lines
              if ln.startswith(("Error:", "Invalid value", "Failed to read")) or ": error:" in ln]
    if not wanted:
        wanted = [ln for ln in lines
                  if not ln.startswith(("Traceback", "File ", "^", "~", "usage:"))][-1:]
    return " ".join(wanted) or "gunicorn refused the configuration"


def inspect(argv: list[str]) -> GunicornSettings:
    """The effective settings for ``gunicorn ARGV``, or why gunicorn refused them."""
    out = io.StringIO()
    sys.argv = ["gunicorn", *argv]
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            # The user's config runs here first: its own exception, with its own message.
            from geventprobe.worker import app_conf
    except BaseException as exc:
        where = _origin(exc)
        return GunicornSettings(ok=False, stage="config",
                                error=_message(exc) + (f" ({where})" if where else ""),
                                config=os.environ.get("GEVENTPROBE_USER_CONFIG_SHOWN"))
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            from gunicorn.app.wsgiapp import WSGIApplication

            app = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
            cfg = app.cfg
            worker_class = cfg.worker_class  # imports it, as the master will
    except SystemExit:
        return GunicornSettings(ok=False, stage="settings", error=_from_output(out.getvalue()))
    except BaseException as exc:
        return GunicornSettings(ok=False, stage="settings", error=_message(exc))
    from gunicorn.workers.ggevent import GeventWorker

    return GunicornSettings(
        ok=True,
        config=app_conf.USER_CONFIG,
        worker_class=str(cfg.worker_class_str),
        gevent=isinstance(worker_class, type) and issubclass(worker_class, GeventWorker),
        workers=int(cfg.workers),
        preload=bool(cfg.preload_app),
        daemon=bool(cfg.daemon),
        timeout=cfg.timeout,
        max_requests=int(cfg.max_requests or 0),
        reuse_port=bool(cfg.reuse_port),
        app=app.app_uri,
        chdir=cfg.chdir,
        hooks=sorted(k for k in app_conf._user_hooks),
    )


def main() -> None:
    """Entry point: OUT.json -- ARGS."""
    path = sys.argv[1]
    args = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    try:
        result = inspect(args)
    except BaseException as exc:  # never a traceback: the parent shows one line
        result = GunicornSettings(ok=False, stage="inspect", error=_message(exc))
    record.write(path, result)


if __name__ == "__main__":
    main()

"""List the user's app's routes as its framework declares them, for ``--route auto``.

``python -m geventprobe.worker.list_routes OUT.json -- GUNICORN ARGS... APP`` runs in a
throwaway child, in the user's working directory and environment: gunicorn loads their
configuration (``app_conf.py``: config file, ``GUNICORN_CMD_ARGS``, our command line),
applies its ``raw_env`` and ``pythonpath`` as its master would, then imports the app the
way gunicorn does (``WSGIApplication.load``); ``-- --wsgi SPEC [PYTHONPATH...]`` imports
an app the way uWSGI does (``wsgi_load``; its ``env`` options are the child's environment).
Nothing is patched and nothing is served: the child only reads the routes off the callable
and writes them, or the user's own error, to OUT.json (a ``record.AppRoutes``):

- Django (a ``WSGIHandler``): every pattern of the URLconf (``get_resolver()``), includes
  walked, each with the parameters its path needs and, for a class-based view, the methods
  it defines (``require_http_methods``' list for a decorated function view);
- Flask (an object with a ``url_map``): every rule of ``url_map``, its arguments (less
  those its ``defaults`` give) and its methods.

A WSGI middleware around the app (``WhiteNoise(application)``, ``ProxyFix``) is looked
through by its usual attribute (``application``, ``app``, ``wsgi_app``, ``__wrapped__``).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import os
import re
import sys

from geventprobe.worker import record
from geventprobe.worker.inspect_conf import _message, _origin
from geventprobe.worker.record import AppRoutes, FoundRoute

_WRAPPED = ("application", "app", "wsgi_app", "__wrapped__", "wrapped")
_REGEX_SPECIAL = re.compile(r"(?<!\\)[.*+?\[\](){}|^$]|\\[dDwWsSbBAZ]")


def _framework(obj) -> tuple[str, object] | None:
    """(``django`` or ``flask``, the object that holds the routes), looking through
    middleware; None when it is neither."""
    for _ in range(10):
        if obj is None:
            return None
        if hasattr(obj, "url_map") and hasattr(obj, "view_functions"):
            return "flask", obj
        handlers = sys.modules.get("django.core.handlers.wsgi")
        if handlers is not None and isinstance(obj, handlers.WSGIHandler):
            return "django", obj
        obj = next((getattr(obj, name) for name in _WRAPPED
                    if getattr(obj, name, None) is not None
                    and getattr(obj, name) is not obj), None)
    return None


def _view_name(view) -> str:
    cls = getattr(view, "view_class", None)
    target = cls if cls is not None else view
    name = getattr(target, "__qualname__", None) or type(target).__name__
    return f"{getattr(target, '__module__', '?')}.{name}"


def _django_methods(view) -> list[str]:
    """The methods a Django view answers; empty when it does not say (a function view)."""
    cls = getattr(view, "view_class", None)
    if cls is not None:
        return sorted(m.upper() for m in getattr(cls, "http_method_names", ())
                      if m not in ("options", "head") and hasattr(cls, m))
    fn = view
    for _ in range(10):  # require_http_methods keeps its list in the wrapper's closure
        for cell, name in zip(getattr(fn, "__closure__", None) or (),
                              getattr(getattr(fn, "__code__", None), "co_freevars", ())):
            if name == "request_method_list":
                with contextlib.suppress(ValueError):
                    return sorted({str(m).upper() for m in cell.cell_contents} - {"HEAD"})
        fn = getattr(fn, "__wrapped__", None)
        if fn is None:
            break
    return []


def _regex_piece(regex: str) -> tuple[str, bool]:
    """A regex pattern's text as a path piece, and whether it is one fixed path."""
    text = regex[1:] if regex.startswith("^") else regex
    for end in ("\\Z", "$"):
        if text.endswith(end) and not text.endswith("\\" + end):
            text = text[:-len(end)]
            break
    if _REGEX_SPECIAL.search(text):
        return text, False
    return re.sub(r"\\(.)", r"\1", text), True


def _django_routes() -> list[FoundRoute]:
    from django.urls import URLResolver, get_resolver
    from django.urls.resolvers import RegexPattern, RoutePattern

    out: list[FoundRoute] = []

    def walk(patterns, prefix: str, params: list[str], fixed: bool) -> None:
        for entry in patterns:
            pattern = entry.pattern
            if isinstance(pattern, RoutePattern):
                piece, names, ok = str(pattern), list(pattern.converters), True
            elif isinstance(pattern, RegexPattern):
                compiled = pattern.regex
                piece, ok = _regex_piece(compiled.pattern)
                names = list(compiled.groupindex) or (
                    [f"group {i + 1}" for i in range(compiled.groups)])
            else:  # LocalePrefixPattern: the prefix of the active language
                piece, names, ok = str(pattern), [], True
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + piece, params + names, fixed and ok)
            else:
                out.append(FoundRoute(path="/" + prefix + piece,
                                      methods=_django_methods(entry.callback),
                                      params=params + names,
                                      view=_view_name(entry.callback), fixed=fixed and ok))

    walk(get_resolver().url_patterns, "", [], True)
    return out


def _flask_routes(app) -> list[FoundRoute]:
    out = []
    for rule in app.url_map.iter_rules():
        needed = sorted(set(rule.arguments) - set(rule.defaults or {}))
        methods = sorted(set(rule.methods or ()) - {"HEAD", "OPTIONS"})
        out.append(FoundRoute(path=rule.rule, methods=methods, params=needed,
                              view=str(rule.endpoint)))
    return out


def find(argv: list[str]) -> AppRoutes:
    """The routes of the app ``gunicorn ARGV`` would serve, or why they cannot be listed."""
    out = io.StringIO()
    sys.argv = ["gunicorn", *argv]
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            # Their config runs here first (as in inspect_conf), then gunicorn's settings.
            importlib.import_module("geventprobe.worker.app_conf")
            from gunicorn.app.wsgiapp import WSGIApplication

            wsgi = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    except SystemExit:
        return AppRoutes(ok=False, stage="config", error="gunicorn refused the settings")
    except BaseException as exc:
        where = _origin(exc)
        return AppRoutes(ok=False, stage="config",
                         error=_message(exc) + (f" ({where})" if where else ""))
    cfg = wsgi.cfg
    for key, value in (cfg.env or {}).items():  # raw_env, as gunicorn's master sets it
        os.environ[key] = value
    _on_path((cfg.pythonpath or "").split(","))
    return _routes_of(wsgi.load, wsgi.app_uri, out)


def find_wsgi(spec: str, paths: list[str]) -> AppRoutes:
    """The routes of the app uWSGI would load from ``spec`` (``wsgi_load``), ``paths``
    (its ``pythonpath``) first on the path; its ``env`` is this process's already."""
    from geventprobe.worker import wsgi_load

    _on_path(paths)
    shown = spec.split(":", 1)[1] if spec.startswith("file:") else spec
    return _routes_of(lambda: wsgi_load.load(spec), shown, io.StringIO())


def _on_path(paths: list[str]) -> None:
    for path in reversed(paths):
        if path.strip() and os.path.abspath(path.strip()) not in sys.path:
            sys.path.insert(0, os.path.abspath(path.strip()))


def _routes_of(load, uri: str, out: io.StringIO) -> AppRoutes:
    """Import the app with ``load`` and list what its framework declares."""
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            app = load()
    except BaseException as exc:
        where = _origin(exc)
        return AppRoutes(ok=False, stage="import",
                         error=_message(exc) + (f" ({where})" if where else ""))
    kind = type(app)
    shown = f"{kind.__module__}.{kind.__qualname__}"
    found = _framework(app)
    if found is None:
        what = ("a plain WSGI function" if inspect.isfunction(app)
                else f"a {shown} object")
        return AppRoutes(ok=False, stage="framework", callable_type=shown,
                         error=f"{uri} is {what}, neither Django nor Flask")
    framework, holder = found
    try:
        with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
            routes = _django_routes() if framework == "django" else _flask_routes(holder)
    except BaseException as exc:
        return AppRoutes(ok=False, stage="list", framework=framework, callable_type=shown,
                         error=_message(exc))
    return AppRoutes(ok=True, framework=framework, routes=routes, callable_type=shown)


def main() -> None:
    """Entry point: OUT.json -- ARGS."""
    path = sys.argv[1]
    args = sys.argv[3:] if sys.argv[2:3] == ["--"] else sys.argv[2:]
    try:
        # ``--wsgi SPEC [PATH...]``: an app named as uWSGI names it; else gunicorn's argv.
        result = find_wsgi(args[1], args[2:]) if args[:1] == ["--wsgi"] else find(args)
    except BaseException as exc:  # never a traceback: the parent shows one line
        result = AppRoutes(ok=False, stage="list", error=_message(exc))
    record.write(path, result)
    sys.stdout.flush()
    os._exit(0)  # an app's non-daemon threads must not keep the child (and the run) waiting


if __name__ == "__main__":
    main()

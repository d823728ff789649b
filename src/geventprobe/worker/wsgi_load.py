"""A WSGI callable named the way uWSGI names it, imported the way uWSGI's loaders do.

``module:callable`` (uWSGI's ``module``), or ``file:PATH:callable`` (its ``wsgi-file``: the
file run as module ``uwsgi_file_<path>``). Used where uWSGI loads the app
(``uwsgi_app.py``) and where ``--route auto`` lists its routes (``list_routes.py``): the
same import both times. Standard library only, no side effect beyond the import itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys


def load(spec: str):
    """The callable ``spec`` names; the import's own exception when it fails."""
    kind, _, rest = spec.partition(":")
    if kind == "file":
        path, _, name = rest.rpartition(":")
        # uWSGI's file loader: module uwsgi_file_<path with every non-word character as _>.
        module_name = "uwsgi_file_" + re.sub(r"[^\w]", "_", path)
        loader = importlib.util.spec_from_file_location(module_name, path)
        if loader is None:
            raise ImportError(f"cannot load {path!r} as Python")
        module = importlib.util.module_from_spec(loader)
        sys.modules[module_name] = module
        loader.loader.exec_module(module)
    else:
        module_name, name = kind, rest
        module = importlib.import_module(module_name)
    found = getattr(module, name, None)
    if found is None:
        raise AttributeError(f"module {module_name!r} has no callable {name!r}")
    if not callable(found):
        raise TypeError(f"{module_name}.{name} is not callable")
    return found

"""Bindings made before patching: names in the app's own modules that still point at the
standard library's originals after gevent patched the worker.

``from time import sleep`` binds the function, not the module's attribute: when it runs
before ``gevent.monkey.patch_all()`` (an app loaded by the gunicorn master under
``preload_app``, an import from the gunicorn config or a hook), the module keeps the
blocking ``time.sleep`` for the life of the process although ``time.sleep`` itself is
gevent's afterwards. gevent keeps every original it replaced (``gevent.monkey.saved``);
after the worker patched, any global of the app's modules that IS one of them, or an
instance of an original class (a ``threading.Lock()`` made before patching), was bound
too early. The module's source says on which line (``from time import sleep`` at
``app.py:17``).

``scan()`` returns plain dicts for the worker's record; ``core/early_bindings.py`` matches
them with the stacks that blocked the hub. Imports gevent only inside functions.
"""

from __future__ import annotations

import ast
import sys

from geventprobe.worker.monitor import is_user_code, short

_LIMIT = 50


def originals() -> tuple[dict[int, str], dict[type, str]]:
    """(id of an original function or class → ``module.name``, original class → name) for
    every original gevent saved that differs from what the module holds now."""
    from gevent import monkey

    funcs: dict[int, str] = {}
    classes: dict[type, str] = {}
    for module_name, saved in monkey.saved.items():
        module = sys.modules.get(module_name)
        if module is None or module_name.startswith("_gevent"):
            continue
        for name, original in saved.items():
            if name.startswith("_") or not callable(original):
                continue
            if getattr(module, name, None) is original:
                continue  # not replaced after all: nothing bound too early
            funcs[id(original)] = f"{module_name}.{name}"
            if isinstance(original, type):
                classes[original] = f"{module_name}.{name}"
    lock_type = monkey.saved.get("_thread", {}).get("LockType")
    if isinstance(lock_type, type):
        classes[lock_type] = "threading.Lock"
    return funcs, classes


def _statements(path: str) -> dict[str, tuple[int, str]]:
    """Module-level name → (line, statement) of the import or assignment that bound it."""
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
        tree = ast.parse(source)
    except (OSError, SyntaxError, ValueError):
        return {}
    lines = source.splitlines()
    out: dict[str, tuple[int, str]] = {}
    for node in tree.body:
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [a.asname or a.name for a in node.names]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        if not names:
            continue
        # The statement without its comment (ast drops comments); its first line only.
        segment = ast.get_source_segment(source, node) or (
            lines[node.lineno - 1] if node.lineno <= len(lines) else "")
        text = segment.strip().splitlines()[0] if segment.strip() else ""
        for name in names:
            out.setdefault(name, (node.lineno, text))
    return out


def scan(modules: dict | None = None) -> list[dict]:
    """The app's globals bound to an original gevent replaced, with the line that bound
    them: ``{"file", "module", "name", "original", "kind", "line", "statement"}``."""
    funcs, classes = originals()
    found: list[dict] = []
    for module_name, module in list((modules if modules is not None else sys.modules).items()):
        path = getattr(module, "__file__", None) or ""
        if not path.endswith(".py") or not is_user_code(path):
            continue
        statements = None
        for name, value in list(vars(module).items()):
            if name.startswith("__"):
                continue
            original = funcs.get(id(value))
            kind = "class" if isinstance(value, type) else "function"
            if original is None:
                original = classes.get(type(value))
                kind = "instance"
            if original is None:
                continue
            if statements is None:
                statements = _statements(path)
            line, statement = statements.get(name, (None, None))
            found.append({"file": short(path), "module": module_name, "name": name,
                          "original": original, "kind": kind, "line": line,
                          "statement": statement})
            if len(found) >= _LIMIT:
                return found
    return found

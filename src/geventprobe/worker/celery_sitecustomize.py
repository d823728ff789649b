"""Copied as ``sitecustomize.py`` into the boot dir a celery worker under test gets on PYTHONPATH.

Python imports ``sitecustomize`` while it starts (``site.main()``, after the ``.pth``
files, before the program's first line), whatever program it runs: ``celery -A APP
worker``, ``python worker.py``, a shell script's python. So geventprobe gets into the
user's own worker without a change to their code or to the command that starts it, and
how that command starts the worker (which decides the import order) stays theirs.

What it does, only when ``GEVENTPROBE_CELERY_RUN_DIR`` is set: install ``celery_watch``
(an import hook that notes who imported the driver when, and connects our celery
signal receivers once ``celery.signals`` has loaded; faulthandler takes a signal for a
stack dump, and ``boot-<pid>.json`` says the boot is in). Then, always, it runs the
``sitecustomize`` this one shadows, if there is one further down ``sys.path`` (Debian's
``/etc/python3.X/sitecustomize.py``, a virtualenv's), as Python would have.

It imports nothing but what every interpreter has loaded at start (``os``, ``sys``,
``importlib.machinery``, ``_signal``), geventprobe's own ``worker`` modules and the
built-in ``faulthandler`` (docs/celery.md measures the import order with and without).
"""

import os
import sys


def _install() -> None:
    run_dir = os.environ.get("GEVENTPROBE_CELERY_RUN_DIR")
    if not run_dir:
        return
    try:
        from geventprobe.worker import celery_watch

        celery_watch.install(run_dir)
    except Exception as exc:  # never keep the user's worker from starting
        try:
            path = os.path.join(os.environ["GEVENTPROBE_CELERY_RUN_DIR"],
                                f"boot-error-{os.getpid()}.txt")
            with open(path, "w") as f:
                f.write(f"{type(exc).__name__}: {exc}\n")
        except OSError:
            pass


def _chain() -> None:
    """Run the sitecustomize that this one shadows, as Python would have run it."""
    import importlib.machinery
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


_install()
_chain()

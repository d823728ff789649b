"""Code that runs INSIDE the probed worker processes, never in the geventprobe process.

Everything the parent runs lives in the other subpackages; this one is what gunicorn
loads in its master and workers (``harness_conf``/``app_conf`` as the config,
``harness_app`` as the built-in app, ``probe`` started in ``post_worker_init``).

Nothing here may import a PostgreSQL driver at module level except ``harness_app``:
when the driver is imported is the very thing under test (docs/field-facts.md), so
the gunicorn config and the probe must not change it. Nor may anything here
import the rest of geventprobe: the workers need only the standard library,
gevent and the driver (a version matrix's workers see only this package).
"""

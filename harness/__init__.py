"""Code that runs inside gunicorn, not in the geventprobe process.

Nothing here may import a PostgreSQL driver at module level except ``app``:
when the driver is imported is the very thing under test (docs/field-facts.md), so
the gunicorn config and the probe must not change it. Nor may anything here
import the rest of geventprobe: the workers need only the standard library,
gevent and the driver.
"""

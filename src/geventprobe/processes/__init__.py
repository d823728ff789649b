"""Processes and servers the parent starts, owns, stops and reaps.

``children`` (spawn, stop, reap, temp dirs, guards), the embedded ``postgres``, what the
parent asks a ``server``, the ``--rtt`` ``delay_proxy``, the ``watchdog``, CPU sampling
(``cpu``), the pre-flight checks, and the workers under test: ``gunicorn_workers``.
"""

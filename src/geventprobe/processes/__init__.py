"""Processes and servers the parent starts, owns, stops and reaps.

``children`` (spawn, stop, reap, temp dirs, guards), the embedded ``postgres``, what the
parent asks a ``server``, the ``--rtt`` ``delay_proxy``, the ``watchdog``, CPU sampling
(``cpu``), the pre-flight checks, and the workers under test: ``workers`` (the parent's
side of the run-dir protocol every kind of worker shares, and ``WorkersRun``) and
``gunicorn_workers`` (gunicorn's).
"""

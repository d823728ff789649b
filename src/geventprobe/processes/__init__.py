"""Processes and servers the parent starts, owns, stops and reaps.

``children`` (spawn, stop, reap, temp dirs, guards), the embedded ``postgres``, what the
parent asks a ``server``, the ``--rtt`` ``delay_proxy``, the ``watchdog``, CPU sampling
(``cpu``), the pre-flight checks, and the workers under test: ``run_dir`` (the parent's
side of the files every kind of probed worker exchanges with it) and ``gunicorn_workers``
(gunicorn started with the probe in its workers, read and stopped). Nothing here knows
the user's app or a kind of worker (``tests/test_layers.py``).
"""

"""Processes and servers the parent starts, owns, stops and reaps.

``children`` (spawn, stop, reap, temp dirs, guards), the embedded ``postgres``, what the
parent asks a ``server``, the ``--rtt`` ``delay_proxy``, the ``watchdog``, CPU sampling
(``cpu``), the pre-flight checks, and the workers under test: ``run_dir`` (the parent's
side of the files every kind of probed worker exchanges with it, and ``WorkersRun``) and
``gunicorn_workers`` (gunicorn's workers).
"""

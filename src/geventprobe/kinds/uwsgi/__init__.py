"""A WSGI app under uWSGI's gevent loop engine (``run --uwsgi``, ``--uwsgi-cmd``).

``plan`` reads its flags, ``config`` resolves the user's uWSGI configuration the way uWSGI
does and changes the few options the probe needs, ``server`` starts and stops uWSGI (the
``WsgiServer`` that ``app/wsgi_run.run_workers`` drives, as it drives gunicorn), ``app`` is
the run's target and subject, ``causes`` says why and how to fix it in uWSGI's words and
``report`` its sections of the report. In the workers: ``worker/uwsgi_hook.py`` and
``worker/uwsgi_app.py``.
"""

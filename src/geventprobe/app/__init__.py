"""The user's own app, in the parent: how it is started, its routes, the load sent at it.

``gunicorn_app`` reads the user's gunicorn settings into a ``GunicornApp`` (a run's target
and its subject); ``routes`` drives their routes and ``route_rules`` judges each;
``http_load`` is the open-loop load. A celery worker and its tasks live in ``kinds/celery``.
"""

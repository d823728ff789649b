"""The user's own app, in the parent: how it is started, its routes, the load sent at it.

``gunicorn_app`` reads the user's gunicorn settings and plans the command; ``routes``
drives their routes and ``route_rules`` judges each; ``http_load`` is the open-loop load.
"""

# A gevent deployment of the busy app (tests/test_app_owned.py).
worker_class = "gevent"
workers = 2

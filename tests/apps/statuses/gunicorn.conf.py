# A gevent deployment of the statuses app (tests/test_route_faults.py).
worker_class = "gevent"
workers = 2

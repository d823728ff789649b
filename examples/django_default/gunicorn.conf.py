# A gevent deployment of an unmodified Django project (worker_connections: 1000).
worker_class = "gevent"
workers = 2

# A gevent deployment of a Flask app (worker_connections: 1000).
worker_class = "gevent"
workers = 2

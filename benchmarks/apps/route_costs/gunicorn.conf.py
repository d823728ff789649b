# 2 gevent workers, as the example apps (worker_connections: 1000).
worker_class = "gevent"
workers = 2

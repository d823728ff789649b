# A gevent deployment: patched correctly, yet every request of a worker shares one connection.
worker_class = "gevent"
workers = 2

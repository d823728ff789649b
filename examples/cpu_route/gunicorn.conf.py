# A gevent deployment whose login route hashes passwords in the request.
worker_class = "gevent"
workers = 2

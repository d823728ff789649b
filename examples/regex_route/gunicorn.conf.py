# A gevent deployment whose /validate route runs a backtracking regular expression.
worker_class = "gevent"
workers = 2

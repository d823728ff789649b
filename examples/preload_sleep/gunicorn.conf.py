# A gevent deployment preloaded to save memory and start faster.
worker_class = "gevent"
workers = 2
preload_app = True

# A gevent deployment of the pool app: nothing here imports the driver. Expected: OK.
worker_class = "gevent"
workers = 2

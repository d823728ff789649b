# A gevent deployment of a SQLAlchemy app whose engine pool holds one connection.
worker_class = "gevent"
workers = 2

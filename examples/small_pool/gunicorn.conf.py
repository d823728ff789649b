# A gevent deployment with a pool of 2 connections per worker (worker_connections: 1000).
worker_class = "gevent"
workers = 2

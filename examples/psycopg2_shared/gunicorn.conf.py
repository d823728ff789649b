# A gevent deployment of a psycopg2 app (psycogreen is set up by the app itself); no preload.
worker_class = "gevent"
workers = 2

# gunicorn -c gunicorn.conf.py app:app
worker_class = "gevent"
workers = 2

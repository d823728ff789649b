"""A small Flask app on psycopg 3. FIXED: a psycopg_pool pool per worker, made when the
worker imports the app (after gevent patched it), as large as the concurrency it will see:
concurrent requests each get a connection of their own and their queries overlap.

    gunicorn -c gunicorn.conf.py app:app
"""

import os

from flask import Flask, request
from psycopg_pool import ConnectionPool

app = Flask(__name__)
pool = ConnectionPool(os.environ.get("DATABASE_URL", ""), min_size=16, max_size=32,
                      kwargs={"autocommit": True}, timeout=30, open=True)


@app.get("/")
def index():
    return "hello\n"


@app.get("/items")
def items():
    """A query that takes the server 0.2 s, as a report or a search does."""
    with pool.connection() as db:
        db.execute("SELECT pg_sleep(0.2)")
    return "3 items\n"


@app.get("/items/<int:item_id>")
def item(item_id):
    return f"item {item_id}\n"


@app.post("/orders")
def orders():
    return "ordered\n"


@app.get("/account")
def account():
    """Needs a login: without credentials, 401."""
    if not request.authorization:
        return "log in first\n", 401, {"WWW-Authenticate": 'Basic realm="shop"'}
    return f"hello {request.authorization.username}\n"

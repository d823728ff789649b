"""A small Flask app on psycopg 3. BROKEN: one connection, opened when the worker imports
the app, shared by every request: psycopg guards it with a lock, so under gevent
concurrent requests queue on it one query at a time while the hub stays free.

    gunicorn -c gunicorn.conf.py app:app
"""

import os

import psycopg
from flask import Flask, request

app = Flask(__name__)
db = psycopg.connect(os.environ.get("DATABASE_URL", ""), autocommit=True)


@app.get("/")
def index():
    return "hello\n"


@app.get("/items")
def items():
    """A query that takes the server 0.2 s, as a report or a search does."""
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

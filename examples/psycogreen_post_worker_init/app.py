"""A plain WSGI app on psycopg2, which never yields to gevent unless a wait callback is set.

Whether it blocks depends on the gunicorn config beside it (psycogreen or not).
"""

import os

import psycopg2

DATABASE_URL = os.environ.get("DATABASE_URL", "")


def application(environ, start_response):
    """``/now`` asks the database for the time, ``/query`` waits 0.2 s on it (a connection
    per request); everything else says hello."""
    sql = {"/now": "SELECT now()", "/query": "SELECT pg_sleep(0.2)"}.get(environ.get("PATH_INFO"))
    if sql:
        conn = psycopg2.connect(DATABASE_URL)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                body = f"{cur.fetchone()[0]}\n".encode()
        finally:
            conn.close()
    else:
        body = b"hello\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

"""psycopg with a wait function that yields to gevent but never sleeps (a constructed case).

An app that replaced ``psycopg.waiting.wait`` with a "gevent-friendly" loop of its own:
poll the socket with a zero timeout, ``gevent.sleep(0)`` while nothing is ready. The hub
keeps running (other tasks and the consumer go on), but the worker burns a core for as
long as any task waits on the server. No known library ships this; it stands for every
wait loop that spins (geventprobe's own BUSY-WAIT control does the same under gunicorn).
Expected: BUSY-WAIT (the tasks overlap, the hub is on time, the CPU is not).

    celery -A tasks worker -P gevent -c 16
"""

import os
import select

import gevent
import psycopg
from celery import Celery
from psycopg import waiting

app = Celery("tasks", broker="redis://127.0.0.1:6379/0")


def spinning_wait(gen, fileno, interval=None, timeout=None):
    """psycopg's wait protocol as a loop that yields to the hub but never sleeps."""
    poller = select.poll()  # gevent's patched select has no poll: this is the real one
    try:
        state = next(gen)
        poller.register(fileno, waiting._poll_evmasks[state])
        while True:
            events = poller.poll(0)
            if not events:
                gevent.sleep(0)
                if interval is not None:
                    gen.send(getattr(waiting, "READY_NONE", 0))
                continue
            ev = events[0][1]
            ready = (waiting.READY_R if ev & select.POLLIN else 0) | \
                (waiting.READY_W if ev & select.POLLOUT else 0)
            state = gen.send(ready)
            poller.modify(fileno, waiting._poll_evmasks[state])
    except StopIteration as stop:
        return stop.value


waiting.wait = spinning_wait


@app.task
def query(seconds=0.2):
    """Open a connection, wait ``seconds`` on the server, close it."""
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
    return seconds

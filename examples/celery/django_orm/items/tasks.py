"""Tasks that wait on the database through Django's connection."""

from celery import shared_task
from django.db import connection


@shared_task
def query(seconds=0.2):
    """Wait ``seconds`` on the server through this task's Django connection."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_sleep(%s)", [seconds])
    return seconds

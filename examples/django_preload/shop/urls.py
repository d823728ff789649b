"""One view that reads from the database."""

from django.db import connection
from django.http import HttpResponse
from django.urls import path

# Module-level use of the connection, as many apps have (a vendor check, a warm-up query):
# with preload_app = True it runs in the gunicorn master, before gevent patched anything.
POSTGRES = connection.vendor == "postgresql"


def items(request):
    """Three rows from the database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT generate_series(1, 3)")
        rows = cursor.fetchall()
    return HttpResponse(", ".join(str(r[0]) for r in rows) + "\n", content_type="text/plain")


urlpatterns = [path("items", items)]

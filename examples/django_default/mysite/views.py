"""The one view added to django-admin startproject's files: a health check that asks the
database (``SELECT 1`` on Django's default connection: opened for the request and closed
at its end, since CONN_MAX_AGE is 0)."""

from django.db import connection
from django.http import HttpResponse


def health(request):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return HttpResponse("ok\n", content_type="text/plain")

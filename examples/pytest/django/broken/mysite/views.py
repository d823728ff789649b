"""The views: a page, a list read from the database, one item, an order form, an account."""

from django.contrib.auth.decorators import login_required
from django.db import connection
from django.http import HttpResponse
from django.views import View


def index(request):
    """No database: a static page."""
    return HttpResponse("hello\n", content_type="text/plain")


def items(request):
    """A query that takes the server 0.2 s, as a report or a search does."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(0.2), 3")
        count = cursor.fetchone()[1]
    return HttpResponse(f"{count} items\n", content_type="text/plain")


def item(request, pk):
    """One item: the path needs its number."""
    return HttpResponse(f"item {pk}\n", content_type="text/plain")


class Orders(View):
    """A form's target: POST only."""

    def post(self, request):
        return HttpResponse("ordered\n", content_type="text/plain")


@login_required
def account(request):
    """Needs a login: without one, Django redirects to settings.LOGIN_URL."""
    return HttpResponse(f"hello {request.user}\n", content_type="text/plain")

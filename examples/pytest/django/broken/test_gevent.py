"""Does this Django project cooperate with gevent under its gunicorn config?

Copy this file into your tests: it starts your gunicorn with your config and real gevent
workers against a throwaway PostgreSQL (or GEVENTPROBE_DSN), drives every GET route of
your URLconf that takes no parameters, and fails with the verdict, the cause and the fix.
"""

from pathlib import Path

PROJECT = Path(__file__).resolve().parent  # where you run gunicorn


def test_gunicorn_gevent_workers_cooperate(geventprobe):
    result = geventprobe.app("mysite.wsgi:application", chdir=PROJECT,
                             gunicorn_config="gunicorn.conf.py", routes="auto")
    assert result.ok, result.explain()

"""The kinds of workers geventprobe probes, each in a package of its own.

A kind owns how it is asked for and planned, how its workers are started, what they
report, how it is judged and its causes and fixes in its own words. ``celery`` (a
``celery -P gevent`` worker and its tasks) is the first moved here.
"""

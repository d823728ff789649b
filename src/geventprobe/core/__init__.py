"""The probe core, in the parent: plan a run, run it, judge it, build the one record.

``plan`` resolves a command line into a frozen ``RunPlan`` once; ``runner`` is the one
way through a run (plan -> run -> settle once -> record); ``target`` is the extension
point (what a run probes: ``drivers`` the built-in builds, the user's app in
``app/gunicorn_app.py``, the version matrix in ``versions/matrix.py``, ``calibrate`` the
known controls); ``session`` holds what the rows share (the server); ``judge`` turns a
subject's worker records into its verdict with ``metrics`` (figures), ``rules`` (the
verdict rules), ``causes`` (why, and the fix) and ``blocked`` (who blocked); ``builds``
lists the driver setups. Nothing here prints: progress goes to a ``progress.Listener``.
"""

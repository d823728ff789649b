"""Renderers of a ``RunResult``: each format is one module reading the same record."""

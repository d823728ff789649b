"""Other releases of the drivers and gevent: the version matrix, its isolated environments
(``venvs``) and ``bisect``."""

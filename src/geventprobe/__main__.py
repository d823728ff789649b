"""``python -m geventprobe``."""

# First, before the imports below (click, rich: a few hundred ms): a --dsn password leaves
# the process title, and a Ctrl-C that early is one line and exit 130, not a traceback.
from geventprobe.startup import begin

begin()

from geventprobe.cli import main  # noqa: E402

main()

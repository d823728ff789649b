"""``python -m geventprobe``."""

# Before the imports below (click, rich: a few hundred ms): a Ctrl-C that early is one
# line and exit 130, like any later one, not a KeyboardInterrupt traceback.
from geventprobe.early_interrupt import quiet_early_interrupt

quiet_early_interrupt()

from geventprobe.cli import main  # noqa: E402

main()

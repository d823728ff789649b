"""``python -m geventprobe``."""

from geventprobe.cli import main

main()

"""The command line: one module per command, each thin (parse, call the core, render, exit).

Exit codes, for every command: 0 every psycopg 3 build under test cooperates;
1 one of them BLOCKS or BUSY-WAITs; 2 usage or environment error (or a probe
that failed); 3 inconclusive (a baseline did not get its known class);
130 interrupted.
"""

from __future__ import annotations

from geventprobe.startup import begin, started_as_program

# The console script imports this module, then calls main(): before click and the commands
# are imported, a --dsn password leaves the process title and a Ctrl-C is one line.
if started_as_program():
    begin()

import click

from geventprobe import __version__
from geventprobe.cli.common import OneLineErrorsGroup


# OneLineErrorsGroup: click's usage errors become one line and exit 2, like every bad input.
@click.group(cls=OneLineErrorsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geventprobe")
def main() -> None:
    """Does your PostgreSQL driver block or busy-wait under gunicorn -k gevent?"""


def _register() -> None:
    from geventprobe.cli import calibrate, run

    main.add_command(run.run_command)
    main.add_command(calibrate.calibrate_command)

    from geventprobe.cli import compare, report

    main.add_command(report.report_command)
    main.add_command(compare.compare_command)

    from geventprobe.cli import bisect, cache

    main.add_command(bisect.bisect_command)
    main.add_command(cache.cache_command)


_register()

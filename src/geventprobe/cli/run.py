"""``geventprobe run``: parse, call the core, render, pick the exit code."""

from __future__ import annotations

import sys

import click

from geventprobe import api, files, kinds
from geventprobe.cli import report as report_cli
from geventprobe.cli.common import (
    ProgressListener,
    _given_broker,
    debug_option,
    dsn_option,
    handled_errors,
    progress_console,
    report_console,
    rtt_option,
    say,
    verbose_option,
    warn_secret_argv,
)
from geventprobe.core import plan as plans
from geventprobe.errors import ProbeError
from geventprobe.processes.preflight import CONNECTION_CAP, DEFAULT_TIME_LIMIT_S
from geventprobe.report import json_format
from geventprobe.report import run as run_report
from geventprobe.report.formats import Terminal

CONTROLS = 9
"""Steps the progress bar counts for the calibration controls (at most this many run)."""


@click.command("run")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="gunicorn workers per build [profile: 4].")
@click.option("--greenlets", type=click.IntRange(min=2, max=1000), default=None,
              help="Concurrent greenlets (one connection each) per worker [profile: 16].")
@click.option("--builds", "builds_text", metavar="LIST", default=None,
              help="Comma-separated: binary,c,python,psycopg2-green,psycopg2 [all].")
@dsn_option
@rtt_option
@click.option("--preload", is_flag=True, help="Run gunicorn with --preload (app imported in "
              "the master, before the workers patch).")
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the whole result as JSON.")
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="TOML profile overriding configs/default.toml.")
@click.option("--calibrate", "calibrate", is_flag=True,
              help="Run the calibration controls first and record them: a report then shows "
                   "the detector was live (exit 3 if a control missed its class).")
@click.option("--psycopg", "psycopg_text", metavar="VERSIONS", default=None,
              help="Version matrix: probe these psycopg releases (e.g. 3.1.12,3.3.8), each in "
                   "its own cached isolated environment; one row per version × build.")
@click.option("--gevent", "gevent_text", metavar="VERSIONS", default=None,
              help="Version matrix: probe these gevent releases (combined with --psycopg).")
@click.option("--markdown", "markdown_path", metavar="PATH", default=None,
              help="Write the Markdown report (a GitHub issue attachment; also appended to "
                   "$GITHUB_STEP_SUMMARY when that is set).")
@click.option("--redact-hosts", is_flag=True,
              help="Mask host names and IP addresses in every output (passwords always are).")
@click.option("--allow-many-connections", is_flag=True,
              help=f"Confirm a run that opens more than {CONNECTION_CAP} server connections at "
                   "once (workers × greenlets).")
@click.option("--time-limit", "time_limit", type=click.FloatRange(min=1),
              default=DEFAULT_TIME_LIMIT_S, show_default=True, metavar="SECONDS",
              help="Stop the run (exit 2; everything it started is removed) once it has lasted "
                   "this long.")
@click.option("--app", "app", metavar="MODULE:CALLABLE", default=None,
              help="Pre-deploy check: probe YOUR app under YOUR gunicorn config (hooks, "
                   "--preload, GUNICORN_CMD_ARGS) instead of the built-in driver builds.")
@click.option("--gunicorn-config", "gunicorn_config", metavar="PATH", default=None,
              help="With --app: your gunicorn config file [what gunicorn finds: -c in "
                   "GUNICORN_CMD_ARGS, else ./gunicorn.conf.py].")
@click.option("--chdir", "chdir", metavar="DIR", default=None,
              help="With --app or --celery: the directory your workers run in (your "
                   "project) [.].")
@click.option("--route", "route_texts", metavar="ROUTE", multiple=True,
              help="With --app (repeatable): also drive this route of your app, e.g. /login or "
                   "'POST /login' (empty body): one request alone, then route_concurrency "
                   "concurrent requests per worker; verdict OK, BLOCKING, SERIALIZED or FAILING. "
                   "'auto': every GET route without parameters of your Django or Flask app.")
@click.option("--route-exclude", "route_excludes", metavar="PATTERN", multiple=True,
              help="With --route auto (repeatable): leave out the found routes this glob "
                   "matches, e.g. '/admin/*'.")
@click.option("--celery", "celery", metavar="APP", default=None,
              help="Probe YOUR celery worker under -P gevent: `celery -A APP worker -P gevent "
                   "-c N` with your settings, its tasks through a throwaway redis-server.")
@click.option("--celery-cmd", "celery_cmd", metavar="COMMAND", default=None,
              help="Probe YOUR celery worker started YOUR way, e.g. \"python worker.py\" "
                   "(how it starts decides the import order); -c is yours.")
@click.option("--broker", "broker", metavar="URL", envvar="GEVENTPROBE_BROKER", default=None,
              callback=_given_broker,
              help="With --celery: your redis or RabbitMQ instead of a throwaway redis-server "
                   "(env GEVENTPROBE_BROKER keeps a password out of ps); a queue of our own, "
                   "removed after.")
@click.option("--task", "task_names", metavar="NAME", multiple=True,
              help="With --celery (repeatable): also run this task of yours, alone then C at "
                   "once; verdict OK, BLOCKING, BUSY-WAIT, SERIALIZED or FAILING.")
@click.option("--task-args", "task_args", metavar="JSON", multiple=True,
              help="The --task's positional arguments, a JSON array (once for every task, or "
                   "once per --task).")
@click.option("--task-kwargs", "task_kwargs", metavar="JSON", multiple=True,
              help="The --task's keyword arguments, a JSON object (once, or once per --task).")
@click.option("--profile", "profile_name", metavar="NAME", default=None,
              help="Named profile: default, quick (fast look), ci (stricter thresholds, "
                   "calibration on) [default, or `profile` in pyproject's [tool.geventprobe]].")
@click.option("--fail-on", "fail_on_text", metavar="LIST", default=None,
              help="Verdicts that exit 1: blocking,busy-wait,serialized,failing (the last two: "
                   "--route), or none [all four].")
@verbose_option
@debug_option
def run_command(workers, greenlets, builds_text, dsn, rtt_ms, preload, json_path, config_path,
                calibrate, verbose, debug, psycopg_text, gevent_text, markdown_path, redact_hosts,
                allow_many_connections, time_limit, app, gunicorn_config, chdir, route_texts,
                route_excludes, celery, celery_cmd, broker, task_names, task_args, task_kwargs,
                profile_name, fail_on_text, **kind_options):
    """Probe each driver build inside real gunicorn gevent workers and judge it
    (or your gunicorn app with --app, your celery worker with --celery, your app
    under uWSGI with --uwsgi or --uwsgi-cmd).

    Exit 0: every psycopg 3 build cooperates. 1: one BLOCKS or BUSY-WAITs, or a
    --route or --task is BLOCKING, BUSY-WAIT, SERIALIZED or FAILING. 2:
    usage/environment error or failed probe. 3: inconclusive (a baseline missed
    its known class). 130: interrupted.
    """
    console = progress_console()
    with handled_errors(debug):
        plan = api.plan_run(plans.RunRequest(
            command=["geventprobe", *sys.argv[1:]], workers=workers, greenlets=greenlets,
            builds=builds_text, dsn=dsn, rtt_ms=rtt_ms, preload=preload,
            config_path=config_path, calibrate=calibrate, psycopg=psycopg_text,
            gevent=gevent_text, allow_many_connections=allow_many_connections,
            time_limit_s=time_limit, app=app, gunicorn_config=gunicorn_config, chdir=chdir,
            routes=tuple(route_texts), route_exclude=tuple(route_excludes),
            profile=profile_name, fail_on=fail_on_text,
            celery=celery, celery_cmd=celery_cmd, broker=broker, tasks=tuple(task_names),
            task_args=tuple(task_args), task_kwargs=tuple(task_kwargs),
            options=kind_options))
        files.check_outputs([("--json", json_path), ("--markdown", markdown_path)])
        warn_secret_argv(dsn)
        warn_secret_argv(broker, "broker", "GEVENTPROBE_BROKER")
        total = plan.target.steps() + (CONTROLS if plan.calibrate else 0)
        with ProgressListener(console, total=total) as listener:
            result = api.run_plan(plan, listener, redact_hosts=redact_hosts)
        # `--json -`: stdout carries the file alone, the report goes to stderr with progress.
        to_stdout = files.is_stdout(json_path) or files.is_stdout(markdown_path)
        doc = run_report.document(result)  # ...and every report reads this document
        # The files first: one that cannot be written (a full disk, /dev/full) makes the run
        # exit 2, and the terminal's last line must say so, not the run's own exit code.
        written, failed = [], None
        try:
            for path, write in ((json_path, lambda p: json_format.write(result, p)),
                                (markdown_path, lambda p: report_cli.write_markdown(doc, p))):
                if path:
                    write(path)
                    written.append(path)
        except ProbeError as exc:
            failed = exc
        Terminal(console if to_stdout else report_console()).show(
            run_report.document(result, exit_code=failed.exit_code) if failed else doc,
            verbose)
        for path in written:
            if not files.is_stdout(path):
                say(f"geventprobe: wrote {path}")
        report_cli.append_job_summary(doc)
        if failed is not None:
            raise failed
    sys.exit(result.exit_code)


# The flags each kind of worker declares for itself (``--uwsgi``...), after ours in --help.
for _option in kinds.options():
    run_command = _option(run_command)

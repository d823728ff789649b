"""The appendix of a run's report: the setup it is read against.

What the workers reported about themselves (the facts that pick a wait function, see
docs/field-facts.md), the PostgreSQL server, the machine, the command and profile, and a
reproduction for each subject that was not OK (the harness, report/repro.py).
"""

from __future__ import annotations

import shlex

from geventprobe import kinds
from geventprobe.record import BuildResult, RunResult
from geventprobe.report import calibration, repro
from geventprobe.report.cells import VERDICT_STYLE, label, yes_no
from geventprobe.report.document import (
    REFERENCE,
    Block,
    Facts,
    Pairs,
    Paragraph,
    Part,
    Verbatim,
)


def worker_facts(result: RunResult) -> Facts:
    """The facts that decide a wait function, as each build's workers reported them (and the
    rows a kind of worker adds: ``KindReport.facts_rows``)."""
    builds = [b for b in result.builds if b.facts]
    kind = kinds.report_of(result)

    def pg(b, key):
        return (b.facts.get("psycopg") or {}).get(key)

    def pg2(b, key):
        return (b.facts.get("psycopg2") or {}).get(key)

    def env(b, key):
        return (b.facts.get("env") or {}).get(key)

    def imported(b):
        in_master = b.facts.get("driver_imported_in_master")
        if in_master is None:  # not said (a uWSGI worker says where in "driver imported")
            return None
        return "gunicorn master" if in_master else "worker"

    def patched_at_import(b):
        return yes_no((b.facts.get("driver_import") or {}).get("select_patched"))

    spec = [
        ("psycopg `__version__`", lambda b: pg(b, "version")),
        ("psycopg `pq.__impl__`", lambda b: pg(b, "impl")),
        ("libpq at runtime `pq.version()`", lambda b: pg(b, "libpq")),
        ("libpq built against `pq.__build_version__`", lambda b: pg(b, "libpq_build")),
        ("`psycopg.waiting.wait`", lambda b: pg(b, "wait")),
        ("env `PSYCOPG_IMPL`", lambda b: env(b, "PSYCOPG_IMPL")),
        ("env `PSYCOPG_WAIT_FUNC`", lambda b: env(b, "PSYCOPG_WAIT_FUNC")),
        ("psycopg2 version", lambda b: pg2(b, "version")),
        ("psycopg2 libpq", lambda b: pg2(b, "libpq")),
        ("psycopg2 wait callback", lambda b: pg2(b, "wait_callback")
         or ("none" if b.facts.get("psycopg2") else None)),
        ("psycogreen", lambda b: b.facts.get("psycogreen")),
        ("driver imported in", imported),
        ("`select` patched when the driver was imported", patched_at_import),
        ("`is_module_patched(\"select\")`", lambda b: yes_no(b.facts.get("select_patched"))),
        ("`is_module_patched(\"socket\")`", lambda b: yes_no(b.facts.get("socket_patched"))),
        ("gevent", lambda b: b.facts.get("gevent")),
        ("greenlet", lambda b: b.facts.get("greenlet")),
        *(kind.facts_rows if kind is not None else
          [("gunicorn", lambda b: b.facts.get("gunicorn"))]),
        ("worker class", lambda b: b.facts.get("worker_class")),
        ("Python", lambda b: b.facts.get("python")),
        ("import error", lambda b: b.facts.get("import_error")),
    ]
    rows = []
    if builds:
        for fact, get in spec:
            values = [get(b) for b in builds]
            if all(v is None for v in values) and fact != "env `PSYCOPG_WAIT_FUNC`":
                continue  # e.g. no psycopg2 build ran: no psycopg2 rows
            rows.append((fact, ["–" if v is None else str(v) for v in values]))
    return Facts([label(b) for b in builds], rows)


def machine_pairs(result: RunResult) -> Pairs:
    """The machine and the geventprobe process (the parent, not the workers)."""
    env = result.environment or {}
    rows = [("OS", env.get("os")), ("kernel", env.get("kernel")),
            ("architecture", env.get("machine")), ("CPUs", env.get("cpu_count")),
            ("memory GiB", env.get("memory_gib")),
            ("load average (1, 5, 15 min)", ", ".join(str(x) for x in env["load_average"])
             if env.get("load_average") else None),
            ("Python (geventprobe)", " ".join(str(x) for x in (
                env.get("python_implementation"), env.get("python")) if x) or None),
            ("geventprobe", result.tool_version)]
    pkgs = env.get("packages") or {}
    installed = ", ".join(f"{k} {v}" for k, v in pkgs.items() if v)
    if installed:
        rows.append(("installed packages", installed))
    return Pairs([(k, str(v)) for k, v in rows if v is not None])


def server_pairs(result: RunResult) -> Pairs:
    """The PostgreSQL server the probe ran against (its address is not a fact anyone needs)."""
    s = result.server or {}
    rows = [("PostgreSQL", s.get("version")), ("server_version_num", s.get("version_num")),
            ("max_connections", s.get("max_connections")),
            ("started by geventprobe", yes_no(s.get("embedded")) if "embedded" in s else None)]
    return Pairs([(k, str(v)) for k, v in rows if v is not None])


def command_line(result: RunResult) -> str:
    """The command as typed (secrets already redacted in the record)."""
    return shlex.join(result.command) if result.command else "(not recorded)"


def profile_toml(result: RunResult) -> str:
    """The workload and thresholds the run used, as a TOML profile one can pass to --config."""
    profile = result.profile or {}
    lines = [f"# profile: {profile.get('source', 'unknown')} (command-line flags applied); "
             f"--preload {'on' if result.preload else 'off'}"]
    for section in ("workload", "thresholds"):
        values = profile.get(section) or {}
        if values:
            lines.append(f"[{section}]")
            lines += [f"{k} = {v!r}" for k, v in values.items()]
    return "\n".join(lines)


def reproducible(result: RunResult) -> list[BuildResult]:
    """Subjects that deserve a reproduction (not OK)."""
    return [b for b in result.builds if repro.wanted(b)]


def reproductions(result: RunResult) -> list[Block]:
    """Per subject: what it reproduces, its files and its command; then the harness, once."""
    intro = Paragraph(
        "Each reproduction below runs under the harness (`harness.py`, the last block), the "
        "program this project checks each of its examples with: the standard library and the "
        "server being tested, no geventprobe. It starts the server on loopback with a "
        "throwaway PostgreSQL (or the one `DATABASE_URL` names) and, for celery, a throwaway "
        "redis-server; sends one request or task alone, then N at once, while it pings the "
        "server's hub; prints the figures and the class they show; stops everything it "
        "started. Exit 0 OK, 1 another class (`git bisect run` works), 2 nothing measured. "
        "Save each file under the name shown, `harness.py` where you run the command.")
    blocks: list[Block] = [intro]
    for b in reproducible(result):
        r = repro.reproduction(b, result)
        blocks.append(Paragraph(r.says, lead=f"{label(b)}:"))
        blocks += [Verbatim(text.rstrip(), "python" if name.endswith(".py") else "",
                            title=f"{r.directory}/{name}", note=r.verdict.value,
                            style=VERDICT_STYLE[r.verdict]) for name, text in r.files]
        blocks.append(Verbatim(f"{r.needs}\n{r.command}", "sh"))
    blocks.append(Verbatim(repro.harness_source().rstrip(), "python", title=repro.HARNESS,
                           note="the harness itself"))
    return blocks


def appendix(result: RunResult) -> list[Part]:
    """Calibration (when it did not run), facts, server, machine, command, reproduction."""
    out: list[Part] = []
    if result.calibration is None:
        out.append(Part("Calibration", [Paragraph(calibration.outcome(None))]))
    facts = worker_facts(result)
    kind = kinds.report_of(result)
    if facts.rows:
        out.append(Part("Environment inside the workers", [
            Paragraph(kind.facts_intro if kind is not None else
                      "What each build's gunicorn gevent workers reported about themselves, "
                      "after the worker had booted.", detail=REFERENCE), facts]))
    out += [Part("PostgreSQL server", [server_pairs(result)]),
            Part("Machine", [machine_pairs(result)]),
            Part("Command and configuration", [Verbatim(command_line(result), "sh"),
                                               Verbatim(profile_toml(result), "toml")])]
    if reproducible(result):
        out.append(Part("Reproduction", reproductions(result), detail=REFERENCE))
    return out


def footer(result: RunResult) -> str:
    """Where the report came from, and where the rest of it is."""
    text = (f"geventprobe {result.tool_version}, run started {result.started_at}, took "
            f"{result.duration_s:.1f} s, exit {result.exit_code}. Every figure is in the JSON "
            f"record (`--json`, schema_version {result.schema_version})")
    subjects = reproducible(result)
    if subjects:
        text += (f"; reproductions of {', '.join(label(b) for b in subjects)} (the harness and "
                 "what to run it on) are in the Markdown and HTML reports (`geventprobe report "
                 "RESULT.json --format markdown`)")
    return text + "."

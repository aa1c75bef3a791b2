"""The command line (typer): its commands, and the one place where errors become exit codes.
No multiprocessing here.

``pipeline`` is started by cron again and again, often for little work, so this module
imports only typer at its top: the config (pydantic, YAML), the runner and the store are
imported by the command that needs them, and rich is never used (``rich_markup_mode=None``,
plain exceptions). Usage errors are one ``error:`` line, like every other error.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import __version__
from pipeline.console import setup_logging
from pipeline.errors import EXIT_CODE_MEANINGS, ExitCode, PipelineError

log = logging.getLogger("pipeline")

PROG = "pipeline"
# The exit codes a command other than `run` can end with (run's help lists them all).
READ_ONLY_EXITS = ("0", "2", "70")


class ProgressMode(str, Enum):
    """``--progress``: auto is bars on a terminal, else log lines."""

    auto = "auto"
    bar = "bar"
    log = "log"
    none = "none"


def _epilog(examples: Sequence[str], codes: Sequence[str] | None = None) -> str:
    """Examples and exit codes under a command's help (``\\b``: keep these lines as they are)."""
    meanings = [(c, m) for c, m in EXIT_CODE_MEANINGS if codes is None or c in codes]
    return "\n".join(
        [
            "Examples:",
            "",
            "\b",
            *(f"  {example}" for example in examples),
            "",
            "Exit codes:",
            "",
            "\b",
            *(f"  {code:<8} {meaning}" for code, meaning in meanings),
        ]
    )


app = typer.Typer(
    name=PROG,
    epilog=_epilog(
        [
            "pipeline run configs/access-logs.yaml",
            "pipeline report configs/access-logs.yaml --tasks",
        ]
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ConfigArg = Annotated[Path, typer.Argument(metavar="CONFIG", help="The job's YAML config file.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a config key: dotted.key=value (repeatable)."
    ),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Tracebacks and worker details.")]


def _fail(exc: BaseException, debug: bool) -> int:
    """Map any exception to an exit code, with a plain message (traceback only if --debug)."""
    if isinstance(exc, PipelineError):
        log.error("%s", exc.message)
        if debug:
            log.debug("traceback", exc_info=exc)
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        log.error("interrupted")
        return int(ExitCode.SIGINT)
    log.error(
        "internal error: %s: %s (a bug: please report it; --debug shows the traceback)",
        type(exc).__name__,
        exc,
    )
    if debug:
        log.error("traceback", exc_info=exc)
    return int(ExitCode.INTERNAL)


def _guarded(body: Callable[[], int], debug: bool = False) -> int:
    """``body()``'s exit code; any error becomes its exit code and a plain message."""
    try:
        return body()
    except SystemExit:
        raise
    except BaseException as exc:
        return _fail(exc, debug)


def _load(config: Path, overrides: Sequence[str] | None) -> Any:
    from pipeline.config import load_config

    return load_config(config, list(overrides or ()))


def _print_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Batch file processing from one YAML file: read, transform, count, store."""


@app.command(
    epilog=_epilog(
        [
            "pipeline run configs/access-logs.yaml",
            "pipeline run job.yaml --workers 4 --set execution.retries=1 --log-file run.log",
            "pipeline run job.yaml --full --progress log",
        ]
    )
)
def run(
    config: ConfigArg,
    overrides: SetOption = None,
    workers: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Worker processes.")
    ] = None,
    full: Annotated[bool, typer.Option("--full", help="Ignore earlier results.")] = False,
    progress: Annotated[
        ProgressMode,
        typer.Option(help="auto: bars on a terminal, else log lines."),
    ] = ProgressMode.auto,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", metavar="FILE", help="Also log here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    debug: DebugOption = False,
) -> int:
    """Run the job."""

    def body() -> int:
        setup_logging(quiet=quiet, debug=debug, log_file=log_file)
        from pipeline.runner import RunOptions
        from pipeline.runner import run as run_job

        settings = list(overrides or ())
        if workers is not None:
            settings.append(f"execution.workers={workers}")
        cfg = _load(config, settings)
        options = RunOptions(full=full, progress=progress.value, quiet=quiet, debug=debug)
        return run_job(cfg, options).exit_code

    return _guarded(body, debug)


@app.command(
    epilog=_epilog(
        ["pipeline validate job.yaml", "pipeline validate job.yaml --set input.format=jsonl"],
        READ_ONLY_EXITS,
    )
)
def validate(config: ConfigArg, overrides: SetOption = None, debug: DebugOption = False) -> int:
    """Load and validate the config (plugins are imported); print it resolved."""
    setup_logging(debug=debug)

    def body() -> int:
        import yaml

        cfg = _load(config, overrides)
        sys.stdout.write(yaml.safe_dump(cfg.resolved_dict(), sort_keys=False, allow_unicode=True))
        log.info("%s: valid", config)
        return 0

    return _guarded(body, debug)


@app.command(
    epilog=_epilog(
        ["pipeline plan job.yaml", "pipeline plan job.yaml --set input.chunk_size=1MiB"],
        READ_ONLY_EXITS,
    )
)
def plan(config: ConfigArg, overrides: SetOption = None, debug: DebugOption = False) -> int:
    """List the tasks a run would execute and the work it would skip, with reasons (in
    path order, as planning goes: nothing is held per file)."""
    setup_logging(debug=debug)

    def body() -> int:
        from pipeline.planning import FileDecision, Plan, join_rows
        from pipeline.rotation import plan_growing
        from pipeline.runner import discover_inputs, plan_line, planner_for, report_discovery
        from pipeline.store.ledger import LEDGER_NAME, Ledger

        cfg = _load(config, overrides)
        files = discover_inputs(cfg)
        ledger = None
        if (cfg.output.dir / LEDGER_NAME).exists():
            ledger = Ledger(cfg.output.dir, readonly=True)
        try:
            rows = ledger.tasks_for_planning() if ledger is not None else iter(())
            planner = planner_for(cfg)
            the_plan = Plan(keep=False)
            decisions: Iterable[FileDecision]
            if planner.growing:
                growing = plan_growing(
                    files,
                    rows,
                    ledger.streams() if ledger is not None else [],
                    ledger.seen() if ledger is not None else [],
                    planner,
                )
                decisions = sorted(growing.decisions, key=lambda d: os.fsencode(d.file.path))
            else:
                decisions = (planner.decide(file, mine) for file, mine in join_rows(files, rows))
            for decision in decisions:
                the_plan.add(decision)
                tasks = sorted((*decision.run, *decision.skip), key=lambda t: t.offset)
                for task in tasks:
                    sys.stdout.write(plan_line(task) + "\n")
                if not tasks and decision.note:  # a growing log's copy, or one still waiting
                    sys.stdout.write(f"{decision.note:<15} {decision.file.path}  nothing new\n")
        finally:
            if ledger is not None:
                ledger.close()
        report_discovery(files)
        counts = ", ".join(f"{n} {r}" for r, n in sorted(the_plan.reasons().items()))
        log.info(
            "%d task(s) would run, %d skipped (%s)",
            the_plan.n_run,
            the_plan.n_skip,
            counts or "no input",
        )
        return 0

    return _guarded(body, debug)


@app.command(
    epilog=_epilog(
        [
            "pipeline report job.yaml",
            "pipeline report job.yaml --json",
            "pipeline report job.yaml --tasks",
            "pipeline report job.yaml --slowest 10",
            "pipeline report job.yaml --html /tmp/report.html",
        ],
        READ_ONLY_EXITS,
    )
)
def report(
    config: ConfigArg,
    overrides: SetOption = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the last run's report.json (with --tasks: the job log)."
        ),
    ] = False,
    tasks: Annotated[
        bool,
        typer.Option(
            "--tasks",
            help="The job log: every task's status, attempts, duration, records, range, path.",
        ),
    ] = False,
    slowest: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="The job log of the N slowest tasks.")
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html",
            metavar="PATH",
            help="Write the last run's HTML report (the page the run leaves as report.html) "
            "to PATH; needs the 'report' extra.",
        ),
    ] = None,
    debug: DebugOption = False,
) -> int:
    """Summary of the last run and the run history, from the output store; a run killed
    mid-way shows as died, a run going on now with its pid."""
    setup_logging(debug=debug)

    def body() -> int:
        from pipeline.store.ledger import LEDGER_NAME

        cfg = _load(config, overrides)
        out_dir = cfg.output.dir
        if not (out_dir / LEDGER_NAME).exists():
            log.error("%s: no output store yet (run the job first)", out_dir)
            return int(ExitCode.USAGE)
        if html is not None:
            return _write_html(out_dir, html)
        if tasks or slowest is not None:
            _write_job_log(out_dir, as_json, slowest)
            return 0
        return _write_summary(out_dir, as_json)

    return _guarded(body, debug)


def _write_html(out_dir: Path, path: Path) -> int:
    from pipeline import htmlreport, runview

    htmlreport.require()
    try:
        view = runview.load(out_dir)
    except runview.NoRunError as exc:
        log.error("%s", exc)
        return int(ExitCode.USAGE)
    try:
        htmlreport.write(view, path)
    except OSError as exc:
        log.error("%s: cannot write the report: %s", path, exc.strerror or exc)
        return int(ExitCode.USAGE)
    log.info("report: %s", path)
    return 0


def _write_job_log(out_dir: Path, as_json: bool, slowest: int | None) -> None:
    import json

    from pipeline import storeview
    from pipeline.store.ledger import Ledger

    ledger = Ledger(out_dir, readonly=True)
    try:
        lines = map(storeview.task_line, ledger.tasks())
        shown = storeview.slowest(lines, slowest) if slowest is not None else list(lines)
    finally:
        ledger.close()
    if as_json:
        sys.stdout.write(json.dumps([t.as_json() for t in shown], indent=2) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in storeview.job_log_lines(shown)))


def _write_summary(out_dir: Path, as_json: bool) -> int:
    import json

    from pipeline import storeview
    from pipeline.store.ledger import Ledger
    from pipeline.store.lock import lock_holder

    ledger = Ledger(out_dir, readonly=True)
    try:
        runs = ledger.runs()
    finally:
        ledger.close()
    if not runs:
        log.error("%s: no run recorded yet (run the job first)", out_dir)
        return int(ExitCode.USAGE)
    holder = lock_holder(out_dir)
    statuses = [
        storeview.run_status(entry, newest=i == 0, holder=holder) for i, entry in enumerate(runs)
    ]
    newest = runs[0]
    last = next((entry for entry in runs if entry["report"]), None)
    if as_json:
        shown = (
            newest["report"]
            if newest["report"]
            else storeview.unfinished_json(newest, statuses[0], holder)
        )
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return 0
    out: list[str] = []
    if not newest["report"]:
        out.append(storeview.unfinished_line(newest, statuses[0], holder))
    if last is not None:
        label = "last run" if last is newest else "last finished run"
        out += storeview.last_run_lines(last, label)
    out.append("history:")
    out += [storeview.history_line(e, s) for e, s in zip(runs, statuses, strict=True)]
    sys.stdout.write("".join(line + "\n" for line in out))
    return 0


@app.command(
    epilog=_epilog(
        [
            "pipeline status job.yaml",
            "pipeline status job.yaml --watch",
            "pipeline status job.yaml --json",
        ],
        ("0", "2", "70", "130/143"),
    )
)
def status(
    config: ConfigArg,
    overrides: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep showing it until the run ends (Ctrl-C stops).")
    ] = False,
    debug: DebugOption = False,
) -> int:
    """The live view of the run going on now (from its Manager dict), else the last run."""
    setup_logging(debug=debug)

    def body() -> int:
        from pipeline.status import show

        cfg = _load(config, overrides)
        return show(cfg, as_json=as_json, watch=watch)

    return _guarded(body, debug)


@app.command(
    epilog=_epilog(
        ["pipeline schema > pipeline.schema.json"],
        ("0", "70"),
    )
)
def schema() -> int:
    """Print the JSON Schema of the config, for editors (yaml-language-server) and CI."""
    setup_logging()

    def body() -> int:
        import json

        from pipeline.config import PipelineConfig

        sys.stdout.write(json.dumps(PipelineConfig.model_json_schema(), indent=2) + "\n")
        return 0

    return _guarded(body)


@app.command(epilog=_epilog(["pipeline version", "pipeline --version"], ("0",)))
def version() -> int:
    """Print the version."""
    sys.stdout.write(f"{PROG} {__version__}\n")
    return 0


def _usage_error(exc: typer.TyperException) -> int:
    """A command line that does not parse: one line, naming where to look for help."""
    context = getattr(exc, "ctx", None)
    where = f" (see '{context.command_path} --help')" if context is not None else ""
    message = exc.format_message().strip().replace("\n", " ")
    sys.stderr.write(f"error: {message}{where}\n")
    return int(exc.exit_code)


def dispatch(argv: Sequence[str]) -> int:
    """Parse ``argv`` and run its command; the exit code."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=list(argv), prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:
        if not argv:  # no command (no_args_is_help): the overview, as a usage error
            sys.stderr.write(exc.format_message().rstrip("\n") + "\n")
            return int(ExitCode.USAGE)
        return _usage_error(exc)
    except typer.Abort:
        sys.stderr.write("error: aborted\n")
        return int(ExitCode.USAGE)
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(dispatch(sys.argv[1:] if argv is None else argv))

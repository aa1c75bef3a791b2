"""The command line: typer commands, logging set-up, and the one place where errors
become exit codes. No multiprocessing here."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from pipeline import __version__
from pipeline.errors import ExitCode, PipelineError

log = logging.getLogger("pipeline")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Batch file processing from one YAML file: read, transform, count, store.",
)

ConfigArg = Annotated[Path, typer.Argument(help="The job's YAML config file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: dotted.key=value (repeatable)."),
]


class _ConsoleFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:  # only logged with --debug
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def setup_logging(
    *, quiet: bool = False, debug: bool = False, log_file: Path | None = None
) -> None:
    """Console on stderr (plain lines; warnings and errors only with --quiet) and an
    optional log file with timestamps."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_ConsoleFormat())
    console.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    root.addHandler(console)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setFormatter(
            logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
        )
        file_handler.setLevel(logging.DEBUG if debug else logging.INFO)
        root.addHandler(file_handler)
    root.setLevel(logging.DEBUG)


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
        "internal error: %s: %s (run with --debug for the traceback)", type(exc).__name__, exc
    )
    if debug:
        log.error("traceback", exc_info=exc)
    return int(ExitCode.TASKS_FAILED)


def _load(config: Path, overrides: list[str] | None) -> Any:
    from pipeline.config import load_config

    return load_config(config, overrides or [])


@app.command()
def run(
    config: ConfigArg,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes.")
    ] = None,
    set_: SetOpt = None,
    full: Annotated[bool, typer.Option("--full", help="Ignore earlier results.")] = False,
    progress: Annotated[
        str,
        typer.Option(
            "--progress", help="auto | bar | log | none (auto: bars on a terminal, else log lines)"
        ),
    ] = "auto",
    log_file: Annotated[Path | None, typer.Option("--log-file", help="Also log here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Warnings and errors only.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Tracebacks and worker details.")] = False,
) -> None:
    """Run the job."""
    setup_logging(quiet=quiet, debug=debug, log_file=log_file)
    if progress not in ("auto", "bar", "log", "none"):
        log.error("--progress must be auto, bar, log or none, not %r", progress)
        raise typer.Exit(int(ExitCode.USAGE))
    overrides = list(set_ or [])
    if workers is not None:
        overrides.append(f"execution.workers={workers}")
    try:
        from pipeline.runner import RunOptions
        from pipeline.runner import run as run_job

        cfg = _load(config, overrides)
        result = run_job(cfg, RunOptions(full=full, progress=progress, quiet=quiet))
        code = result.exit_code
    except BaseException as exc:
        if isinstance(exc, (SystemExit, typer.Exit)):
            raise
        code = _fail(exc, debug)
    raise typer.Exit(code)


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Load and validate the config (plugins are imported); print it resolved."""
    setup_logging()
    try:
        cfg = _load(config, set_)
    except BaseException as exc:
        raise typer.Exit(_fail(exc, False)) from None
    sys.stdout.write(yaml.safe_dump(cfg.resolved_dict(), sort_keys=False, allow_unicode=True))
    log.info("%s: valid", config)


@app.command()
def plan(config: ConfigArg, set_: SetOpt = None) -> None:
    """List the tasks a run would execute and the work it would skip, with reasons."""
    setup_logging()
    try:
        from pipeline.runner import discover_inputs, iter_plan_lines, plan_run
        from pipeline.store.ledger import LEDGER_NAME, Ledger

        cfg = _load(config, set_)
        files, _ = discover_inputs(cfg)
        rows = []
        if (cfg.output.dir / LEDGER_NAME).exists():
            ledger = Ledger(cfg.output.dir, readonly=True)
            try:
                rows = list(ledger.tasks_for_planning())
            finally:
                ledger.close()
        the_plan = plan_run(cfg, files, rows)
    except BaseException as exc:
        raise typer.Exit(_fail(exc, False)) from None
    for line in iter_plan_lines(the_plan):
        sys.stdout.write(line + "\n")
    counts = ", ".join(f"{n} {r}" for r, n in sorted(the_plan.reasons().items()))
    log.info(
        "%d task(s) would run, %d skipped (%s)",
        len(the_plan.run),
        len(the_plan.skip),
        counts or "no input",
    )


@app.command()
def report(
    config: ConfigArg,
    set_: SetOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json.")] = False,
) -> None:
    """Summary of the last run and the run history, from the output store."""
    setup_logging()
    try:
        from pipeline.store.ledger import LEDGER_NAME, Ledger

        cfg = _load(config, set_)
        if not (cfg.output.dir / LEDGER_NAME).exists():
            log.error("%s: no output store yet (run the job first)", cfg.output.dir)
            raise typer.Exit(int(ExitCode.USAGE))
        ledger = Ledger(cfg.output.dir, readonly=True)
        try:
            runs = ledger.runs()
        finally:
            ledger.close()
    except typer.Exit:
        raise
    except BaseException as exc:
        raise typer.Exit(_fail(exc, False)) from None
    last = next((r for r in runs if r["report"]), None)
    if as_json:
        sys.stdout.write(json.dumps(last["report"] if last else None, indent=2) + "\n")
        return
    if last:
        rep = last["report"]
        t = rep["tasks"]
        sys.stdout.write(
            f"last run #{last['run_id']}: {rep['status']} (exit {rep['exit_code']}) at "
            f"{rep['finished']}, {rep['run']['duration_s']}s; tasks {t['done']} done, "
            f"{t['failed']} failed, {t['skipped']} skipped, {t['pending']} pending\n"
        )
        for failure in rep["failures"]:
            sys.stdout.write(
                f"  failed: {failure['error']} ({failure['kind']}, "
                f"{failure['attempts']} attempts)\n"
            )
    sys.stdout.write("history:\n")
    for entry in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["started"]))
        sys.stdout.write(
            f"  #{entry['run_id']:<5} {when}  {entry['status']:<11} exit {entry['exit_code']}\n"
        )


@app.command()
def version() -> None:
    """Print the version."""
    sys.stdout.write(f"pipeline {__version__}\n")


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()

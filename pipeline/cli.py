"""The command line: argparse commands, logging set-up, and the one place where errors
become exit codes. No multiprocessing here.

argparse (the standard library's) rather than a CLI framework: ``pipeline`` is started by
cron again and again, often for little work, and a framework's import and set-up cost
(about 0.1 s measured for typer) is paid by every run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import ExitCode, PipelineError

log = logging.getLogger("pipeline")

PROGRESS_MODES = ("auto", "bar", "log", "none")


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


def _load(config: Path, overrides: list[str]) -> Any:
    from pipeline.config import load_config

    return load_config(config, overrides)


def run(args: argparse.Namespace) -> int:
    """Run the job."""
    setup_logging(quiet=args.quiet, debug=args.debug, log_file=args.log_file)
    overrides = list(args.set)
    if args.workers is not None:
        overrides.append(f"execution.workers={args.workers}")
    try:
        from pipeline.runner import RunOptions
        from pipeline.runner import run as run_job

        cfg = _load(args.config, overrides)
        options = RunOptions(
            full=args.full, progress=args.progress, quiet=args.quiet, debug=args.debug
        )
        return run_job(cfg, options).exit_code
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        return _fail(exc, args.debug)


def validate(args: argparse.Namespace) -> int:
    """Load and validate the config (plugins are imported); print it resolved."""
    setup_logging()
    try:
        import yaml

        cfg = _load(args.config, args.set)
    except BaseException as exc:
        return _fail(exc, False)
    sys.stdout.write(yaml.safe_dump(cfg.resolved_dict(), sort_keys=False, allow_unicode=True))
    log.info("%s: valid", args.config)
    return 0


def plan(args: argparse.Namespace) -> int:
    """List the tasks a run would execute and the work it would skip, with reasons (in
    path order, as planning goes: nothing is held per file)."""
    setup_logging()
    try:
        from pipeline.planning import Plan, join_rows
        from pipeline.runner import discover_inputs, plan_line, planner_for, report_discovery
        from pipeline.store.ledger import LEDGER_NAME, Ledger

        cfg = _load(args.config, args.set)
        files = discover_inputs(cfg)
        ledger = None
        if (cfg.output.dir / LEDGER_NAME).exists():
            ledger = Ledger(cfg.output.dir, readonly=True)
        try:
            rows = ledger.tasks_for_planning() if ledger is not None else iter(())
            planner = planner_for(cfg)
            the_plan = Plan(keep=False)
            for file, file_rows in join_rows(files, rows):
                decision = planner.decide(file, file_rows)
                the_plan.add(decision)
                for task in sorted((*decision.run, *decision.skip), key=lambda t: t.offset):
                    sys.stdout.write(plan_line(task) + "\n")
        finally:
            if ledger is not None:
                ledger.close()
        report_discovery(files)
    except BaseException as exc:
        return _fail(exc, False)
    counts = ", ".join(f"{n} {r}" for r, n in sorted(the_plan.reasons().items()))
    log.info(
        "%d task(s) would run, %d skipped (%s)",
        the_plan.n_run,
        the_plan.n_skip,
        counts or "no input",
    )
    return 0


def report(args: argparse.Namespace) -> int:
    """Summary of the last run and the run history, from the output store."""
    setup_logging()
    try:
        from pipeline.store.ledger import LEDGER_NAME, Ledger

        cfg = _load(args.config, args.set)
        if not (cfg.output.dir / LEDGER_NAME).exists():
            log.error("%s: no output store yet (run the job first)", cfg.output.dir)
            return int(ExitCode.USAGE)
        ledger = Ledger(cfg.output.dir, readonly=True)
        try:
            runs = ledger.runs()
        finally:
            ledger.close()
    except BaseException as exc:
        return _fail(exc, False)
    last = next((r for r in runs if r["report"]), None)
    if args.json:
        sys.stdout.write(json.dumps(last["report"] if last else None, indent=2) + "\n")
        return 0
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


def version(args: argparse.Namespace) -> int:
    """Print the version."""
    sys.stdout.write(f"pipeline {__version__}\n")
    return 0


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Batch file processing from one YAML file: read, transform, count, store.",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(function: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        help_text = (function.__doc__ or "").strip()
        sub = commands.add_parser(function.__name__, help=help_text, description=help_text)
        sub.set_defaults(handler=function)
        return sub

    def config_args(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("config", type=Path, metavar="CONFIG", help="The job's YAML config file.")
        sub.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="Override a config key: dotted.key=value (repeatable).",
        )

    sub = command(run)
    config_args(sub)
    sub.add_argument("--workers", type=_workers, metavar="N", help="Worker processes.")
    sub.add_argument("--full", action="store_true", help="Ignore earlier results.")
    sub.add_argument(
        "--progress",
        choices=PROGRESS_MODES,
        default="auto",
        help="auto | bar | log | none (auto: bars on a terminal, else log lines)",
    )
    sub.add_argument("--log-file", type=Path, metavar="FILE", help="Also log here.")
    sub.add_argument("--quiet", "-q", action="store_true", help="Warnings and errors only.")
    sub.add_argument("--debug", action="store_true", help="Tracebacks and worker details.")
    config_args(command(validate))
    config_args(command(plan))
    sub = command(report)
    config_args(sub)
    sub.add_argument("--json", action="store_true", help="Print report.json.")
    command(version)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:  # no command: the overview, as a usage error
        parser.print_help(sys.stderr)
        raise SystemExit(int(ExitCode.USAGE))
    raise SystemExit(handler(args))

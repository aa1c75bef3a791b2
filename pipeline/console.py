"""Logging for the command line: plain lines on stderr, and an optional log file.

While tqdm's bars are on the screen, a line written straight to stderr lands on top of
them (the cursor sits on a bar) and tqdm then draws a second pair below. The console
handler hands its lines to ``tqdm.write`` instead, which clears the bars, prints the line
and draws them again underneath: warnings and failed tasks scroll above whole bars. tqdm
is only looked up, never imported: a run without bars does not pay for it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import CommandLineError

LOG_FILE_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"


class ConsoleFormat(logging.Formatter):
    """``error: ...`` / ``warning: ...`` / the bare message (tracebacks only when a
    record carries one, which the CLI logs only with --debug)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


def live_bar_class() -> Any | None:
    """tqdm's bar class when at least one bar is open, else None (tqdm not imported, or
    every bar closed). tqdm keeps its open bars in the class's ``_instances``."""
    module = sys.modules.get("tqdm")
    bar_class = getattr(module, "tqdm", None)
    if bar_class is None or not getattr(bar_class, "_instances", None):
        return None
    return bar_class


class ConsoleHandler(logging.StreamHandler):
    """A stderr handler that writes above tqdm's bars while there are any."""

    def emit(self, record: logging.LogRecord) -> None:
        bar_class = live_bar_class()
        if bar_class is None:
            super().emit(record)
            return
        try:
            bar_class.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def setup_logging(
    *, quiet: bool = False, debug: bool = False, log_file: Path | None = None
) -> None:
    """Console on stderr (warnings and errors only with --quiet) and an optional log file
    with timestamps. A log file that cannot be opened is a usage error, raised once the
    console can say so and before anything else is written."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    console = ConsoleHandler(sys.stderr)
    console.setFormatter(ConsoleFormat())
    console.setLevel(logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO)
    root.addHandler(console)
    root.setLevel(logging.DEBUG)
    if log_file is None:
        return
    try:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CommandLineError(f"--log-file {log_file}: cannot open it: {reason}") from None
    file_handler.setFormatter(logging.Formatter(LOG_FILE_FORMAT))
    file_handler.setLevel(logging.DEBUG if debug else logging.INFO)
    root.addHandler(file_handler)

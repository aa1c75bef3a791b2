"""The console log handler: plain lines on stderr, above tqdm's bars while any is open;
a --log-file that cannot be opened is a usage error that creates nothing."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tqdm import tqdm

from pipeline.console import ConsoleFormat, ConsoleHandler, live_bar_class, setup_logging
from pipeline.errors import CommandLineError, ExitCode


@pytest.fixture
def root_handlers() -> Iterator[None]:
    """setup_logging replaces the root logger's handlers: put the test runner's back."""
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if handler not in saved:
            handler.close()
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("pipeline", level, __file__, 1, message, None, None)


def test_console_format_prefixes_warnings_and_errors() -> None:
    form = ConsoleFormat()
    assert form.format(record(logging.INFO, "3 task(s) to run")) == "3 task(s) to run"
    assert form.format(record(logging.WARNING, "no file matches")) == "warning: no file matches"
    assert form.format(record(logging.ERROR, "task failed")) == "error: task failed"


def test_no_open_bar_no_bar_class() -> None:
    bar = tqdm(total=1, file=io.StringIO())
    assert live_bar_class() is tqdm
    bar.close()
    assert live_bar_class() is None


def test_a_line_goes_above_an_open_bar() -> None:
    screen = io.StringIO()
    handler = ConsoleHandler(screen)
    handler.setFormatter(ConsoleFormat())
    bar = tqdm(total=4, desc="tasks", file=screen, mininterval=0)
    try:
        bar.update(1)
        drawn = len(screen.getvalue())
        handler.emit(record(logging.ERROR, "task failed: a.log"))
        after = screen.getvalue()[drawn:]
    finally:
        bar.close()
    # tqdm.write: the bar's line cleared, the message on it, the bar drawn again below
    cleared, _, rest = after.partition("error: task failed: a.log\n")
    assert cleared.startswith("\r") and cleared.strip() == "", repr(after)
    assert rest.lstrip("\r").startswith("tasks:"), repr(after)


def test_without_bars_a_line_is_written_as_is() -> None:
    screen = io.StringIO()
    handler = ConsoleHandler(screen)
    handler.setFormatter(ConsoleFormat())
    handler.emit(record(logging.WARNING, "no file matches 'x/*.log'"))
    assert screen.getvalue() == "warning: no file matches 'x/*.log'\n"


@pytest.mark.parametrize("where", ["missing/run.log", "."])
def test_a_log_file_that_cannot_be_opened_is_a_usage_error(
    tmp_path: Path, root_handlers: None, where: str
) -> None:
    target = tmp_path / where
    with pytest.raises(CommandLineError) as caught:
        setup_logging(log_file=target)
    assert caught.value.exit_code == ExitCode.USAGE
    assert str(target) in caught.value.message and "--log-file" in caught.value.message
    assert list(tmp_path.iterdir()) == []
    # the console is set up first, so the error can be said
    assert any(isinstance(h, ConsoleHandler) for h in logging.getLogger().handlers)

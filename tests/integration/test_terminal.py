"""The progress bars in a real terminal: ``pipeline run --progress bar`` on a pseudo-terminal
of a fixed size, its output fed through a VT100 emulator (pyte), and the final screen
checked. Log lines written while the bars are up (a glob that matches nothing, a task that
fails, the run's info lines) must scroll above the bars, whole; the bars stay one pair,
complete, below them."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyte
import pytest

from tests.integration.helpers import REPO, write_config

pytestmark = pytest.mark.timeout(90)

COLUMNS, ROWS = 160, 60
BARS = ("tasks:", "bytes:")  # how the bars' lines start
LINE_RE = r"^(?P<ip>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d{3}) (?P<bytes>\d+)$"
PLUGIN = """
def check(record):
    if "EXPLODE" in record["line"]:
        raise ValueError("kaboom in the plugin")
    return record
"""
# A record of --log-file: "2026-12-05 12:00:00,123 4242 WARNING pipeline: message"
LOG_RECORD = re.compile(r"^\S+ \S+ \d+ (?P<level>[A-Z]+) \S+: (?P<message>.*)$")


def write_job(folder: Path) -> Path:
    """Six small logs, one of which makes the ``call`` step raise; a second glob that
    matches nothing. Two workers, no retries: one task fails while the bars are up."""
    data = folder / "data"
    data.mkdir()
    for i in range(6):
        lines = "".join(f"10.{i}.0.{j} GET /p{j} 200 {j * 7}\n" for j in range(200))
        if i == 3:
            lines += "10.3.9.9 EXPLODE /x 200 1\n"
        (data / f"f{i}.log").write_text(lines)
    (folder / "boomplug.py").write_text(PLUGIN)
    return write_config(
        folder,
        {
            "name": "bars",
            "input": {"paths": ["data/*.log", "missing/*.log"], "format": "lines"},
            "steps": [
                {"call": "boomplug:check"},
                {"regex": LINE_RE},
                {"types": {"status": "int", "bytes": "int"}},
            ],
            "stats": {"requests": {"count": True}, "bytes": {"sum": "bytes"}},
            "output": {"dir": "out", "records": "jsonl"},
            "execution": {"workers": 2, "retries": 0},
        },
    )


def run_on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """``python -m pipeline ARGS`` with stdout and stderr on a pseudo-terminal of
    COLUMNS x ROWS; its exit code and every byte it wrote to the terminal."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(PYTHONPATH=str(REPO), TERM="xterm")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    output = bytearray()
    try:
        while True:  # until every holder of the terminal's other end has closed it
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            output += chunk
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, bytes(output)


def screen_lines(output: bytes) -> list[str]:
    """The final screen as logical lines: a row filled to the last column continues on
    the next (the terminal wrapped a long line); a bar never wraps (tqdm fits it)."""
    screen = pyte.Screen(COLUMNS, ROWS)
    stream = pyte.ByteStream(screen)
    stream.feed(output)
    lines: list[str] = []
    carry = ""
    for row in screen.display:
        if len(row.rstrip()) == COLUMNS and not row.startswith(BARS):
            carry += row
            continue
        lines.append(carry + row.rstrip())
        carry = ""
    if carry:
        lines.append(carry)
    while lines and not lines[-1]:
        lines.pop()
    return lines


CONSOLE_PREFIX = {"INFO": "", "WARNING": "warning: ", "ERROR": "error: "}


def logged(log_file: Path, levels: tuple[str, ...]) -> list[str]:
    """The --log-file records of these levels, as the console shows them."""
    found = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        match = LOG_RECORD.match(line)
        if match and match["level"] in levels:
            found.append(CONSOLE_PREFIX[match["level"]] + match["message"])
    return found


def test_log_lines_scroll_above_whole_bars(tmp_path: Path) -> None:
    config = write_job(tmp_path)
    log_file = tmp_path / "run.log"
    code, output = run_on_a_terminal(
        ["run", str(config), "--progress", "bar", "--log-file", str(log_file)], tmp_path
    )
    lines = screen_lines(output)
    shown = "\n".join(lines)
    assert code == 1, shown  # one task failed
    assert "Traceback" not in shown

    tasks_rows = [i for i, line in enumerate(lines) if line.startswith(BARS[0])]
    bytes_rows = [i for i, line in enumerate(lines) if line.startswith(BARS[1])]
    assert len(tasks_rows) == 1, shown  # one pair of bars, not a second pair below
    assert len(bytes_rows) == 1, shown
    (bar,) = tasks_rows
    assert bytes_rows == [bar + 1], shown
    assert "100%" in lines[bar] and "100%" in lines[bar + 1], shown

    problems = logged(log_file, ("WARNING", "ERROR"))
    assert any(p.startswith("warning: ") and "missing" in p for p in problems), problems
    assert any(p.startswith("error: ") and "kaboom in the plugin" in p for p in problems)
    for problem in problems:  # each whole, on its own line(s), above the bars
        rows = [i for i, line in enumerate(lines) if line == problem]
        assert len(rows) == 1, (problem, shown)
        assert rows[0] < bar, (problem, shown)
    # nothing but whole log lines above the bars: no bar remnant, no line written over
    info = set(logged(log_file, ("INFO",)))
    for line in lines[:bar]:
        assert line in problems or line in info, (line, shown)

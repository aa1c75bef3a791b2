"""report.html from the command line: written by every run (unless turned off), by
``report --html`` anywhere, said how to get when the extra is missing, drawn from an old
ledger as far as it can be; the attempts a timeline shows are in the ledger.

What the page looks like in a browser is tests/integration/test_report_html.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline.store.ledger import LEDGER_NAME, Ledger
from tests.integration.helpers import lines_config, run_cli

pytestmark = pytest.mark.timeout(120)

REGEX = r"^(?P<n>\d+) (?P<word>\S+)"
# Fails its first attempt on a marked line (a crash, or an exception), then works: the
# marker files are created with O_EXCL, so exactly one attempt fails whatever the workers.
FLAKY_PLUGIN = """
import os, signal

def _first(folder, token):
    try:
        os.close(os.open(os.path.join(folder, token), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True

def once(record):
    folder = os.path.dirname(os.path.abspath(__file__))
    if "CRASH" in record["line"] and _first(folder, "crashed"):
        os.kill(os.getpid(), signal.SIGKILL)
    if "BOOM" in record["line"] and _first(folder, "raised"):
        raise ValueError("boom, once")
    return record
"""


def write_logs(data: Path, files: int = 3, lines: int = 3000) -> None:
    data.mkdir()
    for i in range(files):
        body = "".join(f"{j} w{j % 7}\n" for j in range(lines))
        marks = {1: "5 CRASH\n", 2: "6 BOOM\n"}.get(i, "")
        (data / f"f{i}.log").write_text(body + marks + "oops\n")


def job(tmp_path: Path, **execution: object) -> Path:
    write_logs(tmp_path / "data")
    (tmp_path / "flaky.py").write_text(FLAKY_PLUGIN)
    return lines_config(
        tmp_path,
        "out",
        ["data/*.log"],
        [{"regex": REGEX}, {"call": "flaky:once"}],
        {"n": {"count": True}, "by_word": {"count_by": "word"}},
        chunk_size="8KiB",
        **{"retries": 2, **execution},
    )


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    return json.loads(text.split("id='report-data'>", 1)[1].split("</script>", 1)[0])


def test_every_run_writes_report_html_and_says_where(tmp_path: Path) -> None:
    config = job(tmp_path)
    result = run_cli("run", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = tmp_path / "out" / "report.html"
    assert f"report: {page}" in result.stderr
    data = page_data(page)
    assert data["timeline"]["workers"] and data["history"]["run"] == ["#1"]
    assert {s["name"] for s in data["stats"]} == {"by_word"}  # count_by drawn; n is a tile

    again = run_cli("report", str(config), "--html", str(tmp_path / "elsewhere.html"))
    assert again.returncode == 0, again.stderr
    assert page_data(tmp_path / "elsewhere.html") == data  # the same page, from the store

    off = run_cli("run", str(config), "--set", "output.report_html=false", cwd=tmp_path)
    assert off.returncode == 0 and "report:" not in off.stderr
    assert not page.exists()  # an older run's page would pass for this one's


def test_retried_attempts_are_kept_with_when_and_where(tmp_path: Path) -> None:
    """A crash and an exception, each on a first attempt only: the ledger keeps both failed
    attempts beside the tasks' final (done) rows, each with its worker and start, and the
    page draws them hatched ("crashed, retried", "error, retried")."""
    config = job(tmp_path)
    result = run_cli("run", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ledger = Ledger(tmp_path / "out", readonly=True)
    activity = list(ledger.run_activity(1))
    ledger.close()
    # The crash restarts the pool: a batch the other worker had started is abandoned
    # (uncharged) and kept too, at the attempt it then ran again.
    retried = {a.error_kind: a for a in activity if a.retried and a.error_kind != "abandoned"}
    assert set(retried) == {"crashed", "error"}
    for abandoned in (a for a in activity if a.error_kind == "abandoned"):
        final = next(f for f in activity if (f.path, f.offset) == (abandoned.path, abandoned.offset)
                     and not f.retried)  # fmt: skip
        assert final.status == "done" and abandoned.attempts == final.attempts
        assert abandoned.started <= final.started and "stopped with its pool" in abandoned.error
    finals = {(a.path, a.offset): a for a in activity if not a.retried}
    for kind, attempt in retried.items():
        final = finals[(attempt.path, attempt.offset)]
        assert final.status == "done" and final.attempts == 2 and attempt.attempts == 1
        assert attempt.length == final.length
        assert attempt.started <= final.started
        assert attempt.worker and attempt.worker.rsplit(":", 1)[1].isdigit()
        assert final.worker != attempt.worker or kind == "error"  # a crash takes its worker
    assert "SIGKILL" in retried["crashed"].error and "boom, once" in retried["error"].error
    legend = set(page_data(tmp_path / "out" / "report.html")["timeline"]["bars"]["legend"])
    assert legend - {"abandoned, retried"} == {"done", "crashed, retried", "error, retried"}


def test_without_the_extra_the_html_report_says_how_to_get_it(tmp_path: Path) -> None:
    """A ``bokeh`` without its scripts stands in for a missing extra: ``report --html``
    exits 2 saying what to install; a run still succeeds, with a warning, and no page."""
    config = job(tmp_path)
    fake = tmp_path / "fake-site" / "bokeh"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    env = {"PYTHONPATH": f"{fake.parent}:{Path(__file__).resolve().parents[2]}"}
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.html").write_text("an older run's page")
    result = run_cli("run", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "report.html not written" in result.stderr and "pip install" in result.stderr
    assert not (tmp_path / "out" / "report.html").exists()
    html = run_cli("report", str(config), "--html", str(tmp_path / "r.html"), env=env)
    assert html.returncode == 2
    assert "pip install 'pipeline[report]'" in html.stderr and "Traceback" not in html.stderr
    assert not (tmp_path / "r.html").exists()


def test_report_html_without_a_run_is_a_usage_error(tmp_path: Path) -> None:
    config = job(tmp_path)
    result = run_cli("report", str(config), "--html", str(tmp_path / "r.html"))
    assert result.returncode == 2 and "no output store yet" in result.stderr


def test_a_report_from_an_old_ledger_shows_what_it_can(tmp_path: Path) -> None:
    """A store from before timings were kept (no start, no worker, no attempts table):
    the summary, stats, failures and history are there; the page says why no timeline."""
    config = job(tmp_path)
    assert run_cli("run", str(config), cwd=tmp_path).returncode == 0
    db = sqlite3.connect(tmp_path / "out" / LEDGER_NAME)
    for table, columns in (
        ("tasks", ("started", "worker")),
        ("batches", ("started", "ended", "worker")),
    ):
        for column in columns:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    db.execute("DROP TABLE attempts")
    db.commit()
    db.close()
    result = run_cli("report", str(config), "--html", str(tmp_path / "old.html"))
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "old.html").read_text(encoding="utf-8")
    assert "no timings" in page and "id='summary'" in page and "history-table" in page
    data = page_data(tmp_path / "old.html")
    assert data["timeline"] is None and data["history"]["run"] == ["#1"]
    # The next run upgrades the ledger in place: its own page has its timeline, and the
    # attempts table is back (the plugin's markers gone, its crash happens again).
    for marker in ("crashed", "raised"):
        (tmp_path / marker).unlink()
    again = run_cli("run", str(config), "--full", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    data = page_data(tmp_path / "out" / "report.html")
    assert data["timeline"]["workers"] and data["history"]["run"] == ["#1", "#2"]
    assert set(data["timeline"]["bars"]["legend"]) >= {"done", "crashed, retried"}

"""report.html opened in a real headless Chromium (selenium; ``browser.py``): what the page
shows against what the store holds (the raw ledger rows, ``report.json``, ``stats.json``)
and against facts known independently (the faults injected, the retries configured, the
processes that ran the tasks).

- A process-executor run of six logs on one store in two runs (clean files first, then
  files with a crash, a hang, a step error and malformed lines; ``plugins_report.py``):
  the page loads without console errors or network requests, draws one timeline row per
  worker process and one bar per task and attempt, in the outcome's colour (pixels), with
  a tooltip that tells the bar; its tables list the failures, malformed lines and runs.
- The same page with JavaScript off: the summary and the failures are readable.
- A serial run and a run on a Dask cluster: their workers' rows and bars.
- About 10,000 tasks: a page under 5 MB whose timeline keeps to ``MAX_BARS``.
- ``pipeline report --html PATH``: the same page, anywhere.

Every CLI run is its own session, checked to leave no process behind. Full-page
screenshots go to ``$PIPELINE_SCREENSHOTS`` (else /tmp/pipeline-report-screenshots).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from pipeline import htmlreport, runview
from pipeline.store.ledger import Activity, Ledger
from pipeline.units import format_size
from tests.dask_cluster import DaskCluster
from tests.faults.test_worker_faults import assert_no_leftovers, session_processes
from tests.integration.browser import (
    PageLoad,
    bokeh,
    chromium,
    colour_share,
    element_image,
    hex_rgb,
    hover_tooltips,
    open_page,
    save_full_page,
    scroll_to,
    timeline_boxes,
    viewport_point,
)
from tests.integration.helpers import REPO, read_json, write_config
from tests.integration.plugins_report import CRASH_AFTER_S

PLUGIN = Path(__file__).with_name("plugins_report.py")
REGEX = r"^(?P<f>\d+) (?P<n>\S+) (?P<method>\S+) (?P<path>\S+) (?P<status>\d+)"
STATS = {
    "n": {"count": True},
    "by_status": {"count_by": "status"},
    "top_paths": {"top": "path", "k": 5},
}
LINES = 3000
STATUSES = ("200", "404", "500")
PATHS = 13  # /p0 ... /p12
CLEAN = (0, 5)  # the first run's files; the second run adds the others
FAULTS = {1: (1500, "CRASH"), 2: (2200, "HANG"), 3: (700, "BOOM")}  # file: (line index, mark)
MALFORMED_FILE, MALFORMED_AT = 4, (10, 20, 30)  # line indexes that fail the regex step
RETRIES = 1
TASK_TIMEOUT_S = 2.0
FAULT_KINDS = {"error", "crashed", "timeout"}
# The outcomes' colours: the page must carry this map, and draw its bars in them (pixels).
COLOURS = htmlreport.COLOURS
RUN_TIMEOUT_S = 60.0  # a run of the fault job takes 6 s here
# A bar starts at the worker's wall clock and lasts what it measured: consecutive tasks of
# one process may seem to overlap by that much (74 µs seen), never by a task's length.
CLOCK_SLACK_S = 0.005
CHART_DIVS = (
    "chart-throughput",
    "chart-timeline",
    "chart-durations",
    "chart-history-duration",
    "chart-history-records",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """One headless Chromium for the module, quit at its end."""
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser_without_js() -> Iterator[WebDriver]:
    """A second one, with JavaScript disabled (only its test asks for it)."""
    with chromium(javascript=False) as driver:
        yield driver


# --- running the CLI ---------------------------------------------------------------------


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    pid: int  # the CLI's process (and session) id
    elapsed: float


def run_pipeline(
    *args: str, timeout: float = RUN_TIMEOUT_S, env: dict[str, str] | None = None
) -> CliRun:
    """``python -m pipeline ARGS`` in a session of its own: killed with all it started if
    it outlives ``timeout``; nothing of it may be left alive after it ended."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for item in session_processes(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(item.split()[1]), signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"pipeline {' '.join(args)} did not end in {timeout:g} s:\n{stderr[-3000:]}")
    finally:
        if proc.poll() is None:  # an interrupted test: the run goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    elapsed = time.monotonic() - started
    assert_no_leftovers(proc.pid)
    return CliRun(proc.returncode, stdout, stderr, proc.pid, elapsed)


def activity_of(out: Path) -> list[Activity]:
    """The raw ledger rows of the store's last run (what the timeline is drawn from)."""
    ledger = Ledger(out, readonly=True)
    try:
        run_id = read_json(out / "report.json")["run_id"]
        return list(ledger.run_activity(run_id))
    finally:
        ledger.close()


def seconds_of(text: str) -> float:
    """A duration as the page writes it (``834 ms``, ``2.01 s``, ``3.5 min``)."""
    number, unit = text.split()
    return float(number) * {"ms": 0.001, "s": 1.0, "min": 60.0}[unit]


def legend_of(activity: Activity) -> str:
    outcome = "done" if activity.status == "done" else str(activity.error_kind)
    return outcome + (", retried" if activity.retried else "")


# --- generated data ----------------------------------------------------------------------


def log_line(i: int, j: int) -> str:
    return f"{i} {j} GET /p{(i * 7 + j) % PATHS} {STATUSES[j % len(STATUSES)]}\n"


def write_log(folder: Path, i: int) -> Path:
    """Log ``i``: ``LINES`` access-log-like lines, with its fault line or malformed lines."""
    lines = [log_line(i, j) for j in range(LINES)]
    if i in FAULTS:
        at, mark = FAULTS[i]
        lines[at] = f"{i} {at} GET /{mark} 200\n"
    if i == MALFORMED_FILE:
        for at in MALFORMED_AT:
            lines[at] = f"malformed line {at}\n"
    path = folder / f"log{i}.log"
    path.write_text("".join(lines))
    return path


def logs_config(
    folder: Path,
    data: Path,
    out: Path,
    chunk_size: str,
    steps: list[dict[str, Any]],
    **execution: Any,
) -> Path:
    """``folder/job.yaml``: the logs ``data/*.log`` through ``steps``, with ``STATS``."""
    body = {
        "name": "report-html",
        "input": {"paths": [str(data / "*.log")], "chunk_size": chunk_size},
        "steps": steps,
        "stats": STATS,
        "output": {"dir": str(out)},
        "execution": execution,
    }
    return write_config(folder, body, name="job.yaml")


@dataclass
class FaultRun:
    config: Path
    out: Path
    first: CliRun
    second: CliRun


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    """One store, two process-executor runs: logs 0 and 5 (clean: ok), then logs 1-4 added
    (a crash, a hang, a step error, malformed lines: exit 1). The plugin beside the config."""
    folder = tmp_path_factory.mktemp("faults")
    data = folder / "data"
    data.mkdir()
    shutil.copy(PLUGIN, folder / PLUGIN.name)
    config = logs_config(
        folder,
        data,
        folder / "out",
        "16KiB",
        [{"regex": REGEX}, {"call": "plugins_report:faults"}],
        workers=2,
        retries=RETRIES,
        timeout=f"{TASK_TIMEOUT_S:g}s",
    )
    for i in CLEAN:
        write_log(data, i)
    first = run_pipeline("run", str(config), "--progress", "none")
    assert first.returncode == 0, first.stderr
    for i in range(6):
        if i not in CLEAN:
            write_log(data, i)
    second = run_pipeline("run", str(config), "--progress", "none")
    print(f"fault run: {first.elapsed:.1f} s (clean) + {second.elapsed:.1f} s (faults)")
    assert second.returncode == 1, second.stderr
    assert "Traceback" not in second.stderr
    return FaultRun(config, folder / "out", first, second)


# --- what the page shows -----------------------------------------------------------------


def assert_clean_load(load: PageLoad) -> None:
    """No console error or warning; nothing fetched but the page itself and data: URLs."""
    assert not load.console_problems(), load.console
    assert load.url in load.requests, load.requests  # (the network log does record)
    assert not load.foreign_requests(), load.foreign_requests()


def column(driver: WebDriver, renderer: str, field: str) -> list[Any]:
    js = "return Array.from(model(arguments[0]).data_source.data[arguments[1]]);"
    return bokeh(driver, js, renderer, field)


def length(driver: WebDriver, renderer: str) -> int:
    return bokeh(driver, "return model(arguments[0]).data_source.get_length();", renderer)


def factors(driver: WebDriver, figure: str, axis: str = "y") -> list[str]:
    return bokeh(driver, f"return Array.from(model(arguments[0]).{axis}_range.factors);", figure)


def rendered_roots(driver: WebDriver) -> dict[str, tuple[str, float, float]]:
    """Each figure of the document: the id of the element it was placed in and its size."""
    return bokeh(
        driver,
        """
        const out = {};
        for (const root of doc.roots()) {
          const view = Bokeh.index.find_one(root);
          const r = view.el.getBoundingClientRect();
          const host = view.el.parentElement ? view.el.parentElement.id : null;
          out[root.name] = [host, r.width, r.height];
        }
        return out;
        """,
    )


def check_timeline(driver: WebDriver, out: Path) -> tuple[runview.RunView, list[Activity]]:
    """The timeline against the store: one row per worker process that ran something (the
    ledger's distinct workers), one bar per drawn bar, and the bars' outcomes, colours and
    hatching as the ledger's rows say."""
    view = runview.load(out)
    activity = activity_of(out)
    workers = {a.worker for a in activity}
    assert set(factors(driver, "timeline")) == workers
    assert factors(driver, "timeline") == list(reversed(view.workers))  # first on top
    assert length(driver, "timeline-bars") == len(view.bars)
    assert sum(column(driver, "timeline-bars", "tasks")) == sum(a.tasks for a in activity)
    if not view.merged:
        assert len(view.bars) == len(activity)
        assert Counter(column(driver, "timeline-bars", "legend")) == Counter(
            legend_of(a) for a in activity
        )
    colours = bokeh(
        driver, "return JSON.parse(document.getElementById('report-data').textContent).colours;"
    )
    assert {k: colours[k] for k in COLOURS} == COLOURS
    legends = column(driver, "timeline-bars", "legend")
    for legend, colour, pattern in zip(
        legends,
        column(driver, "timeline-bars", "colour"),
        column(driver, "timeline-bars", "pattern"),
        strict=True,
    ):
        outcome, _, retried = legend.partition(", ")
        assert outcome in colours, f"outcome {outcome!r} has no colour of its own"
        assert colour == colours[outcome] and (pattern == "/") == (retried == "retried")
    rows: dict[str, list[tuple[float, float]]] = {}
    for worker, start, end in zip(
        column(driver, "timeline-bars", "worker"),
        column(driver, "timeline-bars", "start"),
        column(driver, "timeline-bars", "end"),
        strict=True,
    ):
        rows.setdefault(worker, []).append((start, end))
    for worker, spans in rows.items():  # a worker process runs one task at a time
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start + CLOCK_SLACK_S, (worker, end, start)
    caption = driver.find_element(By.CSS_SELECTOR, "section#timeline p").text
    assert f"{len(workers):,} worker process(es)" in caption
    assert f"{len(view.bars):,} bar(s)" in caption
    return view, activity


def check_charts(driver: WebDriver, view: runview.RunView, activity: list[Activity]) -> None:
    """Durations: every bar of the ledger counted once; throughput: one point per bin,
    conserving the records of the final attempts; every figure placed in its element."""
    counts = column(driver, "durations-bars", "count")
    assert len(counts) == runview.HISTOGRAM_BINS and sum(counts) == len(activity)
    finals = [a for a in activity if not a.retried]
    points = length(driver, "throughput-records")
    assert points == min(runview.THROUGHPUT_BINS, max(10, len(finals)))
    assert length(driver, "throughput-mb") == points
    t = column(driver, "throughput-records", "t")
    width = t[1] - t[0]
    records = sum(column(driver, "throughput-records", "records")) * width
    assert records == pytest.approx(sum(a.records_in or 0 for a in finals), rel=1e-6, abs=1e-6)
    roots = rendered_roots(driver)
    for div in CHART_DIVS:
        name = div.removeprefix("chart-")
        assert roots[name][0] == div, roots
        assert roots[name][1] > 300 and roots[name][2] > 100, roots
    assert view.history and factors(driver, "history-duration", "x") == [
        f"#{h.run_id}" for h in view.history
    ]
    assert length(driver, "history-duration-bars") == len(view.history)
    assert length(driver, "history-records-bars") == len(view.history)


def tiles(driver: WebDriver, section: str = "summary") -> dict[str, str]:
    """{label: value} of a section's tiles, each checked to be visible."""
    found = {}
    for tile in driver.find_elements(By.CSS_SELECTOR, f"section#{section} .tile"):
        assert tile.is_displayed()
        label = tile.find_element(By.TAG_NAME, "span").text
        found[label] = tile.find_element(By.TAG_NAME, "b").text
    return found


def table(driver: WebDriver, table_id: str) -> list[list[str]]:
    """The body rows of a table (each visible) as cell texts."""
    rows = driver.find_elements(By.CSS_SELECTOR, f"table#{table_id} tbody tr")
    assert all(row.is_displayed() for row in rows)
    return [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def axis_labels(driver: WebDriver) -> dict[str, list[str]]:
    """The tick labels each axis of each figure draws ("figure:side:axis label")."""
    return bokeh(
        driver,
        """
        const out = {};
        for (const fig of doc.roots()) {
          for (const side of ['left', 'right', 'below', 'above']) {
            for (const axis of fig[side]) {
              if (axis.ticker === undefined) { continue; }  // a legend placed above
              const view = Bokeh.index.find_one(axis);
              const ticks = view.tick_coords.major[view.dimension];
              const labels = view.compute_labels(ticks).items.map((box) => box.text);
              out[fig.name + ':' + side + ':' + (axis.axis_label || '')] = labels;
            }
          }
        }
        return out;
        """,
    )


def check_summary_and_failures(driver: WebDriver, run: FaultRun) -> None:
    """The summary tiles say what report.json says and what was injected; the failure
    table has the three faults, each tried 1 + RETRIES times, with its reason."""
    report = read_json(run.out / "report.json")
    summary = tiles(driver)
    tasks, records = report["tasks"], report["records"]
    assert summary["status"] == "failed" == report["status"]
    assert summary["exit code"] == "1"
    assert summary["tasks failed"] == "3" == str(tasks["failed"])
    assert summary["tasks done"] == f"{tasks['done']:,}"
    assert summary["tasks skipped"] == f"{tasks['skipped']:,}"
    first_done = re.search(r"tasks: (\d+) done", run.first.stderr)  # the clean run's tasks
    assert first_done and tasks["skipped"] == int(first_done[1])
    assert summary["tasks pending"] == "0"
    assert summary["records in"] == f"{records['in']:,}"
    assert summary["records out"] == f"{records['out']:,}"
    assert summary["malformed"] == str(len(MALFORMED_AT))
    assert summary["undecodable"] == "0"
    assert summary["records this run"] == f"{report['run']['records']:,}"
    assert summary["read this run"] == format_size(report["run"]["bytes_read"])
    assert summary["workers"] == "2" and summary["executor"].startswith("process")
    assert re.fullmatch(r"[\d.]+ (ms|s|min)", summary["duration"]), summary["duration"]

    rows = table(driver, "failures-table")
    assert len(rows) == 3
    by_kind = {row[0]: row for row in rows}
    assert set(by_kind) == FAULT_KINDS
    for failure in report["failures"]:
        kind, attempts, span, path, reason = by_kind[failure["kind"]]
        assert kind == failure["kind"] and attempts == str(1 + RETRIES)
        assert span == "bytes {}-{}".format(*failure["range"]) and path == failure["path"]
        assert reason == failure["error"]
    assert Path(by_kind["crashed"][3]).name == f"log{_file_of('CRASH')}.log"
    assert "SIGKILL" in by_kind["crashed"][4]
    assert Path(by_kind["timeout"][3]).name == f"log{_file_of('HANG')}.log"
    assert f"longer than the timeout ({TASK_TIMEOUT_S:g}s)" in by_kind["timeout"][4]
    assert Path(by_kind["error"][3]).name == f"log{_file_of('BOOM')}.log"
    assert "ValueError: BOOM" in by_kind["error"][4]
    assert f"line {FAULTS[_file_of('BOOM')][0] + 1} " in by_kind["error"][4]


def _file_of(mark: str) -> int:
    return next(i for i, (_, m) in FAULTS.items() if m == mark)


def check_timeline_pixels(driver: WebDriver, view: runview.RunView) -> None:
    """The drawing itself: inside the plot area, the final crashed and timed-out attempts'
    bars are solid purple and orange; their retried attempts are hatched (white stripes)."""
    geometry = timeline_boxes(driver)
    image = element_image(driver, "chart-timeline")
    dpr = geometry["dpr"]
    left, top, width, height = (v * dpr for v in geometry["frame"])
    frame = image.crop((round(left), round(top), round(left + width), round(top + height)))
    legends = [b.outcome + (", retried" if b.retried else "") for b in view.bars]
    for kind in ("crashed", "timeout"):
        rgb = hex_rgb(COLOURS[kind])
        assert colour_share(frame, (0, 0, frame.width, frame.height), rgb) > 0, kind
        for legend, solid in ((kind, True), (f"{kind}, retried", False)):
            i = legends.index(legend)
            x0, x1, y0, y1 = (v * dpr for v in geometry["boxes"][i])
            assert x1 - x0 >= 8 and y1 - y0 >= 8, (legend, geometry["boxes"][i])
            box = (round(x0) + 3, round(y0) + 3, round(x1) - 3, round(y1) - 3)
            share = colour_share(image, box, rgb)
            white = colour_share(image, box, (255, 255, 255))
            if solid:
                assert share > 0.9 and white == 0, (legend, share, white)
            else:
                assert 0.2 < share < 0.97 and white > 0.02, (legend, share, white)


def check_hover(driver: WebDriver, view: runview.RunView) -> None:
    """Hovering the final timed-out and crashed bars shows each one's path, range,
    attempt, records and duration (its tooltip, read from Bokeh's shadow DOM)."""
    scroll_to(driver, "chart-timeline")
    geometry = timeline_boxes(driver)
    legends = [b.outcome + (", retried" if b.retried else "") for b in view.bars]
    for kind, at_least in (("timeout", TASK_TIMEOUT_S), ("crashed", CRASH_AFTER_S)):
        i = legends.index(kind)
        bar = view.bars[i]
        x0, x1, y0, y1 = geometry["boxes"][i]
        x, y = viewport_point(driver, "chart-timeline", (x0 + x1) / 2, (y0 + y1) / 2)
        tips = hover_tooltips(driver, x, y, expect=bar.range)
        assert len(tips) == 1, tips
        tip = tips[0]
        assert tip["path"] == bar.path and tip["range"] == bar.range
        assert tip["outcome"] == kind and tip["worker"] == bar.worker
        assert tip["attempt"] == str(1 + RETRIES) == str(bar.attempts)
        assert tip["records"] == f"{bar.records:,}"
        seconds = seconds_of(tip["duration"])
        assert seconds == pytest.approx(bar.duration, abs=0.006) and seconds >= at_least
        assert ("SIGKILL" if kind == "crashed" else "timeout") in tip["error"]


# --- the tests ---------------------------------------------------------------------------


def test_fault_run_page_loads_offline_and_draws_the_store(
    browser: WebDriver, fault_run: FaultRun
) -> None:
    """The page of a run with a crash, a hang, a step error and malformed lines: no console
    error or warning, no request beyond the file itself; one timeline row per worker
    process, one bar per task row and retried attempt, every fault and its retried
    attempt in the legend; durations, throughput, stat and history charts as the store
    says; every figure rendered in its element."""
    load = open_page(browser, fault_run.out / "report.html")
    assert_clean_load(load)
    assert browser.title == "report-html — run #2"
    view, activity = check_timeline(browser, fault_run.out)
    legend = Counter(column(browser, "timeline-bars", "legend"))
    for kind in FAULT_KINDS:  # retries: 1, so each fault failed twice, the first retried
        assert legend[kind] == 1 and legend[f"{kind}, retried"] == 1, legend
    report = read_json(fault_run.out / "report.json")
    assert legend["done"] == report["tasks"]["done"]
    retried = {f"{kind}, retried" for kind in FAULT_KINDS}
    # A crash or timeout restarts the pool: a batch in flight on the other worker is
    # abandoned (uncharged) and runs again; whether one was in flight is up to timing.
    assert set(legend) <= {"done", *FAULT_KINDS, *retried, "abandoned, retried"}
    assert len(activity) == report["tasks"]["done"] + 3 + 3 + legend["abandoned, retried"]
    check_charts(browser, view, activity)

    stats = read_json(fault_run.out / "stats.json")
    names = set(bokeh(browser, "return doc.roots().map((root) => root.name);"))
    assert names == {div.removeprefix("chart-") for div in CHART_DIVS} | {
        "stat:by_status",  # a count_by and a top stat are drawn; n, a single number, is not
        "stat:top_paths",
    }
    assert len(browser.find_elements(By.CSS_SELECTOR, "[id^='chart-stat-']")) == 2
    by_status = factors(browser, "stat:by_status")
    assert set(by_status) == set(STATUSES) == set(stats["by_status"])
    assert column(browser, "stat-bars:by_status", "key") == sorted(
        stats["by_status"], key=lambda k: (-stats["by_status"][k], k)
    )
    assert column(browser, "stat-bars:by_status", "n") == sorted(
        stats["by_status"].values(), reverse=True
    )
    assert column(browser, "stat-bars:top_paths", "key") == [k for k, _ in stats["top_paths"]]
    assert len(column(browser, "stat-bars:top_paths", "n")) == STATS["top_paths"]["k"]
    assert tiles(browser, "stats") == {"n": f"{stats['n']:,}"}
    save_full_page(browser, "fault-run")


def test_fault_run_tables(browser: WebDriver, fault_run: FaultRun) -> None:
    """Summary tiles, the failure rows (3: error, crashed, timeout, with their reasons),
    the malformed lines (path, line, reason), the slowest tasks and both runs' history."""
    open_page(browser, fault_run.out / "report.html")
    check_summary_and_failures(browser, fault_run)

    malformed = table(browser, "malformed-table")
    assert len(malformed) == len(MALFORMED_AT)
    for (path, line, reason), at in zip(malformed, MALFORMED_AT, strict=True):
        assert Path(path).name == f"log{MALFORMED_FILE}.log"
        assert line == str(at + 1) and reason == "regex did not match"

    activity = activity_of(fault_run.out)
    slowest = table(browser, "slowest-table")
    assert len(slowest) == min(runview.SLOWEST_SHOWN, len(activity))
    longest = max(activity, key=lambda a: a.ended - a.started)
    assert slowest[0][1] == legend_of(longest) and slowest[0][6] == longest.path
    assert slowest[0][5] == longest.worker

    history = table(browser, "history-table")
    assert [row[0] for row in history] == ["#2", "#1"]  # newest first
    assert [(row[2], row[3]) for row in history] == [("failed", "1"), ("ok", "0")]
    assert history[1][5] == f"{len(CLEAN) * LINES:,}"  # the clean run read every line


@pytest.mark.timeout(180)
def test_fault_run_timeline_pixels_and_hover(browser: WebDriver, fault_run: FaultRun) -> None:
    """The timeline as drawn: the crashed and timed-out bars in their colours (the final
    attempt solid, the retried one hatched); hovering them tells their path, range,
    attempt, records and duration."""
    open_page(browser, fault_run.out / "report.html")
    view = runview.load(fault_run.out)
    check_timeline_pixels(browser, view)
    check_hover(browser, view)


def test_every_axis_tells_its_ticks_apart(browser: WebDriver, fault_run: FaultRun) -> None:
    """No axis of the page labels two of its ticks alike (the MB/s axis of a run reading
    well under 1 MB/s included)."""
    open_page(browser, fault_run.out / "report.html")
    labels = axis_labels(browser)
    assert (
        "throughput:right:MB/s" in labels
        and "timeline:below:seconds since the run started" in labels
    )
    alike = {axis: ticks for axis, ticks in labels.items() if len(set(ticks)) < len(ticks)}
    assert not alike, alike


def test_fault_run_page_without_javascript(
    browser_without_js: WebDriver, fault_run: FaultRun
) -> None:
    """With JavaScript off no chart is drawn, but the summary tiles and the failure table
    are there, visible and right."""
    driver = browser_without_js
    load = open_page(driver, fault_run.out / "report.html", charts=False)
    assert_clean_load(load)
    assert driver.execute_script("return typeof window.Bokeh;") == "undefined"
    for div in CHART_DIVS:
        children = "return document.getElementById(arguments[0]).childElementCount;"
        assert driver.execute_script(children, div) == 0
    check_summary_and_failures(driver, fault_run)
    assert driver.find_element(By.ID, "failures-table").is_displayed()
    save_full_page(driver, "fault-run-no-javascript", javascript=False)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("executor", ["serial", "dask"])
def test_serial_and_dask_runs(
    request: pytest.FixtureRequest, browser: WebDriver, tmp_path: Path, executor: str
) -> None:
    """A serial run draws one row, the CLI's own process; a run on a Dask cluster draws a
    row per cluster worker process that ran tasks; each with a bar per task and no
    console error."""
    if executor == "dask":
        cluster: DaskCluster = request.getfixturevalue("dask_cluster")
        data = cluster.shared / f"report-{tmp_path.name}"
        folder = cluster.private / f"report-{tmp_path.name}"
        execution: dict[str, Any] = {"executor": "dask", "address": cluster.address}
        env = cluster.client_env()
    else:
        data, folder = tmp_path / "data", tmp_path
        execution, env = {"executor": "serial"}, {}
    data.mkdir(parents=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(4):
        write_log(data, 0 if i == 0 else 5 + i)  # no fault, no malformed line
    out = folder / "out"
    config = logs_config(folder, data, out, "16KiB", [{"regex": REGEX}], **execution)
    run = run_pipeline("run", str(config), "--progress", "none", env=env)
    print(f"{executor} run: {run.elapsed:.1f} s")
    assert run.returncode == 0, run.stderr

    load = open_page(browser, out / "report.html")
    assert_clean_load(load)
    view, activity = check_timeline(browser, out)
    report = read_json(out / "report.json")
    assert len(view.bars) == len(activity) == report["tasks"]["done"] > 4
    assert set(column(browser, "timeline-bars", "legend")) == {"done"}
    host = socket.gethostname()
    if executor == "serial":
        assert factors(browser, "timeline") == [f"{host}:{run.pid}"]
    else:
        with cluster.connect() as client:
            pids = client.run(os.getpid).values()
        assert 1 <= len(view.workers) <= 2
        assert set(factors(browser, "timeline")) <= {f"{host}:{pid}" for pid in pids}
    check_charts(browser, view, activity)
    save_full_page(browser, f"{executor}-run")


@pytest.mark.timeout(300)
def test_ten_thousand_tasks(browser: WebDriver, tmp_path: Path) -> None:
    """A 10 MiB log in 1 KiB chunks (over 10,000 tasks, two workers): a page under 5 MB
    whose timeline keeps to MAX_BARS bars (successes merged, every task still counted),
    opening without console errors."""
    data = tmp_path / "data"
    data.mkdir()
    size = 10 * 1024 * 1024
    line = "0 {} GET /p{} {}\n"
    lines = []
    written = 0
    while written < size:
        j = len(lines)
        lines.append(line.format(j, j % PATHS, STATUSES[j % len(STATUSES)]))
        written += len(lines[-1])
    (data / "big.log").write_text("".join(lines))
    config = logs_config(tmp_path, data, tmp_path / "out", "1KiB", [{"regex": REGEX}], workers=2)
    run = run_pipeline("run", str(config), "--progress", "none", timeout=180)
    assert run.returncode == 0, run.stderr
    page = tmp_path / "out" / "report.html"
    report = read_json(tmp_path / "out" / "report.json")
    tasks = report["tasks"]["done"]
    print(f"{tasks} tasks: run {run.elapsed:.1f} s, report.html {page.stat().st_size:,} bytes")
    assert tasks >= math.floor(size / 1024) and report["tasks"]["failed"] == 0
    assert page.stat().st_size < 5_000_000

    started = time.monotonic()
    load = open_page(browser, page)
    print(f"page opened and drawn in {time.monotonic() - started:.1f} s")
    assert_clean_load(load)
    view, activity = check_timeline(browser, tmp_path / "out")
    assert len(activity) == tasks
    assert length(browser, "timeline-bars") <= runview.MAX_BARS
    assert view.merged == sum(n for n in column(browser, "timeline-bars", "tasks") if n > 1)
    assert sum(column(browser, "timeline-bars", "records")) == report["records"]["in"]
    caption = browser.find_element(By.CSS_SELECTOR, "section#timeline p").text
    assert f"{view.merged:,} successful tasks are drawn merged" in caption
    check_charts(browser, view, activity)
    save_full_page(browser, "ten-thousand-tasks")


def test_report_command_writes_the_same_page(
    browser: WebDriver, fault_run: FaultRun, tmp_path: Path
) -> None:
    """``pipeline report CONFIG --html PATH`` writes the page the run left, byte for byte,
    where it is told; it opens as cleanly."""
    target = tmp_path / "elsewhere" / "page.html"
    target.parent.mkdir()
    result = run_pipeline("report", str(fault_run.config), "--html", str(target))
    assert result.returncode == 0, result.stderr
    assert f"report: {target}" in result.stderr
    assert target.read_bytes() == (fault_run.out / "report.html").read_bytes()
    load = open_page(browser, target)
    assert_clean_load(load)
    check_timeline(browser, fault_run.out)
    save_full_page(browser, "report-command")

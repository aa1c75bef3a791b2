"""The numbers of the run report (``runview``) and the page's data (``htmlreport``),
without a browser: bars merged for room, throughput spread over time, the histogram, the
stats' bars, and JSON that cannot end its ``<script>`` element."""

from __future__ import annotations

import json
import math
import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import htmlreport
from pipeline.runview import (
    Bar,
    RunView,
    histogram,
    throughput,
    timeline,
    worker_order,
)


def bar(
    worker: str = "h:1",
    start: float = 0.0,
    end: float = 1.0,
    outcome: str = "done",
    retried: bool = False,
    records: int = 10,
    nbytes: int = 100,
    tasks: int = 1,
    path: str = "/d/a.log",
) -> Bar:
    return Bar(
        worker, start, end, outcome, retried, tasks, path, "whole file", 1, records, nbytes, ""
    )


bars_strategy = st.lists(
    st.builds(
        bar,
        worker=st.sampled_from(["h:1", "h:2", "h:10", "other:3"]),
        start=st.floats(0, 100),
        end=st.floats(0, 120),
        outcome=st.sampled_from(["done", "done", "done", "error", "crashed", "timeout"]),
        retried=st.booleans(),
        records=st.integers(0, 10_000),
        nbytes=st.integers(0, 10**9),
        tasks=st.integers(1, 5),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(bars_strategy, st.integers(1, 80))
def test_merging_keeps_every_task_and_every_failure(bars: list[Bar], max_bars: int) -> None:
    """Merged bars still account for every task, record and byte; failures and retried
    attempts are never merged; within room, nothing is merged at all."""
    drawn, merged = timeline(bars, max_bars)
    assert sum(b.tasks for b in drawn) == sum(b.tasks for b in bars)
    assert sum(b.records for b in drawn) == sum(b.records for b in bars)
    assert sum(b.nbytes for b in drawn) == sum(b.nbytes for b in bars)
    kept = [b for b in bars if b.outcome != "done" or b.retried]
    assert Counter(b for b in drawn if b.outcome != "done" or b.retried) == Counter(kept)
    assert {b.worker for b in drawn} == {b.worker for b in bars}
    if len(bars) <= max_bars:
        assert merged == 0 and Counter(drawn) == Counter(bars)
    elif len(kept) + len({b.worker for b in bars}) < max_bars:
        assert len(drawn) <= max_bars
        assert merged == sum(b.tasks for b in drawn if "merged" in b.range)


def test_merged_bars_span_their_tasks_on_one_worker() -> None:
    bars = [bar("h:1", i, i + 0.5, path=f"/d/{i}") for i in range(10)]
    drawn, merged = timeline([*bars, bar("h:2", 3, 4, outcome="crashed")], max_bars=4)
    assert merged == 10
    assert [(b.worker, b.start, b.end, b.tasks) for b in drawn] == [
        ("h:1", 0, 4.5, 5),
        ("h:1", 5, 9.5, 5),
        ("h:2", 3, 4, 1),
    ]
    assert drawn[0].path == "/d/0 … /d/4" and drawn[0].range == "5 tasks (merged)"


def test_workers_sort_by_host_then_pid_as_a_number() -> None:
    assert sorted(["h:1000", "h:999", "a:5", "unknown"], key=worker_order) == [
        "a:5",
        "h:999",
        "h:1000",
        "unknown",
    ]


@settings(max_examples=60, deadline=None)
@given(bars_strategy, st.integers(1, 120))
def test_throughput_spreads_every_record_and_byte_over_the_run(bars: list[Bar], bins: int) -> None:
    """Rate x bin width, summed, gives back what the final attempts read (retried attempts
    read nothing that counts); bars past the span are cut at it."""
    span = 120.0
    tp = throughput(bars, span, bins)
    finals = [b for b in bars if not b.retried]
    assert len(tp.times) == bins and math.isclose(tp.width, span / bins)
    assert all(r >= 0 for r in tp.records_per_s)
    total_records = sum(r * tp.width for r in tp.records_per_s)
    total_mb = sum(m * tp.width for m in tp.mb_per_s)
    assert math.isclose(total_records, sum(b.records for b in finals), rel_tol=1e-9, abs_tol=1e-6)
    assert math.isclose(total_mb, sum(b.nbytes for b in finals) / 1e6, rel_tol=1e-9, abs_tol=1e-9)


def test_throughput_puts_a_bar_in_the_bins_it_covers() -> None:
    tp = throughput([bar(start=2.0, end=4.0, records=100, nbytes=2_000_000)], 10.0, 10)
    assert tp.records_per_s == [0, 0, 50, 50, 0, 0, 0, 0, 0, 0]
    assert tp.mb_per_s == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0]


@given(st.lists(st.floats(0, 1e4), max_size=200), st.integers(1, 50))
def test_the_histogram_counts_every_duration_once(durations: list[float], bins: int) -> None:
    hist = histogram(durations, bins)
    assert sum(hist.counts) == len(durations)
    assert len(hist.edges) == bins + 1 and hist.edges[0] == 0
    assert all(a < b for a, b in zip(hist.edges, hist.edges[1:], strict=False))


def test_count_by_and_top_become_bars_largest_first_numbers_do_not() -> None:
    assert htmlreport.category_counts({"200": 5, "404": 9, "500": 5}) == [
        ("404", 9),
        ("200", 5),
        ("500", 5),
    ]
    assert htmlreport.category_counts([["/a", 3], ["/b", 1]]) == [("/a", 3), ("/b", 1)]
    assert htmlreport.category_counts(12) is None
    assert htmlreport.category_counts(None) is None


def test_stat_charts_show_the_largest_keys_and_name_empty_ones() -> None:
    many = {f"k{i:03}": i for i in range(100)} | {"": 1000}
    (chart,) = htmlreport._stat_charts({"by": many, "n": 4})
    assert len(chart["keys"]) == htmlreport.CATEGORIES_SHOWN
    assert chart["keys"][:2] == ["(empty #0)", "k099"] and chart["counts"][:2] == [1000, 99]
    assert chart["title"] == f"by (the {htmlreport.CATEGORIES_SHOWN} largest of 101)"


def test_script_json_cannot_close_its_script_element() -> None:
    nasty = {"path": "</script><script>alert(1)</script>", "e": "<!-- & -->"}
    text = htmlreport.script_json(nasty)
    assert not re.search("[<>&]", text)
    assert json.loads(text) == nasty


def _view(**fields: object) -> RunView:
    report = {
        "name": "job<1>",
        "run_id": 3,
        "status": "failed",
        "exit_code": 1,
        "config": "/c/job.yaml",
        "started": "s",
        "finished": "f",
        "tasks": {"total": 2, "done": 1, "failed": 1, "skipped": 0, "pending": 0},
        "records": {"in": 5, "out": 4, "malformed": 1, "undecodable": 0},
        "run": {"records": 5, "bytes_read": 2048, "duration_s": 1.5},
        "failures": [
            {
                "path": "/d/<b>.log",
                "range": [0, 10],
                "kind": "crashed",
                "error": "x<y",
                "attempts": 3,
            }
        ],
        "executor": "process (2 workers)",
        "workers": 2,
    }
    return RunView(report, 0.0, **fields)  # type: ignore[arg-type]


def test_the_page_escapes_what_the_store_holds(tmp_path: object) -> None:
    """Names from files and errors reach the page as text, never as markup."""
    bars = [bar(path="/d/<img src=x>.log"), bar("h:2", outcome="crashed", path="/d/<b>.log")]
    view = _view(
        bars=bars,
        workers=["h:1", "h:2"],
        throughput=throughput(bars, 1.0, 10),
        histogram=histogram([1.0, 1.0]),
        slowest=bars,
        stats={"n": 4},
    )
    page = htmlreport.render(view)
    assert "<img src=x>" not in page and "<b>.log" not in page
    assert "/d/&lt;b&gt;.log" in page and "x&lt;y" in page and "job&lt;1&gt; — run #3" in page
    assert "http://" not in page.split("<script")[0]  # no stylesheet or font fetched


def test_a_view_without_timings_still_has_its_summary_and_tables() -> None:
    view = _view(notes=["no timings"])
    page = htmlreport.render(view)
    data = json.loads(page.split("id='report-data'>")[1].split("</script>")[0])
    assert data["timeline"] is None and data["durations"] is None
    assert "id='chart-timeline'" not in page and "failures-table" in page
    assert "no timings" in page

"""``report.html``: a run as one self-contained page, its charts drawn by Bokeh.

The summary, the slowest tasks, failures, the malformed sample, the stats' single numbers
and the run history are plain HTML: readable without JavaScript. The charts (throughput,
the task timeline, durations, the ``count_by``/``top`` stats, the history) are drawn in
the browser by BokehJS, from the installed ``bokeh`` package (the ``report`` extra), which
is inlined with ``report_page.js`` and the chart data, so the page asks nothing of the
network. Bokeh's Python models are not used: building and serialising the same figures
with them cost over a second of every run (see docs/report.md); the page costs
milliseconds to write.
"""

from __future__ import annotations

import html
import importlib.util
import json
import time
from pathlib import Path
from typing import Any

from pipeline.errors import MissingExtraError
from pipeline.reporting import format_count
from pipeline.runview import Bar, RunView
from pipeline.store.atomic import atomic_write_bytes
from pipeline.units import format_size

REPORT_HTML_NAME = "report.html"
INSTALL_HINT = (
    "the HTML report needs the optional 'report' extra (Bokeh): "
    "pip install 'pipeline[report]' (from a checkout: pip install -e '.[report]'; "
    "the make targets install it)"
)
# BokehJS (core and its plotting API), as the bokeh package ships it.
BOKEH_SCRIPTS = ("server/static/js/bokeh.min.js", "server/static/js/bokeh-api.min.js")
PAGE_SCRIPT = Path(__file__).with_name("report_page.js")
CATEGORIES_SHOWN = 30  # keys of a count_by/top stat drawn; the rest are counted
ERROR_SHOWN = 300  # characters of an error shown when hovering its bar
# Outcome colours (Tableau 10): done blue, a step's error red, crashed purple, timeout orange.
# An attempt abandoned with its pool (another task's crash or timeout) is grey.
COLOURS = {
    "done": "#4C78A8",
    "error": "#E45756",
    "crashed": "#B279A2",
    "timeout": "#F58518",
    "abandoned": "#9D9D9D",
}

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;
max-width:1200px;padding:16px 24px;color:#222;background:#fff}
h1{font-size:22px;margin:8px 0 2px}h2{font-size:17px;margin:28px 0 8px;
border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 4px}
.sub{color:#666;margin:0 0 12px}.note{background:#fff8e1;border-left:4px solid #f5a623;
padding:6px 10px;margin:8px 0}
.tiles{display:flex;flex-wrap:wrap;gap:10px}.tile{border:1px solid #ddd;border-radius:6px;
padding:8px 12px;min-width:110px}.tile b{display:block;font-size:18px}
.tile span{color:#666;font-size:12px}
.ok b{color:#2e7d32}.failed b,.interrupted b{color:#c62828}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}
th{background:#f6f6f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.path{word-break:break-all}.charts{display:flex;flex-wrap:wrap;gap:16px}
.charts>div{flex:1 1 480px;min-width:320px}
"""


def _bokeh_scripts() -> Path | None:
    """The installed bokeh package's folder, when it holds BokehJS, found without
    importing bokeh (its Python side is never used)."""
    spec = importlib.util.find_spec("bokeh")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if all((folder / name).is_file() for name in BOKEH_SCRIPTS) else None


def available() -> bool:
    """Whether the report extra (Bokeh) is installed."""
    return _bokeh_scripts() is not None


def require() -> Path:
    """The bokeh folder to copy BokehJS from; a one-line error saying how to get it."""
    folder = _bokeh_scripts()
    if folder is None:
        raise MissingExtraError(INSTALL_HINT)
    return folder


def write(view: RunView, path: Path) -> None:
    """The page, written atomically to ``path``; the scripts go in as the bytes they are
    (decoding and encoding 1.4 MB took half the time of writing the page)."""
    atomic_write_bytes(path, b"".join(_page(view)))


def render(view: RunView) -> str:
    """The page as text."""
    return b"".join(_page(view)).decode("utf-8")


def _page(view: RunView) -> list[bytes]:
    folder = require()
    data = chart_data(view)
    rep = view.report
    title = f"{rep.get('name', 'pipeline')} — run #{rep.get('run_id', '?')}"
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='sub'>{_e(rep.get('config', ''))} · started {_e(rep.get('started', ''))}"
        f" · finished {_e(rep.get('finished', ''))}</p>",
        *(f"<p class='note'>{_e(note)}</p>" for note in view.notes),
        "<section id='summary'><h2>Summary</h2>",
        _tiles(_summary(view)),
        "</section>",
        "<section id='throughput'><h2>Throughput</h2>",
        "<div id='chart-throughput'></div>" if data["timeline"] else "<p>No task ran.</p>",
        "</section>",
        "<section id='timeline'><h2>Task timeline</h2>",
        _timeline_caption(view),
        "<div id='chart-timeline'></div>" if data["timeline"] else "",
        "</section>",
        "<section id='durations'><h2>Task durations</h2>",
        "<div id='chart-durations'></div>" if data["durations"] else "",
        "<h3>Slowest</h3>" + _slowest_table(view.slowest) if view.slowest else "",
        "</section>",
        "<section id='stats'><h2>Stats</h2>",
        _stats_tiles(view.stats),
        "<div class='charts'>",
        *(f"<div id='chart-stat-{i}'></div>" for i in range(len(data["stats"]))),
        "</div></section>",
        "<section id='failures'><h2>Failures</h2>",
        _failures_table(rep.get("failures", [])),
        _malformed_table(view.malformed),
        "</section>",
        "<section id='history'><h2>Run history</h2>",
        "<div class='charts'><div id='chart-history-duration'></div>"
        "<div id='chart-history-records'></div></div>",
        _history_table(view),
        "</section>",
        "<p class='sub'>pipeline · charts drawn by Bokeh</p>",
    ]
    scripts = [
        part
        for name in BOKEH_SCRIPTS
        for part in (b"<script>\n", (folder / name).read_bytes(), b"\n</script>\n")
    ]
    head = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_STYLE}</style>\n"
    )
    tail = (
        "</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script type='application/json' id='report-data'>{script_json(data)}</script>\n"
        + "<script>\n"
    )
    return [
        head.encode("utf-8"),
        *scripts,
        tail.encode("utf-8"),
        PAGE_SCRIPT.read_bytes(),
        b"</script>\n</body></html>\n",
    ]


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _number(value: Any) -> str:
    """A count or stat as the console's summary writes it; a dash for none."""
    return "–" if value is None else format_count(value)


# --- HTML parts -------------------------------------------------------------------------


def _summary(view: RunView) -> list[tuple[str, str, str]]:
    rep = view.report
    tasks, records, run = rep["tasks"], rep["records"], rep["run"]
    status = str(rep["status"])
    return [
        ("status", status, status),
        ("exit code", str(rep["exit_code"]), ""),
        ("duration", _duration(run["duration_s"]), ""),
        ("tasks done", _number(tasks["done"]), ""),
        ("tasks failed", _number(tasks["failed"]), "failed" if tasks["failed"] else ""),
        ("tasks skipped", _number(tasks["skipped"]), ""),
        ("tasks pending", _number(tasks["pending"]), ""),
        ("records in", _number(records["in"]), ""),
        ("records out", _number(records["out"]), ""),
        ("malformed", _number(records["malformed"]), ""),
        ("undecodable", _number(records["undecodable"]), ""),
        ("read this run", format_size(run["bytes_read"]), ""),
        ("records this run", _number(run["records"]), ""),
        ("workers", _number(rep.get("workers", len(view.workers) or None)), ""),
        ("executor", str(rep.get("executor", "–")), ""),
    ]


def _tiles(tiles: list[tuple[str, str, str]]) -> str:
    return (
        "<div class='tiles'>"
        + "".join(
            f"<div class='tile {_e(cls)}'><b>{_e(value)}</b><span>{_e(label)}</span></div>"
            for label, value, cls in tiles
        )
        + "</div>"
    )


def _timeline_caption(view: RunView) -> str:
    if not view.bars:
        return "<p>No timings for this run.</p>"
    retried = sum(1 for b in view.bars if b.retried)
    text = (
        f"{len(view.workers):,} worker process(es), one row each; {view.tasks_drawn:,} task(s) "
        f"and {retried:,} earlier attempt(s) in {len(view.bars):,} bar(s); "
        "colour: outcome; hatched: an attempt that failed, or was abandoned (grey) when its "
        "worker pool restarted for another task, and ran again; "
        "hover a bar for its path, range, attempts, records and duration"
    )
    if view.merged:
        text += (
            f". {view.merged:,} successful tasks are drawn merged, consecutive ones of a "
            "worker per bar, to keep the page small"
        )
    return f"<p>{_e(text)}.</p>"


def _table(headers: list[str], rows: list[list[tuple[str, str]]], table_id: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td class='{cls}'>{_e(v)}</td>" for v, cls in row) + "</tr>"
        for row in rows
    )
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _slowest_table(bars: list[Bar]) -> str:
    rows = [
        [
            (_duration(b.duration), "n"),
            (b.outcome + (", retried" if b.retried else ""), ""),
            (str(b.attempts), "n"),
            (_number(b.records), "n"),
            (b.range, ""),
            (b.worker, ""),
            (b.path, "path"),
        ]
        for b in bars
    ]
    headers = ["duration", "outcome", "attempt", "records", "range", "worker", "path"]
    return _table(headers, rows, "slowest-table")


def _stats_tiles(stats: dict[str, Any]) -> str:
    singles = [(k, _number(v), "") for k, v in stats.items() if not isinstance(v, dict | list)]
    if not stats:
        return "<p>No stats configured.</p>"
    return _tiles(singles) if singles else ""


def _failures_table(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "<p>No task failed.</p>"
    rows = [
        [
            (str(f.get("kind")), ""),
            (str(f.get("attempts")), "n"),
            ("whole file" if f.get("range") is None else "bytes {}-{}".format(*f["range"]), ""),
            (str(f.get("path")), "path"),
            (str(f.get("error")), "path"),
        ]
        for f in failures
    ]
    return _table(["kind", "attempts", "range", "path", "reason"], rows, "failures-table")


def _malformed_table(sample: list[dict[str, Any]]) -> str:
    if not sample:
        return "<p>No malformed records.</p>"
    rows = [
        [
            (str(m.get("path", "")), "path"),
            (str(m.get("line", m.get("position", ""))), "n"),
            (str(m.get("reason", "")), ""),
        ]
        for m in sample
    ]
    return "<h3>Malformed records (first ones)</h3>" + _table(
        ["path", "line", "reason"], rows, "malformed-table"
    )


def _history_table(view: RunView) -> str:
    rows = [
        [
            (f"#{h.run_id}", ""),
            (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.started)), ""),
            (h.status, ""),
            ("–" if h.exit_code is None else str(h.exit_code), "n"),
            (_duration(h.duration_s), "n"),
            (_number(h.records), "n"),
        ]
        for h in reversed(view.history)
    ]
    headers = ["run", "started", "status", "exit", "duration", "records"]
    return _table(headers, rows, "history-table")


# --- charts -----------------------------------------------------------------------------


def chart_data(view: RunView) -> dict[str, Any]:
    """What ``report_page.js`` draws, as JSON-able columns."""
    bars = view.bars
    timeline = throughput = None
    if bars and view.throughput is not None:
        tp = view.throughput
        # Dask workers' clocks may run behind the scheduler's: a bar may start before 0.
        first = min(0.0, min(b.start for b in bars))
        last = max(max(b.end for b in bars), tp.width * len(tp.times))
        timeline = {
            "start": first,
            "end": last + (last - first) * 0.01 or 1.0,
            "workers": view.workers,
            "bars": {
                "worker": [b.worker for b in bars],
                "start": [b.start for b in bars],
                "end": [b.end for b in bars],
                "colour": [COLOURS.get(b.outcome, COLOURS["error"]) for b in bars],
                "pattern": ["/" if b.retried else " " for b in bars],
                "legend": [b.outcome + (", retried" if b.retried else "") for b in bars],
                "path": [b.path for b in bars],
                "range": [b.range for b in bars],
                "tasks": [b.tasks for b in bars],
                "attempt": [b.attempts for b in bars],
                "records": [b.records for b in bars],
                "bytes": [format_size(b.nbytes) for b in bars],
                "duration": [_duration(b.duration) for b in bars],
                "error": [b.error[:ERROR_SHOWN] for b in bars],
            },
        }
        throughput = {"t": tp.times, "records": tp.records_per_s, "mb": tp.mb_per_s}
    hist = view.histogram
    durations = (
        None
        if hist is None
        else {"left": hist.edges[:-1], "right": hist.edges[1:], "count": hist.counts}
    )
    return {
        "colours": COLOURS,
        "timeline": timeline,
        "throughput": throughput,
        "durations": durations,
        "stats": _stat_charts(view.stats),
        "history": {
            "run": [f"#{h.run_id}" for h in view.history],
            "duration": [h.duration_s or 0.0 for h in view.history],
            "records": [h.records or 0 for h in view.history],
            "status": [h.status for h in view.history],
            "colour": [
                COLOURS["done"] if h.status == "ok" else COLOURS["error"] for h in view.history
            ],
        },
    }


def _stat_charts(stats: dict[str, Any]) -> list[dict[str, Any]]:
    charts = []
    for name, value in stats.items():
        counts = category_counts(value)
        if counts is None:
            continue
        shown = counts[:CATEGORIES_SHOWN]
        title = name
        if len(counts) > CATEGORIES_SHOWN:
            title = f"{name} (the {CATEGORIES_SHOWN} largest of {len(counts)})"
        charts.append(
            {
                "name": name,
                "title": title,
                "keys": [k if k else f"(empty #{i})" for i, (k, _) in enumerate(shown)],
                "counts": [n for _, n in shown],
            }
        )
    return charts


def category_counts(value: Any) -> list[tuple[str, float]] | None:
    """A ``count_by`` ({key: n}) or ``top`` ([[key, n], ...]) stat's bars, largest first;
    None for a single number."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items() if isinstance(v, int | float)]
        return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))
    if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return [(str(k), n) for k, n in value]
    return None


def script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element: no ``<``, ``>`` or ``&`` left to end it."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")

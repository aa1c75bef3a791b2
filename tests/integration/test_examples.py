"""The four example configs in ``configs/`` give the results the oracles compute by hand.

Each example runs through the CLI with ``--set output.dir=<tmp>/out``, so the repository's
``out/`` folder is never touched, and from a working directory outside the repository, so
the ``call`` plugins in ``configs/example_plugins.py`` are only importable because the
config's folder is put on ``sys.path`` in every worker (whatever the start method).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.integration import oracles
from tests.integration.helpers import REPO, run_cli

pytestmark = pytest.mark.timeout(90)

CONFIGS = REPO / "configs"
DATA = REPO / "data"
SALES_HEADER = ["date", "region", "product", "units", "price", "revenue"]


def assert_close(got: Any, want: Any, where: str = "stats") -> None:
    """Equal, except floats (anywhere in the structure) within 1e-9 relative."""
    if isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), (where, got)
        assert math.isclose(got, want, rel_tol=1e-9), (where, got, want)
    elif isinstance(want, dict):
        assert isinstance(got, dict), (where, got)
        assert set(got) == set(want), (where, sorted(got), sorted(want))
        for key, value in want.items():
            assert_close(got[key], value, f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_close(g, w, f"{where}[{i}]")
    else:
        assert got == want, (where, got, want)


def run_example(name: str, out: Path, cwd: Path, *extra: str) -> tuple[dict, dict, str]:
    result = run_cli(
        "run",
        str(CONFIGS / f"{name}.yaml"),
        "--set",
        f"output.dir={out}",
        "--progress",
        "none",
        *extra,
        cwd=cwd,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    stats = json.loads((out / "stats.json").read_text(encoding="utf-8"))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return stats, report, result.stderr


CASES = [
    pytest.param("access-logs", "auto", id="access-logs"),
    pytest.param("access-logs", "spawn", id="access-logs-spawn"),
    pytest.param("wordcount", "auto", id="wordcount"),
    pytest.param("wordcount", "forkserver", id="wordcount-forkserver"),
    pytest.param("sales-csv", "spawn", id="sales-csv-spawn"),
    pytest.param("checksums", "forkserver", id="checksums-forkserver"),
]


@pytest.mark.parametrize(("name", "start_method"), CASES)
def test_example_matches_oracle(tmp_path: Path, name: str, start_method: str) -> None:
    out = tmp_path / "out"
    stats, report, stderr = run_example(
        name,
        out,
        tmp_path,
        "--set",
        f"execution.start_method={start_method}",
        "--set",
        "execution.workers=2",
    )
    if start_method != "auto":
        # the executor line names the start method actually used
        assert f"2 workers, {start_method}" in stderr, stderr

    assert_close(stats, oracles.EXPECTED[name](DATA))
    assert report["records"] == oracles.COUNTS[name](DATA)
    assert report["status"] == "ok" and report["exit_code"] == 0
    tasks = report["tasks"]
    assert tasks["done"] == tasks["total"] > 0
    assert tasks["failed"] == tasks["skipped"] == tasks["pending"] == 0
    assert report["failures"] == []


def _sales_rows() -> list[dict[str, str]]:
    """The typed rows the sales example keeps, in output order (path, then position)."""
    rows = []
    for path in oracles.matched_files(DATA, oracles.SALES_PATTERNS):
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                try:
                    int(row["units"])
                    float(row["price"])
                except ValueError:
                    continue
                rows.append(row)
    return rows


def test_sales_csv_records_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats, report, _ = run_example("sales-csv", out, tmp_path)
    assert_close(stats, oracles.sales_expected(DATA))

    raw = (out / "records.csv").read_bytes()
    with (out / "records.csv").open(encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == SALES_HEADER
    body = table[1:]
    want = _sales_rows()
    assert len(body) == len(want) == report["records"]["out"]
    assert all(len(row) == len(SALES_HEADER) for row in body)

    products = [row[2] for row in body]
    multiline = [p for p in products if "\n" in p]
    assert multiline, "the embedded-newline product was lost"
    assert "Gift set\n(boxed)" in multiline
    assert b"Gift set\n(boxed)" in raw or b"Gift set\r\n(boxed)" in raw
    assert any('"braided"' in p for p in products)  # doubled quotes survive too

    for got, expected in zip(body, want, strict=True):
        date, region, product, units, price, revenue = got
        assert (date, region, product) == (
            expected["date"],
            expected["region"],
            expected["product"],
        )
        assert int(units) == int(expected["units"])
        assert math.isclose(float(price), float(expected["price"]), rel_tol=1e-9)
        want_revenue = round(int(expected["units"]) * float(expected["price"]), 2)
        assert math.isclose(float(revenue), want_revenue, rel_tol=1e-9)


def test_checksums_digests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stats, _, _ = run_example("checksums", out, tmp_path)
    assert_close(stats, oracles.checksums_expected(DATA))

    lines = (out / "records.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert all(set(r) == {"path", "size", "sha256"} for r in records)
    got = {str(Path(r["path"]).resolve()): r["sha256"] for r in records}
    want = oracles.checksums_digests(DATA)
    assert len(records) == len(want)  # one record per file, none twice
    assert got == want
    sizes = {str(Path(r["path"]).resolve()): r["size"] for r in records}
    assert sizes == {p: Path(p).stat().st_size for p in want}
    # merged in a deterministic order: by input path
    paths = [r["path"] for r in records]
    assert paths == sorted(paths, key=lambda p: p.encode())


def test_wordcount_writes_no_records_and_access_logs_writes_selected_fields(
    tmp_path: Path,
) -> None:
    out = tmp_path / "wc"
    run_example("wordcount", out, tmp_path)
    assert not (out / "records.jsonl").exists()
    assert not (out / "records.csv").exists()

    out = tmp_path / "access"
    stats, _, _ = run_example("access-logs", out, tmp_path)
    lines = (out / "records.jsonl").read_bytes().splitlines()
    assert len(lines) == stats["requests"]
    fields = {"ip", "ts", "method", "path", "status", "bytes"}
    for line in lines[:: max(1, len(lines) // 200)]:
        record = json.loads(line)
        assert set(record) == fields
        assert record["path"] != "/healthz"

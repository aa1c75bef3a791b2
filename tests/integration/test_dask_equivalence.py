"""The dask executor gives the same store as ``serial``: ``records.*`` byte for byte and
``stats.json`` equal, for every example config and the edge-case data, with one and two
workers and several chunk sizes, on a local cluster and on a CLI cluster whose workers
see neither the config's folder nor the output store (``tests/dask_cluster.py``).

Also: a run with the process executor never imports dask.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dask_cluster import DaskCluster, make_certificates, start_cluster
from tests.integration.helpers import REPO, access_config, run_cli, write_config, write_edge_data
from tests.integration.test_equivalence import _assert_stats_equal, oracle

pytestmark = pytest.mark.timeout(180)

CONFIGS = REPO / "configs"
EXAMPLES = ("access-logs", "wordcount", "sales-csv", "checksums")
OUTPUTS = ("records.jsonl", "records.csv", "stats.json")


def run_ok(config: Path, *extra: str) -> None:
    result = run_cli("run", str(config), "--progress", "none", *extra, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def portable_example(name: str, folder: Path, out: Path, **execution: Any) -> Path:
    """The example config copied into ``folder`` with its plugins, its inputs as absolute
    paths (the repository's data, which the workers see) and its store in ``out``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(CONFIGS / "example_plugins.py", folder / "example_plugins.py")
    body = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    body["input"]["paths"] = [
        str((CONFIGS / pattern).resolve()) if not Path(pattern).is_absolute() else pattern
        for pattern in body["input"]["paths"]
    ]
    body["output"]["dir"] = str(out)
    body["execution"] = {**(body.get("execution") or {}), **execution}
    return write_config(folder, body, name=f"{name}.yaml")


def assert_same_store(out: Path, reference: Path) -> None:
    compared = 0
    for name in OUTPUTS:
        if (reference / name).exists():
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
            compared += 1
    assert compared >= 1
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "ok" and report["tasks"]["failed"] == 0
    assert not list((out / "parts" / ".tmp").iterdir())


@pytest.fixture(scope="module")
def serial_stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each example run by the serial executor: the reference stores."""
    base = tmp_path_factory.mktemp("serial")
    stores = {}
    for name in EXAMPLES:
        out = base / name / "out"
        run_ok(portable_example(name, base / name, out, executor="serial"))
        stores[name] = out
    return stores


LOCAL_CASES = [
    pytest.param(name, workers, extra, id=f"{name}-w{workers}{'-' + label if label else ''}")
    for name in EXAMPLES
    for workers, extra, label in ((1, (), ""), (2, ("--set", "input.chunk_size=4KiB"), "4KiB"))
]


@pytest.mark.parametrize(("name", "workers", "extra"), LOCAL_CASES)
def test_examples_on_a_local_cluster(
    tmp_path: Path, serial_stores: dict[str, Path], name: str, workers: int, extra: tuple
) -> None:
    out = tmp_path / "out"
    config = portable_example(name, tmp_path / "cfg", out, executor="dask", workers=workers)
    run_ok(config, *extra)
    assert_same_store(out, serial_stores[name])


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_on_a_cli_cluster(
    dask_cluster: DaskCluster, serial_stores: dict[str, Path], name: str
) -> None:
    folder = dask_cluster.private / f"example-{name}"
    out = folder / "out"
    config = portable_example(name, folder, out, executor="dask", address=dask_cluster.address)
    run_ok(config, "--set", "input.chunk_size=16KiB")
    assert_same_store(out, serial_stores[name])


EDGE_CASES = [
    pytest.param({"workers": 1, "chunk_size": "4KiB"}, False, id="local-w1-4KiB"),
    pytest.param({"workers": 2, "chunk_size": "64KiB"}, False, id="local-w2-64KiB"),
    pytest.param({"chunk_size": "8KiB"}, True, id="cli-8KiB"),
    pytest.param({"chunk_size": "8MiB"}, True, id="cli-8MiB"),
]


@pytest.mark.parametrize(("execution", "on_cli_cluster"), EDGE_CASES)
def test_edge_cases_match_the_oracle(
    request: pytest.FixtureRequest, tmp_path: Path, execution: dict, on_cli_cluster: bool
) -> None:
    execution = {"executor": "dask", **execution}
    if on_cli_cluster:
        cluster: DaskCluster = request.getfixturevalue("dask_cluster")
        name = request.node.callspec.id
        data = write_edge_data(cluster.shared / f"edge-{name}")
        folder = cluster.private / f"edge-{name}"
        folder.mkdir()
        execution["address"] = cluster.address
    else:
        data = write_edge_data(tmp_path / "data")
        folder = tmp_path
    out = folder / "out"
    run_ok(write_config(folder, access_config(data, out, **execution)))
    want_records, want_stats, counts = oracle(data)
    assert (out / "records.jsonl").read_bytes() == want_records
    _assert_stats_equal(json.loads((out / "stats.json").read_text()), want_stats)
    report = json.loads((out / "report.json").read_text())
    assert report["records"]["in"] == counts["in"]
    assert report["records"]["malformed"] == counts["malformed"]


def test_a_tls_cluster_through_dasks_own_settings(
    tmp_path: Path, serial_stores: dict[str, Path]
) -> None:
    """A ``tls://`` scheduler and worker that require encryption; the client's credentials
    come from dask's environment variables, as the README says."""
    cluster = start_cluster(tmp_path / "c", workers=1, tls=make_certificates(tmp_path / "tls"))
    try:
        assert cluster.address.startswith("tls://")
        folder = cluster.private / "job"
        out = folder / "out"
        config = portable_example("access-logs", folder, out, address=cluster.address)
        result = run_cli(
            "run",
            str(config),
            "--set",
            "execution.executor=dask",
            "--progress",
            "none",
            env={**cluster.client_env(), "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"},
            timeout=120,
        )
    finally:
        cluster.stop()
    assert result.returncode == 0, result.stderr
    assert_same_store(out, serial_stores["access-logs"])


def test_progress_and_quiet_on_a_local_cluster(tmp_path: Path) -> None:
    """The progress lines and bars are the process executor's; dask says nothing of its
    own (``--quiet`` leaves stderr empty)."""
    out = tmp_path / "out"
    config = portable_example("access-logs", tmp_path / "cfg", out, executor="dask")
    result = run_cli("run", str(config), "--progress", "log", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "executor: dask (a local cluster of" in result.stderr
    assert re.search(r"progress: (\d+)/\1 tasks \(0 failed\)", result.stderr), result.stderr
    result = run_cli("run", str(config), "--full", "--progress", "bar", timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"tasks: 100%\|.*\| (\d+)/\1 ", result.stderr), result.stderr
    result = run_cli("run", str(config), "--full", "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_big_batch_of_records_comes_back_whole_with_bounded_memory(tmp_path: Path) -> None:
    """One task whose records (some 70 MB) take longer to fetch than the loop's poll: the
    fetch goes on (restarting it at each poll never finished and piled up gigabytes)."""
    data = tmp_path / "data"
    data.mkdir()
    line = "x" * 100
    (data / "big.log").write_text("".join(f"{i:08d} {line}\n" for i in range(600_000)))
    out = {}
    for executor in ("serial", "dask"):
        out[executor] = tmp_path / f"out-{executor}"
        body = {
            "input": {"paths": [str(data / "*.log")], "chunk_size": "64MiB"},
            "output": {"dir": str(out[executor]), "records": "jsonl"},
            "execution": {"executor": executor, "workers": 1},
        }
        config = write_config(tmp_path, body, name=f"{executor}.yaml")
        code = (
            "import resource, sys\n"
            "from pipeline.cli import main\n"
            "try:\n"
            f"    main(['run', {str(config)!r}, '--progress', 'none', '--quiet'])\n"
            "except SystemExit as stop:\n"
            "    assert stop.code == 0, stop.code\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        peak_mib = int(done.stdout.split()[-1]) // 1024
    records = (out["dask"] / "records.jsonl").read_bytes()
    assert len(records) > 60_000_000
    assert records == (out["serial"] / "records.jsonl").read_bytes()
    assert peak_mib < 400, peak_mib  # the batch's records and a copy (restarted fetches: 615)


def test_a_run_with_the_process_executor_never_imports_dask(tmp_path: Path) -> None:
    """The dask extra may be installed; a process (or serial) run must not pay for it."""
    config = portable_example("access-logs", tmp_path / "cfg", tmp_path / "out", workers=2)
    code = (
        "import sys\n"
        "from pipeline.cli import main\n"
        "try:\n"
        f"    main(['run', {str(config)!r}, '--progress', 'none', '--quiet'])\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
    assert (tmp_path / "out" / "stats.json").exists()

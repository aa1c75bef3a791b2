"""The dask executor under faults (issue: "Scale out"; SPEC "Reliability", "Scale-out").

Black-box, like ``test_worker_faults.py``: ``pipeline run`` in its own session on six
files of 2,000 self-identifying lines (two tasks each), with the step plugin of
``plugins_dask/`` (driven by a sibling ``fault_settings.py`` that each test writes: the
workers of a real cluster do not share the client's environment). Most tests use the
session's CLI cluster (``dask scheduler`` + two ``dask worker``, which see neither the
config folder nor the output store); the signal and ``kill -9`` tests use the local
cluster the run starts itself, where the no-process-left check covers the cluster's
processes too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dask_cluster import DaskCluster, start_cluster
from tests.faults.test_signals import Harness, Launched, assert_no_process_left, wait_for
from tests.faults.test_worker_faults import (
    FAULT_MARK,
    FAULT_OFFSET,
    N_FILES,
    N_LINES,
    TOTAL_TASKS,
    Clean,
    assert_one_failure,
    assert_store_ok,
    line_text,
    run_pipeline,
)
from tests.integration.helpers import REPO, CliResult, run_cli, write_config

pytestmark = pytest.mark.timeout(120)

PLUGINS = Path(__file__).with_name("plugins_dask")
CHUNK = "25000"  # each 50,000-byte file: two tasks


def write_inputs(data: Path) -> None:
    data.mkdir(parents=True, exist_ok=True)
    for f in range(N_FILES):
        (data / f"f{f}.log").write_bytes(
            "".join(line_text(f, n) + "\n" for n in range(N_LINES)).encode()
        )


def reference() -> Clean:
    records = "".join(
        json.dumps(
            {"line": line_text(f, n), "f": f"{f:04d}", "l": f"{n:06d}"},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        + "\n"
        for f in range(N_FILES)
        for n in range(N_LINES)
    ).encode()
    stats = {"by_file": {f"{f:04d}": N_LINES for f in range(N_FILES)}, "n": N_FILES * N_LINES}
    return Clean(records, stats)


class Job:
    """A config folder (plugins, settings, job.yaml; the store in ``out``) and a fault
    folder the workers can see."""

    def __init__(self, folder: Path, data: Path, fault_dir: Path, **execution: Any) -> None:
        self.folder = folder
        self.fault_dir = fault_dir
        folder.mkdir(parents=True, exist_ok=True)
        fault_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(PLUGINS, folder, dirs_exist_ok=True)
        self.settings()
        self.body = {
            "name": "dask-faults",
            "input": {"paths": [str(data / "*.log")], "format": "lines", "chunk_size": CHUNK},
            "steps": [
                {"regex": r"^F(?P<f>\d{4}) L(?P<l>\d{6})"},
                {"call": "dask_faults:inject"},
            ],
            "stats": {"n": {"count": True}, "by_file": {"count_by": "f"}},
            "output": {"dir": str(folder / "out"), "records": "jsonl"},
            "execution": {"executor": "dask", "workers": 2, "retries": 1, **execution},
        }
        self.config = write_config(folder, self.body)

    def configure(self, **execution: Any) -> None:
        """Change ``execution`` settings (none of them affects the results)."""
        self.body["execution"].update(execution)
        write_config(self.folder, self.body)

    def settings(
        self, mode: str | None = None, match: tuple[str, ...] = (FAULT_MARK,), slow: float = 0
    ) -> None:
        (self.folder / "fault_settings.py").write_text(
            f"MODE = {mode!r}\nMATCH = {match!r}\nSLOW_S = {slow!r}\n"
            f"FAULT_DIR = {str(self.fault_dir)!r}\nCONFIG_DIR = {str(self.folder)!r}\n"
        )

    @property
    def out(self) -> Path:
        return self.folder / "out"

    def lines(self, name: str) -> list[str]:
        path = self.fault_dir / name
        return path.read_text().splitlines() if path.exists() else []

    def busy_workers(self) -> list[str]:
        return [p.name for p in self.fault_dir.glob("busy-*")]


@pytest.fixture(scope="module")
def cluster_data(dask_cluster: DaskCluster) -> Path:
    data = dask_cluster.shared / "fault-data"
    if not data.exists():
        write_inputs(data)
    return data


@pytest.fixture
def cluster_job(
    dask_cluster: DaskCluster, cluster_data: Path, request: pytest.FixtureRequest
) -> Job:
    """A job on the CLI cluster: config and store where the workers cannot see them."""
    name = request.node.name.replace("[", "-").replace("]", "")
    return Job(
        dask_cluster.private / name,
        cluster_data,
        dask_cluster.shared / f"fault-{name}",
        address=dask_cluster.address,
    )


@pytest.fixture
def local_job(tmp_path: Path) -> Job:
    """A job on a local cluster that the run starts itself."""
    write_inputs(tmp_path / "data")
    return Job(tmp_path / "cfg", tmp_path / "data", tmp_path / "fault")


def assert_reference(out: Path, clean: Clean) -> dict[str, Any]:
    assert (out / "records.jsonl").read_bytes() == clean.records
    assert json.loads((out / "stats.json").read_text()) == clean.stats
    assert_store_ok(out)
    return json.loads((out / "report.json").read_text())


# --- the plugins reach the workers; the workers never reach the store ----------------------


def test_plugins_are_shipped_and_compiled_once_per_worker(cluster_job: Job) -> None:
    """The config folder's modules (a sibling module and a package) are shipped to
    workers that cannot see the folder; each worker process compiles the job once, however
    many batches it runs; the records come back to the client, which writes the store."""
    result = run_pipeline(cluster_job.config)
    assert result.rc == 0, result.stderr
    report = assert_reference(cluster_job.out, reference())
    assert report["tasks"]["done"] == TOTAL_TASKS
    imports = [line.split() for line in cluster_job.lines("imports")]
    workers = [(pid, visible) for role, pid, visible in imports if role == "worker"]
    assert {visible for _, visible in workers} == {"False"}  # the config folder is hidden
    pids = [pid for pid, _ in workers]
    assert len(pids) == len(set(pids)) == 2, imports  # once per worker process, both used
    assert len(list(cluster_job.fault_dir.glob("busy-*"))) == 2


# --- a worker that dies -----------------------------------------------------------------


def test_worker_killed_once_is_retried_without_loss(cluster_job: Job) -> None:
    cluster_job.settings("kill_once")
    result = run_pipeline(cluster_job.config)
    assert result.rc == 0, result.stderr
    report = assert_reference(cluster_job.out, reference())
    assert report["failures"] == []
    hits = cluster_job.lines("hits")
    assert len(hits) == 2 and hits[0] != hits[1]  # the retry ran in another process
    before = worker_imports(cluster_job)
    # The next run: the surviving worker keeps its compiled job; the one the nanny
    # started in place of the killed one compiles it (once), as it gets its first batch.
    rerun = run_pipeline(cluster_job.config, args=("--full",))
    assert rerun.rc == 0, rerun.stderr
    assert_reference(cluster_job.out, reference())
    after = worker_imports(cluster_job)[len(before) :]
    assert after and not set(after) & set(before), (before, after)
    assert len(after) == len(set(after)) == 1, after


def worker_imports(job: Job) -> list[str]:
    """Pids of the worker processes that imported the plugin, one per import."""
    return [line.split()[1] for line in job.lines("imports") if line.startswith("worker")]


@pytest.fixture(params=["cluster_job", "local_job"], ids=["cli-cluster", "local-cluster"])
def any_job(request: pytest.FixtureRequest) -> Job:
    """The same job on the CLI cluster (starts announced through the scheduler) and on a
    local cluster (starts written by the workers in files the client reads)."""
    return request.getfixturevalue(request.param)


def test_worker_killed_on_every_attempt_is_crashed(any_job: Job) -> None:
    """retries is the one retry policy: attempts = retries + 1, though the scheduler's
    allowed-failures (3) would rerun the task itself; the nanny's word on the signal."""
    cluster_job = any_job
    cluster_job.settings("kill")
    result = run_pipeline(cluster_job.config)
    assert_one_failure(result, reference(), "crashed", "was killed by SIGKILL")
    assert len(cluster_job.lines("hits")) == 2
    cluster_job.settings(None)  # the fault is gone: the next run redoes the failed task
    rerun = run_pipeline(cluster_job.config)
    assert rerun.rc == 0, rerun.stderr
    report = assert_reference(cluster_job.out, reference())
    assert report["tasks"]["done"] == 1 and report["tasks"]["skipped"] == TOTAL_TASKS - 1


# --- a task that hangs, a step that raises, the error budget ----------------------------


def test_hung_record_on_a_local_cluster_times_out(local_job: Job) -> None:
    local_job.settings("hang")
    local_job.configure(timeout="2s")
    result = run_pipeline(local_job.config, timeout=60)
    assert result.elapsed < 2 * 2 + 15, result.elapsed
    assert_one_failure(result, reference(), "timeout", "timeout (2s)")
    hits = local_job.lines("hits")
    assert len(hits) == 2 and hits[0] != hits[1]


def test_hung_record_times_out_and_the_cluster_serves_the_next_run(
    cluster_job: Job, dask_cluster: DaskCluster
) -> None:
    cluster_job.settings("hang")
    cluster_job.configure(timeout="2s")
    result = run_pipeline(cluster_job.config, timeout=60)
    assert result.elapsed < 2 * 2 + 15, result.elapsed  # two attempts of 2 s, restarts
    assert_one_failure(result, reference(), "timeout", "timeout (2s)")
    hits = cluster_job.lines("hits")
    assert len(hits) == 2 and hits[0] != hits[1]
    dask_cluster.wait_for_workers(2)  # the stopped workers were replaced by their nannies
    cluster_job.settings(None)
    rerun = run_pipeline(cluster_job.config)
    assert rerun.rc == 0, rerun.stderr
    assert_reference(cluster_job.out, reference())


def test_step_error_fails_only_its_task(cluster_job: Job) -> None:
    cluster_job.settings("raise")
    result = run_pipeline(cluster_job.config)
    assert_one_failure(
        result, reference(), "error", f"byte offset {FAULT_OFFSET}", "ValueError: injected failure"
    )
    assert len(cluster_job.lines("hits")) == 2


def test_error_budget_stops_submitting(cluster_job: Job) -> None:
    """Files 1-5 fail on every record: after max_failures the rest stays pending."""
    cluster_job.settings("raise", match=tuple(f"F{f:04d} " for f in range(1, N_FILES)))
    cluster_job.configure(max_failures=1)
    result = run_pipeline(cluster_job.config)
    assert result.rc == 1, result.stderr
    report = json.loads((cluster_job.out / "report.json").read_text())
    tasks = report["tasks"]
    assert "stopped_by" in report, report
    assert tasks["failed"] >= 1 and tasks["pending"] > 0, tasks
    assert tasks["done"] + tasks["failed"] + tasks["pending"] == TOTAL_TASKS
    assert all(f["kind"] == "error" for f in report["failures"])
    cluster_job.settings(None)
    rerun = run_pipeline(cluster_job.config)
    assert rerun.rc == 0, rerun.stderr
    assert_reference(cluster_job.out, reference())


# --- signals and kill -9 of the client --------------------------------------------------


def interrupt(
    job: Job, tmp_path: Path, act: Callable[[Launched], None], slow: float = 0.002
) -> CliResult:
    """A slow run of ``job`` (``slow`` s a record: a task, 1,000 records, takes
    ``1,000 * slow`` s) in its own session; once both workers are inside a batch, ``act``
    on it; then its end, and no process of it left (a local cluster's included)."""
    job.settings(slow=slow)
    harness = Harness(tmp_path / "logs")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        run = harness.launch("run", str(job.config), "--progress", "none", env=env)
        wait_for(lambda: len(job.busy_workers()) >= 2, 60, "two busy workers", run)
        act(run)
        result = run.wait()
        assert_no_process_left(run.pgid)
    finally:
        harness.cleanup()
    assert "Traceback" not in result.stderr
    return result


def resume(job: Job, *args: str) -> dict[str, Any]:
    """The same job again, fast: the reference store; its report."""
    job.settings()
    rerun = run_pipeline(job.config, timeout=60, args=args)
    assert rerun.rc == 0, rerun.stderr
    return assert_reference(job.out, reference())


@pytest.mark.parametrize(("signum", "rc"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_to_the_group_then_resume(
    local_job: Job, tmp_path: Path, signum: int, rc: int
) -> None:
    """Ctrl-C (or a service manager's SIGTERM) reaches the client and its local cluster's
    workers alike: the workers, shielded, finish the batches they started within grace;
    the batches not started stay pending; nothing of the run is left; a resume completes."""
    result = interrupt(local_job, tmp_path, lambda run: run.signal_group(signum))
    assert result.returncode == rc, result.stderr
    report = json.loads((local_job.out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["exit_code"] == rc
    tasks = report["tasks"]
    assert tasks["done"] >= 2 and tasks["pending"] >= 1 and tasks["failed"] == 0, tasks
    assert tasks["done"] + tasks["pending"] == TOTAL_TASKS
    assert resume(local_job)["tasks"]["done"] == tasks["pending"]


def test_second_signal_stops_at_once(local_job: Job, tmp_path: Path) -> None:
    def twice(run: Launched) -> None:
        run.signal_group(signal.SIGINT)
        wait_for(lambda: "stopping" in run.stderr(), 20, "the first signal's notice", run)
        run.signal_group(signal.SIGINT)
        run.wait(10)  # not the grace (10 s) nor a task's 20 s: at once

    result = interrupt(local_job, tmp_path, twice, slow=0.02)
    assert result.returncode == 130, result.stderr
    report = json.loads((local_job.out / "report.json").read_text())
    assert report["status"] == "interrupted" and report["tasks"]["pending"] > 0
    resume(local_job)


def test_kill9_of_the_client_leaves_no_local_cluster_and_resumes(
    local_job: Job, tmp_path: Path
) -> None:
    interrupt(local_job, tmp_path, lambda run: run.signal_parent(signal.SIGKILL))
    resume(local_job)


def test_kill9_of_the_client_on_a_cluster_then_resume(cluster_job: Job, tmp_path: Path) -> None:
    """The scheduler drops the dead client's queued tasks; those running finish on the
    workers, which write nothing into the store; the next run completes it."""
    interrupt(cluster_job, tmp_path, lambda run: run.signal_parent(signal.SIGKILL))
    resume(cluster_job)


# --- the scheduler, the address, the workers' versions ----------------------------------


def test_scheduler_lost_mid_run_then_resume_on_a_new_one(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "first")
    try:
        data = cluster.shared / "data"
        write_inputs(data)
        job = Job(cluster.private / "job", data, cluster.shared / "fault", address=cluster.address)
        result = interrupt(job, tmp_path, lambda _run: cluster.kill_scheduler())
    finally:
        cluster.stop()
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("lost the connection to the Dask scheduler" in line for line in errors)
    report = json.loads((job.out / "report.json").read_text())
    assert report["status"] == "failed" and report["tasks"]["pending"] > 0
    second = start_cluster(tmp_path / "second")
    try:
        resume(job, "--set", f"execution.address={second.address}")
    finally:
        second.stop()


def test_unreachable_scheduler_is_a_usage_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port where nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    write_inputs(tmp_path / "data")
    job = Job(tmp_path / "cfg", tmp_path / "data", tmp_path / "fault")
    started = time.monotonic()
    result = run_cli(
        "run", str(job.config), "--set", f"execution.address=tcp://127.0.0.1:{port}", timeout=60
    )
    assert time.monotonic() - started < 15
    assert result.returncode == 2, result.stderr
    assert f"cannot reach the Dask scheduler at tcp://127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not job.out.exists()  # nothing written


def test_tls_without_credentials_names_the_settings(tmp_path: Path) -> None:
    write_inputs(tmp_path / "data")
    job = Job(tmp_path / "cfg", tmp_path / "data", tmp_path / "fault")
    env = {k: "" for k in os.environ if k.startswith("DASK_DISTRIBUTED__COMM__TLS")}
    result = run_cli(
        "run", str(job.config), "--set", "execution.address=tls://127.0.0.1:8786", env=env
    )
    assert result.returncode == 2, result.stderr
    for name in (
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
        "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
    ):
        assert name in result.stderr
    assert not job.out.exists()


def test_workers_of_another_version_or_without_pipeline(tmp_path: Path) -> None:
    """One worker runs another pipeline version, one has none: exit 2, one line naming
    both, nothing written."""
    fake = tmp_path / "fake"
    shutil.copytree(REPO / "pipeline", fake / "pipeline")
    init = fake / "pipeline" / "__init__.py"
    init.write_text(
        init.read_text().replace("__version__ = ", "__version__ = '0.0.0-other'  # ", 1)
    )
    cluster = start_cluster(tmp_path / "c", workers=0)
    try:
        cluster.add_worker("other", env={"PYTHONPATH": str(fake)})
        cluster.add_worker("bare", bare=True)
        cluster.wait_for_workers(2)
        write_inputs(tmp_path / "data")
        job = Job(tmp_path / "cfg", tmp_path / "data", tmp_path / "fault")
        result = run_cli(
            "run", str(job.config), "--set", f"execution.address={cluster.address}", timeout=60
        )
    finally:
        cluster.stop()
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert "has pipeline 0.0.0-other" in errors[0] and "has no pipeline package" in errors[0]
    assert not job.out.exists()


def test_a_config_folder_too_large_to_ship(tmp_path: Path) -> None:
    write_inputs(tmp_path / "data")
    job = Job(tmp_path / "cfg", tmp_path / "data", tmp_path / "fault")
    (job.folder / "big_table.py").write_text("DATA = " + repr("x" * (11 << 20)) + "\n")
    result = run_cli("run", str(job.config))
    assert result.returncode == 2, result.stderr
    assert "big_table" in result.stderr and "10 MiB" in result.stderr
    assert not job.out.exists()

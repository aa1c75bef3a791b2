"""kill -9: of the whole group at random moments, of the main process only; the lock
afterwards; resume with an input changed in between.

SPEC: results are identical "whether the run was interrupted (even by kill -9) and
resumed"; a task without a committed row is re-run; "a run after a kill -9 removes the
leftovers"; "If the main process is killed outright (kill -9), its workers and the Manager
notice and exit within a few seconds; none keeps writing into the output directory"; one
run at a time (a second run exits 75 at once). RELIABILITY 5.5 (R21, R22), 5.6 (R24, R25),
5.7 (R28). The harness (own session, SIGINT restored, hard timeouts, process-group checks)
is the one of ``test_signals.py``.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.faults.test_signals import (
    BASE_S,
    GONE_WITHIN_S,
    N_FILES,
    N_LINES,
    WORKERS,
    Baseline,
    Harness,
    Launched,
    assert_no_process_left,
    assert_no_temp_files,
    assert_no_traceback,
    assert_same_as_baseline,
    descendants,
    group_processes,
    job_config,
    kill_group,
    make_baseline,
    marks,
    parts_count,
    read_json,
    run_args,
    run_env,
    wait_for,
    wait_group_gone,
)

pytestmark = pytest.mark.timeout(120)

KILL_POINTS = 8


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """An uninterrupted run at the slow pace: its wall time spreads the kill points."""
    return make_baseline(tmp_path_factory.mktemp("kill9"), base_s=BASE_S)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path / "logs")
    yield h
    h.cleanup()


def kill9_group_and_reap(run: Launched) -> int:
    """SIGKILL to every process of the run at once; the exit status of the main process."""
    kill_group(run.pgid)
    code = run.wait(30).returncode
    assert_no_process_left(run.pgid)
    return code


def file_states(folder: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under ``folder``."""
    states: dict[str, tuple[int, int]] = {}
    for path in folder.rglob("*"):
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_file():
            states[str(path.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return states


KILL_CASES = [
    pytest.param("fork", "async", 1, id="fork-async"),
    pytest.param("forkserver", "imap", 2, id="forkserver-imap"),
]


@pytest.mark.timeout(150)
@pytest.mark.parametrize(("method", "submit", "seed"), KILL_CASES)
def test_kill9_group_at_random_moments_then_resume(
    tmp_path: Path, harness: Harness, baseline: Baseline, method: str, submit: str, seed: int
) -> None:
    """R21: SIGKILL to the whole process group at seeded random moments spread over a clean
    run's duration (one stratum each); each followed by a plain re-run, which must give the
    uninterrupted run's records byte for byte, equal stats, no duplicates, no temp files."""
    rng = random.Random(seed)
    span = baseline.seconds
    points = [0.2 + (span - 0.2) * (i + rng.random()) / KILL_POINTS for i in range(KILL_POINTS)]
    seen: list[tuple[float, int, int]] = []  # (kill at, killed run's rc, resume's skipped)
    for i, at in enumerate(points):
        out = tmp_path / f"out{i}"
        config = job_config(
            tmp_path / "cfg",
            baseline.data,
            out,
            name=f"job{i}.yaml",
            start_method=method,
            submit=submit,
        )
        run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
        time.sleep(max(0.0, at - (time.monotonic() - run.started)))
        code = kill9_group_and_reap(run)
        assert code in (-signal.SIGKILL, 0), (at, code, run.stderr()[-2000:])

        result = harness.run(*run_args(config), env=run_env())
        assert result.returncode == 0, (at, result.stderr[-3000:])
        assert_no_traceback(result.stderr)
        report = assert_same_as_baseline(out, baseline)  # bytes, stats, counts, no temp files
        assert report["tasks"]["skipped"] + report["tasks"]["done"] == baseline.total_tasks
        seen.append((round(at, 2), code, report["tasks"]["skipped"]))

    # The kills did land mid-run: most killed a live run, some after part of the work was
    # committed and before all of it was.
    assert sum(code == -signal.SIGKILL for _, code, _ in seen) >= KILL_POINTS // 2, seen
    assert any(0 < skipped < baseline.total_tasks for _, _, skipped in seen), seen


@pytest.mark.timeout(90)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_kill9_of_main_process_only_workers_and_manager_exit(
    tmp_path: Path, harness: Harness, baseline: Baseline, method: str
) -> None:
    """R22: SIGKILL to the main process only, workers busy in ~1 s tasks. Every other
    process of the run (workers, Manager, fork server, resource tracker) exits within a few
    seconds; nothing in the output directory changes after the kill; a run started as soon
    as they are gone gets the lock (not 75) and completes exactly."""
    out = tmp_path / "out"
    mark_dir = tmp_path / "marks"
    config = job_config(tmp_path / "cfg", baseline.data, out, start_method=method)
    run = harness.launch(*run_args(config), env=run_env(base_s=0.002, mark_dir=mark_dir))
    wait_for(
        lambda: len(marks(mark_dir, "busy")) >= WORKERS and parts_count(out) >= 4,
        30,
        "both workers busy and 4 parts published",
        run,
    )

    members = group_processes(run.pgid)
    others = set(members) - {run.pid}
    worker_pids = {int(name.split("-", 1)[1]) for name in marks(mark_dir, "busy")}
    tree = descendants(run.pid)
    assert worker_pids <= others, (worker_pids, members)
    assert tree <= set(members), "a descendant left the process group"
    # Workers + the Manager at least (+ fork server and resource tracker under forkserver).
    assert len(others - worker_pids) >= 1, members

    os.kill(run.pid, signal.SIGKILL)
    killed_at = time.time()
    assert run.wait(30).returncode == -signal.SIGKILL
    left = wait_group_gone(run.pgid, GONE_WITHIN_S)
    gone_after = time.time() - killed_at
    if left:
        kill_group(run.pgid)
        pytest.fail(
            f"{len(left)} process(es) outlived the main process by {GONE_WITHIN_S}s: {left}"
        )

    # Nobody writes into the output directory any more: nothing written later than a
    # moment after the kill, and nothing changes in the 3 s after the processes are gone.
    states = file_states(out)
    late = {p: s for p, s in states.items() if s[1] / 1e9 > killed_at + 0.5}
    assert late == {}, f"written after the main process was killed: {late}"
    time.sleep(3.0)
    assert file_states(out) == states, "files in the output directory changed after the kill"

    # The kernel released the flock with the last process: a new run is not locked out.
    result = harness.run(*run_args(config), env=run_env())
    assert result.returncode == 0, (
        f"re-run {gone_after:.2f}s after the kill: rc {result.returncode}\n{result.stderr}"
    )
    assert_no_traceback(result.stderr)
    report = assert_same_as_baseline(out, baseline)
    assert 0 < report["tasks"]["skipped"] < baseline.total_tasks, report["tasks"]


@pytest.mark.timeout(60)
def test_lock_is_free_right_after_kill9_of_the_group(
    tmp_path: Path, harness: Harness, baseline: Baseline
) -> None:
    """R25: no stale lock — a run started right after a kill -9 of the group (fork: every
    worker shared the lock's file description) does not exit 75, removes what the kill
    left behind, and completes exactly."""
    out = tmp_path / "out"
    config = job_config(tmp_path / "cfg", baseline.data, out, start_method="fork")
    run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    wait_for(lambda: parts_count(out) >= 3, 30, "3 part files", run)
    assert kill9_group_and_reap(run) == -signal.SIGKILL
    assert (out / ".lock").exists()
    # What a kill at other moments leaves behind: an output file half written, a part being
    # written, a part published but never committed (killed between rename and commit).
    (out / ".tmp-planted.tmp").write_bytes(b"half a records file")
    (out / "parts" / ".tmp" / "planted.jsonl.99999").write_bytes(b'{"half":')
    stray_part = out / "parts" / ("0" * 32 + ".jsonl")
    stray_part.write_bytes(b'{"f":"9999","l":1,"word":"stray","v":1}\n')

    result = harness.run(*run_args(config), env=run_env())
    assert result.returncode != 75, result.stderr
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_as_baseline(out, baseline)  # includes: no temp file left
    assert not stray_part.exists(), "a part without a committed row was kept"


@pytest.mark.timeout(60)
def test_second_concurrent_run_exits_75_at_once(
    tmp_path: Path, harness: Harness, baseline: Baseline
) -> None:
    """R24: run B on the output directory of a running run A exits 75 within 5 s, names the
    lock, writes no report; A goes on and exits 0 with exact results."""
    out = tmp_path / "out"
    config = job_config(tmp_path / "cfg", baseline.data, out, start_method="fork")
    run_a = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    wait_for(lambda: parts_count(out) >= 2, 30, "2 part files", run_a)
    lock_inode = (out / ".lock").stat().st_ino

    started = time.monotonic()
    run_b = harness.launch(*run_args(config), env=run_env())
    result_b = run_b.wait(30)
    elapsed = time.monotonic() - started
    assert result_b.returncode == 75, result_b.stderr[-3000:]
    assert elapsed < 5.0, f"the locked-out run took {elapsed:.1f}s"
    assert "lock" in result_b.stderr.lower(), result_b.stderr
    assert_no_traceback(result_b.stderr)
    assert_no_process_left(run_b.pgid)
    assert run_a.running(), "run A must go on while B is refused"
    assert not (out / "report.json").exists(), "the refused run wrote a report"

    result_a = run_a.wait()
    assert result_a.returncode == 0, result_a.stderr[-3000:]
    assert_no_process_left(run_a.pgid)
    assert_same_as_baseline(out, baseline)
    assert (out / ".lock").stat().st_ino == lock_inode, "the lock file was replaced"


@pytest.mark.timeout(60)
def test_resume_after_kill9_with_an_input_changed_in_between(
    tmp_path: Path, harness: Harness, baseline: Baseline
) -> None:
    """R28 after a crash: kill -9 mid-run, append lines to two inputs, resume -> the results
    equal a fresh --full run over the new inputs (changed files neither lost nor counted
    twice)."""
    data = tmp_path / "data"
    shutil.copytree(baseline.data, data)
    out = tmp_path / "out"
    config = job_config(tmp_path / "cfg", data, out, start_method="fork")
    run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    wait_for(lambda: parts_count(out) >= 12, 30, "12 part files", run)
    assert kill9_group_and_reap(run) == -signal.SIGKILL

    extra = 40
    for f in (0, 7):  # f00 is among the first tasks run, f07 among the later ones
        with open(data / f"f{f:02d}.log", "a", encoding="utf-8") as handle:
            for i in range(N_LINES, N_LINES + extra):
                handle.write(f"F{f:04d} L{i:06d} appended {i}\n")

    result = harness.run(*run_args(config), env=run_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    report = read_json(out / "report.json")
    assert report["status"] == "ok", report
    assert_no_temp_files(out)

    fresh_out = tmp_path / "fresh-out"
    fresh_config = job_config(tmp_path / "cfg", data, fresh_out, name="fresh.yaml")
    fresh = harness.run(*run_args(fresh_config, "--full"), env=run_env())
    assert fresh.returncode == 0, fresh.stderr[-3000:]

    records = (out / "records.jsonl").read_bytes()
    lines = records.splitlines()
    assert len(lines) == N_FILES * N_LINES + 2 * extra
    assert len(set(lines)) == len(lines), "duplicated records"
    assert records == (fresh_out / "records.jsonl").read_bytes()
    stats = read_json(out / "stats.json")
    assert stats == read_json(fresh_out / "stats.json")
    assert stats["n"] == N_FILES * N_LINES + 2 * extra
    assert stats["by_file"]["0000"] == stats["by_file"]["0007"] == N_LINES + extra
    assert report["records"] == read_json(fresh_out / "report.json")["records"]


def test_resume_after_kill9_of_a_growing_log_run_with_rotations_in_between(
    tmp_path: Path, harness: Harness, baseline: Baseline
) -> None:
    """``input.growing``: kill -9 mid-run, then a rename, a compressed copy and growth
    before the resume: every line counts once (the records and stats of a fresh run over
    the files as they are then; in another order, as the streams were first seen)."""
    data = tmp_path / "data"
    shutil.copytree(baseline.data, data)
    out = tmp_path / "out"
    config = job_config(tmp_path / "cfg", data, out, start_method="fork")
    body = yaml.safe_load(config.read_text())
    body["input"]["growing"] = True
    config.write_text(yaml.safe_dump(body))
    run = harness.launch(*run_args(config), env=run_env(base_s=BASE_S))
    wait_for(lambda: parts_count(out) >= 12, 30, "12 part files", run)
    assert kill9_group_and_reap(run) == -signal.SIGKILL

    (data / "f00.log").rename(data / "g00.log")  # renamed: the same stream
    f01 = data / "f01.log"
    (data / "f01-old.log.gz").write_bytes(gzip.compress(f01.read_bytes()))  # a copy
    f01.unlink()
    with open(data / "f07.log", "a", encoding="utf-8") as handle:  # grown
        handle.writelines(f"F0007 L{i:06d} appended {i}\n" for i in range(N_LINES, N_LINES + 40))
    body["input"]["paths"] = [str(data / "*.log"), str(data / "*.log.gz")]
    config.write_text(yaml.safe_dump(body))

    result = harness.run(*run_args(config), env=run_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert_no_traceback(result.stderr)
    assert read_json(out / "report.json")["status"] == "ok"
    assert_no_temp_files(out)

    fresh_out = tmp_path / "fresh-out"
    fresh_config = tmp_path / "cfg" / "fresh.yaml"
    fresh_config.write_text(
        yaml.safe_dump({**body, "output": {**body["output"], "dir": str(fresh_out)}})
    )
    fresh = harness.run(*run_args(fresh_config), env=run_env())
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    lines = (out / "records.jsonl").read_bytes().splitlines()
    assert len(lines) == N_FILES * N_LINES + 40
    assert len(set(lines)) == len(lines), "duplicated records"
    assert sorted(lines) == sorted((fresh_out / "records.jsonl").read_bytes().splitlines())
    assert read_json(out / "stats.json") == read_json(fresh_out / "stats.json")

"""The pipeline against hand-written baselines, side by side in one run.

    .venv/bin/python bench/run.py                  # jobs A-D at full size, 3 runs each
    .venv/bin/python bench/run.py --quick          # small data, 1 run: a smoke test
    .venv/bin/python bench/run.py --jobs A --size-a 256MiB --repeat 1
    make bench BENCH_ARGS="--quick"

For each job: generate the data (bench/generate.py, kept between runs), read it once to
warm the page cache, then ``--repeat`` rounds; each round runs every implementation once,
as a subprocess, in a fixed order rotated by one per round. Each run gets its wall time
(``perf_counter`` around the whole process), its CPU time and ``ru_maxrss`` (the largest
process of the tree that was waited for) from GNU time, which launches it, and, for Python
implementations, the main process's own peak RSS. Every run's answer (one JSON line, or
the pipeline's ``stats.json``) is compared with the plain loop's; a mismatch is printed
loudly, marked in the table and makes the exit status 1. Results: ``--out`` (Markdown).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import generate

sys.path.insert(0, str(Path(__file__).resolve().parent / "baselines"))
import common  # bench/baselines/common.py

BENCH = Path(__file__).resolve().parent
BASELINES = BENCH / "baselines"
RUNS = generate.DATA / "runs"
PY = sys.executable
Answer = dict[str, Any]
JOB_TITLES = {
    "A": "A: access-log stats, one big file",
    "B": "B: access-log stats, gzipped files",
    "C": "C: lines, words and bytes of many small files",
    "D": "D: no-op over many tiny files (framework overhead)",
    "E": "E: job A as users write it: 9-group regex, types, a call per line",
    "F": "F: job B as users write it: 9-group regex, types, a call per line",
    "G": "G: job C as users write it: a call per line counting words",
    "H": "H: the fast path on the realistic line: 9-group regex, types with nulls",
}
USER_JOBS = "EFGH"  # measured against the hand-written dicts and bytes scripts
DICTS = "raw Pool, dicts + plugin"  # the pipeline's per-record work, by hand
BYTES = "raw Pool, bytes"  # the regex on bytes, no dicts: the practical limit
BATCH_CONFIG = BENCH / "configs" / "job_e_batch.yaml"
BATCH_LABEL = "batch call"  # ends the name of job E's batch-plugin row


@dataclasses.dataclass
class Impl:
    """One way of doing a job. ``argv`` gets a fresh folder for this run; ``parse`` turns
    (stdout, that folder) into an answer, or None when the tool computes something else
    (``cat``: the physical limit only)."""

    name: str
    group: str  # pipeline | baseline | parallel | native
    workers: int
    argv: Callable[[Path], list[str]]
    parse: Callable[[str, Path], Answer | None] | None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    stdout: bool = True  # False: output to /dev/null


@dataclasses.dataclass
class Sample:
    wall: float
    cpu: float
    rss_max_kib: int
    rss_main_kib: int | None
    answer: Answer | None
    error: str | None = None


@dataclasses.dataclass
class Dataset:
    job: str
    folder: Path
    files: list[str]
    size: int  # bytes of data processed (uncompressed for B)


# --- running one process -----------------------------------------------------------------


def _gnu_tool(path: str | None, banner: str) -> str | None:
    """``path`` if ``path --version`` says it is the GNU tool (other tools share names)."""
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if banner in out.stdout + out.stderr else None


def gnu_time() -> str | None:
    """GNU time, the launcher of every run: a child's ``ru_maxrss`` starts at the peak RSS
    of the process that exec'd it (Linux keeps the old image's high-water mark across
    ``execve``), so runs are started from this 2 MB C program rather than from Python."""
    path = shutil.which("time") or ("/usr/bin/time" if os.path.exists("/usr/bin/time") else None)
    return _gnu_tool(path, "GNU")


TIME = gnu_time()


def measure(impl: Impl, timeout: float) -> Sample:
    """Run ``impl`` once, under GNU time when there is one (else rusage from ``os.wait4``,
    whose ``ru_maxrss`` is then at least this process's own peak)."""
    RUNS.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS))
    rss_file, time_file = run_dir / "rss", run_dir / "time"
    env = {**os.environ, **impl.env, "BENCH_RSS_FILE": str(rss_file)}
    argv = impl.argv(run_dir)
    if TIME:
        argv = [TIME, "-f", "%U %S %M", "-o", str(time_file), *argv]
    with open(run_dir / "stdout", "wb") as out, open(run_dir / "stderr", "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdout=out if impl.stdout else subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,  # a timeout kills the whole group
        )
        killer = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
        killer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        killer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu, rss_max = usage.ru_utime + usage.ru_stime, usage.ru_maxrss
    if TIME and time_file.exists():
        user, system, rss = time_file.read_text().split("\n")[-2].split()
        cpu, rss_max = float(user) + float(system), int(rss)
    rss_main = int(rss_file.read_text()) if rss_file.exists() else None
    sample = Sample(wall, cpu, rss_max, rss_main, None)
    stdout = (run_dir / "stdout").read_text(errors="replace")
    if proc.returncode != 0:
        tail = (run_dir / "stderr").read_text(errors="replace").strip().splitlines()[-3:]
        sample.error = f"exit {proc.returncode}: {' | '.join(tail)}"
    elif impl.parse is not None:
        try:
            sample.answer = impl.parse(stdout, run_dir)
        except (OSError, ValueError, KeyError, IndexError) as exc:
            sample.error = f"cannot read the answer: {type(exc).__name__}: {exc}"
    shutil.rmtree(run_dir, ignore_errors=True)
    return sample


def json_lines(stdout: str, _run_dir: Path) -> Answer:
    """One JSON answer per line (GNU parallel: one per job), added up."""
    return common.merge_all(json.loads(line) for line in stdout.splitlines() if line.strip())


def normalize(answer: Answer, job: str) -> Answer:
    full = common.merge(common.empty_answer(job), answer)
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in full.items()}


# --- the implementations -----------------------------------------------------------------


def pipeline_impl(
    job: str,
    data: Path,
    executor: str,
    workers: int,
    submit: str,
    out: Path | None = None,
    full: bool = True,
    config: Path | None = None,
    label: str = "",
) -> Impl:
    """The pipeline CLI on ``config`` (default ``bench/configs/job_<job>.yaml``); output
    into the run's own folder (``out``: a given one), with ``--full`` unless ``full`` is
    False; ``label`` is added to the name."""
    config = config or BENCH / "configs" / f"job_{job.lower()}.yaml"
    keys = list(common.empty_answer(job))

    def argv(run_dir: Path) -> list[str]:
        sets = {
            "output.dir": str(out or run_dir / "out"),
            "execution.executor": executor,
            "execution.workers": str(workers),
            "execution.submit": submit,
        }
        options = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
        return [
            PY,
            str(BENCH / "pipeline_main.py"),
            "run",
            str(config),
            *(["--full"] if full else []),
            "--progress",
            "none",
            "--quiet",
            *options,
        ]

    def parse(_stdout: str, run_dir: Path) -> Answer:
        stats = json.loads(((out or run_dir / "out") / "stats.json").read_text())
        return {key: stats[key] for key in keys}

    if executor == "serial":
        name = "pipeline serial"
    elif executor == "dask":
        name = f"pipeline dask w{workers} (local cluster)"
    else:
        name = f"pipeline {executor} w{workers} {submit}"
    name += f" {label}" if label else ""
    return Impl(name, "pipeline", workers, argv, parse, env={"BENCH_DATA": str(data)})


def batch_call_unsupported() -> str | None:
    """Why the batch-plugin row of job E cannot run (``pipeline validate`` rejects its
    config: this pipeline has no ``call: {function, batch: true}``), or None."""
    proc = subprocess.run(
        [PY, "-m", "pipeline", "validate", str(BATCH_CONFIG)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"pipeline validate exited {proc.returncode}"


def pipeline_impls(job: str, data: Path, workers: int, batch: bool = False) -> list[Impl]:
    """The pipeline's rows of a job; jobs E-H: the pool with every worker and with one,
    and in-process; with ``batch``, job E's plugin in the batch form too."""
    if job in USER_JOBS:
        impls = [pipeline_impl(job, data, "process", n, "async") for n in sorted({workers, 1})]
        impls.reverse()
        if batch and job == "E":
            impls.insert(
                1,
                pipeline_impl(
                    job, data, "process", workers, "async", config=BATCH_CONFIG, label=BATCH_LABEL
                ),
            )
        return [*impls, pipeline_impl(job, data, "serial", 1, "async")]
    impls = [
        pipeline_impl(job, data, "process", n, submit)
        for n in sorted({1, workers})
        for submit in ("async", "imap")
    ]
    if job in "AB" and importlib.util.find_spec("distributed") is not None:
        impls.append(pipeline_impl(job, data, "dask", workers, "async"))
    return [*impls, pipeline_impl(job, data, "serial", 1, "async")]


def baseline_impls(job: str, data: Path, workers: int) -> list[Impl]:
    def script(name: str, n: int, kernel: str = "dicts") -> Callable[[Path], list[str]]:
        path = str(BASELINES / f"{name}.py")
        options = ["--data", str(data), "--workers", str(n), "--kernel", kernel]
        return lambda _run_dir: [PY, path, "--job", job, *options]

    if job in USER_JOBS:  # the plain loop (the reference answer) does the dicts' work
        return [
            Impl("plain loop", "baseline", 1, script("plain_loop", 1), json_lines),
            Impl(DICTS, "baseline", workers, script("raw_pool", workers), json_lines),
            Impl(BYTES, "baseline", workers, script("raw_pool", workers, "bytes"), json_lines),
        ]
    impls = [
        Impl("plain loop", "baseline", 1, script("plain_loop", 1), json_lines),
        Impl(
            "raw Pool.imap_unordered", "baseline", workers, script("raw_pool", workers), json_lines
        ),
        Impl("ProcessPoolExecutor", "baseline", workers, script("ppe", workers), json_lines),
    ]
    for module, name, title in [
        ("joblib", "joblib_job", "joblib (loky)"),
        ("mpire", "mpire_job", "mpire"),
        ("dask", "dask_bag_job", "dask.bag (processes)"),
    ]:
        if importlib.util.find_spec(module) is not None:
            impls.append(Impl(title, "baseline", workers, script(name, workers), json_lines))
    return impls


def gnu_parallel() -> str | None:
    """The path of GNU parallel (not moreutils' ``parallel``), if installed."""
    return _gnu_tool(shutil.which("parallel"), "GNU parallel")


def file_list(data: Dataset, nul: bool = False) -> Path:
    """The input file names in a file, one a line (or NUL-terminated)."""
    path = RUNS / f"files-{data.folder.name}{'.nul' if nul else '.txt'}"
    RUNS.mkdir(parents=True, exist_ok=True)
    end = "\0" if nul else "\n"
    path.write_text("".join(f + end for f in data.files))
    return path


def parallel_impls(data: Dataset, workers: int, parallel: str) -> list[Impl]:
    job = data.job
    counter = [PY, str(BASELINES / "par_count.py"), "--job", job]
    base = [parallel, "--will-cite", "-j", str(workers)]
    if job == "A":
        argv = [*base, "--pipepart", "--block", "8M", "-a", data.files[0], *counter]
        return [
            Impl(
                "GNU parallel --pipepart --block 8M",
                "parallel",
                workers,
                lambda _d: argv,
                json_lines,
            )
        ]
    files = str(file_list(data))
    if job == "B":
        argv = [*base, "-a", files, *counter]
        return [
            Impl("GNU parallel, one job per file", "parallel", workers, lambda _d: argv, json_lines)
        ]
    # 20,000 one-file jobs would time Python's start-up 20,000 times: -X packs as many
    # file names into each job as the command line takes.
    argv = [*base, "-X", "-a", files, *counter]
    return [
        Impl("GNU parallel -X (files batched)", "parallel", workers, lambda _d: argv, json_lines)
    ]


PER_FILE_SAMPLE = 200  # files of C or D timed with one GNU parallel job each


def parallel_per_file(
    result: JobResult, parallel: str, workers: int, repeat: int, timeout: float
) -> str:
    """GNU parallel with one job per file, on job C or D. A job is a Python start-up, so
    20,000 of them would take minutes: the first ``PER_FILE_SAMPLE`` files are timed (and
    their answer checked) and the time scaled to all the files, the cost of a job being
    the same for every file; then set against the pipeline's best process variant."""
    data = result.data
    sample = data.files[:PER_FILE_SAMPLE]
    listing = RUNS / f"files-{data.folder.name}-first{len(sample)}.txt"
    RUNS.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f + "\n" for f in sample))
    argv = [
        *(parallel, "--will-cite", "-j", str(workers), "-a", str(listing)),
        *(PY, str(BASELINES / "par_count.py"), "--job", data.job),
    ]
    impl = Impl("GNU parallel, one job per file", "parallel", workers, lambda _d: argv, json_lines)
    runs = [measure(impl, timeout) for _ in range(repeat)]
    failed = next((s.error for s in runs if s.error), None)
    if failed:
        return f"Job {data.job}: GNU parallel, one job per file, failed: {failed}"
    expected = common.merge_all(common.process_item(data.job, f) for f in sample)
    answers = [normalize(s.answer, data.job) if s.answer else None for s in runs]
    answers_ok = answers == [normalize(expected, data.job)] * len(runs)
    wall = statistics.median(s.wall for s in runs)
    scaled = wall * len(data.files) / len(sample)
    text = (
        f"Job {data.job}: GNU parallel, one job per file, over the first {len(sample)} of "
        f"{len(data.files):,} files: median {wall:.2f} s, {wall / len(sample) * 1000:.1f} ms "
        f"a job (answer {'ok' if answers_ok else 'MISMATCH'}); scaled to all the files, "
        f"{scaled:.0f} s"
    )
    pipeline = {
        name: statistics.median(s.wall for s in theirs)
        for name, theirs in result.samples.items()
        if name.startswith("pipeline process") and theirs and all(s.error is None for s in theirs)
    }
    if pipeline:
        best = min(pipeline, key=pipeline.__getitem__)
        text += f": **{scaled / pipeline[best]:.0f}×** the time of {best} ({pipeline[best]:.2f} s)"
    print(f"  {text}", flush=True)
    return text + "."


def wc_total(keys: list[str]) -> Callable[[str, Path], Answer]:
    def parse(stdout: str, _run_dir: Path) -> Answer:
        numbers = stdout.strip().splitlines()[-1].split()[: len(keys)]
        return dict(zip(keys, map(int, numbers), strict=True))

    return parse


def native_impls(data: Dataset) -> list[Impl]:
    c_locale = {"LC_ALL": "C"}
    utf8 = {"LC_ALL": "C.UTF-8"}  # wc -w in the C locale skips words of non-ASCII letters
    if data.job == "A":
        path = data.files[0]
        return [
            Impl("cat > /dev/null", "native", 1, lambda _d: ["cat", path], None, stdout=False),
            Impl("wc -l", "native", 1, lambda _d: ["wc", "-l", path], None, c_locale),
            Impl(
                "grep -c ' 5[0-9][0-9] '",
                "native",
                1,
                lambda _d: ["grep", "-c", " 5[0-9][0-9] ", path],
                None,
                c_locale,
            ),
        ]
    if data.job == "B":
        files = data.files
        return [
            Impl(
                "gzip -dc > /dev/null",
                "native",
                1,
                lambda _d: ["gzip", "-dc", *files],
                None,
                stdout=False,
            )
        ]
    names = f"--files0-from={file_list(data, nul=True)}"
    if data.job == "C":
        return [
            Impl(
                "wc -l -w -c",
                "native",
                1,
                lambda _d: ["wc", "-l", "-w", "-c", names],
                wc_total(["lines", "words", "bytes"]),
                utf8,
            )
        ]
    return [
        Impl("wc -l", "native", 1, lambda _d: ["wc", "-l", names], wc_total(["records"]), c_locale)
    ]


# --- data --------------------------------------------------------------------------------


def gzip_size(path: str) -> int:
    """Uncompressed size of a one-member gzip file below 4 GiB (its ISIZE trailer)."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def prepare(job: str, params: dict[str, int], seed: int) -> Dataset:
    """The data of ``job`` (E-H: of the job whose data they read), generated if needed."""
    folder = generate.ensure(common.data_job(job), seed, **params)
    files = common.input_files(job, folder)
    if common.data_job(job) == "B":
        size = sum(gzip_size(f) for f in files)
    else:
        size = sum(os.path.getsize(f) for f in files)
    return Dataset(job, folder, files, size)


def warm_cache(files: list[str]) -> None:
    for path in files:
        with open(path, "rb") as f:
            while f.read(8 << 20):
                pass


# --- one job -----------------------------------------------------------------------------


@dataclasses.dataclass
class JobResult:
    data: Dataset
    impls: list[Impl]
    samples: dict[str, list[Sample]]
    reference: Answer | None
    mismatches: list[str]

    def wall_medians(self) -> dict[str, float]:
        """Median wall time of each implementation none of whose runs failed."""
        return {
            name: statistics.median(s.wall for s in runs)
            for name, runs in self.samples.items()
            if runs and all(s.error is None for s in runs)
        }


def run_job(data: Dataset, impls: list[Impl], repeat: int, timeout: float) -> JobResult:
    print(
        f"\n== job {JOB_TITLES[data.job]}: {len(data.files)} file(s), "
        f"{data.size / 1e6:.0f} MB, {len(impls)} implementations x {repeat}",
        flush=True,
    )
    warm_cache(data.files)
    samples: dict[str, list[Sample]] = {impl.name: [] for impl in impls}
    for r in range(repeat):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            sample = measure(impl, timeout)
            samples[impl.name].append(sample)
            status = sample.error or ""
            print(f"  [{r + 1}/{repeat}] {impl.name:<38} {sample.wall:8.2f}s {status}", flush=True)
    reference = next(
        (s.answer for s in samples.get("plain loop", []) if s.answer is not None), None
    )
    if reference is None:  # the plain loop failed: the first answer there is
        reference = next((s.answer for v in samples.values() for s in v if s.answer), None)
    mismatches = []
    if reference is not None:
        reference = normalize(reference, data.job)
        for name, runs in samples.items():
            for sample in runs:
                if sample.answer is not None and normalize(sample.answer, data.job) != reference:
                    mismatches.append(name)
                    print(
                        f"!!! MISMATCH in job {data.job}: {name} answered "
                        f"{json.dumps(normalize(sample.answer, data.job))}, expected "
                        f"{json.dumps(reference)}",
                        file=sys.stderr,
                        flush=True,
                    )
    return JobResult(data, impls, samples, reference, sorted(set(mismatches)))


# --- tables ------------------------------------------------------------------------------


def mib(kib: float | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.0f}"


def job_table(result: JobResult) -> list[str]:
    data = result.data
    per_file = common.data_job(data.job) in ("C", "D")
    unit = "files/s" if per_file else "MB/s"
    medians = result.wall_medians()
    # Each row's wall time against these rows': the raw Pool for A-D; for E-H, the
    # hand-written script doing the same per-record work, and the bytes one.
    refs = [("× dicts", DICTS), ("× bytes", BYTES)] if data.job in USER_JOBS else []
    refs = refs or [("× raw Pool", "raw Pool.imap_unordered")]
    lines = [
        f"| implementation | workers | median wall s | {unit} | "
        + "".join(f"{title} | " for title, _ in refs)
        + "CPU s | peak RSS main MiB | peak RSS max MiB | answer |",
        "|---|--:|--:|--:|" + "--:|" * len(refs) + "--:|--:|--:|---|",
    ]
    for impl in result.impls:
        runs = result.samples[impl.name]
        errors = [s.error for s in runs if s.error]
        if errors:
            empty = "|" * (5 + len(refs))
            lines.append(f"| {impl.name} | {impl.workers} | failed: {errors[0]} {empty}")
            continue
        wall = medians[impl.name]
        rate = len(data.files) / wall if per_file else data.size / 1e6 / wall
        ratio = " | ".join(
            f"{wall / medians[name]:.2f}" if name in medians else "—" for _, name in refs
        )
        cpu = statistics.median(s.cpu for s in runs)
        mains = [s.rss_main_kib for s in runs if s.rss_main_kib is not None]
        main = max(mains) if mains else None
        if impl.group == "native":  # one process: its own rusage
            main = max(s.rss_max_kib for s in runs)
        if impl.name in result.mismatches:
            answer = "**MISMATCH**"
        elif impl.parse is None:
            answer = "n/a (other output)"
        elif result.reference is None:
            answer = "unchecked"
        else:
            answer = "ok"
        lines.append(
            f"| {impl.name} | {impl.workers} | {wall:.2f} | {rate:,.0f} | {ratio} | {cpu:.1f} "
            f"| {mib(main)} | {mib(max(s.rss_max_kib for s in runs))} | {answer} |"
        )
    return lines


def pipeline_vs_raw(result: JobResult) -> str | None:
    """One line: the pipeline's best process variant and its serial executor against the
    raw Pool, and what a second worker buys the pipeline."""
    ok = result.wall_medians()
    if result.data.job in USER_JOBS:
        return user_job_line(result)
    raw = ok.get("raw Pool.imap_unordered")
    process = [n for n in ok if n.startswith("pipeline process")]
    if raw is None or not process:
        return None
    best = min(process, key=ok.__getitem__)
    text = (
        f"job {result.data.job}: {best} (the best process variant) {ok[best] / raw:.2f}× raw Pool"
    )
    if "pipeline serial" in ok:
        text += f", pipeline serial {ok['pipeline serial'] / raw:.2f}×"
    one = ok.get("pipeline process w1 async")
    more = [ok[n] for n in process if n.endswith(" async") and n != "pipeline process w1 async"]
    if one and more:
        text += f"; process async, most workers vs 1: {one / more[-1]:.2f}× as fast"
    if result.data.job in ("C", "D"):
        extra_ms = (ok[best] - raw) / len(result.data.files) * 1000
        text += f"; {extra_ms:+.2f} ms of wall time per file over raw Pool"
    return text


# Issue 14's targets for jobs E-H, as (against, at most) on wall time.
TARGETS = {
    "E": (DICTS, 1.0),
    "F": (DICTS, 1.0),
    "G": (DICTS, 1.0),
    "H": (BYTES, 1.0),
}


def user_job_line(result: JobResult) -> str | None:
    """Jobs E-H: the pipeline's process rows against the dicts and bytes scripts, and
    the target the issue sets for the job."""
    ok = result.wall_medians()
    job = result.data.job
    rows = [n for n in ok if n.startswith("pipeline process")]
    per_record = [n for n in rows if not n.endswith(BATCH_LABEL)]
    if not per_record or DICTS not in ok or BYTES not in ok:
        return None
    parts = [
        f"{name} {ok[name] / ok[DICTS]:.2f}× dicts, {ok[name] / ok[BYTES]:.2f}× bytes"
        for name in rows
    ]
    against, limit = TARGETS[job]
    # The target is for the call as users write it: the batch form is shown, not judged.
    best = min(per_record, key=ok.__getitem__)
    ratio = ok[best] / ok[against]
    verdict = "met" if ratio <= limit else "NOT met"
    short = "dicts" if against == DICTS else "bytes"
    return (
        f"job {job}: {'; '.join(parts)} (target: at most {limit:.1f}× {short}: {verdict}, "
        f"{ratio:.2f}×)"
    )


def user_jobs_summary(results: list[JobResult]) -> list[str]:
    """The issue's table: each job as a user writes it, the pipeline (its best process
    row, and the batch-plugin row) against the bytes script and the dicts script."""
    lines = [
        "| job, as a user writes it | pipeline s | bytes script s (pipeline ×) "
        "| dicts script s (pipeline ×) |",
        "|---|--:|--:|--:|",
    ]
    for result in results:
        ok = result.wall_medians()
        job = result.data.job
        rows = [n for n in ok if n.startswith("pipeline process")]
        if job not in USER_JOBS or not rows or DICTS not in ok or BYTES not in ok:
            continue
        plain = [n for n in rows if not n.endswith(BATCH_LABEL)]
        picks = [min(plain, key=ok.__getitem__)] if plain else []
        picks += [n for n in rows if n.endswith(BATCH_LABEL)]
        for name in picks:
            wall = ok[name]
            lines.append(
                f"| {JOB_TITLES[job]} ({name}) | {wall:.2f} | {ok[BYTES]:.2f} "
                f"({wall / ok[BYTES]:.2f}×) | {ok[DICTS]:.2f} ({wall / ok[DICTS]:.2f}×) |"
            )
    return lines if len(lines) > 2 else []


# --- extras: incremental re-run and memory -----------------------------------------------


def pipeline_once(
    job: str,
    data: Path,
    workers: int,
    out: Path,
    full: bool,
    timeout: float,
) -> tuple[Sample, dict[str, Any]]:
    """One pipeline run (process executor, async) into ``out``; its sample and report."""
    impl = pipeline_impl(job, data, "process", workers, "async", out=out, full=full)
    sample = measure(impl, timeout)
    report = json.loads((out / "report.json").read_text()) if sample.error is None else {}
    return sample, report


def incremental(data: Dataset, workers: int, repeat: int, timeout: float) -> list[str]:
    out = Path(tempfile.mkdtemp(prefix="incremental-", dir=RUNS))
    first, _ = pipeline_once(data.job, data.folder, workers, out, True, timeout)
    walls, reports = [], []
    for _ in range(repeat):
        sample, report = pipeline_once(data.job, data.folder, workers, out, False, timeout)
        if sample.error:
            return [f"incremental re-run failed: {sample.error}"]
        walls.append(sample.wall)
        reports.append(report)
    shutil.rmtree(out, ignore_errors=True)
    tasks = reports[-1]["tasks"]
    print(f"  incremental re-run: {statistics.median(walls):.2f}s", flush=True)
    return [
        f"Job {data.job} data ({len(data.files):,} unchanged files), pipeline process "
        f"w{workers} async: first full run {first.wall:.2f} s; re-run with nothing new, median "
        f"of {repeat}: **{statistics.median(walls):.2f} s** (tasks: {tasks['skipped']:,} "
        f"skipped, {tasks['done']} done); peak RSS main "
        f"{mib(sample.rss_main_kib)} MiB.",
    ]


GROWTH = 1 << 20  # bytes appended to the log between the two runs of ``growing_log``


def growing_log(size: int, seed: int, workers: int, timeout: float) -> list[str]:
    """Job E (a call per line) over a log of ``size`` that grows by ``GROWTH`` between two
    runs, as a cron job sees it: plain, and with ``input.growing``. The second run must
    read about ``GROWTH`` bytes, and its stats must be the first run's plus those of a run
    over the appended bytes alone (job E's stats are all counts and sums)."""
    source = prepare("E", {"size": size}, seed).files[0]
    with open(source, "rb") as handle:
        appended = handle.read(GROWTH)
    appended = appended[: appended.rfind(b"\n") + 1]
    lines = []

    def run(folder: Path, growing: bool, full: bool = False) -> tuple[Sample, dict[str, Any]]:
        out = folder / "out"
        sets = {
            "output.dir": str(out),
            "input.growing": "true" if growing else "false",
            "execution.workers": str(workers),
        }
        options = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
        argv = [PY, str(BENCH / "pipeline_main.py"), "run", str(BENCH / "configs" / "job_e.yaml")]
        argv += [*(["--full"] if full else []), "--progress", "none", "--quiet", *options]
        impl = Impl(
            "pipeline", "pipeline", workers, lambda _: argv, None, {"BENCH_DATA": str(folder)}
        )
        sample = measure(impl, timeout)
        if sample.error:
            raise RuntimeError(f"growing-log run failed: {sample.error}")
        report = json.loads((out / "report.json").read_text())
        return sample, {**report, "stats": json.loads((out / "stats.json").read_text())}

    alone = Path(tempfile.mkdtemp(prefix="growing-", dir=RUNS))
    (alone / "access.log").write_bytes(appended)
    _, only_new = run(alone, False)
    shutil.rmtree(alone, ignore_errors=True)
    for growing in (False, True):
        folder = Path(tempfile.mkdtemp(prefix="growing-", dir=RUNS))
        log = folder / "access.log"
        shutil.copyfile(source, log)
        warm_cache([str(log)])
        first, before = run(folder, growing)
        with open(log, "ab") as handle:
            handle.write(appended)
        second, after = run(folder, growing)
        again, idle = run(folder, growing)
        shutil.rmtree(folder, ignore_errors=True)
        expected = merge_counts(before["stats"], only_new["stats"])
        ok = after["stats"] == expected and idle["stats"] == expected
        kind = "`input.growing: true`" if growing else "plain (`grew`)"
        line = (
            f"{kind}: first run {first.wall:.2f} s reading "
            f"{mib(before['run']['bytes_read'] >> 10)} MiB; "
            f"after {len(appended):,} bytes appended, **{second.wall:.2f} s reading "
            f"{after['run']['bytes_read']:,} bytes** ({after['tasks']['done']} task(s) run, "
            f"{after['tasks']['skipped']} skipped; {second.wall / first.wall:.3f}× the first run); "
            f"nothing new: {again.wall:.2f} s, {idle['run']['bytes_read']:,} bytes. "
            + (
                "Stats: the first run's plus the appended bytes' alone."
                if ok
                else "!!! STATS DIFFER"
            )
        )
        print(f"  {line}", flush=True)
        lines.append(f"- {line}")
        if not ok:
            raise RuntimeError("growing log: the stats after growth are not the expected ones")
    return lines


def merge_counts(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two stats.json of counts, sums and count_by maps, added up."""
    merged: dict[str, Any] = {}
    for key in a.keys() | b.keys():
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) or isinstance(y, dict):
            both = {**(x or {})}
            for k, v in (y or {}).items():
                both[k] = both.get(k, 0) + v
            merged[key] = dict(sorted(both.items()))
        else:
            merged[key] = (x or 0) + (y or 0)
    return merged


PYDANTIC_FIRST_MODEL = "import pydantic\nclass M(pydantic.BaseModel):\n    x: int = 0\n"
# What the CLI costs before a command runs: typer imported and the command tree built.
CLI_BUILT = "import typer\nimport pipeline.cli\ntyper.main.get_command(pipeline.cli.app)\n"
# The least any typer CLI pays to run one command: typer (0.29 and later) coerces each
# parameter through a pydantic TypeAdapter, so pydantic's schema machinery comes with it.
TYPER_COMMAND = (
    "import sys, typer\n"
    "app = typer.Typer()\n"
    "@app.command()\n"
    "def run(config: str, full: bool = False, workers: int = 0) -> None: pass\n"
    "@app.command()\n"
    "def other() -> None: pass\n"
    "sys.argv = ['app', 'run', 'job.yaml', '--full', '--workers', '2']\n"
    "app()\n"
)


def _one_file_impls(job: str, seed: int, workers: int) -> tuple[Impl, Impl]:
    """The pipeline (process, async) and raw Pool's script on the job's data of one file,
    named as in the job's table."""
    data = prepare(job, {"files": 1}, seed)
    pipe = pipeline_impl(job, data.folder, "process", workers, "async")
    raw = next(i for i in baseline_impls(job, data.folder, workers) if i.name.startswith("raw"))
    return pipe, raw


def fixed_costs(
    results: list[JobResult], seed: int, workers: int, repeat: int, timeout: float
) -> list[str]:
    """What a run costs before its first file, against raw Pool's script: both on jobs C
    and D with one file, alternating with the interpreter alone, pydantic alone (its
    import and first model, which builds its schema machinery), the pipeline's imports
    and the CLI layer (typer and its app; ``pipeline --version``). With the job's full
    result, each side's cost per further file follows."""

    def code(text: str) -> Callable[[Path], list[str]]:
        return lambda _run_dir: [PY, "-c", text]

    start = [
        Impl("the interpreter (`python -c pass`)", "native", 1, code("pass"), None),
        Impl("pydantic: import, first model", "native", 1, code(PYDANTIC_FIRST_MODEL), None),
        Impl("the pipeline's imports", "native", 1, code("import pipeline.runner"), None),
        Impl("the CLI: typer and its app, built", "native", 1, code(CLI_BUILT), None),
        Impl("typer alone: a bare app runs one command", "native", 1, code(TYPER_COMMAND), None),
        Impl(
            "the CLI: `pipeline --version`",
            "native",
            1,
            lambda _run_dir: [PY, "-m", "pipeline", "--version"],
            None,
        ),
    ]
    jobs = {r.data.job: r for r in results if r.data.job in "CD"}
    pairs = {job: _one_file_impls(job, seed, workers) for job in jobs}
    labelled = [(impl.name, impl) for impl in start] + [
        (f"job {job}, 1 file: {impl.name}", impl) for job, pair in pairs.items() for impl in pair
    ]
    walls: dict[str, list[float]] = {label: [] for label, _ in labelled}
    cpus: dict[str, list[float]] = {label: [] for label, _ in labelled}
    for r in range(repeat):
        k = r % len(labelled)
        for label, impl in labelled[k:] + labelled[:k]:
            sample = measure(impl, timeout)
            if sample.error:
                return [f"fixed costs: {label} failed: {sample.error}"]
            walls[label].append(sample.wall)
            cpus[label].append(sample.cpu)
    wall = {label: statistics.median(v) for label, v in walls.items()}
    lines = [
        f"Median of {repeat}, alternating. The pipeline's imports are those of a run "
        "(`import pipeline.runner`: pydantic and the config models among them).",
        "",
        "| what | wall s | CPU s |",
        "|---|--:|--:|",
        *(
            f"| {label} | {wall[label]:.3f} | {statistics.median(cpus[label]):.3f} |"
            for label in walls
        ),
        "",
        f"- pydantic alone takes {wall[start[1].name] - wall[start[0].name]:.3f} s over the "
        "bare interpreter.",
        f"- The CLI layer (typer, the app built) takes "
        f"{wall[start[3].name] - wall[start[0].name]:.3f} s over the bare interpreter; "
        f"`pipeline --version` {wall[start[5].name] - wall[start[0].name]:.3f} s.",
        f"- A bare typer app running one command (three parameters) takes "
        f"{wall[start[4].name] - wall[start[0].name]:.3f} s over the bare interpreter: typer "
        "coerces parameters through pydantic, whose schema machinery it imports and builds; "
        "any CLI on typer starts at least this late.",
    ]
    for job, (pipe, raw) in pairs.items():
        fixed_pipe, fixed_raw = (
            wall[f"job {job}, 1 file: {pipe.name}"],
            wall[f"job {job}, 1 file: {raw.name}"],
        )
        print(
            f"  job {job}, 1 file: pipeline {fixed_pipe:.3f}s, raw Pool {fixed_raw:.3f}s",
            flush=True,
        )
        text = (
            f"- Job {job}: a run's fixed cost is {fixed_pipe:.3f} s for the pipeline, "
            f"{fixed_raw:.3f} s for raw Pool ({fixed_pipe - fixed_raw:+.3f} s)"
        )
        full = jobs[job].wall_medians()
        n = len(jobs[job].data.files) - 1
        if n > 0 and pipe.name in full and raw.name in full:
            per_pipe = (full[pipe.name] - fixed_pipe) / n * 1e6
            per_raw = (full[raw.name] - fixed_raw) / n * 1e6
            text += (
                f"; each further file ({n + 1:,} files against 1) {per_pipe:.1f} µs against "
                f"{per_raw:.1f} µs of wall time ({per_pipe / per_raw:.2f}×)"
            )
        lines.append(text + ".")
    return lines


def _without_report(impl: Impl) -> Impl:
    """The same run with ``output.report_html: false``."""
    return dataclasses.replace(
        impl,
        name=f"{impl.name}, no report.html",
        argv=lambda run_dir: [*impl.argv(run_dir), "--set", "output.report_html=false"],
    )


def report_costs(files_c: int, seed: int, workers: int, repeat: int, timeout: float) -> list[str]:
    """What report.html costs: whole runs with and without it, alternating (job C with one
    file: the fixed cost; with every file: 80 batch rows), and ``report --html`` over
    synthetic stores of 10,000 and 100,000 task rows against the text ``report``, which
    starts the same process and opens the same ledger."""
    one = prepare("C", {"files": 1}, seed)
    many = prepare("C", {"files": files_c}, seed)
    impls = []
    for data in (one, many):
        on = pipeline_impl("C", data.folder, "process", workers, "async")
        on.name = f"job C, {len(data.files):,} file(s): {on.name}"
        impls += [on, _without_report(on)]
    stores = Path(tempfile.mkdtemp(prefix="report-", dir=RUNS))
    sizes = (10_000, 100_000)
    for n in sizes:
        subprocess.run(
            [PY, str(BENCH / "report_store.py"), str(stores / f"s{n}"), str(n)],
            check=True,
            env={**os.environ, "PYTHONPATH": str(BENCH.parent)},
        )
        config = str(stores / f"s{n}.yaml")
        page = stores / f"s{n}.html"
        cli = [PY, str(BENCH / "pipeline_main.py"), "report", config]
        impls += [
            Impl(f"report --html, {n:,} tasks", "pipeline", 1,
                 lambda _d, cli=cli, page=page: [*cli, "--html", str(page)], None),
            Impl(f"report (text), {n:,} tasks", "pipeline", 1, lambda _d, cli=cli: cli, None),
        ]  # fmt: skip
    walls: dict[str, list[float]] = {i.name: [] for i in impls}
    for r in range(repeat):
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            sample = measure(impl, timeout)
            if sample.error:
                return [f"report costs: {impl.name} failed: {sample.error}"]
            walls[impl.name].append(sample.wall)
    wall = {name: statistics.median(v) for name, v in walls.items()}
    lines = [
        f"Median of {repeat}, alternating; pipeline process w{workers} async.",
        "",
        "| what | wall s |",
        "|---|--:|",
        *(f"| {name} | {wall[name]:.3f} |" for name in wall),
        "",
    ]
    for i in range(0, 4, 2):
        with_page, without = impls[i].name, impls[i + 1].name
        lines.append(
            f"- {with_page}: report.html costs {wall[with_page] - wall[without]:+.3f} s "
            f"({wall[with_page] / wall[without]:.2f}× the run without it)."
        )
    for n in sizes:
        page = stores / f"s{n}.html"
        extra = wall[f"report --html, {n:,} tasks"] - wall[f"report (text), {n:,} tasks"]
        lines.append(
            f"- {n:,} tasks (1% retried once): the page takes {extra:.3f} s over the text "
            f"report; {page.stat().st_size / 1e6:.2f} MB."
        )
        print(f"  report.html of {n:,} tasks: +{extra:.3f}s", flush=True)
    shutil.rmtree(stores, ignore_errors=True)
    return lines


def memory_check(
    cases: list[tuple[str, dict[str, int]]], seed: int, workers: int, timeout: float
) -> list[str]:
    lines = [
        "| input | tasks | wall s | peak RSS main MiB | peak RSS max MiB |",
        "|---|--:|--:|--:|--:|",
    ]
    for job, params in cases:
        data = prepare(job, params, seed)
        warm_cache(data.files)
        out = Path(tempfile.mkdtemp(prefix="memory-", dir=RUNS))
        sample, report = pipeline_once(job, data.folder, workers, out, True, timeout)
        shutil.rmtree(out, ignore_errors=True)
        what = f"job {job}: {len(data.files):,} file(s), {data.size / 2**20:,.1f} MiB"
        if sample.error:
            lines.append(f"| {what} | failed: {sample.error} ||||")
            continue
        print(f"  memory {what}: main {mib(sample.rss_main_kib)} MiB", flush=True)
        lines.append(
            f"| {what} | {report['tasks']['total']:,} | {sample.wall:.2f} "
            f"| {mib(sample.rss_main_kib)} | {mib(sample.rss_max_kib)} |"
        )
    return lines


# --- the report --------------------------------------------------------------------------


def pipeline_source() -> str:
    """Which pipeline code runs: the git commit (and whether pipeline/ has uncommitted
    changes) and a digest of the package's ``.py`` files."""
    spec = importlib.util.find_spec("pipeline")
    if spec is None or spec.origin is None:
        return "not importable"
    package = Path(spec.origin).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    where = f"pipeline/ sha256 {digest.hexdigest()[:12]}"
    git = ["git", "-C", str(package.parent)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=30
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", str(package)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return where
    if head.returncode != 0:
        return where
    changes = " + uncommitted changes" if dirty.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{changes}, {where}"


def machine_lines(workers: int) -> list[str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = []
    for name in ("pipeline", "joblib", "mpire", "dask"):
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} not installed")
    parallel = gnu_parallel()
    if parallel:
        out = subprocess.run([parallel, "--version"], capture_output=True, text=True)
        versions.append(out.stdout.splitlines()[0])
    return [
        f"- CPUs: {os.cpu_count()} (nproc {len(os.sched_getaffinity(0))}), {model}; "
        f"{mem:.0f} GiB RAM; Linux {platform.release()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        f"- workers for the parallel implementations: {workers}",
        f"- launcher: {TIME}"
        if TIME
        else "- launcher: none (no GNU time): CPU and RSS from "
        "`os.wait4`, RSS at least the harness's own peak",
    ]


PROFILE_POINTER = (
    "- Where the time goes, before and after the hot-path work: [`bench/PROFILE.md`](PROFILE.md)."
)
NOTES = """\
- Wall time is the whole process, start-up included, from `perf_counter` around the
  subprocess; medians over the runs. MB are 10^6 bytes; for B, of uncompressed data.
- CPU s and "peak RSS max" come from GNU time, which launches every run (Linux carries the
  RSS high-water mark of a process's image before `execve` into its `ru_maxrss`, so
  runs started from Python would show at least the harness's own size): user+sys time and
  `ru_maxrss` of the run and the descendants it waited for (the largest process of the
  tree, not a sum; processes nobody waited for, e.g. some loky/dask workers, are missed).
  "Peak RSS main" is the main process alone (`RUSAGE_SELF` written at exit; for the
  pipeline by `bench/pipeline_main.py`, which runs the same CLI in-process); for native
  tools it is their single process; for GNU parallel it is unknown (—).
- Answers: every run's answer is compared with the plain loop's (A, B: requests,
  by_status, bytes, errors_5xx; C: lines, words, bytes; D: records; E, F: those of A and
  by_client, over the 9-group regex with `-` bytes as null; G: lines, words, bytes; H:
  those of A over the 9-group regex). For E-H the plain loop does the dicts script's work.
  `cat`, `wc -l`, `grep -c` and `gzip -dc` compute something else: they are the physical
  limit only.
- Jobs E-H: "× dicts" is a row's wall time over the hand-written Pool script that does the
  pipeline's per-record work through dicts and the same plugin function; "× bytes" over
  the one that matches the regex on bytes and builds no dict (`baselines/user_jobs.py`).
- The page cache is warm (every input is read once before the first run), and the
  pipeline's modules are byte-compiled first, as `pip install` leaves them; the runs of
  each round go in a fixed order rotated by one per round.
- On a shared or busy machine wall times are noisy (see the load averages above); the
  CPU column is the steadier measure of work done.
"""


def write_results(
    path: Path,
    args: argparse.Namespace,
    results: list[JobResult],
    skipped: list[str],
    extras: list[str],
    started: float,
) -> None:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    out = [
        "# Benchmark results",
        "",
        f"`bench/run.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{(time.time() - started) / 60:.0f} min; {args.repeat} run(s) per implementation.",
        "",
        "## Machine",
        *machine_lines(args.workers),
        f"- load average at the end (1/5/15 min): {load}; at the start: {args.load_start}",
        f"- pipeline code: {args.source_start}",
        "",
    ]
    if args.source_end != args.source_start:
        out[-1:] = [
            f"- **WARNING: pipeline/ changed during this run** (now {args.source_end}):",
            "  the tables mix versions of the code; run again.",
            "",
        ]
    for result in results:
        data = result.data
        gz = common.data_job(data.job) == "B"
        size = f"{data.size / 2**20:,.0f} MiB" + (" uncompressed" if gz else "")
        out += [
            f"## Job {JOB_TITLES[data.job]}",
            "",
            f"{len(data.files):,} file(s), {size}, in `{data.folder.relative_to(BENCH)}`.",
            "",
            *job_table(result),
            "",
        ]
    out += extras
    out += ["## Notes", "", NOTES, "", PROFILE_POINTER]
    for result in results:
        line = pipeline_vs_raw(result)
        if line:
            out.append(f"- {line}.")
        if result.mismatches:
            out.append(f"- **MISMATCH** in job {result.data.job}: {', '.join(result.mismatches)}")
    out += [f"- skipped: {s}" for s in skipped]
    path.write_text("\n".join(out) + "\n")


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--jobs",
        default=",".join(common.JOBS),
        help="comma-separated, of A-H (E-H: A, B, C as users write them, and the fast path "
        "on the realistic line)",
    )
    parser.add_argument("--repeat", type=int, help="runs per implementation (default 3)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small data, 1 run: A 64 MiB, B 20 files, C/D 2,000 files",
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also the slow memory cases: A at 4x --size-a, D 200,000 files",
    )
    parser.add_argument(
        "--no-incremental",
        dest="incremental",
        action="store_false",
        help="skip the incremental re-run check (job C data)",
    )
    parser.add_argument(
        "--no-growing",
        dest="growing",
        action="store_false",
        help="skip the growing-log check (a log of --size-growing, 1 MiB appended)",
    )
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip the report.html costs (whole runs with and without it; synthetic stores)",
    )
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument(
        "--only",
        default="",
        help="run only implementations whose name "
        "contains one of these comma-separated words (plain loop always)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument(
        "--out",
        type=Path,
        help="default: bench/RESULTS.md (bench/data/RESULTS-quick.md with --quick)",
    )
    for name in ("--size-a", "--size-b", "--size-growing"):
        parser.add_argument(name, type=generate.parse_size)
    for name in ("--files-b", "--files-c", "--files-d"):
        parser.add_argument(name, type=int)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    quick = {
        "size_a": "64MiB",
        "size_b": "64MiB",
        "files_b": 20,
        "files_c": 2000,
        "files_d": 2000,
        "size_growing": "64MiB",
        "repeat": 1,
        "out": generate.DATA / "RESULTS-quick.md",
    }
    full = {
        "size_a": "1GiB",
        "size_b": "1GiB",
        "files_b": 200,
        "files_c": 20000,
        "files_d": 20000,
        "size_growing": "1GiB",
        "repeat": 3,
        "out": BENCH / "RESULTS.md",
    }
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            is_size = key.startswith("size")
            setattr(args, key, generate.parse_size(value) if is_size else value)
    args.jobs = [j.strip().upper() for j in args.jobs.split(",") if j.strip()]
    if not set(args.jobs) <= set(common.JOBS) or args.repeat < 1 or args.workers < 1:
        parser.error("--jobs takes A to H; --repeat and --workers must be >= 1")
    args.load_start = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    args.source_start = pipeline_source()
    return args


def compile_package() -> None:
    """Byte-compile the pipeline's modules (and the bench plugins), as ``pip install``
    does for an installed package. An editable install run with PYTHONDONTWRITEBYTECODE
    set (as on our CI machines) would compile its 30 modules from source on every run,
    about 25 ms that no user of an installed package pays and that the baselines, which
    import only compiled modules, do not pay either."""
    for folder in (BENCH.parent / "pipeline", BENCH / "configs"):
        compileall.compile_dir(str(folder), quiet=1)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    compile_package()
    parallel = gnu_parallel()
    skipped = [
        f"{m} (not installed: `make bench` installs the bench extra)"
        for m in ("joblib", "mpire", "dask", "distributed")
        if importlib.util.find_spec(m) is None
    ]
    if parallel is None:
        skipped.append("GNU parallel (not installed; e.g. `apt-get install parallel`)")
    if parallel and any(j in args.jobs for j in "BCD"):
        skipped.append("GNU parallel --pipepart for B, C and D (it splits one uncompressed file)")
    if parallel and any(j in args.jobs for j in "CD"):
        skipped.append(
            "GNU parallel with one job per file for all the files of C and D (a Python "
            "start-up per file): timed on a sample and scaled (below); `-X` batches the "
            "files in the tables"
        )
    no_batch = batch_call_unsupported() if "E" in args.jobs else None
    if no_batch:
        skipped.append(f"job E's batch-plugin row (`{BATCH_CONFIG.name}`): {no_batch}")
    for line in skipped:
        print(f"skipped: {line}", flush=True)
    only = [w.strip().lower() for w in args.only.split(",") if w.strip()]
    results = []
    for job in args.jobs:
        data = prepare(job, generate.params_for(common.data_job(job), args), args.seed)
        others = [] if job in USER_JOBS else native_impls(data)
        if parallel and job not in USER_JOBS:
            others = parallel_impls(data, args.workers, parallel) + others
        impls = [
            *pipeline_impls(job, data.folder, args.workers, batch=not no_batch),
            *baseline_impls(job, data.folder, args.workers),
            *others,
        ]
        if only:
            impls = [
                i for i in impls if i.name == "plain loop" or any(w in i.name.lower() for w in only)
            ]
        results.append(run_job(data, impls, args.repeat, args.timeout))
        for line in job_table(results[-1]):
            print(line)

    extras: list[str] = []
    summary = user_jobs_summary(results)
    if summary:
        extras += [
            "## What users write (jobs E-H)",
            "",
            "Wall time, medians; the ratios are the pipeline's time over the script's. "
            "Targets (issue 14): a `call` on every record at most 1.0× the dicts script "
            "(aiming at 0.8×); the fast path at most 1.0× the bytes script.",
            "",
            *summary,
            "",
        ]
        print("\n== what users write", flush=True)
        for line in summary:
            print(line)
    per_file = [r for r in results if r.data.job in "CD"] if parallel and not only else []
    if per_file:
        print("\n== GNU parallel, one job per file", flush=True)
        extras += [
            "## GNU parallel with one job per file (jobs C and D)",
            "",
            *(
                f"- {parallel_per_file(r, parallel, args.workers, args.repeat, args.timeout)}"
                for r in per_file
            ),
            "",
        ]
    if any(r.data.job in "CD" for r in results):
        print("\n== fixed costs", flush=True)
        extras += [
            "## Fixed cost of a run, and cost per file (jobs C and D)",
            "",
            *fixed_costs(results, args.seed, args.workers, max(5, args.repeat), args.timeout),
            "",
        ]
    if args.incremental:
        print("\n== incremental re-run", flush=True)
        data = prepare("C", {"files": args.files_c}, args.seed)
        extras += [
            "## Incremental re-run, nothing new",
            "",
            *incremental(data, args.workers, args.repeat, args.timeout),
            "",
        ]
    if args.growing:
        print("\n== growing log", flush=True)
        extras += [
            "## A log that grows between runs (job E)",
            "",
            f"A {args.size_growing >> 20} MiB log, then {GROWTH >> 20} MiB of lines appended; "
            f"pipeline process w{args.workers} async, one run each.",
            "",
            *growing_log(args.size_growing, args.seed, args.workers, args.timeout),
            "",
        ]
    if args.report:
        print("\n== report.html", flush=True)
        extras += [
            "## The run report (report.html)",
            "",
            *report_costs(args.files_c, args.seed, args.workers, max(5, args.repeat), args.timeout),
            "",
        ]
    print("\n== memory", flush=True)
    cases = [("A", {"size": args.size_a}), ("D", {"files": 2000})]
    if args.memory:
        cases = [
            cases[0],
            ("A", {"size": 4 * args.size_a}),
            cases[1],
            ("D", {"files": 20000 if args.quick else 200000}),
        ]
    extras += [
        "## Memory: the pipeline's main process",
        "",
        f"pipeline process w{args.workers} async, one run each"
        + ("" if args.memory else " (add `--memory` for 4x the file and 100x the files)")
        + ".",
        "",
        *memory_check(cases, args.seed, args.workers, args.timeout),
        "",
    ]

    args.source_end = pipeline_source()
    if args.source_end != args.source_start:
        print(
            f"!!! pipeline/ changed during the run: {args.source_start} -> "
            f"{args.source_end}; the results mix versions",
            file=sys.stderr,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, args, results, skipped, extras, started)
    print(f"\nwrote {args.out}")
    bad = [r.data.job for r in results if r.mismatches]
    if bad:
        print(f"!!! MISMATCHES in job(s) {', '.join(bad)}: see above", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

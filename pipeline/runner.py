"""One run, start to end.

::

    lock ─> discover x ledger rows ─> plan, file by file (one ledger transaction)
       └─> batches (small files grouped) ─> executor.run ─> worker: per task, read range
                 │                                     -> steps -> partials; one part file
                 │ on_outcome (main thread, once per batch)
                 ▼
           ledger.commit_tasks (one transaction) ─> live stats (Manager dict + Lock) ─> progress
       └─> outputs from the ledger: records.*, stats.json, report.json ─> unlock

The runner owns every effect that must happen exactly once; workers only write their own
part file. Signals only set flags here; the executor's loop acts on them.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import itertools
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

from pipeline import worker
from pipeline.config import PipelineConfig
from pipeline.diagnostics import InputDiagnostics
from pipeline.discovery import Discovery
from pipeline.errors import ConfigError, ExecutionError, ExitCode, StoreError
from pipeline.executors import (
    DaskOptions,
    Executor,
    ExecutorOptions,
    Outcome,
    PoolOptions,
    make_executor,
)
from pipeline.executors.shield import get_context, helpers_shielded, stop_signals_blocked
from pipeline.live import (
    LiveAddress,
    LiveStats,
    PlanTotals,
    RunFacts,
    remove_address,
    write_address,
)
from pipeline.models import JobSpec, TaskResult, TaskSpec
from pipeline.planfeed import PlanFeed
from pipeline.planning import Batcher, Plan, Planner
from pipeline.readers import line_where, record_where
from pipeline.reporting import Progress, choose_mode, summary_lines
from pipeline.store import merge, parts
from pipeline.store.atomic import make_dirs, remove_temp_files
from pipeline.store.ledger import Ledger
from pipeline.store.lock import RunLock
from pipeline.storeview import iso_time
from pipeline.units import format_size

log = logging.getLogger("pipeline")

LIVE_EVERY_S = 0.5  # how often the live view in the Manager dict is refreshed
# A job estimated to take less than TINY_JOB_S of work runs in-process (see _executor_kind).
TINY_JOB_S = 0.2
TINY_RATE = 50e6  # bytes per second through a typical step chain
TINY_PER_TASK_S = 50e-6  # opening, reading and committing one small file


@dataclass(frozen=True)
class RunOptions:
    full: bool = False
    progress: str = "auto"
    quiet: bool = False
    debug: bool = False


@dataclass
class RunResult:
    exit_code: int
    report: dict[str, Any]
    stats: dict[str, Any]


class StopSignals:
    """First SIGINT/SIGTERM: stop submitting and drain; a second: stop at once."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def _handle(self, signum: int, _frame: object) -> None:
        if os.getpid() != self._pid:
            return  # a forked child before its initializer reset the handlers: not ours
        self.received.append(signum)
        if len(self.received) == 1:
            log.warning(
                "%s received: finishing tasks in flight (send again to stop now)",
                signal.Signals(signum).name,
            )

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @property
    def exit_code(self) -> int | None:
        if not self.received:
            return None
        return ExitCode.SIGINT if self.received[0] == signal.SIGINT else ExitCode.SIGTERM


def job_spec(cfg: PipelineConfig, parts_dir: Path) -> JobSpec:
    return JobSpec(
        format=cfg.input.format,
        encoding=cfg.input.encoding,
        steps=tuple(cfg.step_specs()),
        stats=cfg.stat_specs(),
        write_records=cfg.output.records != "none",
        parts_dir=str(parts_dir),
        import_dirs=(str(cfg.base_dir),),
        growing=cfg.input.growing,
    )


def plugin_name(cfg: PipelineConfig) -> str:
    """The name of a job's plugin on a Dask cluster: the same for every run of one config,
    so a run replaces what an earlier one (killed, say) left registered."""
    digest = hashlib.sha256(os.fsencode(str(cfg.config_path))).hexdigest()[:16]
    return f"pipeline-{re.sub(r'[^A-Za-z0-9_.-]', '_', cfg.name)[:40]}-{digest}"


def freeze_heap() -> None:
    """Put every object alive now (modules, the config, pydantic's schemas: some 30,000)
    out of the cyclic garbage collector's sight, before the Manager and the workers are
    forked. A full collection would walk them all: in this process, and in every worker,
    where walking them also writes to every page of the inherited heap, so the kernel
    copies it. Measured: a tenth off a run over 20,000 small files (bench/PROFILE.md).
    Reference counting still frees them; only a cycle among them would stay."""
    gc.freeze()


def discover_inputs(cfg: PipelineConfig) -> Discovery:
    """The inputs, found as they are iterated (``report_discovery`` afterwards). The output
    store is never among them, whatever the globs say: a run must not read its own
    ``records.jsonl`` back in."""
    return Discovery(cfg.input.paths, cfg.input.exclude, left_out=(str(cfg.output.dir),))


@contextlib.contextmanager
def _store_lock(out_dir: Path) -> Iterator[RunLock]:
    """The output folder, created if need be, with its lock held. A folder that cannot be
    created or written is the config's problem (exit 2), found before anything is written."""
    try:
        make_dirs(out_dir)
    except OSError as exc:
        raise ConfigError(f"output.dir {out_dir}: cannot create it: {exc.strerror}") from None
    lock = RunLock(out_dir)
    try:
        lock.acquire()
    except OSError as exc:
        raise ConfigError(f"output.dir {out_dir}: cannot write there: {exc.strerror}") from None
    try:
        yield lock
    finally:
        lock.release()


def report_discovery(found: Discovery) -> None:
    """Warnings for patterns that matched nothing and inputs that were skipped."""
    if found.unmatched and len(found.unmatched) == len(found.patterns):
        patterns = ", ".join(repr(p) for p in found.patterns)
        log.warning("no input matched input.paths (%s): nothing to do", patterns)
    elif found.unmatched:
        log.warning("no file matches %s", ", ".join(repr(p) for p in found.unmatched))
    folders = [item.path for item in found.skipped if item.reason == "skipped: a directory"]
    for item in found.skipped:
        if item.reason != "skipped: a directory":
            log.warning("%s: %s", item.path, item.reason)
    if folders:
        shown = ", ".join(folders[:3]) + (", …" if len(folders) > 3 else "")
        log.warning(
            "skipped %d director%s matched by the globs: %s",
            len(folders),
            "y" if len(folders) == 1 else "ies",
            shown,
        )


def planner_for(cfg: PipelineConfig, full: bool = False) -> Planner:
    write_records = cfg.output.records != "none"
    return Planner(
        fmt=cfg.input.format,
        chunk_size=cfg.input.chunk_size,
        result_key=cfg.result_key(),
        parts_dir=str(cfg.output.dir / parts.PARTS_DIR) if write_records else None,
        full=full,
        spread=1 if cfg.execution.executor == "serial" else cfg.workers_resolved(),
        growing=cfg.input.growing,
    )


@dataclass
class _RunState:
    """What this run has seen so far: counts for the report and the error budget."""

    done: int = 0
    failed: int = 0
    records: int = 0
    bytes_read: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    fatal: str | None = None  # why the run gave up early, if it did
    disk_full: bool = False
    executor: str = ""  # as the executor describes itself, once chosen
    workers: int = 0
    diagnostics: InputDiagnostics = field(default_factory=InputDiagnostics)


class Run:
    def __init__(self, cfg: PipelineConfig, options: RunOptions) -> None:
        self.cfg = cfg
        self.options = options
        self.out_dir = cfg.output.dir
        self.parts_dir = self.out_dir / parts.PARTS_DIR
        self.result_key = cfg.result_key()
        self.state = _RunState()
        self.signals = StopSignals()

    def execute(self) -> RunResult:
        files = discover_inputs(self.cfg)
        executor = self._executor(self.cfg.execution.executor)
        try:
            # Before the store is touched: a remote cluster is reached and checked, the
            # plugin modules to ship are collected (either can fail with exit 2).
            executor.prepare()
            with _store_lock(self.out_dir), self.signals:
                return self._locked(files, executor)
        finally:
            executor.close()

    def _executor(self, kind: str) -> Executor:
        execution = self.cfg.execution
        options = ExecutorOptions(
            job=job_spec(self.cfg, self.parts_dir),
            workers=self.cfg.workers_resolved(),
            retries=execution.retries,
            timeout=execution.timeout,
            grace=execution.grace,
        )
        return make_executor(
            kind,
            options,
            pool=PoolOptions(execution.submit, execution.start_method),
            dask=DaskOptions(
                address=execution.address,
                dashboard=execution.dashboard,
                config_dir=str(self.cfg.base_dir),
                plugin_name=plugin_name(self.cfg),
                debug=self.options.debug,
            ),
        )

    def _locked(self, files: Discovery, configured: Executor) -> RunResult:
        started = time.time()
        parts.prepare(str(self.parts_dir))
        remove_temp_files(self.out_dir)  # outputs a kill -9 interrupted mid-write
        # Planned tasks go straight into batches (spooled to a temporary file beside the
        # outputs): no list of every task is ever held.
        batcher = Batcher(
            configured.parallelism(),
            self.cfg.input.chunk_size,
            str(self.out_dir),
            configured.batch_shape,
        )
        ledger = Ledger(self.out_dir)
        feed: PlanFeed | None = None
        manager: SyncManager | None = None
        live: LiveStats | None = None
        progress = Progress("none", 0, 0)
        try:
            run_id = ledger.start_run(self.cfg.name, self.result_key)
            feed = PlanFeed(
                ledger,
                files,
                planner_for(self.cfg, self.options.full),
                batcher,
                self.result_key,
                run_id,
                lambda plan, done: self._planned(files, plan, done, progress),
            )
            # Enough of the plan to choose the executor; the rest is made while it runs.
            if self._may_run_in_process():
                feed.plan_until(lambda plan: _estimate_s(plan) >= TINY_JOB_S)
            else:
                feed.plan_until(lambda plan: plan.n_run > 0)  # no pool for nothing to do
            plan = feed.plan
            kind = self._executor_kind(feed)
            executor = configured if kind == self.cfg.execution.executor else self._executor(kind)
            if kind == "process":
                freeze_heap()
            # Worker processes (a pool's, a cluster's): the live view goes in a Manager.
            manager = self._start_manager() if kind != "serial" else None
            live = self._live_stats(manager, executor, feed, run_id, started)
            progress = Progress(
                choose_mode(self.options.progress, self.options.quiet),
                plan.n_run,
                plan.run_bytes,
                live,
            )
            self.state.executor, self.state.workers = executor.describe(), executor.parallelism()
            if plan.n_run or not feed.done:
                log.info("executor: %s", self.state.executor)

            def on_outcome(outcome: Outcome) -> None:
                self._commit(ledger, live, progress, outcome, run_id)

            def should_stop() -> bool:
                budget = self._budget(plan, feed.done)
                return (
                    bool(self.signals.received)
                    or self.state.disk_full
                    or (budget is not None and self.state.failed >= budget)
                )

            try:
                executor.run(
                    feed,
                    on_outcome,
                    should_stop,
                    lambda: len(self.signals.received) > 1,
                    feed.ahead,
                )
            except ExecutionError as exc:
                log.error("%s", exc.message)
                self.state.fatal = exc.message
            if not feed.done:
                log.info(
                    "%s: stopped while planning, after %d file(s) (%d task(s) planned)",
                    self.cfg.name,
                    plan.n_files,
                    plan.n_run,
                )
            feed.close()
            live.publish()
            progress.close()
            return self._finish(ledger, live, plan, run_id, started, self._budget(plan, feed.done))
        finally:
            if feed is not None:
                feed.close()
            batcher.close()
            progress.close()
            ledger.close()
            if manager is not None:
                self._stop_manager(manager, live)
            with contextlib.suppress(OSError):  # the workers' announcement files
                parts.clear_tmp(str(self.parts_dir))

    def _planned(self, files: Discovery, plan: Plan, done: bool, progress: Progress) -> None:
        """After each step of planning: the progress totals; at the end, the plan's line
        and discovery's warnings."""
        progress.set_totals(plan.n_run, plan.run_bytes)
        if not done:
            return
        log.info(
            "%s: %d task(s) to run (%s), %d unchanged",
            self.cfg.name,
            plan.n_run,
            _reason_text(plan),
            plan.n_skip,
        )
        report_discovery(files)

    def _budget(self, plan: Plan, planned: bool) -> int | None:
        """The error budget; a percentage of a plan still being made is not known yet."""
        limit = self.cfg.execution.max_failures
        if isinstance(limit, str) and not planned:
            return None
        return self.cfg.max_failures_for(plan.n_run)

    def _executor_kind(self, feed: PlanFeed) -> str:
        """``process``, unless the work is so small that starting a pool (50-100 ms) would
        cost more than it saves: with ``workers: auto`` and no ``call`` step (no foreign
        code that could crash or hang the main process) such a job runs in-process. Only
        a plan made to the end can be that small (``feed.plan_until``)."""
        kind = self.cfg.execution.executor
        plan = feed.plan
        if feed.done and not plan.n_run:
            return "serial"  # nothing to run: no pool, no Manager
        if not self._may_run_in_process() or not feed.done:
            return kind
        if _estimate_s(plan) >= TINY_JOB_S:
            return kind
        log.info(
            "small job (%d task(s), %s): running in-process, not on a worker pool",
            plan.n_run,
            format_size(plan.run_bytes),
        )
        return "serial"

    def _may_run_in_process(self) -> bool:
        """Whether the tiny-job rule may apply (``_executor_kind``)."""
        execution = self.cfg.execution
        return (
            execution.executor == "process"
            and execution.workers == "auto"
            and not any("call" in step for step in self.cfg.step_specs())
        )

    def _start_manager(self) -> SyncManager:
        # A fresh random key per run: only this run's processes can talk to its Manager.
        context = get_context(self.cfg.execution.start_method)
        manager = SyncManager(ctx=context, authkey=os.urandom(32))
        with helpers_shielded(context):
            manager.start(initializer=worker.init_manager)
        return manager

    def _live_stats(
        self,
        manager: SyncManager | None,
        executor: Executor,
        feed: PlanFeed,
        run_id: int,
        started: float,
    ) -> LiveStats:
        """The live view; with a Manager, published by a thread of its own too, and its
        address in ``live.json`` for ``pipeline status``. Without one (an in-process run)
        it only feeds the bars, and a file a killed run left is removed."""
        facts = RunFacts(run_id, os.getpid(), started, executor.describe())

        def totals() -> PlanTotals:
            return PlanTotals(feed.plan.n_run, feed.plan.run_bytes, feed.done)

        def activity() -> list[dict[str, Any]]:
            return [entry.as_dict() for entry in executor.activity()]

        specs = self.cfg.stat_specs()
        if manager is None:
            remove_address(self.out_dir)
            return LiveStats({}, threading.Lock(), specs, LIVE_EVERY_S, facts=facts, totals=totals)
        mapping, lock = manager.dict(), manager.Lock()
        live = LiveStats(
            mapping, lock, specs, LIVE_EVERY_S, facts=facts, totals=totals, activity=activity
        )
        live.publish()
        # Its thread must never take a stop signal: while helpers start, the main thread
        # blocks them with the handlers set to ignore, counting on the signal to wait.
        with stop_signals_blocked():
            live.start_publisher()
        address = LiveAddress(
            manager.address,
            bytes(manager._authkey),  # type: ignore[attr-defined]  # _start_manager's key
            mapping._token.id,  # type: ignore[attr-defined]
            lock._token.id,  # type: ignore[attr-defined]
            os.getpid(),
            run_id,
        )
        try:
            write_address(self.out_dir, address)
        except OSError as exc:  # the run goes on; only ``pipeline status`` cannot see it
            log.warning("%s: cannot publish the live view's address: %s", self.out_dir, exc)
        return live

    def _stop_manager(self, manager: SyncManager, live: LiveStats | None) -> None:
        """The live view ends before the lock is released: publisher, address, Manager."""
        if live is not None:
            live.stop_publisher()
        remove_address(self.out_dir)
        manager.shutdown()

    def _commit(
        self, ledger: Ledger, live: LiveStats, progress: Progress, outcome: Outcome, run_id: int
    ) -> None:
        """A batch's final results: one ledger transaction, then the live view and progress."""
        tasks = {t.task_id: t for t in outcome.batch.tasks}
        for result in itertools.chain(outcome.results, (r for _, r in outcome.earlier)):
            if result.error_at is not None:  # before the ledger keeps the message
                self._name_line(tasks[result.task_id], result)
        ledger.commit_tasks(
            tasks, outcome.results, outcome.attempts, run_id, self.result_key, outcome.earlier
        )
        nbytes = failed = n_tasks = 0
        for result in outcome.results:
            packed = result.packed
            if packed is not None:  # it stands for the batch's packed files, all done
                nbytes += sum(tasks[task_id].size for task_id in packed.task_ids)
                n_tasks += packed.files
                self.state.done += packed.files
                self.state.records += packed.records_in
                self.state.bytes_read += packed.bytes_read
                self.state.diagnostics.add_packed(packed)
                continue
            task = tasks[result.task_id]
            nbytes += task.size if task.length is None else task.length
            n_tasks += 1
            if result.ok:
                self.state.done += 1
                self.state.diagnostics.add(task, result)
            else:
                failed += 1
                self._record_failure(task, result, outcome.attempts)
            self.state.records += result.records_in
            self.state.bytes_read += result.bytes_read
        live.add(outcome.results)
        progress.advance(nbytes, n_tasks, failed)

    def _name_line(self, task: TaskSpec, result: TaskResult) -> None:
        """A failure's message names the line of the record, which only this process can
        count (the worker knows its position: a byte offset, for lines and jsonl)."""
        if result.error_at is None or result.error is None:
            return
        fmt = self.cfg.input.format
        where = record_where(fmt, task, result.error_at) + ": "
        lines = self.state.diagnostics.lines
        line = lines.line_of(fmt, task.path, task.compression, result.error_at)
        if line is not None and result.error.startswith(where):
            rest = result.error[len(where) :]
            result.error = f"{line_where(fmt, task, result.error_at, line)}: {rest}"

    def _record_failure(self, task: TaskSpec, result: TaskResult, attempts: int) -> None:
        self.state.failed += 1
        self.state.failures.append(
            {
                "path": task.path,
                "range": task.byte_range(),
                "kind": result.error_kind,
                "error": result.error,
                "attempts": attempts,
            }
        )
        log.error("task failed: %s", result.error)
        if result.traceback:
            log.debug("%s", result.traceback)
        if result.error and f"[Errno {errno.ENOSPC}]" in result.error and not self.state.disk_full:
            # Every later task would fail the same way: stop submitting (fail-stop).
            self.state.disk_full = True
            self.state.fatal = f"no space left on device under {self.out_dir}; stopping"
            log.error("%s", self.state.fatal)

    def _write_outputs(self, ledger: Ledger, live: LiveStats, run_id: int) -> dict:
        """records.* and stats.json from the committed tasks — unless they already show
        exactly this committed state (a run with nothing new rewrites nothing). The stats
        merge this run's tasks as ``live`` already holds them with the partials the ledger
        keeps for every other done task."""
        result_key = self.result_key
        state = f"{ledger.committed_state(result_key)}:{self.cfg.output.records}"
        stats_path = self.out_dir / merge.STATS_NAME
        records_name = merge.RECORDS_NAMES.get(self.cfg.output.records)
        current = stats_path.exists() and (
            records_name is None or (self.out_dir / records_name).exists()
        )
        if current and ledger.get_meta("outputs_state") == state:
            with contextlib.suppress(OSError, ValueError):
                return json.loads(stats_path.read_text(encoding="utf-8"))
        earlier = ledger.committed_partials(result_key, except_run=run_id)
        stats = merge.merged_stats(self.cfg.stat_specs(), itertools.chain([live.partials], earlier))
        try:
            merge.write_records(
                self.out_dir,
                self.parts_dir,
                self.cfg.output.records,
                lambda: (
                    ledger.committed_in_streams(result_key)
                    if self.cfg.input.growing
                    else ledger.committed(result_key)
                ),
            )
            merge.write_json(stats_path, stats)
        except OSError as exc:
            raise StoreError(f"{self.out_dir}: cannot write the outputs: {exc}") from exc
        ledger.set_meta("outputs_state", state)
        return stats

    def _finish(
        self,
        ledger: Ledger,
        live: LiveStats,
        plan: Plan,
        run_id: int,
        started: float,
        budget: int | None,
    ) -> RunResult:
        result_key = self.result_key
        stats = self._write_outputs(ledger, live, run_id)

        signal_code = self.signals.exit_code
        if signal_code is not None:
            status, exit_code = "interrupted", int(signal_code)
        elif self.state.failed or self.state.fatal:
            status, exit_code = "failed", int(ExitCode.TASKS_FAILED)
        else:
            status, exit_code = "ok", int(ExitCode.OK)
        total = plan.n_run + plan.n_skip
        pending = total - self.state.done - self.state.failed - plan.n_skip
        fmt = self.cfg.input.format
        diagnosed = self.state.diagnostics
        warnings = diagnosed.warnings(fmt, self.cfg.stat_specs(), live.partials)
        try:
            merge.write_jsonl(self.out_dir / merge.MALFORMED_NAME, diagnosed.sample(fmt))
        except OSError as exc:
            raise StoreError(f"{self.out_dir}: cannot write {merge.MALFORMED_NAME}: {exc}") from exc
        report = {
            "name": self.cfg.name,
            "run_id": run_id,
            "status": status,
            "exit_code": exit_code,
            "started": iso_time(started),
            "finished": iso_time(time.time()),
            "config": str(self.cfg.config_path),
            "tasks": {
                "total": total,
                "done": self.state.done,
                "failed": self.state.failed,
                "skipped": plan.n_skip,
                "pending": pending,
            },
            # records.* and stats.json cover every planned task (none failed or pending)
            "complete": status == "ok" and not pending and not self.state.failed,
            "records": ledger.committed_counts(result_key),
            "run": {
                "records": self.state.records,
                "bytes_read": self.state.bytes_read,
                "malformed": diagnosed.malformed,
                "duration_s": round(time.time() - started, 3),
            },
            "malformed_files": diagnosed.malformed_files,
            "malformed_by_file": diagnosed.by_file(),
            "failures": self.state.failures,
            "warnings": warnings,
            "executor": self.state.executor,
            "workers": self.state.workers,
        }
        if budget is not None and self.state.failed >= budget:
            report["stopped_by"] = f"max_failures ({budget})"
        if self.state.fatal:
            report["error"] = self.state.fatal
        try:
            merge.write_json(self.out_dir / merge.REPORT_NAME, report)
        except OSError as exc:
            raise StoreError(f"{self.out_dir}: cannot write report.json: {exc}") from exc
        ledger.finish_run(run_id, status, exit_code, report)
        parts.remove_unreferenced(str(self.parts_dir), ledger.part_names())
        html_path = self._write_html_report(ledger)
        for warning in warnings:
            log.warning("%s", warning)
        for line in summary_lines(report, stats, str(self.out_dir)):
            log.info("%s", line)  # on the console unless --quiet; always in --log-file
        if html_path is not None:
            log.info("report: %s", html_path)
        return RunResult(exit_code, report, stats)

    def _write_html_report(self, ledger: Ledger) -> Path | None:
        """``report.html`` (``output.report_html``), from the store as it now stands. The
        run's outcome is settled and recorded: a report that cannot be drawn is a warning,
        never a different exit code. A page not written this time is removed, so it never
        shows an older run than report.json does."""
        from pipeline import htmlreport

        path = self.out_dir / htmlreport.REPORT_HTML_NAME
        if self.cfg.output.report_html:
            if not htmlreport.available():
                log.warning(
                    "report.html not written: %s; or set output.report_html: false",
                    htmlreport.INSTALL_HINT,
                )
            else:
                from pipeline import runview

                try:
                    view = runview.load(self.out_dir, ledger, run_holds_lock=True)
                    htmlreport.write(view, path)
                except Exception as exc:  # the run is over: its page must not undo it
                    log.warning("report.html not written: %s: %s", type(exc).__name__, exc)
                    log.debug("report.html", exc_info=True)
                else:
                    return path
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None


def _estimate_s(plan: Plan) -> float:
    """Rough seconds of work in the tasks planned to run (for the tiny-job rule)."""
    return plan.run_bytes / TINY_RATE + plan.n_run * TINY_PER_TASK_S


def _reason_text(plan: Plan) -> str:
    counts = plan.reasons()
    counts.pop("unchanged", None)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items())) or "nothing new"


def run(cfg: PipelineConfig, options: RunOptions) -> RunResult:
    return Run(cfg, options).execute()


def plan_line(task: TaskSpec) -> str:
    return f"{task.reason:<15} {task.path}  {task.describe_range()}"

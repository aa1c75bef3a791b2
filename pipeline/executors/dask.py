"""Tasks on a Dask cluster, with the same guarantees as the process executor.

Data flow (``Cluster`` in ``executors.cluster`` is all the code that talks to Dask)::

    batches ──> Schedule (window: 2 per worker thread; retries and lost batches first)
       │ each batch pinned to a worker with room: submit(pickle.loads, payload)
       ▼
    Dask worker: remote.run_remote: announce start (acknowledged; a local cluster's: in a
       │ file) ──> worker.execute(job, batch) ──> (pickled results, the part's records,
       │ compressed for a remote cluster)
       ▼ events: done / start / worker removed / worker added
    this loop (main thread): part file written (tmp, fsync, rename) ──> on_outcome

The output store stays on this machine: workers never see ``output.dir``; a batch's
records come back with its result and this process writes the part file before the
runner commits the batch. Only the client writes the ledger.

Why each batch is pinned to one worker: the scheduler, left to itself, reruns a task
whose worker died, up to ``allowed-failures`` times, behind the client's back; ``retries``
must be the one retry policy. A pinned task whose worker is gone waits instead, and this
loop decides: the batches that had announced their start on that worker are charged an
attempt (``crashed``, with the nanny's word on how the process ended when it is known),
those only queued there go round again for free. A batch past ``timeout`` is charged
(``timeout``), and its worker — whose thread no cancel can stop — is told to exit; its
nanny starts a fresh one, and the other batches it held go round again for free.

A first stop signal: nothing more is submitted, batches that have not started are
cancelled (they stay pending for the next run), the started ones get ``grace``; a second
signal, or the end of grace, cancels the rest. A lost scheduler ends the run (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import pickle
import queue
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline import __version__
from pipeline import bundle as bundles
from pipeline.errors import ExecutionError
from pipeline.executors.base import (
    WINDOW_PER_WORKER,
    Background,
    ExecutorOptions,
    Fault,
    Idle,
    OnOutcome,
    Schedule,
    StopCheck,
    WorkerActivity,
    error_results,
)
from pipeline.executors.shield import start_forkserver
from pipeline.models import Batch, TaskResult
from pipeline.planning import DASK_BATCHES, DASK_RECORD_BATCHES, BatchShape
from pipeline.store.parts import part_writer

if TYPE_CHECKING:
    from pipeline.executors.cluster import Cluster, WorkerInfo

log = logging.getLogger(__name__)

NO_WORKERS_S = 60.0  # a cluster without a worker for this long ends the run
STOP_ESCALATE_S = 5.0  # a worker told to exit and still there: its nanny restarts it
WORKERS_REFRESH_S = 2.0  # how often the worker list is checked besides the events
MAX_FREE_LOSSES = 3  # a batch lost this often with workers it had not started on is charged
BARREN_LOSSES_PER_WORKER = 3  # worker deaths in a row without a finished batch, per worker
EVENT_ORDER = {"start": 0, "removed": 1}  # then the others, as they came (see with_waiting)
WORKER_PRELOAD = ["distributed", "pipeline.remote"]  # all a local cluster's worker imports
STARTS_PREFIX = "pipeline-starts-"  # a run's folder for its local workers' start records


@dataclass(frozen=True)
class DaskOptions:
    """The dask executor's own options."""

    address: str | None = None  # None: a local cluster of ``workers`` processes
    dashboard: str | None = None  # where the local cluster serves its dashboard (none: off)
    config_dir: str = "."  # its Python modules and packages are shipped to the workers
    plugin_name: str = "pipeline"  # stable per job: a later run replaces the plugin
    debug: bool = False  # dask's own logs on the console


def remote_codecs(local: bool) -> tuple[str, ...]:
    """How the workers may compress the records they send back: not at all to this
    machine's own workers; zstd (when this process can read it) or zlib to a remote one."""
    if local:
        return ()
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return ("zlib",)
    return ("zstd", "zlib")


def make_starts_dir() -> str:
    """A folder of this run's for its local workers' start records, named by this process
    (those of runs that a ``kill -9`` left behind are removed now)."""
    root = tempfile.gettempdir()
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            pid = entry.name.removeprefix(STARTS_PREFIX).split("-", 1)[0]
            if entry.name.startswith(STARTS_PREFIX) and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(entry.path, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{STARTS_PREFIX}{os.getpid()}-", dir=root)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DaskExecutor:
    def __init__(self, options: ExecutorOptions, dask: DaskOptions) -> None:
        self.options = options
        self.dask = dask
        self._modules: bundles.Bundle | None = None
        self._cluster: Cluster | None = None
        self._busy = False  # tasks were left running: a local cluster is killed, not closed
        self.starts_dir: str | None = None  # where a local cluster's workers write starts
        self._loop: _Loop | None = None  # the run going on (``activity`` reads it)

    @property
    def batch_shape(self) -> BatchShape:
        """Coarse (a Dask task costs milliseconds), less so when records come back."""
        return DASK_RECORD_BATCHES if self.options.job.write_records else DASK_BATCHES

    def prepare(self) -> None:
        """Collect the modules to ship (too many: a config error), and reach a remote
        scheduler now, before the store is touched (a bad address is a usage error). A
        local cluster starts with the first batch: a run with nothing to do starts none."""
        self._modules = bundles.collect(self.dask.config_dir)
        if self.dask.address is not None:
            self._connect()

    def _connect(self) -> Cluster:
        if self._cluster is None:
            method = None
            if self.dask.address is None:  # its workers, forked from a server that imports
                # dask on the other core while this process does the same (0.3 s each)
                method = "forkserver" if start_forkserver(WORKER_PRELOAD) else "spawn"
                self.starts_dir = make_starts_dir()
            from pipeline.executors.cluster import Cluster  # imports dask.distributed

            if self._modules is None:
                self._modules = bundles.collect(self.dask.config_dir)
            cluster = Cluster(
                self.dask.address,
                self.options.workers,
                self.dask.debug,
                self.dask.dashboard,
                method,
            )
            self._cluster = cluster
            cluster.connect()
            cluster.install(self._modules, self.dask.plugin_name)
        return self._cluster

    def parallelism(self) -> int:
        """Worker threads of the cluster (a local cluster's workers before it starts)."""
        if self._cluster is None or self._cluster.local is not None:
            return self.options.workers
        return max(1, sum(w.nthreads for w in self._cluster.workers().values()))

    def describe(self) -> str:
        if self.dask.address is None:
            return f"dask (a local cluster of {self.options.workers} worker processes)"
        return f"dask (scheduler {self.dask.address})"

    def run(
        self,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None = None,
    ) -> None:
        cluster = self._connect()
        loop = _Loop(self, cluster, batches, on_outcome, should_stop, stop_now, background)
        self._loop = loop
        try:
            loop.run()
        finally:
            self._loop = None
            if loop.flights:
                self._busy = True
                cluster.cancel(list(loop.flights))

    def activity(self) -> list[WorkerActivity]:
        """The batches on the cluster that announced their start: on which worker (its
        pid, where known), at which task, since when; the others are queued. Called from
        another thread: it only copies what the loop changes."""
        loop = self._loop
        if loop is None:
            return []
        found = []
        now_wall, now = time.time(), time.monotonic()
        for flight in list(loop.flights.values()):
            if flight.started is None:
                continue
            where = flight.worker + (f" (pid {flight.pid})" if flight.pid else "")
            since = now_wall - (now - flight.started)
            found.append(WorkerActivity.of(where, flight.batch, since, flight.task))
        return found

    def close(self) -> None:
        if self._cluster is not None:
            cluster, self._cluster = self._cluster, None
            cluster.uninstall(self.dask.plugin_name)
            cluster.close(busy=self._busy)
        if self.starts_dir is not None:
            shutil.rmtree(self.starts_dir, ignore_errors=True)
            self.starts_dir = None


@dataclass(eq=False)  # compared by identity: two attempts are never the same
class _Flight:
    """A batch submitted to the cluster, as one attempt (one task key)."""

    batch: Batch
    worker: str
    started: float | None = None  # monotonic time its (task's) start announcement arrived
    task: int = 0  # the task of the batch that announced its start last
    pid: int | None = None
    host: str | None = None

    def fault(self, kind: str, message: str) -> Fault:
        """A fault of this attempt, stamped with when (epoch) and where it began."""
        began = time.time() - (time.monotonic() - self.started) if self.started else 0.0
        return Fault(kind, message, began, self.host or "", self.pid or 0)

    def culprit(self, each_task: bool) -> str | None:
        """The task to blame for a fault of this attempt, when the batch announces each
        task (else the whole batch is)."""
        return self.batch.tasks[self.task].task_id if each_task else None


class _Loop:
    """One ``run`` of the executor: the schedule, the tasks on the cluster, its workers."""

    def __init__(
        self,
        executor: DaskExecutor,
        cluster: Cluster,
        batches: Iterator[Batch],
        on_outcome: OnOutcome,
        should_stop: StopCheck,
        stop_now: StopCheck,
        background: Background | None,
    ) -> None:
        from pipeline import remote  # the worker side of a task: imports dask.distributed

        options = executor.options
        self.remote = remote
        self.options = options
        self.cluster = cluster
        self.where = executor.describe()  # for messages
        self.plugin = executor.dask.plugin_name
        self.job = dataclasses.replace(options.job, records_back=True, import_dirs=())
        self.starts_dir = executor.starts_dir  # a local cluster's workers write starts there
        self.codecs = remote_codecs(cluster.local is not None)
        self.schedule = Schedule(batches, window=1, retries=options.retries)
        self.on_outcome = on_outcome
        self.should_stop = should_stop
        self.stop_now = stop_now
        self.idle = Idle(background)
        self.token = secrets.token_hex(8)
        self.serial = itertools.count(1)
        self.flights: dict[str, _Flight] = {}  # by task key, in submission order
        self.workers: dict[str, WorkerInfo] = {}
        self.gone: dict[str, WorkerInfo] = {}  # workers removed, for their nanny's logs
        self.stopped: dict[str, float] = {}  # workers told to exit, and when
        self.free_losses: Counter[str] = Counter()
        self.barren = 0
        self.barren_limit = BARREN_LOSSES_PER_WORKER * max(1, options.workers)
        self.stop_deadline: float | None = None
        self.no_workers_since: float | None = None
        self.next_refresh = 0.0
        self.missing: set[str] = set()  # workers the last refresh did not find

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.refresh_workers()
        self.barren_limit = BARREN_LOSSES_PER_WORKER * max(1, len(self.workers))
        while True:
            self.submit_ready()
            if self.schedule.finished():
                return
            if self.check():
                return
            try:
                first = self.cluster.events.get(timeout=self.idle.wait(self.schedule))
            except queue.Empty:
                self.idle.work(self.schedule)
                continue
            for event in self.with_waiting(first):
                self.handle(event)

    def with_waiting(self, event: tuple[str, Any]) -> list[tuple[str, Any]]:
        """``event`` and those queued behind it, starts first, then workers' removals: a
        task done on a worker that has died since cannot be fetched, and is settled with
        the rest of that worker's batches instead; but a batch's start, which the
        scheduler relays before the death of its worker, must be known by then."""
        events = [event]
        with contextlib.suppress(queue.Empty):
            while True:
                events.append(self.cluster.events.get_nowait())
        return sorted(events, key=lambda item: EVENT_ORDER.get(item[0], len(EVENT_ORDER)))

    def check(self) -> bool:
        """True: stop now, abandoning what runs. Raises when the scheduler is lost."""
        if not self.cluster.healthy():
            raise ExecutionError(
                f"lost the connection to the Dask scheduler ({self.where}); "
                "the tasks not finished stay pending for the next run"
            )
        self.observe()
        if self.should_stop() and not self.schedule.stopping:
            self.begin_stop()
        now = time.monotonic()
        if self.stop_now() or (self.stop_deadline is not None and now > self.stop_deadline):
            return True
        self.check_timeouts(now)
        if now >= self.next_refresh:
            self.refresh_workers()
        return False

    def handle(self, event: tuple[str, Any]) -> None:
        kind, value = event
        if kind == "done":
            self.finish(value)
        elif kind == "start":
            self.started(value)
        elif kind == "removed":
            self.lose_worker(value)
        elif kind == "added":
            self.next_refresh = 0.0

    # --- submitting ----------------------------------------------------------------------

    def capacity(self, address: str) -> int:
        return WINDOW_PER_WORKER * self.workers[address].nthreads

    def free_worker(self) -> str | None:
        """The usable worker with the most room (ties: by address), or None."""
        load = Counter(flight.worker for flight in self.flights.values())
        best, best_room = None, 0.0
        for address in sorted(self.workers):
            if address in self.stopped:
                continue
            room = 1.0 - load[address] / self.capacity(address)
            if room > best_room:
                best, best_room = address, room
        return best

    def submit_ready(self) -> None:
        remote = self.remote
        while (address := self.free_worker()) is not None:
            item = self.schedule.take()
            if item is None and self.rebalance():
                item = self.schedule.take()
            if item is None:
                return
            batch, attempt = item
            key = f"pipeline-{self.token}-{next(self.serial)}-a{attempt}-{batch.batch_id[:12]}"
            args = (
                self.token,
                key,
                self.plugin,
                self.job,
                batch,
                self.codecs,
                __version__,
                self.starts_dir,
            )
            payload = pickle.dumps(
                remote.RemoteCall(remote.run_remote, args), protocol=pickle.HIGHEST_PROTOCOL
            )
            self.flights[key] = _Flight(batch, address)
            self.cluster.submit(key, payload, address)

    def rebalance(self) -> bool:
        """Nothing is left to submit and a worker is idle: a batch waiting behind another
        one on a busy worker moves to it (else, pinned, it would wait there while this
        worker idles to the end of the run). True if one moved."""
        load = Counter(flight.worker for flight in self.flights.values())
        idle = [a for a in self.workers if a not in self.stopped and not load[a]]
        if not idle or self.schedule.stopping:
            return False
        self.observe()
        waiting = [
            flight
            for flight in reversed(self.flights.values())
            if flight.started is None and load[flight.worker] > 1
        ]
        if not waiting:
            return False
        flight = waiting[0]
        self.drop([flight])
        self.schedule.release(flight.batch.batch_id)
        return True

    # --- events --------------------------------------------------------------------------

    def started(self, message: Any) -> None:
        if not isinstance(message, dict) or message.get("run") != self.token:
            return
        flight = self.flights.get(message.get("key", ""))
        task = message.get("task")
        if flight is None or not isinstance(task, int) or not 0 <= task < len(flight.batch.tasks):
            return
        if flight.started is None:
            flight.pid = message.get("pid")
            flight.host = message.get("host")
        elif task <= flight.task:
            return  # seen already (a local worker's record is read again and again)
        flight.started = time.monotonic()  # of the batch, then of each of its tasks
        flight.task = task

    def observe(self, addresses: list[str] | None = None) -> None:
        """A local cluster's workers write their starts in files of ``starts_dir``: read
        them (for the workers that hold batches, or ``addresses``)."""
        if self.starts_dir is None:
            return
        if addresses is None:
            addresses = list({flight.worker for flight in self.flights.values()})
        for address in addresses:
            message = self.remote.read_local_start(self.remote.start_file(self.starts_dir, address))
            if message is not None:
                self.started(message)

    def finish(self, key: str) -> None:
        flight = self.flights.get(key)
        status, value = self.cluster.outcome(key)
        if flight is None:
            return  # cancelled by this loop: already settled
        if status == "error" and type(value).__name__ == "KilledWorker":
            self.lose_worker(flight.worker)  # the scheduler's word that the worker died
            return
        del self.flights[key]
        batch = flight.batch
        if status == "finished":
            self.barren = 0
            results = self.results_of(batch, value)
            self.deliver(self.schedule.retire(batch.batch_id, results))
        elif status == "error":
            message = f"{type(value).__name__}: {value}"
            self.deliver(
                self.schedule.retire(batch.batch_id, error_results(batch, "error", message))
            )
        else:  # lost (its worker died before the result was fetched), or cancelled
            if status == "cancelled" and not self.cluster.healthy():
                self.check()  # raises: the scheduler is gone
            lost = flight.fault("abandoned", "its result was lost") if flight.started else None
            self.deliver(self.schedule.release(batch.batch_id, lost=lost))  # not to blame

    def results_of(self, batch: Batch, value: Any) -> list[TaskResult]:
        """The batch's results from what its task returned, once its part file is written."""
        try:
            meta, part = value
            output, header = pickle.loads(meta)
            if part:
                data = self.remote.decompress(header.codec, part)
                with part_writer(self.options.job.parts_dir, batch.part_name) as handle:
                    handle.write(data)
        except OSError as exc:
            return error_results(batch, "error", f"cannot write {batch.part_name}: {exc}")
        except Exception as exc:
            return error_results(batch, "error", f"unreadable result: {type(exc).__name__}: {exc}")
        return output.results

    def deliver(self, outcome: Any) -> None:
        if outcome is not None:
            self.on_outcome(outcome)

    # --- losses: dead workers, timeouts, stops -------------------------------------------

    def drop(self, flights: list[_Flight]) -> None:
        """Forget these attempts (their tasks are cancelled on the cluster)."""
        keys = [key for key, flight in self.flights.items() if flight in flights]
        for key in keys:
            del self.flights[key]
        self.cluster.cancel(keys)

    def on_worker(self, address: str) -> list[_Flight]:
        return [flight for flight in self.flights.values() if flight.worker == address]

    def lose_worker(self, address: str | None) -> None:
        """A worker left (died, or was stopped): settle every batch it held."""
        if address is None:
            return
        self.observe([address])  # what it had started, before it is forgotten
        info = self.workers.pop(address, None)
        if info is not None:
            self.gone[address] = info
        self.stopped.pop(address, None)
        self.next_refresh = 0.0
        victims = self.on_worker(address)
        self.drop(victims)
        if any(flight.started is not None for flight in victims):
            self.barren += 1
        for flight in reversed(victims):  # released to the front: keep their order
            batch_id = flight.batch.batch_id
            fault = culprit = None
            if flight.started is not None:
                fault = flight.fault("crashed", self.crash_message(address, flight))
                culprit = flight.culprit(self.remote.announces_each_task(flight.batch))
            else:
                self.free_losses[batch_id] += 1
                if self.free_losses[batch_id] > MAX_FREE_LOSSES:
                    fault = Fault(
                        "crashed",
                        f"lost with {self.free_losses[batch_id]} Dask workers that "
                        "left before it could start",
                    )
            self.deliver(self.schedule.release(batch_id, fault, culprit))
        if self.barren >= self.barren_limit and not self.schedule.stopping:
            raise ExecutionError(
                f"Dask workers keep dying before finishing any task (the last: {address}); "
                "is a plugin crashing the interpreter?"
            )

    def crash_message(self, address: str, flight: _Flight) -> str:
        where = f"pid {flight.pid} on {flight.host}" if flight.pid else "its process"
        how = "died"
        if self.schedule.final_attempt(flight.batch.batch_id):  # it goes into the report
            note = self.cluster.death_note(self.gone.get(address), flight.pid)
            if note:
                how = note
        return f"the Dask worker {address} ({where}) {how} while running the task"

    def check_timeouts(self, now: float) -> None:
        timeout = self.options.timeout
        if timeout is None:
            return
        overdue = [
            flight
            for flight in self.flights.values()
            if flight.started is not None and now - flight.started > timeout
        ]
        for flight in overdue:
            if flight in self.flights.values():  # not dropped with an earlier one's worker
                self.time_out(flight, timeout)

    def time_out(self, flight: _Flight, timeout: float) -> None:
        """The batch is charged; its worker, whose thread runs on regardless, is told to
        exit; the other batches it held go round again for free."""
        address = flight.worker
        held = self.on_worker(address)
        self.drop(held)
        self.stopped[address] = time.monotonic()
        self.cluster.stop_worker(address)
        message = (
            f"task ran longer than the timeout ({timeout:g}s); its Dask worker {address} "
            f"(pid {flight.pid} on {flight.host}) was stopped"
        )
        culprit = flight.culprit(self.remote.announces_each_task(flight.batch))
        for other in reversed(held):
            if other is flight:
                fault = flight.fault("timeout", message)
                self.deliver(self.schedule.release(other.batch.batch_id, fault, culprit))
            else:
                lost = other.fault("abandoned", message) if other.started else None
                self.deliver(self.schedule.release(other.batch.batch_id, lost=lost))

    def begin_stop(self) -> None:
        self.observe()
        self.schedule.stop()
        self.stop_deadline = time.monotonic() + self.options.grace
        waiting = [flight for flight in self.flights.values() if flight.started is None]
        self.drop(waiting)  # never started: pending for the next run
        for flight in waiting:
            self.schedule.release(flight.batch.batch_id)
        if self.flights:
            log.warning(
                "stopping: waiting up to %gs for %d batch(es) of tasks running on the cluster",
                self.options.grace,
                len(self.flights),
            )

    # --- the workers ---------------------------------------------------------------------

    def refresh_workers(self) -> None:
        """The cluster's workers as the scheduler sees them: joiners get work, leavers'
        batches are settled (should their event have been lost), a worker told to exit
        that is still there is restarted by its nanny, and a cluster with none for
        ``NO_WORKERS_S`` ends the run."""
        now = time.monotonic()
        self.next_refresh = now + WORKERS_REFRESH_S
        current = self.cluster.workers()
        # A worker this answer no longer has is settled when its removal event comes
        # (after the start events of its batches); missing twice, the event was lost.
        missing = {a for a in self.workers if a not in current}
        for address in missing & self.missing:
            self.lose_worker(address)
        self.missing = missing
        for address, info in current.items():
            self.workers.setdefault(address, info)
            since = self.stopped.get(address)
            if since is not None and now - since > STOP_ESCALATE_S:
                self.stopped[address] = now + NO_WORKERS_S  # once
                log.warning("Dask worker %s did not exit; restarting it", address)
                self.cluster.restart_worker(address)
        usable = [a for a in self.workers if a not in self.stopped]
        self.schedule.window = max(1, sum(self.capacity(a) for a in usable))
        if usable:
            self.no_workers_since = None
        elif self.no_workers_since is None:
            self.no_workers_since = now
        elif now - self.no_workers_since > NO_WORKERS_S and not self.schedule.finished():
            raise ExecutionError(
                f"the Dask cluster ({self.where}) has had no worker for "
                f"{NO_WORKERS_S:g}s; the tasks not finished stay pending for the next run"
            )

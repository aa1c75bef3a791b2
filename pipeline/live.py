"""The live view of a run: counters, rates, the stats so far and what each worker is on,
in a ``Manager`` dict that another process (``pipeline status``) can read.

The main process merges each committed batch's partials once (never per record) into its
own running total; the view is built from it and published under the ``Lock`` in one
``update``, at most every ``publish_every`` seconds (and once at the end), so the cost of
the live view stays bounded however many tiny tasks there are. The stats are published
finalised (small, JSON-able), never as partials (a set of distinct values can be large).
A thread of its own publishes while no batch is committed (a long task), so the view and
its workers stay current. The same running total is this run's share of
``stats.json``, which adds the partials the ledger keeps for tasks of earlier runs; the
view is only ever a copy. A broken Manager (it died, or a signal reached it) only disables
the live view; the run goes on.

The Manager's address and key are published in ``live.json`` in the output folder (owner
only: the key lets its reader talk to the Manager), removed when the run ends. After a
``kill -9`` the file stays, but the lock is free: readers ignore it, the next run replaces it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pipeline import aggregates
from pipeline.models import TaskResult
from pipeline.store.atomic import TMP_PREFIX

log = logging.getLogger(__name__)

ADDRESS_NAME = "live.json"
ADDRESS_MODE = 0o600  # it holds the Manager's key
LOCK_WAIT_S = 1.0  # a reader holds the view's lock for one copy of the dict
PUBLISHER_JOIN_S = 5.0  # a Manager round trip that hangs must not hold up the run's end


class PlanTotals(NamedTuple):
    """The plan as far as it is made: it grows while the run goes."""

    tasks: int
    nbytes: int
    complete: bool


@dataclass(frozen=True)
class RunFacts:
    """What the view says about the run itself."""

    run_id: int
    pid: int
    started: float  # epoch seconds
    executor: str


def build_view(
    counts: Mapping[str, int],
    totals: PlanTotals | None,
    stats: dict[str, Any],
    workers: list[dict[str, Any]],
    facts: RunFacts | None,
    elapsed: float,
) -> dict[str, Any]:
    """The published view (JSON-able): counters, plan totals, rates since the start, an
    ETA once the plan is complete, the stats so far and the workers' current tasks."""
    elapsed = max(elapsed, 1e-9)
    bytes_rate = counts["bytes_read"] / elapsed
    view: dict[str, Any] = dict(counts)
    view.update(
        elapsed_s=round(elapsed, 3),
        records_per_s=round(counts["records_in"] / elapsed, 1),
        bytes_per_s=round(bytes_rate, 1),
        stats=stats,
        workers=workers,
        updated=round(time.time(), 3),
    )
    if totals is not None:
        left = max(totals.nbytes - counts["bytes_read"], 0)
        eta = left / bytes_rate if totals.complete and bytes_rate > 0 else None
        view.update(
            tasks_total=totals.tasks,
            bytes_total=totals.nbytes,
            planning_done=totals.complete,
            eta_s=None if eta is None else round(eta, 1),
        )
    if facts is not None:
        view.update(
            run_id=facts.run_id, pid=facts.pid, started=facts.started, executor=facts.executor
        )
    return view


class LiveStats:
    def __init__(
        self,
        mapping: MutableMapping[str, Any],
        lock: Any,
        specs: Mapping[str, Mapping[str, Any]],
        publish_every: float = 0.0,
        *,
        facts: RunFacts | None = None,
        totals: Callable[[], PlanTotals] | None = None,
        activity: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self._mapping = mapping
        self._publish_every = publish_every
        self._published = float("-inf")
        self._lock = lock
        self._specs = specs
        self._facts = facts
        self._totals = totals
        self._activity = activity
        self._started = time.monotonic()
        self._partials: dict | None = None
        self._stats: dict[str, Any] | None = None  # finalised ``_partials``, made lazily
        self._counts = {
            "tasks_done": 0,
            "tasks_failed": 0,
            "records_in": 0,
            "records_out": 0,
            "malformed": 0,
            "bytes_read": 0,
        }
        # ``add`` (main thread) and ``publish`` (also the Publisher's thread) take turns.
        self._guard = threading.Lock()
        self.view: dict[str, Any] = {}  # the last view published (bars read it)
        self.enabled = True
        self._stop = threading.Event()
        self._publisher: threading.Thread | None = None

    @property
    def partials(self) -> dict | None:
        """The merged partials of every done task added so far (not to be mutated)."""
        return self._partials

    def add(self, results: Sequence[TaskResult]) -> None:
        """Committed results (a batch's): one merge for all of them. A result carrying
        ``packed`` stands for the batch's packed files, with their merge and totals."""
        done = [r for r in results if r.ok]
        partials = [r.packed.merged if r.packed is not None else r.partials for r in done]
        with self._guard:
            if partials:
                self._partials = aggregates.merge_many(self._specs, [self._partials, *partials])
                self._stats = None
            counts = self._counts
            for r in results:
                if r.packed is not None:
                    counts["tasks_done"] += r.packed.files
                    counts["records_in"] += r.packed.records_in
                    counts["records_out"] += r.packed.records_out
                    counts["malformed"] += r.packed.malformed
                    counts["bytes_read"] += r.packed.bytes_read
                else:
                    counts["tasks_done" if r.ok else "tasks_failed"] += 1
                    counts["records_in"] += r.records_in
                    counts["records_out"] += r.records_out
                    counts["malformed"] += r.malformed
                    counts["bytes_read"] += r.bytes_read
        self.publish_if_due()

    def publish_if_due(self) -> None:
        """``publish``, unless the last one was less than ``publish_every`` ago."""
        if time.monotonic() - self._published >= self._publish_every:
            self.publish()

    def publish(self) -> None:
        """Put the view in the shared dict (one ``update`` under the lock)."""
        with self._guard:
            self._published = time.monotonic()
            view = self._build()
            self.view = view
            if not self.enabled:
                return
            try:
                # A reader (``pipeline status``) killed while it held the lock leaves it
                # held for good: the run skips this update rather than wait on it.
                if not self._lock.acquire(True, LOCK_WAIT_S):
                    log.debug("live view not updated: its lock is held elsewhere")
                    return
                try:
                    self._mapping.update(view)
                finally:
                    self._lock.release()
            except (OSError, EOFError) as exc:
                log.warning("live stats disabled: the Manager process is gone (%s)", exc)
                self.enabled = False

    def _build(self) -> dict[str, Any]:
        workers: list[dict[str, Any]] = []
        if self._activity is not None:
            try:
                workers = self._activity()
            except Exception:  # the view must never stop a run
                log.debug("cannot tell what the workers are on", exc_info=True)
        return build_view(
            self._counts,
            self._totals() if self._totals is not None else None,
            self._finalised(),
            workers,
            self._facts,
            time.monotonic() - self._started,
        )

    def _finalised(self) -> dict[str, Any]:
        if self._stats is None:
            self._stats = aggregates.finalize(self._specs, self._partials)
        return self._stats

    def start_publisher(self) -> None:
        """Publish from a thread of our own too, every ``publish_every`` seconds, so the
        view stays current while no batch is committed (long tasks, planning)."""
        self._publisher = threading.Thread(target=self._publish_loop, name="live-view", daemon=True)
        self._publisher.start()

    def _publish_loop(self) -> None:
        while not self._stop.wait(self._publish_every) and self.enabled:
            try:
                self.publish_if_due()
            except Exception:  # the view must never stop a run, nor print a traceback
                log.warning("live stats disabled: cannot publish the view", exc_info=True)
                self.enabled = False

    def stop_publisher(self) -> None:
        self._stop.set()
        if self._publisher is not None:
            self._publisher.join(PUBLISHER_JOIN_S)
            self._publisher = None

    def snapshot(self) -> dict[str, Any]:
        """The stats as they stand (finalised), for progress and the end summary."""
        with self._guard:
            return self._finalised()


# --- the address file ---------------------------------------------------------------------


@dataclass(frozen=True)
class LiveAddress:
    """How to reach a run's live view: its Manager and the ids of the dict and lock."""

    address: str | tuple[str, int]
    authkey: bytes
    dict_id: str
    lock_id: str
    pid: int
    run_id: int

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "authkey": self.authkey.hex(),
            "dict_id": self.dict_id,
            "lock_id": self.lock_id,
            "pid": self.pid,
            "run_id": self.run_id,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LiveAddress:
        """Raises KeyError, TypeError or ValueError on a malformed file."""
        address = data["address"]
        if isinstance(address, list):  # a TCP address: (host, port)
            address = (str(address[0]), int(address[1]))
        elif not isinstance(address, str):
            raise TypeError("address")
        return cls(
            address,
            bytes.fromhex(data["authkey"]),
            str(data["dict_id"]),
            str(data["lock_id"]),
            int(data["pid"]),
            int(data["run_id"]),
        )


def address_path(out_dir: Path) -> Path:
    return out_dir / ADDRESS_NAME


def write_address(out_dir: Path, live: LiveAddress) -> None:
    """``live.json``, mode 0600 from its creation (``mkstemp``), renamed into place."""
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=TMP_PREFIX, suffix=".tmp")
    try:
        os.fchmod(fd, ADDRESS_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(live.to_json(), handle)
        os.replace(tmp, address_path(out_dir))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_address(out_dir: Path) -> LiveAddress | None:
    """The address a run published, or None (no file, or not one a run wrote)."""
    try:
        data = json.loads(address_path(out_dir).read_text(encoding="utf-8"))
        return LiveAddress.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


def remove_address(out_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        address_path(out_dir).unlink()

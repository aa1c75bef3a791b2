"""The live view of a run: aggregate stats and counters in a ``Manager`` dict.

The main process merges each committed batch's partials once (never per record) into its
own running total and publishes it under the ``Lock`` in one ``update``, at most every
``publish_every`` seconds (and once at the end), so the cost of the live view stays
bounded however many tiny tasks there are and however large the stats grow. Other
processes (a monitor) may read the dict. The same running total is this run's share of
``stats.json``, which adds the partials the ledger keeps for tasks of earlier runs. A
broken Manager (it died, or a signal reached it) only disables the live view; the run
goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from pipeline import aggregates
from pipeline.models import TaskResult

log = logging.getLogger(__name__)


class LiveStats:
    def __init__(
        self,
        mapping: MutableMapping[str, Any],
        lock: Any,
        specs: Mapping[str, Mapping[str, Any]],
        publish_every: float = 0.0,
    ) -> None:
        self._mapping = mapping
        self._publish_every = publish_every
        self._published = float("-inf")
        self._lock = lock
        self._specs = specs
        self._partials: dict | None = None
        self._counts = {"tasks_done": 0, "tasks_failed": 0, "records_in": 0, "records_out": 0}
        self.enabled = True

    @property
    def partials(self) -> dict | None:
        """The merged partials of every done task added so far (not to be mutated)."""
        return self._partials

    def add(self, results: Sequence[TaskResult]) -> None:
        """Committed results (a batch's): one merge for all of them. A result carrying
        ``packed`` stands for the batch's packed files, with their merge and totals."""
        done = [r for r in results if r.ok]
        partials = [r.packed.merged if r.packed is not None else r.partials for r in done]
        if partials:
            self._partials = aggregates.merge_many(self._specs, [self._partials, *partials])
        counts = self._counts
        for r in results:
            if r.packed is not None:
                counts["tasks_done"] += r.packed.files
                counts["records_in"] += r.packed.records_in
                counts["records_out"] += r.packed.records_out
            else:
                counts["tasks_done" if r.ok else "tasks_failed"] += 1
                counts["records_in"] += r.records_in
                counts["records_out"] += r.records_out
        if time.monotonic() - self._published >= self._publish_every:
            self.publish()

    def publish(self) -> None:
        """Put the running totals in the shared dict (one ``update`` under the lock)."""
        self._published = time.monotonic()
        if not self.enabled:
            return
        try:
            with self._lock:
                self._mapping.update(partials=self._partials, **self._counts)
        except (OSError, EOFError) as exc:
            log.warning("live stats disabled: the Manager process is gone (%s)", exc)
            self.enabled = False

    def snapshot(self) -> dict[str, Any]:
        """The stats as they stand (finalised), for progress and the end summary."""
        return aggregates.finalize(self._specs, self._partials)

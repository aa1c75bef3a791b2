"""The live view of a run: aggregate stats and counters in a ``Manager`` dict.

The main process merges each finished task's partial once (never per record) into its own
running total and publishes it under the ``Lock`` in one ``update`` — at most every
``publish_every`` seconds (and once at the end), so the cost of the live view stays
bounded however many tiny tasks there are and however large the stats grow. Other
processes (a monitor) may read the dict; ``stats.json`` never comes from here but from the
ledger. A broken Manager (it died, or a signal reached it) only disables the live view;
the run goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from pipeline import aggregates

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

    def add(self, ok: bool, partials: dict | None, records_in: int, records_out: int) -> None:
        if ok:
            self._partials = aggregates.merge_partials(self._specs, self._partials, partials)
            self._counts["tasks_done"] += 1
        else:
            self._counts["tasks_failed"] += 1
        self._counts["records_in"] += records_in
        self._counts["records_out"] += records_out
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

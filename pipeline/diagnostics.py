"""What a run's results say about its input, for the person who wrote the config.

Workers send, per task, the malformed count and the first malformed records with their
reasons (``TaskResult.rejected``); this collects them over a run, in the main process:
the run's first ``MALFORMED_SAMPLE_SIZE`` malformed records by path, then position (so
the sample is the same whatever the worker count or chunk size: each task sends its own
first ones, which include every record of the run's first ones that it holds), the
malformed count per file, and the warnings that point at a config mistake: a field named
by a stat that no record had (a typo, often), a file whose every record was malformed
(the wrong regex or format, often). All of it is derived from per-task totals and the
merged partials, never from a look at each record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.discovery import path_sort_key
from pipeline.linenumbers import LineFinder
from pipeline.models import MALFORMED_SAMPLE_SIZE, PackedTasks, Rejected, TaskResult, TaskSpec

FILES_SHOWN = 100  # files named in report.json's malformed_by_file (the worst ones)
FILES_WARNED = 10  # files named by "every record was malformed" warnings, at most

_FIELD_STATS = ("sum", "mean", "min", "max", "count_by", "top")


@dataclass
class _FileCounts:
    """One input file's counts over this run's done tasks (for files with malformed
    records, and for files split into several tasks, whose totals need every task)."""

    compression: str | None
    records_in: int = 0
    malformed: int = 0
    first: Rejected | None = None


class InputDiagnostics:
    """This run's malformed records and the warnings about its input (main process)."""

    def __init__(self) -> None:
        self.lines = LineFinder()  # also names failures' lines
        self.records_out = 0
        self.malformed = 0
        self._files: dict[str, _FileCounts] = {}
        # (path key, position, reason, path): at most a few samples' worth between trims
        self._sample: list[tuple[bytes, int, str, str]] = []

    def add(self, task: TaskSpec, result: TaskResult) -> None:
        """A done task's result (not a packed one: see ``add_packed``)."""
        self.records_out += result.records_out
        if result.malformed or not task.covers_file:
            self._count(
                task.path, task.compression, result.records_in, result.malformed, result.rejected
            )

    def add_packed(self, packed: PackedTasks) -> None:
        """The done whole files of a batch, packed: only those with malformed records
        carry their counts (``PackedTasks.flagged``)."""
        self.records_out += packed.records_out
        for path, compression, records_in, malformed, rejected in packed.flagged:
            self._count(path, compression, records_in, malformed, rejected)

    def _count(
        self,
        path: str,
        compression: str | None,
        records_in: int,
        malformed: int,
        rejected: tuple[Rejected, ...],
    ) -> None:
        counts = self._files.get(path)
        if counts is None:
            counts = self._files[path] = _FileCounts(compression)
        counts.records_in += records_in
        counts.malformed += malformed
        self.malformed += malformed
        if not rejected:
            return
        first = tuple(rejected[0])
        if counts.first is None or first < counts.first:
            counts.first = (first[0], first[1])
        key = path_sort_key(path)
        self._sample += [(key, position, reason, path) for position, reason in rejected]
        if len(self._sample) >= 4 * MALFORMED_SAMPLE_SIZE:
            self._trim()

    def _trim(self) -> None:
        self._sample.sort()
        del self._sample[MALFORMED_SAMPLE_SIZE:]

    def sample(self, fmt: str) -> list[dict[str, Any]]:
        """The run's first malformed records as ``malformed.jsonl`` lists them: path, line
        (left out for ``bytes`` records, which have none, or when it cannot be counted)
        and reason."""
        self._trim()
        positions: dict[str, list[int]] = {}
        for _, position, _, path in self._sample:
            positions.setdefault(path, []).append(position)
        lines = {
            path: self.lines.lines_of(fmt, path, self._files[path].compression, wanted)
            for path, wanted in positions.items()
        }
        entries = []
        for _, position, reason, path in self._sample:
            entry: dict[str, Any] = {"path": path}
            line = lines[path].get(position)
            if line is not None:
                entry["line"] = line
            entry["reason"] = reason
            entries.append(entry)
        return entries

    @property
    def malformed_files(self) -> int:
        return sum(1 for counts in self._files.values() if counts.malformed)

    def by_file(self) -> dict[str, int]:
        """The ``FILES_SHOWN`` files with the most malformed records, most first."""
        worst = sorted(
            ((-c.malformed, path_sort_key(path), path) for path, c in self._files.items()),
        )
        return {path: -negative for negative, _, path in worst[:FILES_SHOWN] if negative}

    def warnings(
        self, fmt: str, specs: Mapping[str, Mapping[str, Any]], partials: Any
    ) -> list[str]:
        """One line per problem: files whose every record was malformed, then stats that
        saw no value of their field."""
        return self._file_warnings(fmt) + stat_warnings(specs, partials, self.records_out)

    def _file_warnings(self, fmt: str) -> list[str]:
        spoilt = sorted(
            (path_sort_key(path), path, counts)
            for path, counts in self._files.items()
            if counts.malformed >= counts.records_in > 0
        )
        messages = []
        for _, path, counts in spoilt[:FILES_WARNED]:
            text = f"{path}: every record was malformed ({counts.records_in})"
            if counts.first is not None:
                position, reason = counts.first
                line = self.lines.line_of(fmt, path, counts.compression, position)
                where = f"line {line}: " if line is not None else ""
                text += f"; the first: {where}{reason}"
            messages.append(text + " (is the format or the regex right?)")
        if len(spoilt) > FILES_WARNED:
            messages.append(
                f"... and {len(spoilt) - FILES_WARNED} more files whose every record was "
                "malformed (report.json malformed_by_file)"
            )
        return messages


def saw_nothing(kind: str, partial: Any) -> bool:
    """Whether a stat's merged partial holds no value at all (``aggregates`` forms)."""
    if partial is None:
        return True
    if kind == "count":
        return partial == 0
    if kind in ("sum", "mean"):
        return not partial.get("n")
    if kind in ("min", "max"):
        return partial.get("num") is None and partial.get("str") is None
    return not (set(partial) - {"null"})  # count_by / top: a missing field is "null"


def stat_warnings(
    specs: Mapping[str, Mapping[str, Any]], partials: Mapping[str, Any] | None, records: int
) -> list[str]:
    """Stats whose field (or ``where:`` field) had no value in any of this run's
    ``records`` (the records that left the steps), judged from the merged partials.

    A stat without ``where:`` that saw no value names its field. One with ``where:``
    that saw nothing may just have a condition that never held (no 5xx tonight): it
    is named only when no other stat saw a value of any of its fields either."""
    if not records or not specs:
        return []
    partials = partials or {}
    empty = {
        name: saw_nothing(spec["kind"], partials.get(name))
        for name, spec in specs.items()
        if spec["kind"] in _FIELD_STATS or spec.get("field") or spec.get("where")
    }
    seen: set[str] = set()  # fields some stat saw a value of
    for name, is_empty in empty.items():
        if not is_empty:
            spec = specs[name]
            seen.update(_fields(spec))
    messages = []
    for name, is_empty in empty.items():
        if not is_empty:
            continue
        spec = specs[name]
        field, where = spec.get("field"), list(spec.get("where") or ())
        what = "no numeric value" if spec["kind"] in ("sum", "mean") else "no value"
        if not where:
            messages.append(
                f"stat {name!r} ({spec['kind']}): field {field!r} had {what} in any record "
                "of this run (a misspelt field name?)"
            )
        elif not set(_fields(spec)) <= seen:
            fields = ", ".join(repr(f) for f in _fields(spec) if f not in seen)
            messages.append(
                f"stat {name!r} ({spec['kind']}, with where:) saw no record of this run; "
                f"no stat saw a value of {fields} (a misspelt field name?)"
            )
    return messages


def _fields(spec: Mapping[str, Any]) -> list[str]:
    field = spec.get("field")
    return [*([field] if field else []), *(spec.get("where") or ())]

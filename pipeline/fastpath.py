"""A columnar fast path for the commonest job: lines, a leading ``regex``, then only
``types``, ``filter``, ``select`` and ``rename`` — the shape of almost every log job.

The generic path builds a dict per line and runs each step on it (several microseconds
a line). Here a block of lines is split once and matched by ``map`` (the per-line loop
runs in C, and each line is matched on its own exactly as the ``regex`` step does), only
the groups that something looks at are extracted, as columns; types are converted a
column at a time (a column of plain integers is checked by one regex and converted by
``map(int, ...)``), filters become row masks, and stats take whole columns. Records are
built as dicts only when they are written out.

It must give exactly what the generic path gives, so a block it cannot reproduce
exactly — one with a ``\\r`` or with bytes that do not decode — goes through the generic
path, line by line; so does a value that does not convert cleanly.

Malformed lines are counted as columns drop them; which lines they were, and why (the
generic steps' very words), is worked out only when asked (``want_rejected``) and only for
a block that had some: a block without them pays nothing for it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from operator import attrgetter, methodcaller
from typing import Any

from pipeline.columns import Columns, IntColumn
from pipeline.conditions import compile_column_condition
from pipeline.steps import REGEX_NO_MATCH, convert_value, types_reason

Dropped = list[tuple[int, str, str, Any]]
"""Rows a ``types`` op rejected: (row, field, type, value), built only for those rows."""
Op = Callable[[Columns, int], tuple[Columns, int, "list[bool] | None", Dropped]]
"""An op: columns and rows in; columns, rows, the mask of the rows kept (None: all), and
the rows rejected as malformed, out."""
_NOTHING_DROPPED: Dropped = []  # shared, never appended to
_STRING = attrgetter("string")  # a match's whole line

_FLOAT_COLUMN = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"(?:\n[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)*"
)


class Declined(Exception):
    """The fast path cannot reproduce the generic path exactly for this block."""


def _convert_column(values: list[Any], kind: str, nulls: frozenset[str]) -> tuple[list, list]:
    """Converted values and the indexes of rows whose value does not convert."""
    if kind == "int" or kind == "float":
        try:
            joined = "\n".join(values)
        except TypeError:  # a None (or another non-str) among them
            joined = None
        if joined is not None:
            converted = _convert_strs(values, joined, kind, nulls)
            if converted is not None:
                return converted, []
    out: list[Any] = []
    bad: list[int] = []
    for i, value in enumerate(values):
        if value is None or (type(value) is str and value in nulls):
            out.append(None)
            continue
        try:
            out.append(convert_value(kind, value))
        except (ValueError, TypeError, OverflowError):
            out.append(None)
            bad.append(i)
    return out, bad


def _convert_strs(values: list[str], joined: str, kind: str, nulls: frozenset[str]) -> list | None:
    """A column of ``str`` (``joined``: its values joined by newlines) converted at once,
    nulls to None, or None when a value might not convert: the caller then goes value by
    value, which knows the exact rows and reasons."""
    has_nulls = bool(nulls) and any(map(nulls.__contains__, values))
    if kind == "int":
        # For a str without "_", int() is exactly what `types` does (steps._to_int).
        if "_" in joined:
            return None
        try:
            if has_nulls:
                return [None if value in nulls else int(value) for value in values]
            return IntColumn(map(int, values))
        except ValueError:
            return None
    # float() also takes "1_0", " 1", "nan", "inf": only plain decimals are let through
    present = [value for value in values if value not in nulls] if has_nulls else values
    if present and not _FLOAT_COLUMN.fullmatch("\n".join(present) if has_nulls else joined):
        return None
    if has_nulls:
        return [None if value in nulls else float(value) for value in values]
    return list(map(float, values))


def _keep_rows(columns: Columns, keep: list[bool]) -> Columns:
    return {name: list(compress(values, keep)) for name, values in columns.items()}


class LinePlan:
    """The compiled fast path of one job (built once per worker)."""

    def __init__(
        self,
        rx: re.Pattern[str] | None,
        names: tuple[str, ...],
        need_line: bool,
        ops: Sequence[Op],
    ) -> None:
        self.rx = rx
        self.names = names  # the groups worth extracting, in pattern order
        # one C-level ``map`` per column over the matches: a tuple of groups per line,
        # transposed, costs three times as much
        self._groups = (
            tuple(methodcaller("group", rx.groupindex[n]) for n in names) if rx is not None else ()
        )
        self.need_line = need_line
        self.ops = ops

    @classmethod
    def compile(
        cls, fmt: str, steps: Sequence[Mapping[str, Any]], write_records: bool, stat_fields: set
    ) -> LinePlan | None:
        """The plan, or None when the job is not of the shape this path handles."""
        if fmt != "lines":
            return None
        if not steps:  # records are the lines themselves
            need = "line" in stat_fields or write_records
            return cls(None, (), need, ())
        if "regex" not in steps[0]:
            return None
        regex = steps[0]["regex"]
        if regex.get("field") != "line":
            return None
        try:
            rx = re.compile(regex["pattern"])
        except re.error:
            return None
        names = tuple(rx.groupindex)
        if len(names) != rx.groups or "line" in names:
            return None  # unnamed groups, or a group named "line": keep it simple
        fields = ["line", *names]  # the record's keys, in order, after the regex
        ops: list[Op] = []
        referenced: set[str] = set(stat_fields)
        for spec in steps[1:]:
            ((name, arg),) = spec.items()
            if name == "types":
                conversions = dict(arg["fields"])
                if not set(conversions) <= set(fields):
                    return None  # a field that may be missing: the generic path knows how
                ops.append(_types_op(conversions, frozenset(arg.get("nulls") or ())))
                referenced |= set(conversions)
            elif name == "filter":
                ops.append(_filter_op(arg))
                referenced |= set(arg)
            elif name == "select":
                kept = [f for f in dict.fromkeys(arg) if f in fields]
                ops.append(_select_op(kept))
                fields = kept
            elif name == "rename":
                mapping = dict(arg)
                renamed = [mapping.get(f, f) for f in fields]
                if len(set(renamed)) != len(renamed):
                    return None  # a rename onto an existing field
                referenced |= set(mapping)
                ops.append(_rename_op(mapping))
                fields = renamed
            else:
                return None  # call: arbitrary code, record by record
        if write_records or any("rename" in spec for spec in steps):
            wanted = set(names)  # everything may reach the output (or hide behind a new name)
        else:
            wanted = referenced & set(names)  # only what a step or a stat looks at
        need_line = "line" in referenced or (write_records and "line" in fields)
        return cls(rx, tuple(n for n in names if n in wanted), need_line, ops)

    def run_block(
        self, text: str, want_rejected: bool = False
    ) -> tuple[Columns, int, int, int, list[tuple[int, str]]]:
        """(columns, rows, lines, malformed, rejected) for a block of whole lines, or raise
        Declined. ``rejected``: with ``want_rejected``, the malformed lines as (index in the
        block, reason), in line order; else empty."""
        if "\r" in text:
            raise Declined  # CRLF: the generic path knows which \r to strip
        lines = text.split("\n")
        if text.endswith("\n"):
            lines.pop()
        if self.rx is None:
            return ({"line": lines} if self.need_line else {}), len(lines), len(lines), 0, []
        matches = list(map(self.rx.match, lines))  # kept: which lines failed, if any did
        if self._groups or self.need_line:
            found = list(filter(None, matches))  # a match is true, None false
            rows = len(found)
        else:
            found = []
            rows = len(lines) - matches.count(None)
        columns: Columns = {"line": list(map(_STRING, found))} if self.need_line else {}
        for name, group in zip(self.names, self._groups, strict=True):
            columns[name] = list(map(group, found))
        malformed = len(lines) - rows
        rejected: list[tuple[int, str]] = []
        if malformed and want_rejected:
            unmatched = compress(range(len(lines)), map(operator.is_, matches, repeat(None)))
            rejected = [(i, REGEX_NO_MATCH) for i in unmatched]
        masks: list[list[bool]] = []  # the rows each op kept, to trace a row to its line
        for op in self.ops:
            columns, rows, keep, dropped = op(columns, rows)
            if dropped:
                malformed += len(dropped)
                if want_rejected:
                    line_of = _lines_of_rows(matches, masks)
                    rejected += [(line_of[r], types_reason(*why)) for r, *why in dropped]
            if keep is not None:
                masks.append(keep)
        if len(rejected) > 1:
            rejected.sort()
        return columns, rows, len(lines), malformed, rejected


def _lines_of_rows(matches: list[Any], masks: list[list[bool]]) -> list[int]:
    """The block line of each current row: the matched lines, through the masks so far."""
    lines = [i for i, m in enumerate(matches) if m is not None]
    for keep in masks:
        lines = list(compress(lines, keep))
    return lines


def _types_op(conversions: dict[str, str], nulls: frozenset[str]) -> Op:
    def types(columns: Columns, rows: int) -> tuple[Columns, int, list[bool] | None, Dropped]:
        dropped: dict[int, tuple[str, str, Any]] = {}
        for field, kind in conversions.items():
            values = columns[field]
            columns[field], bad = _convert_column(values, kind, nulls)
            for i in bad:  # the first field that fails is the reason, as in `types`
                dropped.setdefault(i, (field, kind, values[i]))
        if not dropped:
            return columns, rows, None, _NOTHING_DROPPED
        keep = [i not in dropped for i in range(rows)]
        why = [(i, *dropped[i]) for i in sorted(dropped)]
        return _keep_rows(columns, keep), rows - len(dropped), keep, why

    return types


def _filter_op(spec: Mapping[str, Any]) -> Op:
    condition = compile_column_condition(spec)

    def keep_if(columns: Columns, rows: int) -> tuple[Columns, int, list[bool] | None, Dropped]:
        keep = condition(columns, rows)
        kept = sum(keep)
        if kept == rows:
            return columns, rows, None, _NOTHING_DROPPED
        return _keep_rows(columns, keep), kept, keep, _NOTHING_DROPPED

    return keep_if


def _select_op(fields: list[str]) -> Op:
    def select(columns: Columns, rows: int) -> tuple[Columns, int, list[bool] | None, Dropped]:
        # a field nothing looks at may not have been extracted at all
        return {f: columns[f] for f in fields if f in columns}, rows, None, _NOTHING_DROPPED

    return select


def _rename_op(mapping: dict[str, str]) -> Op:
    def rename(columns: Columns, rows: int) -> tuple[Columns, int, list[bool] | None, Dropped]:
        renamed = {mapping.get(f, f): values for f, values in columns.items()}
        return renamed, rows, None, _NOTHING_DROPPED

    return rename


def records_of(columns: Columns, rows: int) -> list[dict[str, Any]]:
    """The rows as the generic path's record dicts (same keys, same order)."""
    if not columns:
        return [{} for _ in range(rows)]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]

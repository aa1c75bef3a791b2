"""Columns of values, as the line fast path hands them to conditions and aggregates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

Columns = dict[str, list[Any]]


class IntColumn(list):
    """A column known to hold only ``int`` values (never ``bool`` or ``None``): made by
    the fast path's ``int`` conversion, so consumers can skip checking value types.
    Anything derived from it (a filtered copy) is a plain list again."""

    __slots__ = ()


_INT = frozenset({int})
_INT_OR_NONE = frozenset({int, type(None)})


def int_values(values: list[Any]) -> list[int] | None:
    """The values of a column that are not None, when every one of them is exactly an
    ``int`` (``bool`` is not a number here), else None: one pass over the values' types
    tells both whether they are ints and whether there are nulls to leave out."""
    if type(values) is IntColumn:
        return values
    types = set(map(type, values))
    if types <= _INT:
        return values
    if types <= _INT_OR_NONE:
        return [value for value in values if value is not None]
    return None


def shared_column(taken: Columns, records: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    """``column_of(records, field)``, taken once: ``taken`` holds the columns of
    ``records`` already taken (stats and their ``where:`` reading one field share it)."""
    values = taken.get(field)
    if values is None:
        values = taken[field] = column_of(records, field)
    return values


def column_of(records: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    """The values of ``field`` in ``records``, None where a record lacks it. Records out
    of the step chain are plain dicts, so when every one has the field a C-level
    ``itemgetter`` loop takes them (a third cheaper than ``get`` record by record)."""
    try:
        return list(map(itemgetter(field), records))
    except KeyError:
        return [record.get(field) for record in records]

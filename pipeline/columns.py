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


def all_ints(values: list[Any]) -> bool:
    """Whether every value is exactly an ``int`` (``bool`` is not a number here)."""
    return type(values) is IntColumn or set(map(type, values)) <= {int}


def column_of(records: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    """The values of ``field`` in ``records``, None where a record lacks it. Records out
    of the step chain are plain dicts, so when every one has the field a C-level
    ``itemgetter`` loop takes them (a third cheaper than ``get`` record by record)."""
    try:
        return list(map(itemgetter(field), records))
    except KeyError:
        return [record.get(field) for record in records]

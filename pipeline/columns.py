"""Columns of values, as the line fast path hands them to conditions and aggregates."""

from __future__ import annotations

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

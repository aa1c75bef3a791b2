"""Compiled record conditions: the ``filter`` step and every aggregator's ``where:``.

A condition is ``{field: {op: value, ...}, ...}``; every field and every op must hold.
It is compiled once into a closure that runs per record, so all the checking of the spec
(op names, operand types, regex syntax) happens here, up front.

Typing rules (why: a log pipeline sees messy data, and a filter must never fail a task):

* A missing field makes the condition false, for every op, ``!=`` and ``not_in`` included.
* Values are compared only with values of a compatible kind: numbers with numbers
  (``int``/``float``, never ``bool``), ``str`` with ``str``, ``bool`` with ``bool``,
  ``None`` with ``None``, lists with lists, mappings with mappings. Any other pairing is
  false, not an error: ``"abc" < 5``, ``None >= 1``, ``True >= 1`` and ``None != 3`` are
  all false. So ``!=`` is "present, same kind, different value".
* ``in`` holds when the value equals a listed value of the same kind (``True`` is not
  ``in [1]``). ``not_in`` is exactly ``not in`` for a present field, so
  ``{not_in: [null, ""]}`` reads "present, not null and not empty" (the one way to say
  "is not null", since ``!=: null`` is false-by-type for every non-null value).
* ``contains``: a substring test on a ``str`` value (the operand must be a ``str`` too),
  a membership test (same-kind equality) on a list value; false otherwise.
* ``matches``: ``re.search`` on a ``str`` value; false otherwise.
* NaN compares false with everything, as in Python.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from itertools import compress, repeat
from typing import Any

from pipeline.columns import Columns, IntColumn, shared_column

OPS: tuple[str, ...] = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains", "matches")

Condition = Callable[[Mapping[str, Any]], bool]
_Predicate = Callable[[Any], bool]

# Kinds of values that may be compared with each other.
_NUM, _STR, _BOOL, _NONE, _LIST, _MAP, _OTHER = "num", "str", "bool", "none", "list", "map", "other"
_KIND_OF_TYPE: dict[type, str] = {
    int: _NUM,
    float: _NUM,
    str: _STR,
    bool: _BOOL,
    type(None): _NONE,
    list: _LIST,
    tuple: _LIST,
    dict: _MAP,
}
_HASHABLE_KINDS = frozenset({_NUM, _STR, _BOOL, _NONE})
_MISSING: Any = object()

_ORDERING = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def kind_of(value: Any) -> str:
    """The comparison kind of a value (``bool`` is its own kind, not a number)."""
    kind = _KIND_OF_TYPE.get(type(value))
    if kind is not None:
        return kind
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, (int, float)):
        return _NUM
    if isinstance(value, str):
        return _STR
    if isinstance(value, (list, tuple)):
        return _LIST
    if isinstance(value, Mapping):
        return _MAP
    return _OTHER


def compile_condition(spec: Mapping[str, Mapping[str, Any]]) -> Condition:
    """Compile ``{field: {op: value}}`` into a fast ``record -> bool``."""
    if not isinstance(spec, Mapping):
        raise ValueError(f"a condition must be a mapping of field -> {{op: value}}, got {spec!r}")
    checks: list[tuple[str, _Predicate]] = []
    for field, ops in spec.items():
        if not isinstance(field, str):
            raise ValueError(f"condition field names must be strings, got {field!r}")
        if not isinstance(ops, Mapping) or not ops:
            raise ValueError(
                f"condition on {field!r} must be a non-empty mapping of op -> value, got {ops!r}"
            )
        for op, operand in ops.items():
            checks.append((field, _compile_op(field, op, operand)))

    if not checks:
        return _always_true
    if len(checks) == 1:
        ((field, pred),) = checks

        def one(record: Mapping[str, Any]) -> bool:
            value = record.get(field, _MISSING)
            return value is not _MISSING and pred(value)

        return one

    frozen = tuple(checks)

    def every(record: Mapping[str, Any]) -> bool:
        for field, pred in frozen:
            value = record.get(field, _MISSING)
            if value is _MISSING or not pred(value):
                return False
        return True

    return every


ColumnCondition = Callable[[Mapping[str, list[Any]], int], list[bool]]


def compile_column_condition(spec: Mapping[str, Mapping[str, Any]]) -> ColumnCondition:
    """The same condition for records given column by column: ``(columns, rows)`` gives
    one bool per row. A field absent from ``columns`` is missing in every row."""
    compile_condition(spec)  # the same checks, the same errors
    checks = []
    for field, ops in spec.items():
        for op, operand in ops.items():
            # A number compared with a column of plain numbers: no per-value type checks.
            numeric = _ORDERING[op] if op in _ORDERING and kind_of(operand) == _NUM else None
            checks.append((field, _compile_op(field, op, operand), numeric, operand))

    def mask(columns: Mapping[str, list[Any]], rows: int) -> list[bool]:
        keep: list[bool] | None = None
        for field, pred, numeric, operand in checks:
            if field not in columns:
                return [False] * rows
            values = columns[field]
            if numeric is not None and (
                type(values) is IntColumn or set(map(type, values)) <= {int, float}
            ):
                these = list(map(numeric, values, repeat(operand)))
            else:
                these = list(map(pred, values))
            keep = these if keep is None else [a and b for a, b in zip(keep, these, strict=True)]
        return keep if keep is not None else [True] * rows

    return mask


# records, and the columns of them already taken (filled in here as needed) -> records kept
RecordsFilter = Callable[[list[Any], Columns], list[Any]]


def compile_records_filter(spec: Mapping[str, Mapping[str, Any]]) -> RecordsFilter:
    """The same condition for a list of records: the records it holds for, in order
    (what ``filter`` with ``compile_condition(spec)`` keeps).

    When every check is an ordering (``status >= 500``, the usual ``where:``), a missing
    field and a null are alike (both false), so the records are taken as columns and
    the column condition decides (one C-level ``map`` for a column of plain numbers);
    other checks go record by record."""
    condition = compile_condition(spec)  # the same checks, the same errors
    if not all(op in _ORDERING for ops in spec.values() for op in ops):
        return lambda records, taken: list(filter(condition, records))
    mask = compile_column_condition(spec)
    fields = tuple(spec)

    def keep(records: list[Any], taken: Columns) -> list[Any]:
        columns = {field: shared_column(taken, records, field) for field in fields}
        return list(compress(records, mask(columns, len(records))))

    return keep


def _always_true(record: Mapping[str, Any]) -> bool:
    return True


def _compile_op(field: str, op: Any, operand: Any) -> _Predicate:
    """One predicate on a present value; checks the operand once, here."""
    where = f"condition on {field!r}, op {op!r}"
    if op in _ORDERING:
        return _ordering(where, _ORDERING[op], operand)
    if op == "==":
        return _equality(operand, negate=False)
    if op == "!=":
        return _equality(operand, negate=True)
    if op in ("in", "not_in"):
        if not isinstance(operand, (list, tuple)):
            raise ValueError(f"{where}: the operand must be a list, got {operand!r}")
        return _membership(operand, negate=op == "not_in")
    if op == "contains":
        return _contains(operand)
    if op == "matches":
        if not isinstance(operand, str):
            raise ValueError(f"{where}: the operand must be a regex string, got {operand!r}")
        try:
            search = re.compile(operand).search
        except re.error as exc:
            raise ValueError(f"{where}: invalid regex {operand!r}: {exc}") from exc
        return lambda value: isinstance(value, str) and search(value) is not None
    raise ValueError(f"{where}: unknown op; expected one of {', '.join(OPS)}")


def _ordering(where: str, compare: Callable[[Any, Any], bool], operand: Any) -> _Predicate:
    kind = kind_of(operand)
    if kind == _NUM:

        def num_pred(value: Any) -> bool:
            t = type(value)
            if t is int or t is float:
                return compare(value, operand)
            return kind_of(value) == _NUM and compare(value, operand)

        return num_pred
    if kind == _STR:

        def str_pred(value: Any) -> bool:
            return isinstance(value, str) and compare(value, operand)

        return str_pred
    raise ValueError(f"{where}: the operand must be a number or a string, got {operand!r}")


def _equality(operand: Any, *, negate: bool) -> _Predicate:
    kind = kind_of(operand)
    if kind == _NONE:
        # None is only ever equal to None; "!= null" is false-by-type for anything else.
        return (lambda value: False) if negate else (lambda value: value is None)
    exact_type = type(operand) if kind in (_NUM, _STR, _BOOL) else None

    if negate:

        def not_equal(value: Any) -> bool:
            if type(value) is exact_type:
                return value != operand
            return kind_of(value) == kind and value != operand

        return not_equal

    def equal(value: Any) -> bool:
        if type(value) is exact_type:
            return value == operand
        return kind_of(value) == kind and value == operand

    return equal


def _membership(items: list[Any] | tuple[Any, ...], *, negate: bool) -> _Predicate:
    """Same-kind membership: hashable kinds use a set per kind, others a short scan."""
    by_kind: dict[str, set[Any]] = {}
    scanned: list[tuple[str, Any]] = []
    for item in items:
        kind = kind_of(item)
        if kind in _HASHABLE_KINDS:
            by_kind.setdefault(kind, set()).add(item)
        else:
            scanned.append((kind, item))
    sets = {kind: frozenset(values) for kind, values in by_kind.items()}
    others = tuple(scanned)
    empty: frozenset[Any] = frozenset()

    def member(value: Any) -> bool:
        kind = _KIND_OF_TYPE.get(type(value)) or kind_of(value)
        if kind in _HASHABLE_KINDS:
            return value in sets.get(kind, empty)
        return any(k == kind and value == item for k, item in others)

    if negate:
        return lambda value: not member(value)
    return member


def _contains(operand: Any) -> _Predicate:
    operand_kind = kind_of(operand)
    element = _equality(operand, negate=False)

    def contains(value: Any) -> bool:
        if isinstance(value, str):
            return operand_kind == _STR and operand in value
        if isinstance(value, (list, tuple)):
            return any(element(item) for item in value)
        return False

    return contains

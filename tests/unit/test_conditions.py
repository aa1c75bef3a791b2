"""Compiled conditions: every op, and the "missing or wrong type is false" rules."""

from __future__ import annotations

import math
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.conditions import OPS, compile_condition, compile_records_filter, kind_of


def holds(field_value: Any, op: str, operand: Any) -> bool:
    return compile_condition({"f": {op: operand}})({"f": field_value})


def test_ops_listed() -> None:
    assert OPS == ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains", "matches")


@pytest.mark.parametrize(
    ("value", "op", "operand", "expected"),
    [
        (5, "==", 5, True),
        (5.0, "==", 5, True),
        (5, "==", 6, False),
        ("a", "==", "a", True),
        (True, "==", True, True),
        (None, "==", None, True),
        ([1, 2], "==", [1, 2], True),
        ({"a": 1}, "==", {"a": 1}, True),
        (5, "!=", 6, True),
        (5, "!=", 5, False),
        ("a", "!=", "b", True),
        (False, "!=", True, True),
        (3, "<", 4, True),
        (4, "<", 4, False),
        (4, "<=", 4, True),
        (4.5, ">", 4, True),
        (4, ">=", 4.0, True),
        (3, ">=", 4, False),
        ("b", ">", "a", True),
        ("a", "<", "b", True),
        ("abc", "<=", "abc", True),
    ],
)
def test_comparisons(value: Any, op: str, operand: Any, expected: bool) -> None:
    assert holds(value, op, operand) is expected


@pytest.mark.parametrize(
    ("value", "op", "operand"),
    [
        ("5", "==", 5),  # str vs number
        (5, "==", "5"),
        (1, "==", True),  # bool is not a number
        (True, "==", 1),
        (0, "==", False),
        (None, "==", 0),
        (0, "==", None),
        ("5", "!=", 5),  # != of another type is false, not true
        (None, "!=", 3),
        (3, "!=", None),  # "!= null" is false for every value: use not_in: [null]
        (None, "!=", None),
        (True, "!=", 0),
        ("abc", "<", 5),
        (5, "<", "abc"),
        (None, ">=", 1),
        (True, ">=", 1),  # bool is not a number for ordering
        (False, "<", 1),
        ([1], "<", 5),
        (math.nan, "<", 1),
        (math.nan, ">=", 1),
        (math.nan, "==", math.nan),
    ],
)
def test_wrong_type_is_false(value: Any, op: str, operand: Any) -> None:
    assert holds(value, op, operand) is False


@pytest.mark.parametrize(
    ("op", "operand"),
    [
        ("==", 1),
        ("!=", 1),
        ("<", 1),
        (">=", "a"),
        ("in", [1]),
        ("not_in", [1]),
        ("not_in", []),
        ("contains", "a"),
        ("matches", "."),
        ("==", None),
        ("!=", None),
    ],
)
def test_missing_field_is_false_for_every_op(op: str, operand: Any) -> None:
    condition = compile_condition({"f": {op: operand}})
    assert condition({}) is False
    assert condition({"other": 1}) is False


def test_in_and_not_in_are_type_aware() -> None:
    assert holds(200, "in", [200, 404])
    assert holds(200.0, "in", [200, 404])
    assert not holds(500, "in", [200, 404])
    assert not holds("200", "in", [200, 404])
    assert not holds(True, "in", [1])  # True == 1 in Python, but not here
    assert not holds(1, "in", [True])
    assert holds(True, "in", [True, "x"])
    assert holds(None, "in", [None])
    assert holds([1, 2], "in", [[1, 2], [3]])  # unhashable values are scanned
    assert not holds({"a": 1}, "in", [[1, 2]])
    assert not holds(1, "in", [])


def test_not_in_is_the_negation_of_in_for_present_fields() -> None:
    assert holds(500, "not_in", [200, 404])
    assert not holds(200, "not_in", [200, 404])
    assert holds("200", "not_in", [200, 404])  # a str is not among the ints
    assert holds(True, "not_in", [1])
    assert holds(1, "not_in", [])
    # the idiom for "present and not null / not empty"
    not_blank = compile_condition({"f": {"not_in": [None, ""]}})
    assert not_blank({"f": 5}) and not_blank({"f": "x"})
    assert not not_blank({"f": None})
    assert not not_blank({"f": ""})
    assert not not_blank({})


def test_contains() -> None:
    assert holds("/api/users", "contains", "api")
    assert not holds("/home", "contains", "api")
    assert not holds("123", "contains", 1)  # substring needs a str operand
    assert holds(["a", "b"], "contains", "b")
    assert holds([1, 2], "contains", 2)
    assert holds([1.0, 2], "contains", 1)
    assert not holds([1, 2], "contains", True)
    assert not holds([True], "contains", 1)
    assert not holds(["1"], "contains", 1)
    assert not holds(5, "contains", 5)
    assert not holds(None, "contains", "a")
    assert not holds({"a": 1}, "contains", "a")


def test_matches_is_a_search() -> None:
    assert holds("GET /index.html", "matches", r"\.html$")
    assert holds("xxabc", "matches", "abc")  # search, not match
    assert not holds("GET /", "matches", r"\.html$")
    assert not holds(123, "matches", "1")
    assert not holds(None, "matches", ".*")


def test_several_ops_and_fields_must_all_hold() -> None:
    condition = compile_condition(
        {"status": {">=": 200, "<": 300}, "method": {"in": ["GET", "HEAD"]}}
    )
    assert condition({"status": 200, "method": "GET"})
    assert not condition({"status": 302, "method": "GET"})
    assert not condition({"status": 200, "method": "POST"})
    assert not condition({"status": 200})
    assert not condition({"method": "GET"})


def test_empty_condition_is_always_true() -> None:
    assert compile_condition({})({}) is True


def test_subclasses_compare_like_their_base() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    assert holds(Text("b"), ">", "a")
    assert holds(Number(5), ">", 4)
    assert holds(Number(5), "==", 5)
    assert holds(Number(5), "in", [5])
    assert not holds(Number(5), "==", "5")


def test_kind_of() -> None:
    assert kind_of(True) == "bool"
    assert kind_of(1) == kind_of(1.5) == "num"
    assert kind_of(None) == "none"
    assert kind_of((1,)) == kind_of([1]) == "list"
    assert kind_of(b"x") == "other"


def test_works_on_any_mapping() -> None:
    from types import MappingProxyType

    assert compile_condition({"f": {"==": 1}})(MappingProxyType({"f": 1}))


@pytest.mark.parametrize(
    "spec",
    [
        {"f": {"~=": 1}},
        {"f": {"<": None}},
        {"f": {"<": True}},
        {"f": {"<": [1]}},
        {"f": {"in": 5}},
        {"f": {"in": "abc"}},
        {"f": {"matches": "("}},
        {"f": {"matches": 5}},
        {"f": {}},
        {"f": 5},
        {5: {"==": 1}},
        ["f"],
    ],
)
def test_bad_specs_raise_value_error(spec: Any) -> None:
    with pytest.raises(ValueError):
        compile_condition(spec)


def test_error_message_names_field_and_op() -> None:
    with pytest.raises(ValueError, match=r"'status'.*'~='"):
        compile_condition({"status": {"~=": 1}})


# --- a condition over a list of records ----------------------------------------------------

# Mostly plain numbers (the C-level route), sometimes None, a missing field, a bool, NaN,
# a str, an int subclass: each sends a list down another route, and every route must keep
# exactly what the per-record condition keeps.
_NUMBERS = st.one_of(
    st.integers(-600, 600),
    st.floats(-600, 600),
    st.sampled_from([500, 499.5, float("nan"), math.inf, -math.inf, 10**30]),
)
_ODD = st.sampled_from([None, True, False, "500", [500], HTTPStatus.INTERNAL_SERVER_ERROR])
_RECORD = st.fixed_dictionaries(
    {}, optional={"s": st.one_of(_NUMBERS, _NUMBERS, _NUMBERS, _ODD), "b": _NUMBERS}
)
_CHECK = st.tuples(
    st.sampled_from(["s", "b"]),
    st.sampled_from(["<", "<=", ">", ">=", "==", "in"]),
    st.sampled_from([500, 0, -1.5, "m", [500, None]]),
)


@settings(max_examples=400, deadline=None)
@given(records=st.lists(_RECORD, max_size=30), checks=st.lists(_CHECK, min_size=1, max_size=3))
def test_a_records_filter_keeps_what_the_condition_keeps(
    records: list[dict], checks: list[tuple[str, str, Any]]
) -> None:
    spec: dict[str, dict[str, Any]] = {}
    for field, op, operand in checks:
        if op == "in" and not isinstance(operand, list):
            operand = [operand]
        elif op != "in" and isinstance(operand, list):
            operand = operand[0]
        if op == "==" or isinstance(operand, (int, float)) or op == "in":
            spec.setdefault(field, {})[op] = operand
        else:
            spec.setdefault(field, {})[op] = "m"  # a str operand orders strings
    keep = compile_records_filter(spec)
    condition = compile_condition(spec)
    assert keep(records, {}) == [record for record in records if condition(record)]
    assert keep([], {}) == []

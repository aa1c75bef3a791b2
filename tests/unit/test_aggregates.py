"""Aggregators: each kind, the key forms, and merge laws checked with Hypothesis."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import aggregates
from pipeline.aggregates import Aggregators, finalize, merge_many, merge_partials, value_key


def spec(kind: str, field: str | None = None, k: int | None = None, where: Any = None) -> dict:
    return {"kind": kind, "field": field, "k": k, "where": where}


def stats_of(specs: dict[str, dict], records: Iterable[dict]) -> dict[str, Any]:
    return finalize(specs, partial_of(specs, records))


def partial_of(specs: dict[str, dict], records: Iterable[dict]) -> dict[str, Any]:
    aggs = Aggregators(specs)
    state = aggs.new_state()
    for record in records:
        aggs.add(state, record)
    return aggs.partials(state)


def one(kind: str, records: Iterable[dict], **kw: Any) -> Any:
    return stats_of({"s": spec(kind, **kw)}, records)["s"]


# --- each kind --------------------------------------------------------------------------


def test_count_and_where() -> None:
    records = [{"status": 200}, {"status": 500}, {"status": 503}, {}, {"status": "500"}]
    assert one("count", records) == 5
    assert one("count", records, where={"status": {">=": 500}}) == 2
    assert one("count", []) == 0


def test_count_with_a_field_counts_non_null_values() -> None:
    assert one("count", [{"a": 1}, {"a": None}, {}, {"a": False}], field="a") == 2


def test_sum_ints_are_exact_and_stay_int() -> None:
    big = 10**40
    result = one("sum", [{"x": big}, {"x": 1}, {"x": -big}], field="x")
    assert result == 1
    assert type(result) is int


def test_sum_skips_missing_null_bool_and_strings() -> None:
    records = [{"x": 2}, {"x": None}, {}, {"x": True}, {"x": "5"}, {"x": [1]}, {"x": 3}]
    assert one("sum", records, field="x") == 5
    assert one("mean", records, field="x") == 2.5


def test_sum_empty_is_zero_and_mean_empty_is_none() -> None:
    assert one("sum", [], field="x") == 0
    assert one("sum", [{"x": None}], field="x") == 0
    assert one("mean", [{}], field="x") is None


def test_sum_with_floats_is_the_correctly_rounded_exact_total() -> None:
    assert one("sum", [{"x": 0.1}, {"x": 0.2}, {"x": 0.3}], field="x") == math.fsum([0.1, 0.2, 0.3])
    result = one("sum", [{"x": 1}, {"x": 0.5}], field="x")
    assert result == 1.5
    assert type(result) is float
    # cancellation: exact whatever the split
    records = [{"x": 1e20}, {"x": 1.0}, {"x": -1e20}]
    specs = {"s": spec("sum", "x")}
    parts = [partial_of(specs, [r]) for r in records]
    merged = merge_partials(specs, merge_partials(specs, parts[0], parts[1]), parts[2])
    assert finalize(specs, merged)["s"] == 1.0
    assert stats_of(specs, records)["s"] == 1.0


def test_sum_of_ints_and_floats_rounds_once() -> None:
    # int part + float part is exact; adding them as floats would lose the 1
    assert one("sum", [{"x": 2**60}, {"x": 1}, {"x": 0.5}], field="x") == float(2**60 + 1.5)


def test_sum_and_mean_non_finite() -> None:
    inf = math.inf
    assert one("sum", [{"x": 1}, {"x": inf}], field="x") == inf
    assert one("sum", [{"x": -inf}], field="x") == -inf
    assert math.isnan(one("sum", [{"x": inf}, {"x": -inf}], field="x"))
    assert math.isnan(one("sum", [{"x": math.nan}, {"x": 1.0}], field="x"))
    assert math.isnan(one("mean", [{"x": math.nan}], field="x"))
    assert one("sum", [{"x": 1.5e308}, {"x": 1.5e308}], field="x") == inf  # overflow


def test_sum_folds_many_floats() -> None:
    values = [0.1 * i for i in range(3 * aggregates._FOLD_AT + 7)]
    assert one("sum", [{"x": v} for v in values], field="x") == math.fsum(values)
    assert one("mean", [{"x": v} for v in values], field="x") == pytest.approx(
        math.fsum(values) / len(values), rel=1e-15
    )


def test_mean() -> None:
    assert one("mean", [{"x": 1}, {"x": 2}], field="x") == 1.5
    assert one("mean", [{"x": 1}, {"x": 2.5}, {"x": None}], field="x") == 1.75


def test_min_max_numbers() -> None:
    records = [{"x": 3}, {"x": -1.5}, {"x": 10}, {"x": None}, {}, {"x": True}]
    assert one("min", records, field="x") == -1.5
    assert one("max", records, field="x") == 10


def test_min_max_numbers_order_before_strings() -> None:
    records = [{"x": "b"}, {"x": 5}, {"x": "a"}, {"x": 99}]
    assert one("min", records, field="x") == 5
    assert one("max", records, field="x") == "b"
    assert one("min", [{"x": "b"}, {"x": "a"}], field="x") == "a"
    assert one("max", [{"x": "b"}, {"x": "a"}], field="x") == "b"


def test_min_max_nothing_seen_is_none() -> None:
    assert one("min", [{}, {"x": None}, {"x": False}, {"x": [1]}], field="x") is None
    assert one("max", [], field="x") is None


def test_min_max_skip_nan() -> None:
    records = [{"x": math.nan}, {"x": 2.0}, {"x": math.nan}]
    assert one("min", records, field="x") == 2.0
    assert one("max", records, field="x") == 2.0


@pytest.mark.parametrize("kind", ["min", "max"])
def test_min_max_equal_numbers_tie_break_deterministically(kind: str) -> None:
    for records in ([{"x": 1}, {"x": 1.0}], [{"x": 1.0}, {"x": 1}]):
        result = one(kind, records, field="x")
        assert type(result) is int
    for records in ([{"x": 0.0}, {"x": -0.0}], [{"x": -0.0}, {"x": 0.0}]):
        assert json.dumps(one(kind, records, field="x")) == "-0.0"


def test_count_by_key_forms_and_sorting() -> None:
    records = [
        {"v": 200},
        {"v": "200"},
        {"v": None},
        {},
        {"v": True},
        {"v": False},
        {"v": 1.5},
        {"v": "x"},
        {"v": [1, 2]},
        {"v": {"b": 1, "a": "é"}},
    ]
    result = one("count_by", records, field="v")
    assert result == {
        "200": 2,
        "null": 2,
        "true": 1,
        "false": 1,
        "1.5": 1,
        "x": 1,
        "[1,2]": 1,
        '{"a":"é","b":1}': 1,
    }
    assert list(result) == sorted(result)


def test_value_key() -> None:
    assert value_key(200) == "200"
    assert value_key(None) == "null"
    assert value_key(True) == "true"
    assert value_key(1.5) == "1.5"
    assert value_key("a b") == "a b"
    assert value_key(math.nan) == "NaN"
    assert value_key({2: "a", "b": 1}) in ('{"2":"a","b":1}', '{"b":1,"2":"a"}')


def test_top_counts_descending_ties_by_key() -> None:
    records = [{"p": p} for p in ["/b", "/a", "/c", "/b", "/a", "/d", "/c", "/b"]]
    assert one("top", records, field="p", k=3) == [["/b", 3], ["/a", 2], ["/c", 2]]
    assert one("top", records, field="p", k=10) == [["/b", 3], ["/a", 2], ["/c", 2], ["/d", 1]]
    assert one("top", records, field="p", k=0) == []
    assert one("top", records, field="p") == [["/b", 3], ["/a", 2], ["/c", 2], ["/d", 1]]


def test_top_ties_use_the_key_form() -> None:
    records = [{"s": 404}, {"s": 200}, {"s": None}, {"s": True}]
    assert one("top", records, field="s", k=4) == [
        ["200", 1],
        ["404", 1],
        ["null", 1],
        ["true", 1],
    ]


def test_top_partial_keeps_every_count() -> None:
    specs = {"t": spec("top", "p", k=1)}
    part = partial_of(specs, [{"p": "a"}, {"p": "b"}, {"p": "b"}])
    assert part["t"] == {"a": 1, "b": 2}
    other = partial_of(specs, [{"p": "a"}, {"p": "a"}])
    assert finalize(specs, merge_partials(specs, part, other)) == {"t": [["a", 3]]}


def test_where_applies_per_stat() -> None:
    specs = {
        "errors": spec("count", where={"status": {">=": 500}}),
        "error_bytes": spec("sum", "bytes", where={"status": {">=": 500}}),
        "all_bytes": spec("sum", "bytes"),
    }
    records = [{"status": 200, "bytes": 10}, {"status": 500, "bytes": 7}, {"bytes": 1}]
    assert stats_of(specs, records) == {"errors": 1, "error_bytes": 7, "all_bytes": 18}


def test_subclass_values() -> None:
    from enum import IntEnum

    class Code(IntEnum):
        OK = 200

    records = [{"c": Code.OK}, {"c": 100}]
    assert one("sum", records, field="c") == 300
    assert type(one("max", records, field="c")) is int
    assert one("count_by", records, field="c") == {"100": 1, "200": 1}


def test_finalize_and_merge_with_nothing() -> None:
    specs = {
        "c": spec("count"),
        "s": spec("sum", "x"),
        "m": spec("mean", "x"),
        "lo": spec("min", "x"),
        "hi": spec("max", "x"),
        "by": spec("count_by", "x"),
        "t": spec("top", "x", k=2),
    }
    empty = {"c": 0, "s": 0, "m": None, "lo": None, "hi": None, "by": {}, "t": []}
    assert finalize(specs, None) == empty
    assert finalize(specs, {}) == empty
    assert finalize(specs, merge_partials(specs, None, None)) == empty
    part = partial_of(specs, [{"x": 1}])
    assert merge_partials(specs, part, None) == part
    assert merge_partials(specs, None, part) == part
    assert list(finalize(specs, part)) == list(specs)


def test_merge_does_not_mutate_its_inputs() -> None:
    specs = {"by": spec("count_by", "x"), "s": spec("sum", "x")}
    a = partial_of(specs, [{"x": 1}, {"x": 0.5}])
    b = partial_of(specs, [{"x": 1}, {"x": 2.5}])
    a_copy, b_copy = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    merge_partials(specs, a, b)
    assert a == a_copy and b == b_copy


def test_partials_are_plain_json() -> None:
    specs = {
        "s": spec("sum", "x"),
        "lo": spec("min", "x"),
        "by": spec("count_by", "x"),
    }
    part = partial_of(specs, [{"x": 0.1}, {"x": 3}, {"x": "a"}])
    assert json.loads(json.dumps(part, allow_nan=False)) == part


def test_state_is_per_task() -> None:
    aggs = Aggregators({"c": spec("count")})
    first, second = aggs.new_state(), aggs.new_state()
    aggs.add(first, {})
    assert aggs.partials(first) == {"c": 1}
    assert aggs.partials(second) == {"c": 0}


@pytest.mark.parametrize(
    "bad",
    [
        {"s": {"kind": "median", "field": "x"}},
        {"s": {"kind": "sum", "field": None}},
        {"s": {"kind": "sum", "field": 3}},
        {"s": {"kind": "top", "field": "x", "k": -1}},
        {"s": {"kind": "top", "field": "x", "k": 1.5}},
        {"s": {"kind": "sum", "field": "x", "k": 3}},
        {"s": {"kind": "count", "where": {"x": {"~": 1}}}},
        {"s": {"kind": "count", "where": "x > 1"}},
        {"s": "count"},
    ],
)
def test_bad_specs_raise_value_error(bad: dict) -> None:
    with pytest.raises(ValueError, match="'s'"):
        Aggregators(bad)


# --- merge laws (Hypothesis) ---------------------------------------------------------------

SPECS: dict[str, dict] = {
    "count": spec("count"),
    "count_a": spec("count", "a"),
    "count_where": spec("count", where={"b": {">": 0}}),
    "sum_a": spec("sum", "a"),
    "sum_b": spec("sum", "b"),
    "sum_where": spec("sum", "a", where={"b": {"in": [None, "x", 1]}}),
    "mean_a": spec("mean", "a"),
    "mean_b": spec("mean", "b"),
    "min_a": spec("min", "a"),
    "max_a": spec("max", "a"),
    "min_b": spec("min", "b"),
    "max_b": spec("max", "b"),
    "by_a": spec("count_by", "a"),
    "by_b": spec("count_by", "b"),
    "top_a": spec("top", "a", k=3),
    "top_b": spec("top", "b", k=1),
}
FLOAT_STATS = {"sum_a", "sum_b", "sum_where", "mean_a", "mean_b"}

values = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.integers(min_value=-3, max_value=3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e6, max_value=1e6),
    st.sampled_from([0.0, -0.0, 1.0, 1, 0, 1e300, -1e300, 1e-300]),
    st.text(max_size=3),
    st.sampled_from(["x", "y", "1"]),
    st.none(),
    st.booleans(),
)
records_st = st.lists(st.fixed_dictionaries({}, optional={"a": values, "b": values}), max_size=40)


def close(x: Any, y: Any) -> bool:
    """Equal, both NaN, or within 1e-9 relative for floats."""
    if isinstance(x, float) and isinstance(y, float):
        if math.isnan(x) or math.isnan(y):
            return math.isnan(x) and math.isnan(y)
        return x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=0.0)
    return type(x) is type(y) and x == y


def assert_same_stats(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert list(got) == list(want)
    for name in want:
        if name in FLOAT_STATS:
            assert close(got[name], want[name]), (name, got[name], want[name])
        else:  # exactly the same JSON text: values, types, key order, sign of zero
            assert json.dumps(got[name]) == json.dumps(want[name]), name


def split(records: list[dict], cuts: list[int]) -> list[list[dict]]:
    bounds = [0, *sorted(cuts), len(records)]
    return [records[lo:hi] for lo, hi in pairwise(bounds)]


def roundtrip(partial: dict) -> dict:
    return json.loads(json.dumps(partial))


def tree_merge(parts: list[dict | None], data: st.DataObject) -> dict:
    """Merge in a random binary tree, each merge with its arguments in random order."""
    if len(parts) == 1:
        return merge_partials(SPECS, parts[0], None)
    i = data.draw(st.integers(min_value=1, max_value=len(parts) - 1))
    left, right = tree_merge(parts[:i], data), tree_merge(parts[i:], data)
    if data.draw(st.booleans()):
        left, right = right, left
    return roundtrip(merge_partials(SPECS, left, right))


@settings(max_examples=300, deadline=None)
@given(records=records_st, data=st.data())
def test_any_split_and_merge_order_gives_the_same_stats(
    records: list[dict], data: st.DataObject
) -> None:
    whole = stats_of(SPECS, records)
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(records)), max_size=6))
    parts: list[dict | None] = [partial_of(SPECS, chunk) for chunk in split(records, cuts)]
    if data.draw(st.booleans()):
        parts = [roundtrip(p) for p in parts]
    if data.draw(st.booleans()):
        parts.append(None)  # a task that contributes nothing
    parts = data.draw(st.permutations(parts))

    assert_same_stats(finalize(SPECS, tree_merge(parts, data)), whole)

    folded: dict | None = None
    for part in parts:  # a left fold, as the parent commits tasks one by one
        folded = merge_partials(SPECS, folded, part)
    assert_same_stats(finalize(SPECS, folded), whole)


@settings(max_examples=200, deadline=None)
@given(records=records_st, data=st.data())
def test_merge_many_equals_the_pairwise_fold(records: list[dict], data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(records)), max_size=6))
    parts: list[dict | None] = [partial_of(SPECS, chunk) for chunk in split(records, cuts)]
    if data.draw(st.booleans()):
        parts.append(None)
    parts = data.draw(st.permutations(parts))
    before = json.dumps(parts)
    folded: dict | None = None
    for part in parts:
        folded = merge_partials(SPECS, folded, part)
    merged = merge_many(SPECS, parts)
    assert merged == folded  # exact partials: equal as data
    assert json.dumps(parts) == before  # the inputs are not mutated
    assert merge_many(SPECS, []) == merge_partials(SPECS, None, None)


@settings(max_examples=200, deadline=None)
@given(records=records_st, data=st.data())
def test_record_order_does_not_matter(records: list[dict], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(records))
    assert_same_stats(stats_of(SPECS, shuffled), stats_of(SPECS, records))


@settings(max_examples=200, deadline=None)
@given(a=records_st, b=records_st, c=records_st)
def test_merge_is_associative_and_commutative(a: list[dict], b: list[dict], c: list[dict]) -> None:
    pa, pb, pc = (partial_of(SPECS, r) for r in (a, b, c))
    left = merge_partials(SPECS, merge_partials(SPECS, pa, pb), pc)
    right = merge_partials(SPECS, pa, merge_partials(SPECS, pc, pb))
    assert left == right  # partials are exact, so equal as data, not just after finalize


finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(xs=st.lists(st.one_of(finite, st.integers()), max_size=30), data=st.data())
def test_sum_is_exactly_the_correctly_rounded_total(xs: list[Any], data: st.DataObject) -> None:
    from fractions import Fraction

    specs = {"s": spec("sum", "x"), "m": spec("mean", "x")}
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(xs)), max_size=4))
    records = [{"x": x} for x in xs]
    merged = None
    for chunk in split(records, cuts):
        merged = merge_partials(specs, merged, roundtrip(partial_of(specs, chunk)))
    result = finalize(specs, merged)
    exact = sum((Fraction(x) for x in xs), Fraction(0))
    if any(isinstance(x, float) for x in xs):
        try:
            expected: Any = float(exact)
        except OverflowError:
            expected = math.inf if exact > 0 else -math.inf
    else:
        expected = int(exact)
    assert result["s"] == expected and type(result["s"]) is type(expected)
    if xs:
        try:
            mean = float(exact / len(xs))
        except OverflowError:
            mean = math.inf if exact > 0 else -math.inf
        assert result["m"] == mean


def test_sum_partials_leave_zero_keys_out_and_read_the_full_form_too() -> None:
    """A sum partial keeps ``n`` and ``int`` and, only when not zero, the float part and
    the non-finite counts (one is packed per small file: size counts). Partials written
    in full by earlier versions, still in old ledgers, merge and finalise the same."""
    specs = {"s": {"kind": "sum", "field": "v"}, "m": {"kind": "mean", "field": "v"}}
    ints = partial_of(specs, [{"v": 2}, {"v": 3}])
    assert ints == {"s": {"n": 2, "int": 5}, "m": {"n": 2, "int": 5}}
    floats = partial_of(specs, [{"v": 0.5}, {"v": math.inf}])
    assert floats["s"] == {"n": 2, "int": 0, "float": [1, -1], "floats": 2, "+inf": 1}
    zeros = {"float": [0, 0], "floats": 0, "nan": 0, "+inf": 0, "-inf": 0}
    old = {"s": {"n": 1, "int": 7, **zeros}, "m": {"n": 1, "int": 7, **zeros}}
    merged = merge_many(specs, [ints, old])
    assert merged == {"s": {"n": 3, "int": 12}, "m": {"n": 3, "int": 12}}
    assert merge_partials(specs, ints, old) == merged
    assert finalize(specs, merged) == {"s": 12, "m": 4.0}
    assert finalize(specs, merge_many(specs, [floats, old]))["s"] == math.inf


# --- whole lists of records ------------------------------------------------------------

values_or_lists = st.one_of(values, st.lists(st.integers(0, 2), max_size=2))
mixed_records = st.lists(
    st.fixed_dictionaries({}, optional={"a": values_or_lists, "b": values}), max_size=60
)


def partial_text(partials: dict) -> str:
    """Partials as JSON text with every dict's keys sorted: key order is not a result."""
    return json.dumps(partials, sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(records=mixed_records, cut=st.integers(0, 60))
def test_add_records_equals_add_record_by_record(records: list[dict], cut: int) -> None:
    aggs = Aggregators(SPECS)
    one_by_one, listed = aggs.new_state(), aggs.new_state()
    for record in records:
        aggs.add(one_by_one, record)
    aggs.add_records(listed, records[:cut])  # in two lists: state carries over
    aggs.add_records(listed, records[cut:])
    assert partial_text(aggs.partials(listed)) == partial_text(aggs.partials(one_by_one))


def test_count_by_of_a_list_keeps_equal_values_of_other_types_apart() -> None:
    """1, 1.0 and True are equal in Python, and so are 0.0 and -0.0: their keys are not."""
    records = [{"a": v} for v in (1, 1.0, True, 0.0, -0.0, 0, False, None, "1", float("nan"))]
    records.append({})
    aggs = Aggregators({"by": spec("count_by", "a")})
    state = aggs.new_state()
    aggs.add_records(state, records)
    assert aggs.partials(state)["by"] == {
        "1": 2,  # the int 1 and the string "1" share a key, by design
        "1.0": 1,
        "true": 1,
        "0.0": 1,
        "-0.0": 1,
        "0": 1,
        "false": 1,
        "null": 2,
        "NaN": 1,
    }

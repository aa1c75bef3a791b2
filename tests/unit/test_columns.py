"""columns: the int-column tag lets aggregates and conditions skip type checks, and must
never change a result."""

from __future__ import annotations

from pipeline import aggregates
from pipeline.columns import IntColumn, column_of, int_values, shared_column
from pipeline.conditions import compile_column_condition


def test_int_values() -> None:
    tagged = IntColumn([1, 2])
    assert int_values(tagged) is tagged
    assert int_values([1, 2]) == [1, 2] and int_values([]) == []
    assert int_values([None, 1, None, 2]) == [1, 2] and int_values([None]) == []
    assert int_values([1, True]) is None  # bool is not a number here
    assert int_values([1, 2.0]) is None and int_values(["1"]) is None
    assert int_values([None, 2.0]) is None


def test_column_of_reads_a_missing_field_as_none() -> None:
    assert column_of([{"a": 1}, {"a": None}], "a") == [1, None]
    assert column_of([{"a": 1}, {"b": 2}, {"a": 3}], "a") == [1, None, 3]
    assert column_of([{"b": 2}], "a") == [None]
    assert column_of([], "a") == []


def test_shared_column_is_taken_once() -> None:
    records = [{"a": 1}, {"b": 2}]
    taken: dict[str, list] = {}
    first = shared_column(taken, records, "a")
    assert first == [1, None] and taken == {"a": first}
    assert shared_column(taken, records, "a") is first


def test_tagged_and_plain_columns_give_the_same_stats_and_masks() -> None:
    specs = {
        "n": {"kind": "count", "field": "s"},
        "total": {"kind": "sum", "field": "s"},
        "lo": {"kind": "min", "field": "s"},
        "by": {"kind": "count_by", "field": "s"},
        "big": {"kind": "count", "where": {"s": {">=": 400}}},
    }
    values = [200, 404, 500, 200, -3]
    aggs = aggregates.Aggregators(specs)
    results = []
    for column in (values, IntColumn(values)):
        state = aggs.new_state()
        aggs.add_columns(state, {"s": column}, len(values))
        results.append(aggs.partials(state))
    assert results[0] == results[1]
    assert aggregates.finalize(specs, results[1]) == {
        "n": 5,
        "total": 1301,
        "lo": -3,
        "by": {"-3": 1, "200": 2, "404": 1, "500": 1},
        "big": 2,
    }
    mask = compile_column_condition({"s": {">": 300}})
    assert (
        mask({"s": IntColumn(values)}, 5)
        == mask({"s": values}, 5)
        == [
            False,
            True,
            True,
            False,
            False,
        ]
    )

"""The step chain: every step, malformed counting, fan-out, and the call plugin."""

from __future__ import annotations

import sys
import textwrap
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.steps import STEP_NAMES, compile_steps

ACCESS_RE = (
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+)"
)
LINE = '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326'


def run(specs: list[dict[str, Any]], record: dict[str, Any]) -> tuple[list[dict], int]:
    return compile_steps(specs)(record)


def types(fields: dict[str, str], nulls: list[str] | None = None) -> dict[str, Any]:
    return {"types": {"fields": fields, "nulls": nulls or []}}


def test_step_names_is_an_immutable_tuple() -> None:
    assert isinstance(STEP_NAMES, tuple)
    assert set(STEP_NAMES) == {"regex", "types", "filter", "select", "rename", "call"}


def test_no_steps_passes_the_record_through() -> None:
    record = {"line": "x"}
    assert run([], record) == ([{"line": "x"}], 0)


# --- regex ------------------------------------------------------------------------------


def test_regex_adds_named_groups() -> None:
    out, bad = run([{"regex": {"pattern": ACCESS_RE, "field": "line"}}], {"line": LINE})
    assert bad == 0
    assert out == [
        {
            "line": LINE,
            "ip": "127.0.0.1",
            "ts": "10/Oct/2000:13:55:36 -0700",
            "method": "GET",
            "path": "/a.gif",
            "status": "200",
            "bytes": "2326",
        }
    ]


def test_regex_matches_at_the_start_only() -> None:
    step = [{"regex": {"pattern": r"(?P<n>\d+)", "field": "line"}}]
    assert run(step, {"line": "42abc"}) == ([{"line": "42abc", "n": "42"}], 0)
    assert run(step, {"line": "abc42"}) == ([], 1)


def test_regex_group_that_did_not_participate_is_none() -> None:
    step = [{"regex": {"pattern": r"(?P<a>a)?(?P<b>b)", "field": "line"}}]
    assert run(step, {"line": "b"}) == ([{"line": "b", "a": None, "b": "b"}], 0)


def test_regex_on_another_field() -> None:
    step = [{"regex": {"pattern": r"(?P<user>\w+)@", "field": "email"}}]
    assert run(step, {"email": "bob@x.org"}) == ([{"email": "bob@x.org", "user": "bob"}], 0)


@pytest.mark.parametrize("record", [{"line": "nope"}, {}, {"line": None}, {"line": 42}])
def test_regex_no_match_or_bad_field_is_malformed(record: dict[str, Any]) -> None:
    step = [{"regex": {"pattern": r"(?P<n>\d+)", "field": "line"}}]
    assert run(step, record) == ([], 1)


# --- types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("42", 42), ("-3", -3), (" 7 ", 7), ("+5", 5), (12, 12), (10**30, 10**30)],
)
def test_types_int(value: Any, expected: int) -> None:
    out, bad = run([types({"n": "int"})], {"n": value})
    assert (out, bad) == ([{"n": expected}], 0)
    assert type(out[0]["n"]) is int


@pytest.mark.parametrize("value", ["4.0", "abc", "", "1_000", "0x10", True, False, 4.0, [1], {}])
def test_types_int_malformed(value: Any) -> None:
    assert run([types({"n": "int"})], {"n": value}) == ([], 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1.5", 1.5), ("3", 3.0), (3, 3.0), (2.5, 2.5), ("1e3", 1000.0), ("-inf", float("-inf"))],
)
def test_types_float(value: Any, expected: float) -> None:
    out, bad = run([types({"x": "float"})], {"x": value})
    assert (out, bad) == ([{"x": expected}], 0)
    assert type(out[0]["x"]) is float


def test_types_float_accepts_nan_like_python() -> None:
    out, _ = run([types({"x": "float"})], {"x": "NaN"})
    assert out[0]["x"] != out[0]["x"]


@pytest.mark.parametrize("value", ["abc", "", "1_0", True, [1.0], 10**400])
def test_types_float_malformed(value: Any) -> None:
    assert run([types({"x": "float"})], {"x": value}) == ([], 1)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("FALSE", False),
        ("Yes", True),
        ("no", False),
        (" on ", True),
        ("off", False),
        ("1", True),
        ("0", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_types_bool(value: Any, expected: bool) -> None:
    assert run([types({"b": "bool"})], {"b": value}) == ([{"b": expected}], 0)


@pytest.mark.parametrize("value", ["maybe", "", "2", 2, -1, 1.0, [True]])
def test_types_bool_malformed(value: Any) -> None:
    assert run([types({"b": "bool"})], {"b": value}) == ([], 1)


@pytest.mark.parametrize(
    ("value", "expected"), [(42, "42"), (1.5, "1.5"), ("x", "x"), (True, "True"), ([1], "[1]")]
)
def test_types_str(value: Any, expected: str) -> None:
    assert run([types({"s": "str"})], {"s": value}) == ([{"s": expected}], 0)


def test_types_nulls_none_and_missing() -> None:
    step = [types({"a": "int", "b": "int", "c": "str", "d": "int"}, nulls=["-", ""])]
    out, bad = run(step, {"a": "-", "b": None, "c": ""})
    assert bad == 0
    assert out == [{"a": None, "b": None, "c": None}]  # d stays missing


def test_types_one_bad_field_drops_the_record() -> None:
    step = [types({"status": "int", "bytes": "int"})]
    assert run(step, {"status": "200", "bytes": "-"}) == ([], 1)


def test_types_nulls_are_optional() -> None:
    assert run([{"types": {"fields": {"n": "int"}}}], {"n": "1"}) == ([{"n": 1}], 0)


# --- filter, select, rename -------------------------------------------------------------


def test_filter_keeps_or_drops_without_counting_malformed() -> None:
    step = [{"filter": {"status": {">=": 500}}}]
    assert run(step, {"status": 503}) == ([{"status": 503}], 0)
    assert run(step, {"status": 200}) == ([], 0)
    assert run(step, {"status": "503"}) == ([], 0)  # wrong type: false, not malformed
    assert run(step, {}) == ([], 0)


def test_select_keeps_listed_fields_in_order() -> None:
    out, _ = run([{"select": ["c", "a", "zz"]}], {"a": 1, "b": 2, "c": 3})
    assert out == [{"c": 3, "a": 1}]
    assert list(out[0]) == ["c", "a"]


def test_rename() -> None:
    out, _ = run([{"rename": {"a": "x"}}], {"a": 1, "b": 2})
    assert out == [{"x": 1, "b": 2}]
    assert list(out[0]) == ["x", "b"]  # keeps its position


def test_rename_missing_key_is_a_no_op() -> None:
    record = {"b": 2}
    assert run([{"rename": {"a": "b"}}], record) == ([{"b": 2}], 0)


def test_rename_swap_and_overwrite() -> None:
    assert run([{"rename": {"a": "b", "b": "a"}}], {"a": 1, "b": 2}) == ([{"b": 1, "a": 2}], 0)
    out, _ = run([{"rename": {"a": "b"}}], {"b": 2, "a": 1, "c": 3})
    assert out == [{"b": 1, "c": 3}]  # the renamed value wins


# --- a typical chain --------------------------------------------------------------------


def test_access_log_chain() -> None:
    chain = compile_steps(
        [
            {"regex": {"pattern": ACCESS_RE, "field": "line"}},
            types({"status": "int", "bytes": "int"}),
            {"filter": {"status": {">=": 200}}},
            {"select": ["ip", "path", "status", "bytes"]},
        ]
    )
    assert chain({"line": LINE}) == (
        [{"ip": "127.0.0.1", "path": "/a.gif", "status": 200, "bytes": 2326}],
        0,
    )
    assert chain({"line": "garbage"}) == ([], 1)
    assert chain({"line": LINE.replace(" 200 ", " 100 ")}) == ([], 0)


# --- call -------------------------------------------------------------------------------

PLUGIN = """
from collections import OrderedDict
from collections.abc import Iterator
from pipeline.errors import MalformedRecord


def enrich(record):
    record["seen"] = True
    return record


def new_mapping(record):
    return OrderedDict(k=record["k"], extra=1)


def drop_odd(record):
    return None if record["n"] % 2 else record


def split_list(record):
    return [{"n": n} for n in record["ns"]]


def split_tuple(record):
    return tuple({"n": n} for n in record["ns"])


def split_gen(record):
    for n in record["ns"]:
        yield {"n": n}


def twice_same(record):
    return [record, record]


def nothing(record):
    return []


def bad_return(record):
    return 42


def bad_str(record):
    return "abc"


def bad_item(record):
    return [{"n": 1}, 5]


def boom(record):
    raise RuntimeError("boom at " + str(record.get("n")))


def reject(record):
    raise MalformedRecord("no")


class Tools:
    @staticmethod
    def tag(record):
        record["tag"] = "t"
        return record


NOT_CALLABLE = 3
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Write a uniquely named plugin module into tmp_path and make it importable."""
    name = f"plugin_{abs(hash(str(tmp_path)))}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def call(plugin: str, fn: str) -> dict[str, str]:
    return {"call": f"{plugin}:{fn}"}


def test_call_returns_a_record(plugin: str) -> None:
    assert run([call(plugin, "enrich")], {"n": 1}) == ([{"n": 1, "seen": True}], 0)


def test_call_mapping_becomes_a_dict(plugin: str) -> None:
    out, _ = run([call(plugin, "new_mapping")], {"k": "v"})
    assert out == [{"k": "v", "extra": 1}]
    assert type(out[0]) is dict
    assert not isinstance(out[0], OrderedDict)


def test_call_none_drops_without_malformed(plugin: str) -> None:
    chain = compile_steps([call(plugin, "drop_odd")])
    assert chain({"n": 1}) == ([], 0)
    assert chain({"n": 2}) == ([{"n": 2}], 0)


@pytest.mark.parametrize("fn", ["split_list", "split_tuple", "split_gen"])
def test_call_fans_out_and_later_steps_apply_to_each(plugin: str, fn: str) -> None:
    chain = compile_steps(
        [
            call(plugin, fn),
            types({"n": "int"}),
            {"filter": {"n": {"!=": 3}}},
            {"rename": {"n": "m"}},
        ]
    )
    out, bad = chain({"ns": ["1", "x", "3", "4", "y"]})
    assert out == [{"m": 1}, {"m": 4}]  # order kept
    assert bad == 2  # "x" and "y" do not convert


def test_fan_out_as_last_step(plugin: str) -> None:
    assert run([call(plugin, "split_list")], {"ns": [1, 2]}) == ([{"n": 1}, {"n": 2}], 0)


def test_fan_out_then_fan_out_again(plugin: str) -> None:
    chain = compile_steps([call(plugin, "split_list"), {"rename": {"n": "ns"}}])
    assert chain({"ns": [[1, 2], [3]]}) == ([{"ns": [1, 2]}, {"ns": [3]}], 0)
    nested = compile_steps(
        [call(plugin, "split_list"), {"rename": {"n": "ns"}}, call(plugin, "split_list")]
    )
    assert nested({"ns": [[1, 2], [3]]}) == ([{"n": 1}, {"n": 2}, {"n": 3}], 0)


def test_empty_fan_out_drops(plugin: str) -> None:
    assert run([call(plugin, "nothing"), {"select": ["n"]}], {"n": 1}) == ([], 0)


def test_fan_out_items_are_independent_copies(plugin: str) -> None:
    chain = compile_steps([call(plugin, "twice_same"), {"rename": {"n": "m"}}])
    out, _ = chain({"n": 1})
    assert out == [{"m": 1}, {"m": 1}]
    chain = compile_steps([call(plugin, "twice_same"), types({"n": "str"})])
    out, _ = chain({"n": 1})
    assert out == [{"n": "1"}, {"n": "1"}]
    assert out[0] is not out[1]


@pytest.mark.parametrize(
    ("fn", "type_name"), [("bad_return", "int"), ("bad_str", "str"), ("bad_item", "int")]
)
def test_call_bad_return_raises_type_error(plugin: str, fn: str, type_name: str) -> None:
    with pytest.raises(TypeError, match=rf"{plugin}:{fn}.*\b{type_name}\b"):
        run([call(plugin, fn)], {"n": 1})


def test_call_user_exception_propagates(plugin: str) -> None:
    with pytest.raises(RuntimeError, match="boom at 7"):
        run([call(plugin, "boom")], {"n": 7})


def test_call_user_exception_after_fan_out_propagates(plugin: str) -> None:
    with pytest.raises(RuntimeError, match="boom at 2"):
        run([call(plugin, "split_list"), call(plugin, "boom")], {"ns": [2]})


def test_call_malformed_record_signal_counts_as_malformed(plugin: str) -> None:
    assert run([call(plugin, "reject")], {"n": 1}) == ([], 1)


def test_call_dotted_attribute(plugin: str) -> None:
    assert run([call(plugin, "Tools.tag")], {}) == ([{"tag": "t"}], 0)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module_xyz:f", "cannot import"),
        ("{plugin}:missing", "has no attribute"),
        ("{plugin}:NOT_CALLABLE", "not callable"),
        ("{plugin}", "module:function"),
        (":f", "module:function"),
    ],
)
def test_call_bad_reference_raises_value_error(plugin: str, ref: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_steps([{"call": ref.format(plugin=plugin)}])


# --- bad specs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        {"nope": 1},
        {"regex": "^x", "types": {}},
        {"regex": {"pattern": "(", "field": "line"}},
        {"regex": {"pattern": "x"}},
        {"types": {"fields": {"a": "date"}}},
        {"types": {"a": "int"}},
        {"types": {"fields": {"a": "int"}, "nulls": "-"}},
        {"filter": {"a": {"~": 1}}},
        {"select": "a"},
        {"rename": {"a": 1}},
        {"call": 5},
    ],
)
def test_bad_specs_raise_value_error(spec: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="step 1"):
        compile_steps([spec])


# --- a regex on line then types of its groups as ints: inline in the loop over lines -------

import re  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pipeline.steps import _compile_chain, _line_ints  # noqa: E402

GROUPS_RE = r"^(?P<a>[^,]*),(?P<b>[^,]*)(?:,(?P<c>[^,]*))?$"

int_texts = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.text(alphabet="0123456789 +-_٣x.", max_size=6),
    st.sampled_from(["", "-", "n/a", "0", "1_000", " 42 ", "+7", "٣", "1" * 5000]),
)


@pytest.mark.parametrize(
    "fields, nulls, fused",
    [
        ({"a": "int", "c": "int"}, ["-"], True),
        ({"a": "int"}, [], True),
        ({"a": "int", "c": "float"}, ["-"], False),  # not only ints
        ({"a": "int", "line": "int"}, [], False),  # not only the regex's groups
        ({"a": "int"}, ["-", " 0"], False),  # a null that converts as an int
    ],
)
def test_types_of_the_line_regex_are_inline_only_when_they_may_be(
    fields: dict[str, str], nulls: list[str], fused: bool
) -> None:
    groups = re.compile(GROUPS_RE).groupindex
    assert (_line_ints(groups, types(fields, nulls)) is not None) is fused


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.tuples(int_texts, int_texts, st.one_of(st.none(), int_texts)), max_size=12),
    nulls=st.sampled_from([[], ["-"], ["-", "n/a", ""], ["0"]]),
    kinds=st.sampled_from([{"a": "int", "c": "int"}, {"a": "int", "b": "int"}, {"c": "int"}]),
    then=st.sampled_from([[], [{"select": ["a", "c"]}]]),
)
def test_inline_ints_give_what_the_types_step_gives(
    values: list[tuple[str, str, str | None]],
    nulls: list[str],
    kinds: dict[str, str],
    then: list[dict[str, Any]],
) -> None:
    """The loop over lines (``feed_lines``, with the types inline when ``_line_ints``
    allows) against the chain record by record: the same records, the same malformed
    lines with the same reasons, for any value an int field may hold."""
    lines = [",".join(v for v in row if v is not None) for row in values]
    specs = [{"regex": {"pattern": GROUPS_RE, "field": "line"}}, types(kinds, nulls), *then]
    want_reasons: list[str] = []
    chain = compile_steps(specs, want_reasons)
    want: list[dict] = []
    want_bad: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        records, bad = chain({"line": line})
        want += records
        if bad:
            want_bad.append((i, bad))
    got_reasons: list[str] = []
    _, _, feed_lines = _compile_chain(specs, got_reasons, first=0, then_more=False)
    got: list[dict] = []
    got_bad: list[tuple[int, int]] = []
    feed_lines(lines, got, lambda i, n: got_bad.append((i, n)), [])
    assert got == want
    assert [[type(v) for v in r.values()] for r in got] == [
        [type(v) for v in r.values()] for r in want
    ]
    assert got_bad == want_bad
    assert got_reasons == want_reasons

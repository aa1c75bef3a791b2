"""packing: a batch row's members read back equal, whichever JSON library wrote them."""

from __future__ import annotations

import json
import math
from unittest.mock import patch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.store import packing

orjson = pytest.importorskip("orjson")

# Values a member holds: paths (maybe not valid UTF-8: lone surrogates), integers of any
# size (exact sums), floats (a duration; min/max partials, infinities included).
paths = st.text(st.characters(codec="utf-8") | st.sampled_from(["\udce9", "\udc80"]))
ints = st.integers() | st.integers(-(2**70), 2**70)
numbers = ints | st.floats(allow_nan=False)
partials = st.dictionaries(
    st.text(max_size=5),
    ints
    | st.fixed_dictionaries({"n": ints, "int": ints})
    | st.fixed_dictionaries({"num": numbers | st.none(), "str": st.text() | st.none()})
    | st.dictionaries(st.text(max_size=5), ints, max_size=3),
    max_size=3,
)


def _member(path: str, size: int, parts: dict, duration: float, compression: str | None) -> list:
    """A member laid out as ``packing.member`` lays it out."""
    mtime = 1_764_000_000_123_456_789
    return [
        "id",
        path,
        size,
        size,
        mtime,
        compression,
        1,
        1,
        0,
        0,
        size,
        parts,
        0,
        0,
        "c0",
        duration,
    ]


members = st.lists(
    st.builds(_member, paths, ints, partials, st.floats(0, 10), st.none() | st.text(max_size=8)),
    min_size=1,
    max_size=4,
)


@given(members)
def test_members_read_back_equal(value: list[list]) -> None:
    text = packing.pack(value)
    assert packing.unpack(text) == value
    assert json.loads(text) == value  # the stdlib reads what orjson wrote
    stdlib_text = json.dumps(value, separators=(",", ":"))
    assert packing.unpack(stdlib_text) == value  # and orjson-era readers read old rows


@given(members)
def test_without_orjson_the_stdlib_does_it_all(value: list[list]) -> None:
    with patch.object(packing, "_orjson", lambda: None):
        text = packing.pack(value)
        assert packing.unpack(text) == value
    assert text == json.dumps(value, separators=(",", ":"))  # it was the stdlib's


@pytest.mark.parametrize(
    "special",
    [
        {"lat": {"num": math.inf, "str": None}},  # orjson would write null
        {"lat": {"num": -math.inf, "str": None}},
        {"bytes": {"n": 1, "int": 2**64}},  # orjson refuses it
        {"bytes": {"n": 1, "int": -(2**63) - 1}},
    ],
)
def test_values_orjson_cannot_say_are_kept(special: dict) -> None:
    member = ["id", "/d/a.log", 1, 1, 5, None, 1, 1, 0, 0, 1, special, 0, 0, None, 0.5]
    assert packing.unpack(packing.pack([member])) == [member]


def test_integers_orjson_would_read_as_floats_are_read_exactly() -> None:
    text = json.dumps([2**64, -(2**63) - 1, 2**200])
    assert orjson.loads(text) != [2**64, -(2**63) - 1, 2**200]  # why unpack checks
    assert packing.unpack(text) == [2**64, -(2**63) - 1, 2**200]
    assert packing.unpack(text)[0].__class__ is int

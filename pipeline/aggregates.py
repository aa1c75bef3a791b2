"""Aggregate statistics as mergeable, JSON-serialisable partials.

A worker builds one ``Aggregators`` from the normalised stat specs, makes a fresh state per
task, feeds it every record that leaves the steps (``add``: the per-record fast path), and
returns ``partials(state)``, a plain dict the parent stores as JSON text. The parent folds
the committed partials with ``merge_partials`` (associative and commutative, so neither
task order nor chunking matters) and ``finalize`` turns the result into ``stats.json``.

Partial forms (by stat name; all survive ``json.dumps``/``json.loads`` unchanged):

``count``       ``int``. With a ``field``, only records whose field is present and not
                null are counted (SQL's ``COUNT(field)``).
``sum``/``mean`` ``{"n", "int", "float", "floats", "nan", "+inf", "-inf"}``, the last five
                left out when zero (the usual case: ints only; one is packed per small
                file in a batch row, so size counts), the count of
                numeric values, the exact sum of the ints, the *exact* sum of the finite
                floats as ``[m, e]`` meaning ``m * 2**e`` (every double is an integer
                multiple of 2**-1074, so float sums are exact integers at that scale), how
                many floats were seen, and the non-finite ones counted apart. Exact partials
                make the result independent of chunking even under cancellation
                (``1e20 + 1 - 1e20``), where ``fsum`` of per-task ``fsum`` results is not.
                ``finalize`` rounds once, correctly: ``sum`` is an ``int`` when no float was
                seen, else the correctly rounded float of the exact total (±inf beyond the
                float range; NaN if a NaN or both infinities were seen); ``mean`` is the
                correctly rounded ``total / n``, ``None`` when ``n == 0``.
``min``/``max``  ``{"num": number|None, "str": str|None}``: the best number and the best
                string seen. Numbers order before strings, so ``min`` is the least number
                if any, else the least string; ``max`` is the greatest string if any, else
                the greatest number; ``None`` when nothing was seen. Equal numbers of
                different types tie-break deterministically (an int over a float, -0.0 over
                0.0) so the result's JSON text never depends on record order. NaN is skipped.
``count_by``/``top`` ``{key: n}`` with every key (``top`` is cut to ``k`` only in
                ``finalize``: ``[[key, n], ...]`` by count descending, ties by key
                ascending; ``k`` None means no cut). ``count_by`` finalises to a dict sorted
                by key.

Which values count: ``sum``, ``min``, ``max`` and ``mean`` skip a missing field and ``None``
(as SQL does). ``sum``/``mean`` take ``int`` and ``float`` only (``bool`` is not a number;
strings and anything else are skipped); ``min``/``max`` take numbers and strings and skip
everything else (``bool``, lists, NaN). The key of ``count_by``/``top`` is a ``str`` value as
is, anything else its compact JSON text: ``200`` -> ``"200"``, ``None`` or a missing field ->
``"null"``, ``True`` -> ``"true"``, ``1.5`` -> ``"1.5"``, ``[1, 2]`` -> ``"[1,2]"`` (dict keys
sorted). So the string ``"200"`` and the int ``200`` share a key, by design of the format.
Keys sort by code point. ``where:`` (the ``filter`` syntax) restricts the records a stat sees.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from itertools import compress
from operator import itemgetter
from typing import Any

from pipeline.columns import Columns, IntColumn, column_of, int_values, shared_column
from pipeline.conditions import (
    ColumnCondition,
    RecordsFilter,
    compile_column_condition,
    compile_condition,
    compile_records_filter,
)

KINDS: tuple[str, ...] = ("count", "sum", "min", "max", "mean", "count_by", "top")

_SCALE_BITS = 1074  # 2**-1074 is the smallest positive double: every double is m * 2**-1074
_FOLD_AT = 2048  # floats buffered before folding them into the exact sum (bounds memory)

Specs = Mapping[str, Mapping[str, Any]]


# --- per-kind accumulators (per task, mutable) --------------------------------------------


class _Count:
    __slots__ = ("field", "n")

    def __init__(self, field: str | None) -> None:
        self.field = field
        self.n = 0

    def add(self, record: Mapping[str, Any]) -> None:
        self.n += 1

    def add_field(self, record: Mapping[str, Any]) -> None:
        if record.get(self.field) is not None:
            self.n += 1

    def add_values(self, values: list[Any]) -> None:
        """A column of the field's values (or of anything, one per record, without field)."""
        if self.field is None:
            self.n += len(values)
        else:
            self.n += len(values) - values.count(None)

    def partial(self) -> int:
        return self.n


class _Sum:
    """Sum and mean: exact ints, buffered floats folded into an exact scaled integer."""

    __slots__ = ("field", "floats", "n_float", "n_int", "nonfinite", "scaled", "total_int")

    def __init__(self, field: str) -> None:
        self.field = field
        self.total_int = 0
        self.n_int = 0
        self.floats: list[float] = []
        self.n_float = 0
        self.scaled = 0  # exact sum of the folded finite floats, in units of 2**-1074
        self.nonfinite = [0, 0, 0]  # nan, +inf, -inf

    def add(self, record: Mapping[str, Any]) -> None:
        value = record.get(self.field)
        t = type(value)
        if t is int:
            self.total_int += value
            self.n_int += 1
        elif t is float:
            floats = self.floats
            floats.append(value)
            if len(floats) >= _FOLD_AT:
                self._fold()
        elif value is not None and t is not bool:
            self._add_other(value)

    def _add_other(self, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            self.total_int += int(value)
            self.n_int += 1
        elif isinstance(value, float):
            self.floats.append(float(value))

    def add_values(self, values: list[Any]) -> None:
        ints = int_values(values)
        if ints is not None:
            self.total_int += sum(ints)
            self.n_int += len(ints)
            return
        values = _without_none(values)
        if set(map(type, values)) <= {float}:
            self.floats.extend(values)
            if len(self.floats) >= _FOLD_AT:
                self._fold()
        else:
            add = self.add
            field = self.field
            for value in values:
                add({field: value})

    def _fold(self) -> None:
        scaled, nonfinite = self.scaled, self.nonfinite
        for x in self.floats:
            if x - x == 0.0:  # finite
                m, d = x.as_integer_ratio()
                scaled += m << (_SCALE_BITS + 1 - d.bit_length())
            elif x != x:
                nonfinite[0] += 1
            elif x > 0:
                nonfinite[1] += 1
            else:
                nonfinite[2] += 1
        self.scaled = scaled
        self.n_float += len(self.floats)
        self.floats.clear()

    def partial(self) -> dict[str, Any]:
        if not self.floats and not self.n_float:  # ints only: nothing to fold
            return {"n": self.n_int, "int": self.total_int}
        self._fold()
        nan, pinf, ninf = self.nonfinite
        return _sum_partial(
            self.n_int + self.n_float, self.total_int, self.scaled, self.n_float, nan, pinf, ninf
        )


def _sum_partial(
    n: int, total_int: int, scaled: int, floats: int, nan: int, pinf: int, ninf: int
) -> dict[str, Any]:
    """A sum partial in its one form: ``n`` and ``int``, and the other keys unless zero."""
    partial: dict[str, Any] = {"n": n, "int": total_int}
    if scaled:
        partial["float"] = _pair_from_scaled(scaled)
    for key, value in (("floats", floats), ("nan", nan), ("+inf", pinf), ("-inf", ninf)):
        if value:
            partial[key] = value
    return partial


class _MinMax:
    """The best number and the best string seen (numbers order before strings)."""

    __slots__ = ("better", "field", "num", "text")

    def __init__(self, field: str, better: Callable[[Any, Any], bool]) -> None:
        self.field = field
        self.better = better  # better(candidate, current): candidate replaces current
        self.num: Any = None
        self.text: str | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        value = record.get(self.field)
        t = type(value)
        if t is int or t is float:
            if value == value and (self.num is None or self.better(value, self.num)):
                self.num = value
        elif t is str:
            if self.text is None or self.better(value, self.text):
                self.text = value
        elif value is not None and t is not bool:
            self._add_other(value)

    def _add_other(self, value: Any) -> None:
        """Subclasses of int, float and str (an IntEnum, say), stored as the plain type."""
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            self._offer_num(int(value))
        elif isinstance(value, float):
            self._offer_num(float(value))
        elif isinstance(value, str):
            text = str(value)
            if self.text is None or self.better(text, self.text):
                self.text = text

    def add_values(self, values: list[Any]) -> None:
        ints = int_values(values)
        if ints:  # ints: one comparison
            best = max(ints) if self.better is _greater else min(ints)
            if self.num is None or self.better(best, self.num):
                self.num = best
            return
        values = _without_none(values)
        add = self.add
        field = self.field
        for value in values:
            add({field: value})

    def _offer_num(self, value: float) -> None:
        if value == value and (self.num is None or self.better(value, self.num)):
            self.num = value

    def partial(self) -> dict[str, Any]:
        return {"num": self.num, "str": self.text}


class _CountBy:
    __slots__ = ("counts", "field")

    def __init__(self, field: str) -> None:
        self.field = field
        self.counts: dict[str, int] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        value = record.get(self.field)
        t = type(value)
        if t is str:
            key = value
        elif t is int:
            key = str(value)
        elif value is None:
            key = "null"
        elif t is bool:
            key = "true" if value else "false"
        else:
            key = value_key(value)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1

    def add_values(self, values: list[Any]) -> None:
        counts = self.counts
        types = {int} if type(values) is IntColumn else set(map(type, values))
        if types <= {int} or types <= {str}:
            distinct: Iterable[tuple[Any, int]] = Counter(values).items()
        elif types <= _TYPED_KEYS:
            # 1 and True hash alike but have different keys: count by (type, value)
            typed = Counter(zip(map(type, values), values, strict=True))
            distinct = ((value, n) for (_t, value), n in typed.items())
        else:  # floats (0.0 and -0.0 are equal, their keys are not), anything else
            for value in values:
                key = _key_of(value)
                counts[key] = counts.get(key, 0) + 1
            return
        for value, n in distinct:
            key = _key_of(value)
            counts[key] = counts.get(key, 0) + n

    def partial(self) -> dict[str, int]:
        return dict(self.counts)


# Types whose equal values (within one type) always have the same ``count_by`` key.
_TYPED_KEYS = frozenset({int, str, bool, type(None)})


def _key_of(value: Any) -> str:
    """``value_key``, short-cut for the usual scalar types (as ``_CountBy.add`` does)."""
    t = type(value)
    if t is str:
        return value
    if t is int:
        return str(value)
    if value is None:
        return "null"
    if t is bool:
        return "true" if value else "false"
    return value_key(value)


def _without_none(values: list[Any]) -> list[Any]:
    """The values a ``sum``/``min``/``max`` can take from a column: ``None`` (a null or a
    missing field) is skipped, so a column of ints with nulls keeps the whole-column route."""
    if type(values) is not list or None not in values:
        return values
    return [value for value in values if value is not None]


def value_key(value: Any) -> str:
    """The ``count_by``/``top`` key: a ``str`` as is, anything else its compact JSON text."""
    if isinstance(value, str):
        return str(value)
    try:
        return json.dumps(value, **_KEY_JSON)
    except TypeError:  # a dict with keys of mixed types cannot be sorted
        return json.dumps(value, **{**_KEY_JSON, "sort_keys": False})


_KEY_JSON: dict[str, Any] = {
    "separators": (",", ":"),
    "sort_keys": True,
    "ensure_ascii": False,
    "default": str,
}


# --- number ordering with deterministic ties ---------------------------------------------


def _tie_rank(x: Any) -> int:
    """Among equal numbers: int first, then -0.0, then other floats."""
    if isinstance(x, int):
        return 0
    return 1 if math.copysign(1.0, x) < 0 else 2


def _less(a: Any, b: Any) -> bool:
    """``min`` order: by value, equal numbers by ``_tie_rank``; strings plainly."""
    if a < b:
        return True
    if a == b and type(a) is not str:
        return _tie_rank(a) < _tie_rank(b)
    return False


def _greater(a: Any, b: Any) -> bool:
    """``max`` order: by value, equal numbers by ``_tie_rank`` (the same preference)."""
    if a > b:
        return True
    if a == b and type(a) is not str:
        return _tie_rank(a) < _tie_rank(b)
    return False


# --- building --------------------------------------------------------------------------------


def _check_specs(specs: Specs) -> None:
    if not isinstance(specs, Mapping):
        raise ValueError(f"stats must be a mapping of name -> spec, got {specs!r}")
    for name, spec in specs.items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"stat {name!r}: expected a mapping, got {spec!r}")
        kind, field, k = spec.get("kind"), spec.get("field"), spec.get("k")
        if kind not in KINDS:
            raise ValueError(f"stat {name!r}: unknown kind {kind!r}; expected one of {KINDS}")
        if field is not None and not isinstance(field, str):
            raise ValueError(f"stat {name!r}: field must be a string, got {field!r}")
        if kind != "count" and field is None:
            raise ValueError(f"stat {name!r}: {kind} needs a field")
        if k is not None and (kind != "top" or type(k) is not int or k < 0):
            raise ValueError(f"stat {name!r}: k must be a non-negative int, for top only")
        where = spec.get("where")
        if where is not None and not isinstance(where, Mapping):
            raise ValueError(f"stat {name!r}: where must be a condition mapping, got {where!r}")


def _accumulator(kind: str, field: str | None) -> tuple[Callable[[], Any], str]:
    """(a maker of a fresh accumulator, the name of its per-record method) for a stat."""
    if kind == "count":
        return partial(_Count, field), "add" if field is None else "add_field"
    if kind in ("sum", "mean"):
        return partial(_Sum, field), "add"
    if kind in ("min", "max"):
        return partial(_MinMax, field, _less if kind == "min" else _greater), "add"
    return partial(_CountBy, field), "add"


def _guarded(condition: Callable[[Mapping[str, Any]], bool], add: Callable[[Any], None]):
    def add_where(record: Mapping[str, Any]) -> None:
        if condition(record):
            add(record)

    return add_where


# Lists shorter than this are added record by record: a list's set-up (a column and its
# type checks per stat, 3 µs for three sums) costs more than a few records one by one.
SHORT_LIST = 4


class _State:
    """One task's accumulators and their (possibly ``where``-guarded) bound adders, made
    when a record is first added on its own (most tasks add lists only)."""

    __slots__ = ("accumulators", "adders")

    def __init__(self, accumulators: dict[str, Any]) -> None:
        self.accumulators = accumulators
        self.adders: tuple[Callable, ...] | None = None


class Aggregators:
    """The stats of a job, built once per worker; a state per task."""

    def __init__(self, specs: Specs) -> None:
        _check_specs(specs)
        self.specs = {name: dict(spec) for name, spec in specs.items()}
        self._conditions: dict[str, Callable[[Mapping[str, Any]], bool] | None] = {}
        self._column_filters: dict[str, ColumnCondition | None] = {}
        self._records_filters: dict[str, RecordsFilter | None] = {}
        for name, spec in self.specs.items():
            where = spec.get("where")
            try:
                self._conditions[name] = compile_condition(where) if where else None
                self._column_filters[name] = compile_column_condition(where) if where else None
                self._records_filters[name] = compile_records_filter(where) if where else None
            except ValueError as exc:
                raise ValueError(f"stat {name!r}: where: {exc}") from exc
        # per stat, for ``add_records``: its field (None: a plain count) and condition
        self._record_layout = tuple(
            (name, spec.get("field"), self._records_filters[name])
            for name, spec in self.specs.items()
        )
        # per stat: how a task's accumulator is made and which method adds a record
        self._layout = tuple(
            (name, *_accumulator(spec["kind"], spec.get("field")), self._conditions[name])
            for name, spec in self.specs.items()
        )

    def new_state(self) -> _State:
        return _State({name: make() for name, make, _, _ in self._layout})

    def _adders(self, state: _State) -> tuple[Callable, ...]:
        adders = []
        for name, _, method, condition in self._layout:
            add = getattr(state.accumulators[name], method)
            adders.append(add if condition is None else _guarded(condition, add))
        state.adders = tuple(adders)
        return state.adders

    def add(self, state: _State, record: Mapping[str, Any]) -> None:
        for add in state.adders or self._adders(state):
            add(record)

    def add_columns(self, state: _State, columns: Mapping[str, list[Any]], rows: int) -> None:
        """Add ``rows`` records given column by column (every record has every field in
        ``columns``, none other) — the same result as ``add`` record by record."""
        for name, spec in self.specs.items():
            acc = state.accumulators[name]
            field = spec.get("field")
            if field is None:
                values: list[Any] = [None] * rows
            elif field in columns:
                values = columns[field]
            else:
                values = [None] * rows  # a missing field reads as None
            where = self._column_filters[name]
            if where is not None:
                keep = where(columns, rows)
                values = list(compress(values, keep))
            acc.add_values(values)

    def add_records(self, state: _State, records: list[Mapping[str, Any]]) -> None:
        """Add a list of records, stat by stat: the same result as ``add`` record by
        record, at a fraction of the cost (a C-level pass per field, whose column the
        stats reading it share, then the whole-column routes of ``add_values``). A
        missing field reads as None, which every kind treats as a null; ``where`` is
        evaluated per record, as ``add`` does, so a missing field still makes it false."""
        if len(records) < SHORT_LIST:  # a whole-file task's record: set-up would dominate
            for record in records:
                self.add(state, record)
            return
        taken: Columns = {}  # columns of all the records, shared by stats and conditions
        for name, field, keep in self._record_layout:
            acc = state.accumulators[name]
            if keep is not None:
                chosen = keep(records, taken)
                if field is None:
                    acc.n += len(chosen)
                else:
                    acc.add_values(column_of(chosen, field))
            elif field is None:
                acc.n += len(records)  # a plain count
            else:
                acc.add_values(shared_column(taken, records, field))

    def partials(self, state: _State) -> dict[str, Any]:
        return {name: acc.partial() for name, acc in state.accumulators.items()}


# --- merging and finalising ------------------------------------------------------------------


def _pair_from_scaled(scaled: int) -> list[int]:
    """``scaled * 2**-1074`` as ``[m, e]`` with ``m`` odd (or ``[0, 0]``): short JSON."""
    if scaled == 0:
        return [0, 0]
    shift = (scaled & -scaled).bit_length() - 1
    return [scaled >> shift, shift - _SCALE_BITS]


_NO_FLOAT = (0, 0)  # the "float" of a sum partial that has none


def _scaled_from_pair(pair: Any) -> int:
    m, e = pair
    return m << (e + _SCALE_BITS) if m else 0


def _empty_partial(kind: str) -> Any:
    if kind == "count":
        return 0
    if kind in ("sum", "mean"):
        return {"n": 0, "int": 0}
    if kind in ("min", "max"):
        return {"num": None, "str": None}
    return {}


def _merge_one(kind: str, a: Any, b: Any) -> Any:
    if kind == "count":
        return a + b
    if kind in ("sum", "mean"):
        return _merge_all(kind, [a, b])
    if kind in ("min", "max"):
        better = _less if kind == "min" else _greater
        return {slot: _best(better, a[slot], b[slot]) for slot in ("num", "str")}
    counts = dict(a)
    for key, n in b.items():
        counts[key] = counts.get(key, 0) + n
    return counts


def _best(better: Callable[[Any, Any], bool], a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    return b if better(b, a) else a


def merge_partials(specs: Specs, a: dict | None, b: dict | None) -> dict:
    """Merge two partials dicts (either may be None or lack a stat: the empty partial).

    Pure, associative and commutative; returns a new dict and never mutates its inputs.
    """
    a, b = a or {}, b or {}
    merged: dict[str, Any] = {}
    for name, spec in specs.items():
        kind = spec["kind"]
        empty = _empty_partial(kind)
        merged[name] = _merge_one(kind, a.get(name, empty), b.get(name, empty))
    return merged


def _merge_all(kind: str, values: list[Any]) -> Any:
    """``_merge_one`` folded over ``values`` (at least one), without the copy per step."""
    if kind == "count":
        return sum(values)
    if kind in ("sum", "mean"):
        # "n" and "int" are always there (map runs in C); the rest only when not zero
        extra = [v for v in values if len(v) > 2]
        return _sum_partial(
            sum(map(itemgetter("n"), values)),
            sum(map(itemgetter("int"), values)),
            sum(_scaled_from_pair(v.get("float", _NO_FLOAT)) for v in extra),
            *(sum(v.get(key, 0) for v in extra) for key in ("floats", "nan", "+inf", "-inf")),
        )
    if kind in ("min", "max"):
        result = dict(values[0])
        for value in values[1:]:
            result = _merge_one(kind, result, value)
        return result
    counts: dict[str, int] = {}
    get = counts.get
    for value in values:
        for key, n in value.items():
            counts[key] = get(key, 0) + n
    return counts


def merge_many(specs: Specs, partials: Iterable[dict | None]) -> dict:
    """``merge_partials`` folded over any number of partials (None: the empty partial),
    in one pass per stat: merging n partials costs O(total size), not O(n x result)."""
    present = [p for p in partials if p]
    merged: dict[str, Any] = {}
    for name, spec in specs.items():
        kind = spec["kind"]
        empty = _empty_partial(kind)
        merged[name] = _merge_all(kind, [p.get(name, empty) for p in present] or [empty])
    return merged


def _finish_sum(p: Mapping[str, Any], divisor: int | None) -> Any:
    """The correctly rounded ``(ints + exact floats) / divisor`` (``None``: a sum, an int
    when no float was seen)."""
    nan, pinf, ninf = p.get("nan", 0), p.get("+inf", 0), p.get("-inf", 0)
    if nan or (pinf and ninf):
        return math.nan
    if pinf or ninf:
        return math.inf if pinf else -math.inf
    if divisor is None:
        if not p.get("floats", 0):
            return p["int"]
        divisor = 1
    numerator = (p["int"] << _SCALE_BITS) + _scaled_from_pair(p.get("float", _NO_FLOAT))
    try:
        return numerator / (divisor << _SCALE_BITS)
    except OverflowError:
        return math.inf if numerator > 0 else -math.inf


def _finalize_one(spec: Mapping[str, Any], p: Any) -> Any:
    kind = spec["kind"]
    if kind == "count":
        return p
    if kind == "sum":
        return _finish_sum(p, None)
    if kind == "mean":
        return _finish_sum(p, p["n"]) if p["n"] else None
    if kind == "min":
        return p["num"] if p["num"] is not None else p["str"]
    if kind == "max":
        return p["str"] if p["str"] is not None else p["num"]
    if kind == "count_by":
        return dict(sorted(p.items()))
    ranked = sorted(p.items(), key=lambda item: (-item[1], item[0]))
    k = spec.get("k")
    return [[key, n] for key, n in (ranked if k is None else ranked[:k])]


def finalize(specs: Specs, partials: dict | None) -> dict[str, Any]:
    """The ``stats.json`` values, in the order of ``specs``."""
    partials = partials or {}
    return {
        name: _finalize_one(spec, partials.get(name, _empty_partial(spec["kind"])))
        for name, spec in specs.items()
    }

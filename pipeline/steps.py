"""The per-record step chain: compiled once per worker, run once per record.

``compile_steps(specs)`` turns the normalised ``steps:`` list into one function
``chain(record) -> (records_out, n_malformed)``. Why this shape:

* Every step compiles to a plain function ``record -> result`` where the result is the
  (possibly same, mutated) ``dict`` to pass on, ``None`` (dropped on purpose), a
  ``_Malformed`` (dropped and counted, with its reason) or, for ``call`` only, a fan-out.
  The chain loops over that flat tuple and does one ``type(result) is dict`` test per
  step, so the common case (no fan-out) allocates nothing beyond what the steps
  themselves build and the one-element output list.
* Steps mutate the record in place: the reader hands over a fresh dict per record.
* Malformed records are signalled by a returned value, not an exception: a log file full
  of non-matching lines is ordinary input, and raising per record would be slow. The
  reason is built only for a rejected record (``malformed.jsonl`` shows it).
* A fan-out is materialised at once (so a plugin's generator never sees later steps'
  in-place edits), and each fanned-out record is a shallow copy when more steps follow, so
  a plugin may yield the same dict twice.

Step semantics (normalised specs, one key each):

``regex {pattern, field}``
    ``re.match`` at the start of ``record[field]``; the named groups are added to the
    record (a group that did not take part gives ``None``). No match, or a field that is
    missing or not a ``str``: malformed.
``types {fields: {field: int|float|str|bool}, nulls: [str, ...]}``
    A ``str`` value listed in ``nulls`` becomes ``None``; ``None`` stays ``None``; a
    missing field stays missing; a value that does not convert: malformed. ``int`` takes
    ints and strings that Python's ``int()`` parses (surrounding whitespace allowed),
    except ones with ``_`` digit separators; never a ``bool`` or a ``float`` (``"4.0"`` and
    ``4.0`` are malformed). ``float`` takes ints, floats and strings ``float()`` parses,
    so ``"nan"``, ``"inf"``, ``"-Infinity"`` are accepted, as Python does (``_`` rejected);
    never a ``bool``. ``bool`` takes real bools, the ints 0/1 and the strings
    true/false/yes/no/on/off/1/0 (any case, whitespace stripped). ``str`` is ``str()`` of
    anything but ``None``.
``filter {field: {op: value}}``
    Keeps the record iff the condition holds (see ``conditions``); not malformed.
``select [fields]``
    Keeps only those fields, in the listed order; missing ones stay absent.
``rename {old: new}``
    Renames the keys present, simultaneously (``{a: b, b: a}`` swaps), each keeping its
    position; a renamed key overwrites an existing key of the new name.
``call "module:function"``
    Calls the user's function with the record. It returns a mapping (one record), ``None``
    (dropped, not malformed) or an iterable of mappings (fan out: the following steps run
    on each, in order). Any other return raises ``TypeError``. An exception from the
    function propagates (the task fails) except ``pipeline.errors.MalformedRecord``, which
    counts the record as malformed: a plugin's way to reject bad input.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from pipeline.conditions import compile_condition
from pipeline.errors import MalformedRecord

STEP_NAMES: tuple[str, ...] = ("regex", "types", "filter", "select", "rename", "call")

Chain = Callable[[dict], tuple[list[dict], int]]
_Step = Callable[[dict], Any]


class _Malformed:
    """What a step returns for a record it rejects, with the reason (built only then)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"MALFORMED({self.reason!r})"


REGEX_NO_MATCH = "regex did not match"


def types_reason(field: str, kind: str, value: Any) -> str:
    """Why ``types`` rejected a record: the one wording, shared with the fast path."""
    return f"types: {field}: invalid {kind} {value!r}"


_MISSING: Any = object()


class _FanOut:
    """A ``call`` step's several records, and where the chain resumes for each."""

    __slots__ = ("copy", "records", "resume")

    def __init__(self, records: list[dict], resume: int, copy: bool) -> None:
        self.records = records
        self.resume = resume
        self.copy = copy


def compile_steps(specs: Sequence[Mapping[str, Any]], reasons: list[str] | None = None) -> Chain:
    """Compile the normalised step specs into one ``record -> (records_out, n_malformed)``.

    ``reasons``: a list the chain appends each malformed record's reason to (the caller
    empties it); only a rejected record pays for it."""
    total = len(specs)
    fns: tuple[_Step, ...] = tuple(
        _compile_step(position, spec, total) for position, spec in enumerate(specs)
    )

    def run_from(start: int, record: dict, out: list[dict]) -> int:
        """Slow path (after a fan-out): run steps ``start..`` and return the malformed count."""
        for i in range(start, total):
            record = fns[i](record)
            if type(record) is not dict:
                return _settle(record, out)
        out.append(record)
        return 0

    def _settle(result: Any, out: list[dict]) -> int:
        if result is None:
            return 0
        if type(result) is _Malformed:
            if reasons is not None:
                reasons.append(result.reason)
            return 1
        malformed = 0
        for item in result.records:
            malformed += run_from(result.resume, dict(item) if result.copy else item, out)
        return malformed

    def chain(record: dict) -> tuple[list[dict], int]:
        for fn in fns:
            record = fn(record)
            if type(record) is not dict:
                if record is None:
                    return [], 0
                if type(record) is _Malformed:
                    if reasons is not None:
                        reasons.append(record.reason)
                    return [], 1
                out: list[dict] = []
                malformed = _settle(record, out)
                return out, malformed
        return [record], 0

    return chain


def _compile_step(position: int, spec: Mapping[str, Any], total: int) -> _Step:
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ValueError(f"step {position + 1}: expected a mapping with one key, got {spec!r}")
    ((name, arg),) = spec.items()
    where = f"step {position + 1} ({name})"
    if name == "regex":
        return _regex_step(where, arg)
    if name == "types":
        return _types_step(where, arg)
    if name == "filter":
        return _filter_step(where, arg)
    if name == "select":
        return _select_step(where, arg)
    if name == "rename":
        return _rename_step(where, arg)
    if name == "call":
        return _call_step(where, arg, resume=position + 1, total=total)
    raise ValueError(f"step {position + 1}: unknown step {name!r}; expected one of {STEP_NAMES}")


# --- regex -------------------------------------------------------------------------------


def _regex_step(where: str, arg: Any) -> _Step:
    if not isinstance(arg, Mapping) or set(arg) != {"pattern", "field"}:
        raise ValueError(f"{where}: expected {{pattern, field}}, got {arg!r}")
    pattern, field = arg["pattern"], arg["field"]
    if not isinstance(pattern, str) or not isinstance(field, str):
        raise ValueError(f"{where}: pattern and field must be strings, got {arg!r}")
    try:
        match = re.compile(pattern).match
    except re.error as exc:
        raise ValueError(f"{where}: invalid regex {pattern!r}: {exc}") from exc

    def regex(record: dict) -> Any:
        value = record.get(field)
        if type(value) is not str and not isinstance(value, str):
            if value is None:
                return _Malformed(f"regex: no value in {field!r}")
            return _Malformed(f"regex: {field} is not a string")
        found = match(value)
        if found is None:
            return _Malformed(REGEX_NO_MATCH)
        record.update(found.groupdict())
        return record

    return regex


# --- types -------------------------------------------------------------------------------

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _to_int(value: Any) -> int:
    t = type(value)
    if t is str:
        if "_" in value:
            raise ValueError(value)
        return int(value)
    if t is int:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(value)
    return _to_int(int(value) if isinstance(value, int) else str(value))


def _to_float(value: Any) -> float:
    t = type(value)
    if t is float:
        return value
    if t is str:
        if "_" in value:
            raise ValueError(value)
        return float(value)
    if t is int:
        return float(value)  # OverflowError for a huge int: malformed
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(value)
    return _to_float(float(value) if isinstance(value, (int, float)) else str(value))


def _to_bool(value: Any) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(value)
    if isinstance(value, int) and value in (0, 1):  # a bool subclass cannot exist
        return value == 1
    raise TypeError(value)


_NOT_CONVERTIBLE = (ValueError, TypeError, OverflowError)
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "int": _to_int,
    "float": _to_float,
    "str": str,
    "bool": _to_bool,
}


def convert_value(kind: str, value: Any) -> Any:
    """What ``types`` makes of a (non-null) value; raises ValueError/TypeError/OverflowError."""
    return _CONVERTERS[kind](value)


def _types_step(where: str, arg: Any) -> _Step:
    if not isinstance(arg, Mapping) or "fields" not in arg or not set(arg) <= {"fields", "nulls"}:
        raise ValueError(
            f"{where}: expected {{fields: {{field: type}}, nulls: [...]}}, got {arg!r}"
        )
    fields, nulls_list = arg["fields"], arg.get("nulls") or ()
    if not isinstance(fields, Mapping):
        raise ValueError(f"{where}: fields must be a mapping of field -> type, got {fields!r}")
    if not isinstance(nulls_list, (list, tuple)) or not all(isinstance(n, str) for n in nulls_list):
        raise ValueError(f"{where}: nulls must be a list of strings, got {nulls_list!r}")
    pairs: list[tuple[str, str, Callable[[Any], Any]]] = []
    for field, type_name in fields.items():
        if type_name not in _CONVERTERS:
            raise ValueError(
                f"{where}: field {field!r} has unknown type {type_name!r}; "
                f"expected one of {', '.join(_CONVERTERS)}"
            )
        pairs.append((field, type_name, _CONVERTERS[type_name]))
    conversions = tuple(pairs)
    nulls = frozenset(nulls_list)

    def types(record: dict) -> Any:
        for field, kind, convert in conversions:
            value = record.get(field)  # missing stays missing, None stays None
            if value is None:
                continue
            if (type(value) is str or isinstance(value, str)) and value in nulls:
                record[field] = None
                continue
            try:
                record[field] = convert(value)
            except _NOT_CONVERTIBLE:
                return _Malformed(types_reason(field, kind, value))
        return record

    return types


# --- filter, select, rename --------------------------------------------------------------


def _filter_step(where: str, arg: Any) -> _Step:
    try:
        condition = compile_condition(arg)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc

    def keep_if(record: dict) -> Any:
        return record if condition(record) else None

    return keep_if


def _select_step(where: str, arg: Any) -> _Step:
    if not isinstance(arg, (list, tuple)) or not all(isinstance(f, str) for f in arg):
        raise ValueError(f"{where}: expected a list of field names, got {arg!r}")
    fields = tuple(dict.fromkeys(arg))  # a repeated name is kept once

    def select(record: dict) -> Any:
        return {f: record[f] for f in fields if f in record}

    return select


def _rename_step(where: str, arg: Any) -> _Step:
    if not isinstance(arg, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in arg.items()
    ):
        raise ValueError(f"{where}: expected a mapping of old -> new field names, got {arg!r}")
    mapping = dict(arg)
    olds = tuple(mapping)

    def rename(record: dict) -> Any:
        for old in olds:
            if old in record:
                break
        else:
            return record
        targets = {mapping[old] for old in olds if old in record}
        out: dict = {}
        for key, value in record.items():
            new = mapping.get(key, _MISSING)
            if new is not _MISSING:
                out[new] = value
            elif key not in targets:
                out[key] = value
        return out

    return rename


# --- call --------------------------------------------------------------------------------


def load_callable(ref: str) -> Callable[[Any], Any]:
    """Import ``module:function`` (``function`` may be dotted, e.g. ``Class.method``)."""
    module_name, sep, attr_path = ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"expected 'module:function', got {ref!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(
            f"cannot import module {module_name!r} for {ref!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError as exc:
            raise ValueError(f"{ref!r}: {module_name!r} has no attribute {attr_path!r}") from exc
    if not callable(target):
        raise ValueError(f"{ref!r} is not callable (it is a {type(target).__name__})")
    return target


def _call_step(where: str, arg: Any, *, resume: int, total: int) -> _Step:
    if not isinstance(arg, str):
        raise ValueError(f"{where}: expected 'module:function', got {arg!r}")
    try:
        func = load_callable(arg)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    name = arg
    copy = resume < total  # later steps mutate in place: give each fanned-out record its own dict

    def call(record: dict) -> Any:
        try:
            result = func(record)
        except MalformedRecord as exc:
            return _Malformed(_call_reason(name, exc))
        if type(result) is dict or result is None:
            return result
        if isinstance(result, Mapping):
            return dict(result)
        if isinstance(result, (str, bytes, bytearray)) or not isinstance(result, Iterable):
            raise TypeError(
                f"{name} returned {type(result).__name__}; expected a mapping, None, "
                "or a list, tuple or generator of mappings"
            )
        try:
            records = [_as_record(name, item) for item in result]
        except MalformedRecord as exc:
            return _Malformed(_call_reason(name, exc))
        return _FanOut(records, resume, copy)

    return call


def _call_reason(name: str, exc: MalformedRecord) -> str:
    return f"call {name}: {exc}" if str(exc) else f"call {name}: rejected"


def _as_record(name: str, item: Any) -> dict:
    if type(item) is dict:
        return item
    if isinstance(item, Mapping):
        return dict(item)
    raise TypeError(
        f"{name} returned an iterable containing a {type(item).__name__}; "
        "each fanned-out record must be a mapping"
    )

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
``call {function: "module:function", batch: true}``
    Calls the user's function with a list of records (those that reached the step, in
    input order, about ``BATCH_RECORDS`` at a time and never across two tasks); it
    returns a list (or any iterable) of records, in the order the following steps get
    them: fewer drops, more fans out. An item may be a ``MalformedRecord`` instance: one
    malformed record, with its message as the reason. Raising ``MalformedRecord`` fails
    the task instead (a batch has no one record to blame), as does any other exception,
    a return that is not an iterable, or an item that is neither. Steps before the call
    run record by record; so do the ones after it, on each record it returned.
    ``compile_stages`` compiles such a chain; a worker feeds it batches. Where a record
    rejected after a batch call comes from is not known: it is reported at the batch's
    first record. With ``batch: false`` the mapping form is the string form.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pipeline.conditions import compile_condition
from pipeline.errors import MalformedRecord

STEP_NAMES: tuple[str, ...] = ("regex", "types", "filter", "select", "rename", "call")

Chain = Callable[[dict], tuple[list[dict], int]]
Feed = Callable[[dict, list[dict]], int]  # a chain appending its records to a list
OnBad = Callable[[int, int], None]  # told (line index, malformed count) of a rejected line
# A chain over the records ``{"line": line}`` of a list of lines (see ``_compile_chain``).
FeedLines = Callable[[list[str], list[dict], OnBad, list[int]], None]
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
    empties it); only a rejected record pays for it. A batch ``call`` cannot run record
    by record: chains with one go through :func:`compile_stages`."""
    for position, spec in enumerate(specs):
        if is_batch_call(spec):
            raise ValueError(f"step {position + 1}: a batch call needs compile_stages")
    return _compile_chain(specs, reasons, first=0, then_more=False)[0]


def _compile_chain(
    specs: Sequence[Mapping[str, Any]],
    reasons: list[str] | None,
    *,
    first: int,
    then_more: bool,
) -> tuple[Chain, Feed, FeedLines]:
    """The per-record chain of ``specs``, which are steps ``first + 1..`` of the config
    (for messages), in its three forms; ``then_more``: other steps follow the chain (a
    batch call), so its fanned-out records must be copies as much as if a per-record step
    followed."""
    total = len(specs)
    fns: tuple[_Step, ...] = tuple(
        _compile_step(first + i, spec, resume=i + 1, copy=then_more or i + 1 < total)
        for i, spec in enumerate(specs)
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

    def feed(record: dict, out: list[dict]) -> int:
        for fn in fns:
            record = fn(record)
            if type(record) is not dict:
                return _settle(record, out)
        out.append(record)
        return 0

    # The usual log job's ends run inline: a first step matching a regex on ``line`` (the
    # reader's field is always a str: the step's checks can go) and a last step calling
    # a plugin record by record (one Python call less per record).
    line_pattern = _line_pattern(specs[0]) if specs else None
    line_match = line_pattern.match if line_pattern is not None else None
    last_call = _record_call(specs[-1]) if specs else None
    # ... and ``types`` right after that regex, when it makes ints of its groups: inline
    # too, with the step itself for any value the inline test does not settle.
    groups = line_pattern.groupindex if line_pattern is not None else {}
    line_ints = _line_ints(groups, specs[1]) if groups and total > 1 else None
    int_fields, int_nulls = line_ints or ((), frozenset())
    line_types = fns[1] if line_ints is not None else None
    first_middle = int(line_match is not None) + int(line_ints is not None)
    middle = fns[first_middle : total - int(last_call is not None)]
    no_match = _Malformed(REGEX_NO_MATCH)
    call_name, func = last_call or ("", None)

    def call_rejected(i: int, exc: MalformedRecord, out: list[dict], on_bad: OnBad) -> None:
        on_bad(i, _settle(_Malformed(_call_reason(call_name, exc)), out))

    def settle_at(i: int, result: Any, out: list[dict], on_bad: OnBad) -> None:
        """A step's result for line ``i`` that is not one record: its records out, and
        ``on_bad`` told of its malformed ones."""
        bad = _settle(result, out)
        if bad:
            on_bad(i, bad)

    def call_other(i: int, result: Any, out: list[dict], on_bad: OnBad) -> None:
        """The last call returned something other than a dict: None, a mapping (a dict of
        it goes out), a fan-out of several records."""
        if result is None:
            return
        record = _call_result(call_name, result, total, then_more)
        if type(record) is dict:
            out.append(record)
            return
        settle_at(i, record, out, on_bad)

    def feed_lines(lines: list[str], out: list[dict], on_bad: OnBad, failed_at: list[int]) -> None:
        """``feed`` over the records ``{"line": line}`` of ``lines``, in one loop: no
        generator, tuple or call per line between the reader and the steps, which cost a
        job with a cheap plugin a fifth of its time. ``on_bad(i, n)``: line ``i`` gave
        ``n`` malformed records; when a step raises, the index of its line is appended to
        ``failed_at``."""
        append = out.append
        i = 0
        try:
            for i, line in enumerate(lines):
                record: Any
                if line_match is not None:
                    found = line_match(line)
                    if found is None:
                        on_bad(i, _settle(no_match, out))
                        continue
                    record = {"line": line, **found.groupdict()}
                    for field in int_fields:
                        value = record[field]
                        try:
                            if value.isdecimal():
                                record[field] = int(value)
                                continue
                        except (AttributeError, ValueError):  # None; too many digits for int()
                            pass
                        if value in int_nulls:
                            record[field] = None
                            continue
                        record = line_types(record)  # the step decides, fields done stay
                        break
                    if type(record) is not dict:
                        settle_at(i, record, out, on_bad)
                        continue
                else:
                    record = {"line": line}
                for fn in middle:
                    record = fn(record)
                    if type(record) is not dict:
                        settle_at(i, record, out, on_bad)
                        break
                else:
                    if func is not None:
                        try:
                            record = func(record)
                        except MalformedRecord as exc:
                            call_rejected(i, exc, out, on_bad)
                            continue
                        if type(record) is not dict:
                            call_other(i, record, out, on_bad)
                            continue
                    append(record)
        except BaseException:
            failed_at.append(i)
            raise

    def call_lines(lines: list[str], out: list[dict], on_bad: OnBad, failed_at: list[int]) -> None:
        """``feed_lines`` of a chain that is one per-record call (a plugin handed each
        line): the same loop without the checks for steps it does not have."""
        assert func is not None
        append = out.append
        i = 0
        try:
            for i, line in enumerate(lines):
                try:
                    record = func({"line": line})
                except MalformedRecord as exc:
                    call_rejected(i, exc, out, on_bad)
                    continue
                if type(record) is dict:
                    append(record)
                else:
                    call_other(i, record, out, on_bad)
        except BaseException:
            failed_at.append(i)
            raise

    if func is not None and line_match is None and not middle:
        return chain, feed, call_lines
    return chain, feed, feed_lines


def _compile_step(position: int, spec: Mapping[str, Any], *, resume: int, copy: bool) -> _Step:
    """Step ``position + 1`` of the config; a fan-out resumes the chain at ``resume`` and
    is copied record by record when ``copy``."""
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
        return _call_step(where, arg, resume=resume, copy=copy)
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


def _record_call(spec: Mapping[str, Any]) -> tuple[str, Callable[[Any], Any]] | None:
    """The name and function of a ``call`` step that runs record by record, else None."""
    arg = spec.get("call") if isinstance(spec, Mapping) and len(spec) == 1 else None
    if arg is None or is_batch_call(spec):
        return None
    name, _ = call_target("call", arg)
    return name, load_callable(name)  # loaded (and checked) by _call_step


def _line_pattern(spec: Mapping[str, Any]) -> re.Pattern[str] | None:
    """The compiled pattern of a ``regex`` step on the field ``line``, else None."""
    arg = spec.get("regex") if isinstance(spec, Mapping) and len(spec) == 1 else None
    if isinstance(arg, Mapping) and arg.get("field") == "line":
        return re.compile(arg["pattern"])  # compiled (and checked) by _regex_step
    return None


def _line_ints(
    groups: Mapping[str, int], spec: Mapping[str, Any]
) -> tuple[tuple[str, ...], frozenset[str]] | None:
    """The fields and nulls of a ``types`` step when every field it converts is an ``int``
    taken from one of the named ``groups`` of the regex before it, and no null would
    convert as an int (so a value's two tests may come in either order); else None."""
    arg = spec.get("types") if isinstance(spec, Mapping) and len(spec) == 1 else None
    if not isinstance(arg, Mapping) or not isinstance(arg.get("fields"), Mapping):
        return None
    fields, nulls = arg["fields"], tuple(arg.get("nulls") or ())
    if not fields or any(kind != "int" or field not in groups for field, kind in fields.items()):
        return None
    for null in nulls:
        try:
            _to_int(null)
        except _NOT_CONVERTIBLE:
            continue
        return None
    return tuple(fields), frozenset(nulls)


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
            if type(value) is str:
                if value in nulls:
                    record[field] = None
                    continue
                # the usual case, inline: a str of digits to int (``_to_int`` without the call)
                if kind == "int" and "_" not in value:
                    try:
                        record[field] = int(value)
                        continue
                    except ValueError:
                        return _Malformed(types_reason(field, kind, value))
            elif isinstance(value, str) and value in nulls:
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


def _call_step(where: str, arg: Any, *, resume: int, copy: bool) -> _Step:
    """``copy``: later steps mutate in place, so each fanned-out record gets its own dict."""
    name, _ = call_target(where, arg)
    try:
        func = load_callable(name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc

    def call(record: dict) -> Any:
        try:
            result = func(record)
        except MalformedRecord as exc:
            return _Malformed(_call_reason(name, exc))
        if type(result) is dict or result is None:
            return result
        return _call_result(name, result, resume, copy)

    return call


def _call_result(name: str, result: Any, resume: int, copy: bool) -> Any:
    """What a ``call`` step makes of its function's return other than a dict or None: a
    mapping becomes a dict, an iterable of mappings a fan-out; raises TypeError else."""
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


# --- call, batch form ----------------------------------------------------------------------

BATCH_RECORDS = 1000
"""How many records the first batch ``call`` of a chain is handed at once (more only when
one record's fan-out before it crosses the mark; fewer at a task's end); a later one gets
what the steps between made of such a batch. Enough to spread the cost of a call (and of
whatever the function sets up per batch) over many records, few enough to keep a
worker's memory small. A number of records, not of bytes or workers, and a batch never
spans two tasks: batches do not depend on the worker count."""

BatchCall = Callable[[list[dict]], tuple[list[dict], int]]


def call_target(where: str, arg: Any) -> tuple[str, bool]:
    """``(module:function, batch)`` of a normalised ``call`` argument: the string form, or
    ``{function, batch}``."""
    if isinstance(arg, str):
        return arg, False
    if (
        isinstance(arg, Mapping)
        and "function" in arg
        and set(arg) <= {"function", "batch"}
        and isinstance(arg["function"], str)
        and type(arg.get("batch", False)) is bool
    ):
        return arg["function"], arg.get("batch", False)
    raise ValueError(f"{where}: expected 'module:function' or {{function, batch}}, got {arg!r}")


def is_batch_call(spec: Any) -> bool:
    """Whether a normalised step is a ``call`` with ``batch: true``."""
    if not isinstance(spec, Mapping) or len(spec) != 1 or "call" not in spec:
        return False
    arg = spec["call"]
    return isinstance(arg, Mapping) and arg.get("batch") is True


class BatchStage(NamedTuple):
    """A batch ``call`` and the per-record steps after it, up to the next batch call."""

    call: BatchCall  # records in -> (records out, malformed count)
    after: Feed | None  # None: no per-record step follows
    where: str  # "step N (call module:function, batch)", for messages


class Stages(NamedTuple):
    """A step chain cut at its batch calls: what runs record by record before the first,
    then each batch call with the per-record steps after it."""

    chain: Chain  # the steps before the first batch call (all of them when there is none)
    head: Feed  # the same steps, appending to a batch
    head_lines: FeedLines  # the same steps over the records of a list of lines
    head_steps: int  # how many: 0 lets a caller skip calling an empty head
    batches: tuple[BatchStage, ...]


def compile_stages(specs: Sequence[Mapping[str, Any]], reasons: list[str] | None = None) -> Stages:
    """Compile ``specs`` like :func:`compile_steps`, cut at the batch calls.

    Running a batch of records (in input order) through ``head`` record by record, then
    each batch stage's ``call`` on the list and its ``after`` on each record it returned,
    gives the records and malformed counts the per-record form gives, when each batch
    function does to every record what its per-record form would."""
    cuts = [i for i, spec in enumerate(specs) if is_batch_call(spec)]
    ends = [*cuts, len(specs)]
    chain, head, head_lines = _compile_chain(
        specs[: ends[0]], reasons, first=0, then_more=bool(cuts)
    )
    batches = []
    for k, cut in enumerate(cuts):
        after_specs = specs[cut + 1 : ends[k + 1]]
        after = None
        if after_specs:
            then_more = ends[k + 1] < len(specs)
            after = _compile_chain(after_specs, reasons, first=cut + 1, then_more=then_more)[1]
        name, _ = call_target(f"step {cut + 1} (call)", specs[cut]["call"])
        where = f"step {cut + 1} (call {name}, batch)"
        call = _batch_call(where, name, reasons, copy=cut + 1 < len(specs))
        batches.append(BatchStage(call, after, where))
    return Stages(chain, head, head_lines, ends[0], tuple(batches))


_ONLY_DICTS = frozenset({dict})


def _batch_call(where: str, name: str, reasons: list[str] | None, *, copy: bool) -> BatchCall:
    """The checked call of a batch function. ``copy``: later steps mutate records in
    place, so a dict returned twice in one batch is given to them as separate copies."""
    try:
        func = load_callable(name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc

    def call(records: list[dict]) -> tuple[list[dict], int]:
        try:
            result = func(records)
            if type(result) is not list:
                if isinstance(result, (str, bytes, bytearray, Mapping)) or not isinstance(
                    result, Iterable
                ):
                    raise TypeError(
                        f"{where}: returned {type(result).__name__}; expected a list "
                        "(or another iterable) of records"
                    )
                result = list(result)  # a generator runs to its end before later steps
        except MalformedRecord as exc:
            raise ValueError(
                f"{where}: raised MalformedRecord({str(exc)!r}); a batch function rejects a "
                "record by putting a MalformedRecord in the list it returns"
            ) from exc
        malformed = 0
        if not _ONLY_DICTS.issuperset(map(type, result)):
            result, malformed = _batch_items(where, name, result, reasons)
        if copy and len(set(map(id, result))) < len(result):
            result = [dict(record) for record in result]
        return result, malformed

    return call


def _batch_items(
    where: str, name: str, items: list[Any], reasons: list[str] | None
) -> tuple[list[dict], int]:
    """A batch function's list with other items than dicts: mappings become dicts, each
    ``MalformedRecord`` is one malformed record, anything else fails the task."""
    records: list[dict] = []
    malformed = 0
    for i, item in enumerate(items):
        if type(item) is dict:
            records.append(item)
        elif isinstance(item, Mapping):
            records.append(dict(item))
        elif isinstance(item, MalformedRecord):
            malformed += 1
            if reasons is not None:
                reasons.append(_call_reason(name, item))
        else:
            raise TypeError(
                f"{where}: item {i} of the list it returned is a {type(item).__name__}; "
                "each item must be a record (a mapping) or a MalformedRecord"
            )
    return records, malformed

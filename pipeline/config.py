"""The one YAML config: load it strictly, check it completely, expose it as plain data.

``load_config`` reads the file with the strict loader (:mod:`pipeline.yamlsafe`), which
also expands ``${VAR}`` / ``${VAR:-default}``; applies ``--set key=value`` overrides;
validates with pydantic; then imports ``call`` plugins so that a bad module name fails
before any input is read. Every problem is a :class:`~pipeline.errors.ConfigError` with
one line per fault, ``SOURCE: key.path: what is wrong`` -- never a pydantic dump.

Paths: ``input.paths``, ``input.exclude`` and ``output.dir`` are resolved against the
config file's folder (``~`` is expanded; absolute paths are only normalised). An exclude
pattern that contains a ``/`` is stored as an absolute glob pattern, matched against the
whole path; one without a ``/`` is kept as is and matched against the file's base name.

Workers never import this module: they get ``step_specs()`` / ``stat_specs()``, which
are plain dicts and lists.
"""

from __future__ import annotations

import codecs
import copy
import difflib
import hashlib
import importlib
import json
import math
import multiprocessing
import os
import re
import sys
import types as pytypes
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pipeline.aggregates import KINDS as STAT_KINDS
from pipeline.chunking import SPLITTABLE_FORMATS
from pipeline.discovery import glob_problem
from pipeline.errors import ConfigError
from pipeline.units import parse_duration, parse_size
from pipeline.yamlsafe import (
    describe_value,
    expand_env,
    format_key_path,
    load_document,
    load_mapping,
)

STEP_NAMES = ("regex", "types", "filter", "select", "rename", "call")
FILTER_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "contains", "matches")
TYPE_NAMES = ("int", "float", "str", "bool")
DEFAULT_CHUNK_SIZE = 8 * 1024**2
DEFAULT_TOP_K = 10
_MAX_ERROR_LINES = 5
_EMPTY_OK = ("steps", "stats", "execution")  # ``steps:`` with nothing under it means none
_RESULT_KEY_VERSION = 1  # bump when the meaning of a spec changes, to invalidate old results
_CALL_SPEC = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


# --- validation helpers ------------------------------------------------------------------


def _fail(message: str, *sub: str | int) -> NoReturn:
    """Raise a validation error with our message; ``sub`` extends the error's key path."""
    raise PydanticCustomError("pipeline", "{message}", {"message": message, "sub": list(sub)})


def _suggest(word: object, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    return Path(context.get("base_dir") or Path.cwd())


def _resolve(pattern: str, base_dir: Path) -> str:
    """Absolute, normalised form of a path or glob written relative to the config."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(pattern)))


def _string_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        _fail(f"expected {what} (a string or a list of strings), got {describe_value(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            _fail(f"expected a non-empty string, got {describe_value(item)}", i)
    return value


def _check_regex(pattern: Any, *sub: str | int) -> str:
    if not isinstance(pattern, str):
        _fail(f"expected a regex string, got {describe_value(pattern)}", *sub)
    try:
        re.compile(pattern)
    except re.error as exc:
        _fail(f"invalid regex {pattern!r}: {exc}", *sub)
    return pattern


def _check_condition(value: Any) -> dict[str, dict[str, Any]]:
    """``{field: {op: value}}`` for ``filter`` steps and ``where`` clauses."""
    if not isinstance(value, dict) or not value:
        _fail(
            "expected a mapping of field to conditions, like {status: {'>=': 500}}, "
            f"got {describe_value(value)}"
        )
    for field, ops in value.items():
        if not isinstance(field, str):
            _fail(f"a field name must be a string, got {describe_value(field)}")
        if not isinstance(ops, dict) or not ops:
            _fail(
                f"expected a mapping of operator to value, like {{'==': 200}}, "
                f"got {describe_value(ops)}",
                field,
            )
        for op, operand in ops.items():
            if op not in FILTER_OPS:
                _fail(
                    f"unknown operator {op!r}{_suggest(op, FILTER_OPS)}; "
                    f"operators are {' '.join(FILTER_OPS)}",
                    field,
                )
            if op in ("in", "not_in") and not isinstance(operand, list):
                _fail(f"'{op}' needs a list of values, got {describe_value(operand)}", field, op)
            if op in ("<", "<=", ">", ">=") and (
                isinstance(operand, (bool, list, dict)) or operand is None
            ):
                _fail(
                    f"'{op}' needs a number or a string, got {describe_value(operand)}", field, op
                )
            if op == "matches":
                _check_regex(operand, field, op)
    return value


def _no_bool(value: Any) -> Any:
    """pydantic would read ``true`` as 1 in an int field; a config never means that."""
    if isinstance(value, bool):
        _fail(f"expected an integer, got {describe_value(value)}")
    return value


def _check_call_spec(value: str) -> str:
    if not _CALL_SPEC.match(value):
        _fail(f"expected 'module:function', got {value!r}")
    return value


def _parse_with(parser: Callable[[Any], Any], value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        _fail(f"expected a {what}, got {describe_value(value)}")
    try:
        return parser(value)
    except (ValueError, OverflowError) as exc:
        _fail(str(exc))


Condition = Annotated[dict[str, dict[str, Any]], BeforeValidator(_check_condition)]
FieldName = Annotated[str, Field(min_length=1)]
NonBoolInt = Annotated[int, BeforeValidator(_no_bool)]


# --- the schema ------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputConfig(_Model):
    """``input:``: which files to read and how to decode them."""

    paths: list[str]
    exclude: list[str] = Field(default_factory=list)
    format: Literal["lines", "jsonl", "csv", "bytes"] = "lines"
    encoding: str = "utf-8"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    growing: StrictBool = False  # logs still being written and rotated (see rotation.py)

    @field_validator("paths", mode="before")
    @classmethod
    def _paths(cls, value: Any, info: ValidationInfo) -> list[str]:
        patterns = _string_list(value, "glob patterns")
        if not patterns:
            _fail("needs at least one glob pattern")
        for i, pattern in enumerate(patterns):
            problem = glob_problem(pattern)
            if problem is not None:
                _fail(problem, i)
        return [_resolve(p, _base_dir(info)) for p in patterns]

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude(cls, value: Any, info: ValidationInfo) -> list[str]:
        patterns = _string_list([] if value is None else value, "glob patterns")
        return [_resolve(p, _base_dir(info)) if "/" in p else p for p in patterns]

    @field_validator("encoding", mode="before")
    @classmethod
    def _encoding(cls, value: Any) -> str:
        if not isinstance(value, str):
            _fail(f"expected an encoding name like utf-8, got {describe_value(value)}")
        try:
            codec = codecs.lookup(value)
        except LookupError:
            _fail(f"unknown encoding {value!r}")
        if not getattr(codec, "_is_text_encoding", True):
            _fail(f"{value!r} is not a text encoding")
        return codec.name  # canonical, so "UTF8" and "utf-8" give the same result key

    @field_validator("chunk_size", mode="before")
    @classmethod
    def _chunk_size(cls, value: Any) -> int:
        size = _parse_with(parse_size, value, "size like 8MiB")
        if size < 1:
            _fail(f"must be at least 1 byte, got {value!r}")
        return size

    @model_validator(mode="after")
    def _growing_lines(self) -> InputConfig:
        if self.growing and self.format not in SPLITTABLE_FORMATS:
            _fail(
                f"growing logs are read line by line: it needs format lines or jsonl, "
                f"not {self.format}",
                "growing",
            )
        return self


class RegexStep(_Model):
    """``regex: PATTERN`` or ``regex: {pattern, field}``."""

    pattern: str
    field: FieldName = "line"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"pattern": value}
        if not isinstance(value, dict):
            _fail(f"expected a regex string or {{pattern, field}}, got {describe_value(value)}")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _check_regex(value)


class TypesStep(_Model):
    """``types: {field: type}`` or ``types: {fields: {field: type}, nulls: [...]}``."""

    fields: dict[str, Literal["int", "float", "str", "bool"]]
    nulls: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict) or isinstance(value.get("fields"), dict):
            return value
        for field, type_name in value.items():
            if type_name not in TYPE_NAMES:
                _fail(
                    f"unknown type {type_name!r}{_suggest(type_name, TYPE_NAMES)}; "
                    f"types are {', '.join(TYPE_NAMES)}",
                    field,
                )
        return {"fields": value}


class CallStep(_Model):
    """``call: module:function`` or ``call: {function: module:function, batch: true}``."""

    function: Annotated[str, AfterValidator(_check_call_spec)]
    batch: StrictBool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"function": _check_call_spec(value)}  # its error names ``call`` itself
        if not isinstance(value, dict):
            _fail(
                "expected 'module:function' or {function: 'module:function', batch: true}, "
                f"got {describe_value(value)}"
            )
        return value

    def spec(self) -> str | dict[str, Any]:
        """The string form unless batched: ``batch: false`` is the same step, same result
        key."""
        if self.batch:
            return {"function": self.function, "batch": True}
        return self.function


class StepItem(_Model):
    """One item of ``steps:``: a mapping with exactly one key, the step's name."""

    regex: RegexStep | None = None
    types: TypesStep | None = None
    filter: Condition | None = None
    select: Annotated[list[str], Field(min_length=1)] | None = None
    rename: dict[str, str] | None = None
    call: CallStep | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            _fail(
                "expected a mapping with one key naming the step, like {select: [a, b]}, "
                f"got {describe_value(value)}"
            )
        known = [key for key in value if key in STEP_NAMES]
        unknown = [key for key in value if key not in STEP_NAMES]
        if unknown and not known:
            _fail(
                f"unknown step {unknown[0]!r}{_suggest(unknown[0], STEP_NAMES)}; "
                f"steps are {', '.join(STEP_NAMES)}"
            )
        if len(value) > 1:
            keys = ", ".join(repr(key) for key in value)
            _fail(
                f"a step has exactly one key, found {keys}; write each step as its own "
                "list item, and indent a step's options under its name"
            )
        name, arg = next(iter(value.items()))
        if arg is None:
            _fail(f"step '{name}' needs a value", name)
        return value

    @property
    def kind(self) -> str:
        return next(name for name in STEP_NAMES if getattr(self, name) is not None)

    def spec(self) -> dict[str, Any]:
        """The normalised, plain-data form that workers execute."""
        if self.regex is not None:
            return {"regex": {"pattern": self.regex.pattern, "field": self.regex.field}}
        if self.types is not None:
            return {"types": {"fields": dict(self.types.fields), "nulls": list(self.types.nulls)}}
        if self.call is not None:
            return {"call": self.call.spec()}
        kind = self.kind
        return {kind: copy.deepcopy(getattr(self, kind))}


class StatSpec(_Model):
    """One entry of ``stats:``: exactly one aggregator, an optional ``where``."""

    count: Literal[True] | FieldName | None = None
    sum: FieldName | None = None
    min: FieldName | None = None
    max: FieldName | None = None
    mean: FieldName | None = None
    count_by: FieldName | None = None
    top: FieldName | None = None
    k: Annotated[NonBoolInt, Field(ge=1)] | None = None
    where: Condition | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            _fail(
                "expected a mapping with one aggregator, like {count: true} or {sum: bytes}, "
                f"got {describe_value(value)}"
            )
        if value.get("top") is not None and "k" not in value:
            value = {**value, "k": DEFAULT_TOP_K}
        return value

    @field_validator("count", mode="before")
    @classmethod
    def _count_true(cls, value: Any) -> Any:
        if value is not None and value is not True and not isinstance(value, str):
            _fail(f"write 'count: true' or 'count: <field>', got {describe_value(value)}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> StatSpec:
        kinds = [kind for kind in STAT_KINDS if getattr(self, kind) is not None]
        if not kinds:
            _fail(f"needs one aggregator: {', '.join(STAT_KINDS)}")
        if len(kinds) > 1:
            _fail(f"has {' and '.join(map(repr, kinds))}; one aggregator per stat")
        if self.k is not None and kinds[0] != "top":
            _fail("'k' is only used with 'top'", "k")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in STAT_KINDS if getattr(self, kind) is not None)

    def spec(self) -> dict[str, Any]:
        """The normalised, plain-data form that workers and the merger use."""
        kind = self.kind
        where = copy.deepcopy(self.where)
        if kind == "count" and isinstance(self.count, str):
            # count: field = records where the field is present and not null (SQL's
            # COUNT(field)), said in the one condition language every path runs.
            where = dict(where or {})
            ops = dict(where.get(self.count, {}))
            ops["not_in"] = [*ops.get("not_in", []), None]
            where[self.count] = ops
        return {
            "kind": kind,
            "field": None if kind == "count" else getattr(self, kind),
            "k": self.k,
            "where": where,
        }


class OutputConfig(_Model):
    """``output:``: the output store's folder and the record format."""

    dir: Path
    records: Literal["jsonl", "csv", "none"] = "jsonl"
    report_html: StrictBool = True  # report.html at the end of every run (the report extra)

    @field_validator("dir", mode="before")
    @classmethod
    def _dir(cls, value: Any, info: ValidationInfo) -> Path:
        if not isinstance(value, str) or not value.strip():
            _fail(f"expected a folder path, got {describe_value(value)}")
        return Path(_resolve(value, _base_dir(info)))

    @field_validator("records", mode="before")
    @classmethod
    def _records(cls, value: Any) -> Any:
        return "none" if value is None else value


SCHEDULER_ADDRESS = re.compile(r"(tcp|tls|ws|wss|ucx|inproc)://\S+")
HOST_PORT = re.compile(r"[\w.\-\[\]:]+:\d+")


class ExecutionConfig(_Model):
    """``execution:``: how tasks run; none of it changes the results."""

    executor: Literal["process", "serial", "dask"] = "process"
    workers: int | Literal["auto"] = "auto"
    submit: Literal["async", "imap"] = "async"
    retries: Annotated[NonBoolInt, Field(ge=0)] = 2
    timeout: float | None = None
    grace: float = 10.0
    start_method: Literal["auto", "fork", "spawn", "forkserver"] = "auto"
    max_failures: int | str | None = None
    address: str | None = None
    dashboard: str | None = None

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: Any) -> str | None:
        if value is None:
            return None
        text = value.strip() if isinstance(value, str) else ""
        if not (SCHEDULER_ADDRESS.fullmatch(text) or HOST_PORT.fullmatch(text)):
            _fail(
                "expected a Dask scheduler's address like tcp://host:8786 or tls://host:8786, "
                f"got {describe_value(value)}"
            )
        return text

    @field_validator("dashboard", mode="before")
    @classmethod
    def _dashboard(cls, value: Any) -> str | None:
        if value is None:
            return None
        text = value.strip() if isinstance(value, str) else str(value)
        if text.isdigit():
            text = f":{text}"
        if not HOST_PORT.fullmatch(text if not text.startswith(":") else f"0.0.0.0{text}"):
            _fail(f"expected where to serve it, like :8787 or 127.0.0.1:8787, got {value!r}")
        return text

    @model_validator(mode="after")
    def _dashboard_is_local(self) -> ExecutionConfig:
        if self.dashboard is not None and (self.executor != "dask" or self.address):
            raise PydanticCustomError(
                "pipeline",
                "{message}",
                {
                    "message": "'dashboard' is the dashboard of the local Dask cluster a "
                    "run starts (executor: dask without an address); a scheduler of your own "
                    "serves its dashboard itself",
                    "sub": [],
                },
            )
        return self

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(f"expected a number of workers >= 1 or 'auto', got {describe_value(value)}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> float | None:
        if value is None:
            return None
        seconds = _parse_with(parse_duration, value, "duration like 30s or 10m")
        if seconds <= 0:
            _fail(f"must be more than 0 (use null for no timeout), got {value!r}")
        return seconds

    @field_validator("grace", mode="before")
    @classmethod
    def _grace(cls, value: Any) -> float:
        return _parse_with(parse_duration, value, "duration like 10s")

    @field_validator("start_method")
    @classmethod
    def _start_method(cls, value: str) -> str:
        available = multiprocessing.get_all_start_methods()
        if value != "auto" and value not in available:
            _fail(f"{value!r} is not available here; use auto or one of {', '.join(available)}")
        return value

    @field_validator("max_failures", mode="before")
    @classmethod
    def _max_failures(cls, value: Any) -> int | str | None:
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.endswith("%"):
                try:
                    percent = float(text[:-1])
                except ValueError:
                    percent = math.nan
                if not 0 < percent <= 100:
                    _fail(f"expected a percentage above 0% and up to 100%, got {value!r}")
                return f"{percent:g}%"
            if text.isdigit():
                value = int(text)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            _fail(
                "expected null, a number of failed tasks >= 1 or a percentage like '2%', "
                f"got {describe_value(value)}"
            )
        return value


class PipelineConfig(_Model):
    """The whole validated config. Build it with :func:`load_config`."""

    name: FieldName
    input: InputConfig
    steps: list[StepItem] = Field(default_factory=list)
    stats: dict[str, StatSpec] = Field(default_factory=dict)
    output: OutputConfig
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    _config_path: Path | None = PrivateAttr(default=None)  # set by from_mapping

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if not (k in _EMPTY_OK and v is None)}
            if "name" not in value and info.context and info.context.get("stem"):
                value["name"] = info.context["stem"]
        return value

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        config_path: str | os.PathLike[str],
        *,
        source: str | None = None,
        overridden: Sequence[tuple[str | int, ...]] = (),
    ) -> PipelineConfig:
        """Validate already-parsed config data as if it were read from ``config_path``
        (which sets the folder relative paths and plugins are found in); import plugins.
        """
        path = Path(os.path.normpath(Path(config_path).expanduser().absolute()))
        source = source or os.fspath(config_path)
        context = {"base_dir": path.parent, "stem": path.stem}
        try:
            cfg = cls.model_validate(dict(data), context=context)
        except ValidationError as exc:
            raise ConfigError(_explain_errors(exc, source, overridden)) from None
        cfg._config_path = path
        for i, step in enumerate(cfg.steps):
            if step.call is not None:
                try:
                    import_callable(step.call.function, path.parent)
                except ConfigError as exc:
                    raise ConfigError(f"{source}: steps[{i}].call: {exc}") from None
        return cfg

    @property
    def config_path(self) -> Path:
        """The config file, absolute (``./pipeline.yaml`` if built without one)."""
        return self._config_path or Path.cwd() / "pipeline.yaml"

    @property
    def base_dir(self) -> Path:
        """The config file's folder: relative paths and ``call`` modules are found here."""
        return self.config_path.parent

    def step_specs(self) -> tuple[dict[str, Any], ...]:
        """Normalised steps, one single-key dict each (fresh copies)."""
        return tuple(step.spec() for step in self.steps)

    def stat_specs(self) -> dict[str, dict[str, Any]]:
        """``{name: {"kind", "field", "k", "where"}}`` (fresh copies)."""
        return {name: stat.spec() for name, stat in self.stats.items()}

    def result_key(self) -> str:
        """Fingerprint of the settings that change results; a new key invalidates them.

        Paths, chunking and execution settings are left out on purpose: results do not
        depend on them (SPEC "Guarantees").
        """
        payload = {
            "version": _RESULT_KEY_VERSION,
            "format": self.input.format,
            "encoding": self.input.encoding,
            "steps": list(self.step_specs()),
            "stats": self.stat_specs(),
            "records": self.output.records,
        }
        if self.input.growing:  # which bytes are records yet, and which files are copies
            payload["growing"] = True
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def workers_resolved(self) -> int:
        """The worker count, with ``auto`` = the CPUs this process may run on."""
        workers = self.execution.workers
        if isinstance(workers, int):
            return workers
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1

    def max_failures_for(self, total_tasks: int) -> int | None:
        """The error budget in failed tasks for a run of ``total_tasks`` (None: no limit).

        A percentage rounds up and is at least 1.
        """
        limit = self.execution.max_failures
        if limit is None or isinstance(limit, int):
            return limit
        share = total_tasks * float(limit[:-1]) / 100
        return max(1, math.ceil(round(share, 9)))

    def resolved_dict(self) -> dict[str, Any]:
        """The whole resolved config as JSON-able data, in the config's own shape."""
        return {
            "name": self.name,
            "input": self.input.model_dump(),
            "steps": list(self.step_specs()),
            "stats": {
                name: stat.model_dump(exclude_none=True) for name, stat in self.stats.items()
            },
            "output": {
                "dir": str(self.output.dir),
                "records": self.output.records,
                "report_html": self.output.report_html,
            },
            "execution": self.execution.model_dump(),
        }


# --- loading -------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str],
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> PipelineConfig:
    """Read, override, validate and check the config at ``path``.

    ``overrides`` are ``--set`` strings, ``dotted.key=value``; the value is read as YAML
    (``4`` is an int, ``[a, b]`` a list, an empty value is null) after ``${VAR}``
    expansion, and an unparsable value that is not a quoted string or a flow collection
    is taken as a plain string (so ``input.paths=*.log`` works). A numeric key segment
    indexes an existing list (``steps.0.regex=...``). ``env`` defaults to ``os.environ``.
    """
    source = os.fspath(path)
    env = os.environ if env is None else env
    file = Path(source).expanduser()
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a folder, not a file: {source}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (bad byte at offset {exc.start})") from None
    data = load_mapping(text, source, env)
    overridden: list[tuple[str | int, ...]] = []
    if overrides:
        data = _unshare(data)
        overridden = [apply_override(data, item, env) for item in overrides]
    return PipelineConfig.from_mapping(data, file, source=source, overridden=overridden)


def apply_override(
    data: dict[str, Any], item: str, env: Mapping[str, str] | None = None
) -> tuple[str | int, ...]:
    """Apply one ``dotted.key=value`` to ``data`` in place; returns the key path set."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not sep or not key or not all(parts):
        raise ConfigError(
            f"--set {item!r}: expected KEY=VALUE with a dotted key, like execution.workers=4"
        )
    value = _override_value(key, raw, os.environ if env is None else env)
    node: Any = data
    path: list[str | int] = []
    for depth, part in enumerate(parts):
        step: str | int = part
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {key}: {format_key_path(path)} is a list of {len(node)}; "
                    f"use an index from 0 to {len(node) - 1}"
                )
            step = int(part)
        elif not isinstance(node, dict):
            raise ConfigError(
                f"--set {key}: {format_key_path(path)} is {describe_value(node)}, not a mapping"
            )
        path.append(step)
        if depth == len(parts) - 1:
            node[step] = value
        else:
            if isinstance(node, dict) and node.get(step) is None:
                node[step] = {}
            node = node[step]
    return tuple(path)


def import_callable(spec: str, base_dir: str | os.PathLike[str]) -> Callable[..., Any]:
    """Import ``module:function`` with ``base_dir`` first on ``sys.path`` (restored after).

    Raises ConfigError (naming the module) when the module or attribute is missing or
    the attribute is not callable.
    """
    module_name, _, attr_path = spec.partition(":")
    saved = list(sys.path)
    sys.path.insert(0, os.fspath(base_dir))
    importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ConfigError(
                f"cannot import module '{module_name}': not found in {os.fspath(base_dir)} "
                "or on the Python path"
            ) from None
        raise ConfigError(f"importing module '{module_name}' failed: {exc}") from None
    except (Exception, SystemExit) as exc:  # a plugin may raise anything while importing
        raise ConfigError(
            f"importing module '{module_name}' failed: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        sys.path[:] = saved
    target: Any = module
    for attr in attr_path.split("."):
        if not hasattr(target, attr):
            where = getattr(module, "__file__", None) or module_name
            raise ConfigError(f"module '{module_name}' has no attribute '{attr}' ({where})")
        target = getattr(target, attr)
    if not callable(target):
        raise ConfigError(f"'{spec}' is not callable (it is {describe_value(target)})")
    return target


# --- internals -----------------------------------------------------------------------


def _override_value(key: str, raw: str, env: Mapping[str, str]) -> Any:
    try:
        text = expand_env(raw, env)
    except ValueError as exc:
        raise ConfigError(f"--set {key}: {exc}") from None
    try:
        return load_document(text, f"--set {key}")
    except ConfigError:
        if text.lstrip()[:1] in ("[", "{", '"', "'", "!"):
            raise
        return text


def _unshare(value: Any) -> Any:
    """Copy containers so an override cannot reach a second place through a YAML alias."""
    if isinstance(value, dict):
        return {key: _unshare(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unshare(item) for item in value]
    return value


def _explain_errors(
    exc: ValidationError, source: str, overridden: Sequence[tuple[str | int, ...]]
) -> str:
    errors = exc.errors(include_url=False)
    # A misspelt key also makes the real one "missing": report only the misspelling.
    meant = {
        (tuple(e["loc"][:-1]), match)
        for e in errors
        if e["type"] == "extra_forbidden"
        for match in difflib.get_close_matches(
            str(e["loc"][-1]), _known_keys(e["loc"][:-1]), n=1, cutoff=0.6
        )
    }
    errors = [
        e for e in errors if not (e["type"] == "missing" and (e["loc"][:-1], e["loc"][-1]) in meant)
    ]
    lines = []
    for error in errors[:_MAX_ERROR_LINES]:
        loc, message = _explain(error)
        line = f"{source}: {format_key_path(loc)}: {message}"
        if loc and any(_related(loc, keys) for keys in overridden):
            line += " (set with --set)"
        lines.append(line)
    if len(errors) > _MAX_ERROR_LINES:
        lines.append(f"{source}: ... and {len(errors) - _MAX_ERROR_LINES} more errors")
    return "\n".join(lines)


def _related(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _explain(error: Mapping[str, Any]) -> tuple[tuple[Any, ...], str]:
    """One pydantic error -> (key path, plain message)."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    if kind == "pipeline":
        return (*loc, *ctx.get("sub", ())), ctx["message"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1])
        hint = _suggest(loc[-1], known) or (
            f"; expected one of: {', '.join(known)}" if known else ""
        )
        return loc, f"unknown key{hint}"
    if kind == "missing":
        return loc, "required key is missing"
    if loc and loc[-1] == "[key]":
        return loc[:-1], f"keys must be strings, got {describe_value(value)}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        hint = _suggest(value, re.findall(r"'([^']*)'", expected)) if isinstance(value, str) else ""
        return loc, f"expected {expected}, got {describe_value(value)}{hint}"
    if kind in ("greater_than_equal", "greater_than"):
        bound = ">=" if kind == "greater_than_equal" else ">"
        limit = ctx.get("ge", ctx.get("gt"))
        return loc, f"must be {bound} {limit}, got {describe_value(value)}"
    if kind in ("too_short", "string_too_short"):
        return loc, "must not be empty"
    if kind in _EXPECTED:
        return loc, f"expected {_EXPECTED[kind]}, got {describe_value(value)}"
    return loc, str(error.get("msg", "invalid value"))


def _known_keys(loc: Sequence[Any]) -> list[str]:
    """The keys the schema allows at ``loc``, for "did you mean" hints."""
    node: Any = PipelineConfig
    for part in loc:
        node = _unwrap(node)
        origin = get_origin(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return []
            node = field.annotation
        elif origin is list and isinstance(part, int):
            node = get_args(node)[0]
        elif origin is dict:
            node = get_args(node)[1]
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` and ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, pytypes.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            annotation = members[0]
        else:
            return annotation

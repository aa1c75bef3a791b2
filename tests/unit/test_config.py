"""Loading, validating and normalising the YAML config (SPEC "Config")."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.errors import ConfigError, ExitCode
from pipeline.yamlsafe import MAX_NODES, expand_env, load_document

MINIMAL = """\
input:
  paths: "logs/*.log"
output:
  dir: out
"""

SPEC_REGEX = (
    r'^(?P<ip>\S+) \S+ \S+ \[(?P<ts>[^]]+)\] "(?P<method>\S+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3}) (?P<bytes>\d+)"
)
SPEC_EXAMPLE = r"""
name: access-logs                 # default: the config file's stem
input:
  paths: ["../data/logs/*.log", "../data/logs/**/*.gz"]   # globs, ** recursive
  exclude: ["*.tmp"]
  format: lines                   # lines | jsonl | csv | bytes
  encoding: utf-8
  chunk_size: 8MiB                # target bytes per task when a file is split
steps:                            # applied to every record, in order
  - regex: 'SPEC_REGEX'
  - types: {status: int, bytes: int}
  - filter: {status: {">=": 200}}
  - select: [ip, path, status, bytes]
  - call: spec_plugins:enrich     # user function: record -> record | None | iterable
stats:
  requests: {count: true}
  server_errors: {count: true, where: {status: {">=": 500}}}
  bytes_sent: {sum: bytes}
  by_status: {count_by: status}
  top_paths: {top: path, k: 10}
  largest: {max: bytes}
output:
  dir: ../out/access-logs         # the output store
  records: jsonl                  # jsonl | csv | none
execution:
  executor: process               # process | serial | dask
  workers: auto                   # int, or auto = usable CPUs
  submit: async                   # async | imap
  retries: 2
  timeout: 10m
  grace: 10s
  start_method: auto
  max_failures: null
  address: null
""".replace("SPEC_REGEX", SPEC_REGEX)


@pytest.fixture(autouse=True)
def _forget_plugins(tmp_path: Path) -> Iterator[None]:
    """Plugins imported by a test must not leak into the next one through sys.modules."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(
    tmp_path: Path,
    text: str,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    name: str = "job.yaml",
) -> PipelineConfig:
    return load_config(write(tmp_path, text, name), overrides, env={} if env is None else env)


def error_of(
    tmp_path: Path,
    text: str,
    overrides: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, overrides, env)
    message = str(info.value)
    assert "Traceback" not in message
    assert "Input should" not in message  # pydantic's own wording never leaks
    assert "pydantic" not in message
    return message


# --- a valid config ------------------------------------------------------------------


def test_spec_example_loads_with_the_right_values(tmp_path: Path) -> None:
    (tmp_path / "spec_plugins.py").write_text("def enrich(record):\n    return record\n")
    cfg = load(tmp_path, SPEC_EXAMPLE)
    assert cfg.name == "access-logs"
    data = str(tmp_path.parent / "data" / "logs")
    assert cfg.input.paths == [f"{data}/*.log", f"{data}/**/*.gz"]
    assert cfg.input.exclude == ["*.tmp"]
    assert cfg.input.format == "lines"
    assert cfg.input.encoding == "utf-8"
    assert cfg.input.chunk_size == 8 * 1024 * 1024
    specs = cfg.step_specs()
    assert [next(iter(s)) for s in specs] == ["regex", "types", "filter", "select", "call"]
    assert specs[0]["regex"]["field"] == "line"
    assert specs[0]["regex"]["pattern"] == SPEC_REGEX
    assert specs[1] == {"types": {"fields": {"status": "int", "bytes": "int"}, "nulls": []}}
    assert specs[2] == {"filter": {"status": {">=": 200}}}
    assert specs[3] == {"select": ["ip", "path", "status", "bytes"]}
    assert specs[4] == {"call": "spec_plugins:enrich"}
    stats = cfg.stat_specs()
    assert stats["requests"] == {"kind": "count", "field": None, "k": None, "where": None}
    assert stats["server_errors"]["where"] == {"status": {">=": 500}}
    assert stats["bytes_sent"] == {"kind": "sum", "field": "bytes", "k": None, "where": None}
    assert stats["by_status"]["kind"] == "count_by"
    assert stats["top_paths"] == {"kind": "top", "field": "path", "k": 10, "where": None}
    assert stats["largest"] == {"kind": "max", "field": "bytes", "k": None, "where": None}
    assert cfg.output.dir == tmp_path.parent / "out" / "access-logs"
    assert cfg.output.records == "jsonl"
    ex = cfg.execution
    assert (ex.executor, ex.workers, ex.submit, ex.retries) == ("process", "auto", "async", 2)
    assert ex.timeout == 600.0
    assert ex.grace == 10.0
    assert (ex.start_method, ex.max_failures, ex.address) == ("auto", None, None)
    assert cfg.config_path == tmp_path / "job.yaml"
    assert cfg.base_dir == tmp_path


def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, name="nightly-run.yaml")
    assert cfg.name == "nightly-run"
    assert cfg.input.paths == [str(tmp_path / "logs" / "*.log")]
    assert cfg.input.exclude == []
    assert cfg.input.format == "lines"
    assert cfg.input.encoding == "utf-8"
    assert cfg.input.chunk_size == 8 * 1024**2
    assert cfg.step_specs() == ()
    assert cfg.stat_specs() == {}
    assert cfg.output.records == "jsonl"
    ex = cfg.execution
    assert ex.executor == "process"
    assert ex.workers == "auto"
    assert ex.submit == "async"
    assert ex.retries == 2
    assert ex.timeout is None
    assert ex.grace == 10.0
    assert ex.start_method == "auto"
    assert ex.max_failures is None
    assert ex.address is None
    assert cfg.workers_resolved() >= 1
    assert cfg.max_failures_for(100) is None


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "steps:\nstats:\nexecution:\n")
    assert cfg.step_specs() == ()
    assert cfg.stat_specs() == {}
    assert cfg.execution.workers == "auto"


def test_step_forms_are_normalised(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL
        + """\
steps:
  - regex: {pattern: '(?P<a>\\d+)', field: raw}
  - types: {fields: {a: float, b: bool}, nulls: ["-", ""]}
  - rename: {a: amount}
  - filter: {amount: {in: [1, 2]}, name: {matches: '^x', not_in: [y]}}
stats:
  top3: {top: amount, k: 3, where: {amount: {">": 0}}}
  avg: {mean: amount}
""",
    )
    assert cfg.step_specs() == (
        {"regex": {"pattern": r"(?P<a>\d+)", "field": "raw"}},
        {"types": {"fields": {"a": "float", "b": "bool"}, "nulls": ["-", ""]}},
        {"rename": {"a": "amount"}},
        {"filter": {"amount": {"in": [1, 2]}, "name": {"matches": "^x", "not_in": ["y"]}}},
    )
    assert cfg.stat_specs()["top3"] == {
        "kind": "top",
        "field": "amount",
        "k": 3,
        "where": {"amount": {">": 0}},
    }
    assert cfg.stat_specs()["avg"]["kind"] == "mean"


def test_specs_are_copies(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "steps: [{select: [a]}]\nstats: {n: {count: true}}\n")
    cfg.step_specs()[0]["select"].append("b")
    cfg.stat_specs()["n"]["kind"] = "sum"
    assert cfg.step_specs() == ({"select": ["a"]},)
    assert cfg.stat_specs()["n"]["kind"] == "count"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL)
    with pytest.raises(Exception, match="frozen"):
        cfg.name = "other"  # type: ignore[misc]


def test_resolved_dict_is_json_and_loads_back(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "steps: [{regex: a}]\nstats: {t: {top: x}}\n")
    resolved = cfg.resolved_dict()
    text = json.dumps(resolved)
    assert resolved["stats"] == {"t": {"top": "x", "k": 10}}
    assert resolved["output"]["dir"] == str(tmp_path / "out")
    again = load(tmp_path, text, name="again.yaml")  # JSON is YAML
    assert again.resolved_dict() == {**resolved, "name": cfg.name}
    assert again.result_key() == cfg.result_key()


def test_max_failures_forms(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL, ["execution.max_failures=3"]).max_failures_for(1000) == 3
    percent = load(tmp_path, MINIMAL, ["execution.max_failures=2%"])
    assert percent.execution.max_failures == "2%"
    assert percent.max_failures_for(100) == 2
    assert percent.max_failures_for(101) == 3
    assert percent.max_failures_for(0) == 1


def test_workers_resolved(tmp_path: Path) -> None:
    assert load(tmp_path, MINIMAL, ["execution.workers=3"]).workers_resolved() == 3
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert load(tmp_path, MINIMAL).workers_resolved() == cpus


# --- bad configs ---------------------------------------------------------------------

BAD_CONFIGS = {
    "unknown-top-level": (MINIMAL + "outptu: {}\n", ["outptu: unknown key", "'output'"]),
    "unknown-nested": (
        MINIMAL + "execution: {wokers: 4}\n",
        ["execution.wokers: unknown key (did you mean 'workers'?)"],
    ),
    "unknown-in-step": (
        MINIMAL + "steps: [{regex: {patern: a}}]\n",
        ["steps[0].regex.patern: unknown key (did you mean 'pattern'?)"],
    ),
    "unknown-in-stat": (
        MINIMAL + "stats: {n: {cout: true}}\n",
        ["stats.n.cout: unknown key (did you mean 'count'?)"],
    ),
    "unknown-step": (
        MINIMAL + "steps: [{select: [a]}, {regx: a}]\n",
        ["steps[1]: unknown step 'regx' (did you mean 'regex'?)", "steps are regex, types"],
    ),
    "two-keys-in-step": (
        MINIMAL + "steps:\n  - regex: a\n    field: x\n",
        ["steps[0]: a step has exactly one key"],
    ),
    "wrong-type": (
        MINIMAL + "execution: {retries: many}\n",
        ["execution.retries: expected an integer, got a string 'many'"],
    ),
    "bool-for-int": (MINIMAL + "execution: {retries: true}\n", ["execution.retries"]),
    "negative-retries": (MINIMAL + "execution: {retries: -1}\n", ["execution.retries: must be >="]),
    "bad-choice": (
        MINIMAL.replace("dir: out", "dir: out\n  records: jsnl"),
        ["output.records: expected 'jsonl', 'csv' or 'none'", "did you mean 'jsonl'"],
    ),
    "missing-required": ("output: {dir: out}\n", ["input: required key is missing"]),
    "missing-output-dir": ("input: {paths: a}\noutput: {}\n", ["output.dir: required key"]),
    "empty-paths": ("input: {paths: []}\noutput: {dir: o}\n", ["input.paths: needs at least"]),
    "invalid-regex": (
        MINIMAL + "steps: [{select: [line]}, {rename: {a: b}}, {regex: 'a('}]\n",
        ["steps[2].regex.pattern: invalid regex 'a(': missing ), unterminated subpattern"],
    ),
    "regex-not-a-string": (MINIMAL + "steps: [{regex: 42}]\n", ["steps[0].regex", "42"]),
    "bad-size": (
        MINIMAL.replace('"logs/*.log"', '"logs/*.log"\n  chunk_size: 8 megs'),
        ["input.chunk_size: not a size: '8 megs'"],
    ),
    "zero-size": (
        MINIMAL.replace('"logs/*.log"', '"logs/*.log"\n  chunk_size: 0'),
        ["input.chunk_size: must be at least 1 byte"],
    ),
    "bad-duration": (
        MINIMAL + "execution: {timeout: 10 minutes}\n",
        ["execution.timeout: not a duration: '10 minutes'"],
    ),
    "bad-grace": (MINIMAL + "execution: {grace: [1]}\n", ["execution.grace"]),
    "unknown-filter-operator": (
        MINIMAL + "steps: [{filter: {status: {'=>': 200}}}]\n",
        ["steps[0].filter.status: unknown operator '=>'", "operators are =="],
    ),
    "in-needs-list": (
        MINIMAL + "steps: [{filter: {status: {in: 200}}}]\n",
        ["steps[0].filter.status.in: 'in' needs a list"],
    ),
    "where-bad-regex": (
        MINIMAL + "stats: {n: {count: true, where: {p: {matches: '(('}}}}\n",
        ["stats.n.where.p.matches: invalid regex '(('"],
    ),
    "where-unknown-op": (
        MINIMAL + "stats: {n: {count: true, where: {p: {like: x}}}}\n",
        ["stats.n.where.p: unknown operator 'like'"],
    ),
    "unknown-type": (
        MINIMAL + "steps: [{types: {status: integer}}]\n",
        ["steps[0].types.status: unknown type 'integer' (did you mean 'int'?)"],
    ),
    "k-without-top": (
        MINIMAL + "stats: {n: {sum: b, k: 3}}\n",
        ["stats.n.k: 'k' is only used with 'top'"],
    ),
    "k-zero": (MINIMAL + "stats: {n: {top: b, k: 0}}\n", ["stats.n.k: must be >= 1"]),
    "no-aggregator": (MINIMAL + "stats: {n: {}}\n", ["stats.n: needs one aggregator"]),
    "two-aggregators": (MINIMAL + "stats: {n: {sum: a, max: a}}\n", ["one aggregator per stat"]),
    "count-false": (MINIMAL + "stats: {n: {count: false}}\n", ["stats.n.count"]),
    "bad-encoding": (
        MINIMAL.replace('"logs/*.log"', '"logs/*.log"\n  encoding: utf-9'),
        ["input.encoding: unknown encoding 'utf-9'"],
    ),
    "workers-zero": (MINIMAL + "execution: {workers: 0}\n", ["execution.workers"]),
    "bad-percent": (MINIMAL + "execution: {max_failures: 150%}\n", ["execution.max_failures"]),
    "address-without-port": (
        MINIMAL + "execution: {executor: dask, address: localhost}\n",
        ["execution.address: expected a Dask scheduler's address like tcp://host:8786"],
    ),
    "address-bad-scheme": (
        MINIMAL + "execution: {executor: dask, address: 'http://h:8786'}\n",
        ["execution.address"],
    ),
    "dashboard-with-address": (
        MINIMAL + "execution: {executor: dask, address: 'tcp://h:1', dashboard: ':8787'}\n",
        ["'dashboard' is the dashboard of the local Dask cluster"],
    ),
    "dashboard-bad": (
        MINIMAL + "execution: {executor: dask, dashboard: 'here'}\n",
        ["execution.dashboard: expected where to serve it"],
    ),
    "call-format": (MINIMAL + "steps: [{call: nocolon}]\n", ["steps[0].call: expected 'module"]),
    "call-mapping-format": (
        MINIMAL + "steps: [{call: {function: nocolon, batch: true}}]\n",
        ["steps[0].call.function: expected 'module:function', got 'nocolon'"],
    ),
    "call-unknown-key": (
        MINIMAL + "steps: [{call: {function: 'm:f', batchh: true}}]\n",
        ["steps[0].call.batchh: unknown key (did you mean 'batch'?)"],
    ),
    "call-batch-not-bool": (
        MINIMAL + "steps: [{call: {function: 'm:f', batch: 'yes'}}]\n",
        ["steps[0].call.batch: expected true or false, got a string 'yes'"],
    ),
    "call-without-function": (
        MINIMAL + "steps: [{call: {batch: true}}]\n",
        ["steps[0].call.function: required key is missing"],
    ),
    "call-a-list": (
        MINIMAL + "steps: [{call: [m, f]}]\n",
        ["steps[0].call: expected 'module:function' or {function: 'module:function', batch"],
    ),
    "steps-not-a-list": (MINIMAL + "steps: {select: [a]}\n", ["steps: expected a list"]),
    "step-not-a-mapping": (MINIMAL + "steps: [select]\n", ["steps[0]: expected a mapping"]),
    "step-without-value": (MINIMAL + "steps: [{regex: }]\n", ["steps[0].regex"]),
    "top-level-list": ("- a\n- b\n", ["top level must be a mapping"]),
    "empty-file": ("# nothing here\n", ["empty"]),
}


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, expected: list[str]) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml"))
    for part in expected:
        assert part in message


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("tcp://10.0.0.5:8786", "tcp://10.0.0.5:8786"),
        ("tls://scheduler.example:8786", "tls://scheduler.example:8786"),
        ("' scheduler:8786 '", "scheduler:8786"),
    ],
)
def test_scheduler_addresses(tmp_path: Path, given: str, kept: str) -> None:
    cfg = load(tmp_path, MINIMAL + f"execution: {{executor: dask, address: {given}}}\n")
    assert cfg.execution.address == kept


def test_a_dashboard_port_alone_listens_on_every_interface(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "execution: {executor: dask, dashboard: 8787}\n")
    assert cfg.execution.dashboard == ":8787"


def test_config_error_exits_2() -> None:
    assert ConfigError("x").exit_code == ExitCode.USAGE == 2


def test_several_errors_are_listed_briefly(tmp_path: Path) -> None:
    message = error_of(
        tmp_path,
        """\
        input: {paths: 3, format: x, chunk_size: -1}
        output: {dir: 3, records: y}
        execution: {workers: x, retries: -1, grace: z}
        """,
    )
    lines = message.splitlines()
    assert len(lines) == 6
    assert lines[0].endswith(
        "input.paths: expected glob patterns (a string or a list of strings), got 3"
    )
    assert lines[-1].endswith("and 3 more errors")


def test_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "input:\n  paths: [a, b\noutput: {dir: o}\n")
    assert message.startswith(f"{tmp_path / 'job.yaml'}:3:")


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL + "execution:\n  workers: 2\n  workers: 4\n")
    assert f"{tmp_path / 'job.yaml'}:7:3: duplicate key 'workers'" in message
    assert "line 6" in message


def test_duplicate_top_level_key(tmp_path: Path) -> None:
    assert "duplicate key 'input'" in error_of(tmp_path, MINIMAL + "input: {paths: b}\n")


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL + "stats:\n  a: &base {sum: x}\n  b: {<<: *base, sum: y}\n",
    )
    assert cfg.stat_specs()["b"]["field"] == "y"


def test_python_tag_is_rejected_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    message = error_of(
        tmp_path,
        MINIMAL + f'name: !!python/object/apply:os.system ["touch {marker}"]\n',
    )
    assert "job.yaml:5:7: tag '!!python/object/apply:os.system' is not allowed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    "value", ["!!python/name:os.system", "!!binary aGk=", "!custom x", "!!timestamp 2024-01-01"]
)
def test_other_tags_are_rejected(tmp_path: Path, value: str) -> None:
    assert "is not allowed" in error_of(tmp_path, MINIMAL + f"name: {value}\n")


def test_standard_tags_are_fine(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "name: !!str 2024-01-01\nexecution: {workers: !!int '3'}\n")
    assert cfg.name == "2024-01-01"
    assert cfg.execution.workers == 3


@pytest.mark.timeout(10)
def test_billion_laughs_fails_fast(tmp_path: Path) -> None:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 10):
        refs = ", ".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    message = error_of(tmp_path, MINIMAL + "\n".join(lines) + "\n")
    assert "aliases" in message
    assert str(MAX_NODES) in message


@pytest.mark.timeout(10)
def test_billion_laughs_in_an_override_fails_fast(tmp_path: Path) -> None:
    refs = ", ".join(["*a"] * 400)
    bomb = f"[&a [{', '.join(['x'] * 400)}], [{refs}]]"
    assert "aliases" in error_of(tmp_path, MINIMAL, [f"input.paths={bomb}"])


def test_recursive_alias_is_rejected(tmp_path: Path) -> None:
    assert "recursive" in error_of(tmp_path, MINIMAL + "steps: &s [*s]\n")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(missing)


def test_config_must_be_utf8(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_bytes(MINIMAL.encode() + b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


# --- environment variables -----------------------------------------------------------


def test_env_expansion(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """\
        name: ${JOB}-${STAGE:-dev}
        input:
          paths: ${INBOX}/*.log
          chunk_size: ${CHUNK:-4KiB}
        steps:
          - regex: '^(?P<cost>\\d+)\\$$ $${literal}'
        output:
          dir: ${OUT:-results}
        execution:
          workers: ${WORKERS:-3}
          address: "tcp://scheduler:${PORT}"
        """,
        env={"JOB": "nightly", "INBOX": "/srv/in", "PORT": "8786", "OUT": ""},
    )
    assert cfg.name == "nightly-dev"
    assert cfg.input.paths == ["/srv/in/*.log"]
    assert cfg.input.chunk_size == 4096
    assert cfg.step_specs()[0]["regex"]["pattern"] == r"^(?P<cost>\d+)\$$ ${literal}"
    assert cfg.output.dir == tmp_path / "results"  # empty counts as unset with ":-"
    assert cfg.execution.workers == 3  # an unquoted value is typed after expansion
    assert cfg.execution.address == "tcp://scheduler:8786"


def test_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_TEST_NAME", "from-env")
    path = write(tmp_path, MINIMAL + "name: ${PIPELINE_TEST_NAME}\n")
    assert load_config(path).name == "from-env"


def test_missing_env_var_names_key_and_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL.replace("dir: out", "dir: ${OUT_DIR}/x"))
    assert "job.yaml:4: output.dir:" in message
    assert "'OUT_DIR' is not set" in message


def test_bad_env_reference(tmp_path: Path) -> None:
    assert "unclosed" in error_of(tmp_path, MINIMAL + "name: ab${X\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "1"),
        ("${A:-x}", "1"),
        ("${B:-x y}", "x y"),
        ("${E:-d}", "d"),
        ("${E}", ""),
        ("$$", "$$"),
        ("$A", "$A"),
        ("a$", "a$"),
        ("$${A}", "${A}"),
        ("${A}${A}", "11"),
    ],
)
def test_expand_env_table(text: str, expected: str) -> None:
    assert expand_env(text, {"A": "1", "E": ""}) == expected


# --- overrides -----------------------------------------------------------------------


def test_overrides(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        MINIMAL + "steps: [{select: [a]}]\n",
        [
            "execution.workers=4",
            "input.paths=[a/*.log, /abs/b.log]",
            "execution.timeout=1m",
            "stats.total.count=true",
            "steps.0.select=[b, c]",
            "output.records=none",
        ],
    )
    assert cfg.execution.workers == 4
    assert cfg.input.paths == [str(tmp_path / "a" / "*.log"), "/abs/b.log"]
    assert cfg.execution.timeout == 60.0
    assert cfg.stat_specs() == {"total": {"kind": "count", "field": None, "k": None, "where": None}}
    assert cfg.step_specs() == ({"select": ["b", "c"]},)
    assert cfg.output.records == "none"


def test_override_creates_missing_mappings(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, ["execution.submit=imap"])
    assert cfg.execution.submit == "imap"


def test_override_glob_value_is_a_string(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, ["input.paths=*.csv"])
    assert cfg.input.paths == [str(tmp_path / "*.csv")]


def test_override_expands_env(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL, ["execution.workers=${N:-5}"], env={})
    assert cfg.execution.workers == 5


def test_override_does_not_leak_through_aliases(tmp_path: Path) -> None:
    cfg = load(tmp_path, MINIMAL + "stats:\n  a: &s {sum: x}\n  b: *s\n", ["stats.b.sum=y"])
    assert cfg.stat_specs()["a"]["field"] == "x"
    assert cfg.stat_specs()["b"]["field"] == "y"


@pytest.mark.parametrize("override", ["execution.workers", "=4", "execution..workers=4"])
def test_malformed_override(tmp_path: Path, override: str) -> None:
    message = error_of(tmp_path, MINIMAL, [override])
    assert message.startswith("--set")
    assert "KEY=VALUE" in message


def test_override_unknown_key_is_caught(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL, ["execution.wokers=4"])
    assert "execution.wokers: unknown key (did you mean 'workers'?)" in message
    assert "--set" in message


def test_override_bad_value(tmp_path: Path) -> None:
    assert "execution.workers" in error_of(tmp_path, MINIMAL, ["execution.workers=lots"])
    assert "--set input.paths" in error_of(tmp_path, MINIMAL, ["input.paths=[a, b"])


def test_override_into_a_scalar_or_past_a_list(tmp_path: Path) -> None:
    assert "not a mapping" in error_of(tmp_path, MINIMAL, ["input.paths.x=1"])
    assert "index" in error_of(tmp_path, MINIMAL + "steps: [{select: [a]}]\n", ["steps.3.a=1"])


def test_override_python_tag_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    message = error_of(
        tmp_path, MINIMAL, [f'name=!!python/object/apply:os.system ["touch {marker}"]']
    )
    assert "not allowed" in message
    assert not marker.exists()


# --- paths ---------------------------------------------------------------------------


def test_relative_paths_are_resolved_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir("/")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    cfg = load(
        conf_dir,
        """\
        input:
          paths: ["in/*.log", "../shared/**/*.gz", "/abs/x.log", "~/mine/*.log"]
          exclude: ["*.tmp", "in/skip/*", "/abs/y.log"]
        output:
          dir: ../out
        """,
    )
    assert cfg.input.paths == [
        str(conf_dir / "in" / "*.log"),
        str(tmp_path / "shared" / "**" / "*.gz"),
        "/abs/x.log",
        str(tmp_path / "home" / "mine" / "*.log"),
    ]
    assert cfg.input.exclude == ["*.tmp", str(conf_dir / "in" / "skip" / "*"), "/abs/y.log"]
    assert cfg.output.dir == tmp_path / "out"
    assert cfg.output.dir.is_absolute()


def test_relative_config_path_gives_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, MINIMAL)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("job.yaml", env={})
    assert cfg.config_path == tmp_path / "job.yaml"
    assert cfg.output.dir == tmp_path / "out"


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, MINIMAL + "execution: {wokers: 1}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"^job\.yaml: execution\.wokers: unknown key"):
        load_config("job.yaml", env={})


# --- result key ----------------------------------------------------------------------

KEYED = MINIMAL + "steps: [{regex: '(?P<n>\\d+)'}, {types: {n: int}}]\nstats: {s: {sum: n}}\n"


def test_result_key_ignores_execution_and_chunking(tmp_path: Path) -> None:
    base = load(tmp_path, KEYED).result_key()
    assert len(base) == 64
    for override in [
        "execution.workers=7",
        "input.chunk_size=4KiB",
        "execution.submit=imap",
        "execution.executor=serial",
        "execution.timeout=5s",
        "execution.retries=0",
        "input.paths=other/*.log",
        "output.dir=elsewhere",
        "name=renamed",
    ]:
        assert load(tmp_path, KEYED, [override]).result_key() == base, override


def test_result_key_changes_with_results(tmp_path: Path) -> None:
    base = load(tmp_path, KEYED).result_key()
    for override in [
        "steps.1.types.n=float",
        "steps=[{regex: '(?P<n>\\d+)'}]",
        "stats.s.sum=m",
        "stats.t.count=true",
        "input.format=jsonl",
        "input.encoding=latin-1",
        "output.records=csv",
        "input.growing=true",
    ]:
        assert load(tmp_path, KEYED, [override]).result_key() != base, override
    assert load(tmp_path, KEYED, ["input.growing=false"]).result_key() == base


def test_growing_needs_a_line_format_and_a_boolean(tmp_path: Path) -> None:
    message = error_of(tmp_path, MINIMAL, ["input.growing=true", "input.format=csv"])
    assert "input.growing" in message and "lines or jsonl" in message, message
    message = error_of(tmp_path, MINIMAL, ["input.growing=maybe"])
    assert "input.growing" in message, message
    assert load(tmp_path, MINIMAL, ["input.growing=true"]).input.growing is True


def test_result_key_uses_canonical_encoding_names(tmp_path: Path) -> None:
    assert (
        load(tmp_path, KEYED, ["input.encoding=UTF8"]).result_key()
        == load(tmp_path, KEYED).result_key()
    )


# --- plugins -------------------------------------------------------------------------


def test_plugin_is_imported_from_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "tp_local_plugin.py").write_text("def enrich(record):\n    return record\n")
    path_before = list(sys.path)
    cfg = load(tmp_path, MINIMAL + "steps: [{call: 'tp_local_plugin:enrich'}]\n")
    assert sys.path == path_before
    assert cfg.step_specs() == ({"call": "tp_local_plugin:enrich"},)
    assert sys.modules["tp_local_plugin"].__file__ == str(tmp_path / "tp_local_plugin.py")


def test_plugin_in_a_package(tmp_path: Path) -> None:
    package = tmp_path / "tp_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(
        "class Tools:\n    @staticmethod\n    def fix(r):\n        return r\n"
    )
    cfg = load(tmp_path, MINIMAL + "steps: [{call: 'tp_pkg.mod:Tools.fix'}]\n")
    assert cfg.step_specs()[0]["call"] == "tp_pkg.mod:Tools.fix"


def test_call_mapping_form_and_batch(tmp_path: Path) -> None:
    (tmp_path / "tp_batch_plugin.py").write_text("def f(records):\n    return records\n")
    string = load(tmp_path, MINIMAL + "steps: [{call: 'tp_batch_plugin:f'}]\n")
    per_record = load(
        tmp_path, MINIMAL + "steps: [{call: {function: 'tp_batch_plugin:f', batch: false}}]\n"
    )
    short = load(tmp_path, MINIMAL + "steps: [{call: {function: 'tp_batch_plugin:f'}}]\n")
    batch = load(
        tmp_path, MINIMAL + "steps: [{call: {function: 'tp_batch_plugin:f', batch: true}}]\n"
    )
    # batch: false is the string form, down to the result key; batch: true is another job.
    for same in (per_record, short):
        assert same.step_specs() == string.step_specs() == ({"call": "tp_batch_plugin:f"},)
        assert same.result_key() == string.result_key()
    assert batch.step_specs() == ({"call": {"function": "tp_batch_plugin:f", "batch": True}},)
    assert batch.result_key() != string.result_key()


def test_batch_plugin_is_imported_by_validation(tmp_path: Path) -> None:
    message = error_of(
        tmp_path, MINIMAL + "steps: [{call: {function: 'tp_nowhere_b:f', batch: true}}]\n"
    )
    assert "steps[0].call: cannot import module 'tp_nowhere_b'" in message


def test_missing_plugin_module(tmp_path: Path) -> None:
    path_before = list(sys.path)
    message = error_of(tmp_path, MINIMAL + "steps: [{select: [a]}, {call: 'tp_nowhere:f'}]\n")
    assert "steps[1].call: cannot import module 'tp_nowhere'" in message
    assert sys.path == path_before


def test_missing_plugin_attribute(tmp_path: Path) -> None:
    (tmp_path / "tp_attr_plugin.py").write_text("def other(record):\n    return record\n")
    message = error_of(tmp_path, MINIMAL + "steps: [{call: 'tp_attr_plugin:enrich'}]\n")
    assert "steps[0].call: module 'tp_attr_plugin' has no attribute 'enrich'" in message


def test_plugin_not_callable(tmp_path: Path) -> None:
    (tmp_path / "tp_value_plugin.py").write_text("enrich = 42\n")
    message = error_of(tmp_path, MINIMAL + "steps: [{call: 'tp_value_plugin:enrich'}]\n")
    assert "steps[0].call: 'tp_value_plugin:enrich' is not callable" in message


def test_plugin_that_fails_to_import(tmp_path: Path) -> None:
    (tmp_path / "tp_broken_plugin.py").write_text("import tp_not_installed_anywhere\n")
    message = error_of(tmp_path, MINIMAL + "steps: [{call: 'tp_broken_plugin:f'}]\n")
    assert "importing module 'tp_broken_plugin' failed" in message
    assert "tp_not_installed_anywhere" in message


def test_plugin_with_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "tp_syntax_plugin.py").write_text("def f(:\n")
    message = error_of(tmp_path, MINIMAL + "steps: [{call: 'tp_syntax_plugin:f'}]\n")
    assert "steps[0].call: importing module 'tp_syntax_plugin' failed: SyntaxError" in message


# --- the strict loader on its own ----------------------------------------------------


def test_loader_keeps_dates_and_equals_as_strings() -> None:
    assert load_document("a: 2024-01-01\nb: =\nc: 1.5\nd: null\n", "x") == {
        "a": "2024-01-01",
        "b": "=",
        "c": 1.5,
        "d": None,
    }


def test_loader_multiple_documents_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^x:2:1: expected a single document"):
        load_document("a: 1\n---\nb: 2\n", "x")


# --- count: field ----------------------------------------------------------------------


def test_count_of_a_field_counts_records_where_it_is_present_and_not_null(
    tmp_path: Path,
) -> None:
    from pipeline import aggregates

    cfg = load(
        tmp_path,
        """
        input: {paths: ["*.jsonl"], format: jsonl}
        stats:
          all: {count: true}
          with_a: {count: a}
          positive_a: {count: a, where: {a: {">": 0}, b: {not_in: ["x"]}}}
        output: {dir: out}
        """,
    )
    specs = cfg.stat_specs()
    assert specs["all"]["where"] is None
    assert specs["with_a"]["where"] == {"a": {"not_in": [None]}}
    assert specs["positive_a"]["where"] == {"a": {">": 0, "not_in": [None]}, "b": {"not_in": ["x"]}}
    records = [{"a": 1}, {"a": None}, {"b": 2}, {"a": 0}, {"a": "s", "b": "x"}, {"a": 5, "b": "y"}]
    aggs = aggregates.Aggregators(specs)
    state = aggs.new_state()
    for record in records:
        aggs.add(state, record)
    final = aggregates.finalize(specs, aggs.partials(state))
    assert final == {"all": 6, "with_a": 4, "positive_a": 1}  # {"a": 1} lacks b
    # the column route (the fast path) counts the same
    columns = {"a": [1, None, None, 0], "b": [None, 2, None, "x"]}
    state = aggs.new_state()
    aggs.add_columns(state, columns, 4)
    assert aggregates.finalize(specs, aggs.partials(state)) == {
        "all": 4,
        "with_a": 2,
        "positive_a": 1,
    }


def test_count_true_keeps_its_result_key(tmp_path: Path) -> None:
    text = """
        input: {paths: ["*.log"]}
        stats: {n: {count: true}}
        output: {dir: out}
        """
    assert load(tmp_path, text).stat_specs() == {
        "n": {"kind": "count", "field": None, "k": None, "where": None}
    }

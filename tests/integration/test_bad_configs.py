"""Bad configs: exit 2 with one plain line naming the key (or file and line), no Python
traceback, and nothing written -- for ``pipeline run`` and, spot-checked, ``validate``."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.helpers import run_cli

pytestmark = pytest.mark.timeout(60)

UNSET_VAR = "PIPELINE_ITEST_SURELY_UNSET_VAR_93417"

GOOD_HEAD = 'name: bad\ninput:\n  paths: ["data/*.log"]\n'
GOOD_TAIL = "output:\n  dir: out\n"


def _alias_bomb() -> str:
    """Billion laughs: 9 levels of 9 aliases each, ~387 million values when expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return GOOD_HEAD + GOOD_TAIL + "\n".join(lines) + "\n"


@dataclass
class Case:
    text: Callable[[Path], str] | None  # None: no config file is written
    expect: list[str]  # regexes that must all match the one-line message


CASES: dict[str, Case] = {
    "yaml-syntax": Case(
        lambda _: 'name: bad\ninput:\n  paths: ["data/*.log"\noutput:\n  dir: out\n',
        [r"job\.yaml:[34]:\d+:"],
    ),
    "unknown-key": Case(
        lambda _: GOOD_HEAD + "  fromat: lines\n" + GOOD_TAIL,
        [r"job\.yaml", r"input\.fromat", r"did you mean 'format'"],
    ),
    "wrong-type": Case(
        lambda _: GOOD_HEAD + GOOD_TAIL + "execution:\n  retries: [1, 2]\n",
        [r"job\.yaml", r"execution\.retries"],
    ),
    "unknown-step": Case(
        lambda _: GOOD_HEAD + "steps:\n  - regexp: 'a'\n" + GOOD_TAIL,
        [r"job\.yaml", r"steps\[0\]", r"'regexp'"],
    ),
    "missing-plugin-module": Case(
        lambda _: GOOD_HEAD + "steps:\n  - call: no_such_plugin_mod_xyz:enrich\n" + GOOD_TAIL,
        [r"job\.yaml", r"steps\[0\]\.call", r"no_such_plugin_mod_xyz"],
    ),
    "invalid-regex": Case(
        lambda _: GOOD_HEAD + "steps:\n  - regex: '^(?P<ip>\\S+'\n" + GOOD_TAIL,
        [r"job\.yaml", r"steps\[0\]\.regex", r"(?i)regex"],
    ),
    "bad-size": Case(
        lambda _: GOOD_HEAD + "  chunk_size: 8XB\n" + GOOD_TAIL,
        [r"job\.yaml", r"input\.chunk_size", r"8XB"],
    ),
    "unknown-filter-operator": Case(
        lambda _: GOOD_HEAD + "steps:\n  - filter: {status: {'=~': 5}}\n" + GOOD_TAIL,
        [r"job\.yaml", r"steps\[0\]\.filter", r"=~"],
    ),
    "python-tag": Case(
        lambda tmp: (
            GOOD_HEAD
            + GOOD_TAIL
            + "execution:\n"
            + f"  workers: !!python/object/apply:os.system ['touch {tmp / 'PWNED'}']\n"
        ),
        [r"job\.yaml:7:\d+:", r"python/object/apply"],
    ),
    "alias-bomb": Case(lambda _: _alias_bomb(), [r"job\.yaml", r"(?i)alias"]),
    "missing-config-file": Case(None, [r"job\.yaml", r"(?i)not found"]),
    "missing-env-var": Case(
        lambda _: GOOD_HEAD + f"output:\n  dir: ${{{UNSET_VAR}}}/out\n",
        [r"job\.yaml:5:", r"output\.dir", UNSET_VAR],
    ),
    "glob-syntax": Case(
        lambda _: 'name: bad\ninput:\n  paths: ["data/*.log", "data/[z-a].log"]\n' + GOOD_TAIL,
        [r"job\.yaml", r"input\.paths\[1\]", r"bad glob", r"\[z-a\]"],
    ),
    "count-not-a-field": Case(
        lambda _: GOOD_HEAD + GOOD_TAIL + "stats:\n  n: {count: 3}\n",
        [r"job\.yaml", r"stats\.n\.count", r"count: <field>"],
    ),
    # valid configs whose output folder cannot be made: found before anything is written
    "output-dir-cannot-be-created": Case(
        lambda _: GOOD_HEAD + "output:\n  dir: /proc/no-such-store\n",
        [r"output\.dir /proc/no-such-store", r"cannot create"],
    ),
    "output-dir-under-a-file": Case(
        lambda tmp: (
            (tmp / "a-file").write_text("not a folder\n")
            and GOOD_HEAD + "output:\n  dir: a-file/out\n"
        ),
        [r"output\.dir \S*a-file/out", r"cannot create", r"(?i)not a directory"],
    ),
}


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _check_bad_config(tmp_path: Path, case_name: str, command: str) -> None:
    case = CASES[case_name]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.log").write_text("one line\nanother line\n")
    config = tmp_path / "job.yaml"
    if case.text is not None:
        config.write_text(case.text(tmp_path), encoding="utf-8")
    before = _snapshot(tmp_path)

    started = time.monotonic()
    result = run_cli(command, str(config), cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started

    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    message = lines[0]
    assert message.startswith("error: "), message
    for pattern in case.expect:
        assert re.search(pattern, message), (pattern, message)
    assert result.stdout == "", result.stdout  # validate prints no config when invalid
    # nothing written: no output dir, no other new file
    assert not (tmp_path / "out").exists()
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "PWNED").exists(), "the !!python tag ran a command"
    assert elapsed < 15, f"took {elapsed:.1f}s"


@pytest.mark.parametrize("case_name", list(CASES))
def test_run_rejects_bad_config(tmp_path: Path, case_name: str) -> None:
    _check_bad_config(tmp_path, case_name, "run")


@pytest.mark.parametrize(
    "case_name",
    [
        "yaml-syntax",
        "unknown-key",
        "missing-plugin-module",
        "python-tag",
        "alias-bomb",
        "missing-env-var",
        "glob-syntax",
    ],
)
def test_validate_rejects_bad_config(tmp_path: Path, case_name: str) -> None:
    _check_bad_config(tmp_path, case_name, "validate")


def test_alias_bomb_is_fast_and_bounded(tmp_path: Path) -> None:
    """A deeper bomb (9**12 values) is refused just as fast: the check is linear."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 13):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    config = tmp_path / "job.yaml"
    config.write_text(GOOD_HEAD + GOOD_TAIL + "\n".join(lines) + "\n")
    started = time.monotonic()
    result = run_cli("run", str(config), cwd=tmp_path, timeout=20)
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(r"(?i)alias", result.stderr), result.stderr
    assert not (tmp_path / "out").exists()


def test_env_var_with_default_is_fine_but_unset_without_default_is_not(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.log").write_text("x\n")
    config = tmp_path / "job.yaml"
    config.write_text(GOOD_HEAD + f"output:\n  dir: ${{{UNSET_VAR}:-out}}\n")
    result = run_cli("validate", str(config), cwd=tmp_path, timeout=30)
    assert result.returncode == 0, result.stderr
    assert f"dir: {tmp_path / 'out'}" in result.stdout
    # the same variable, set in the environment, is used
    result = run_cli(
        "validate", str(config), cwd=tmp_path, timeout=30, env={UNSET_VAR: str(tmp_path / "o2")}
    )
    assert result.returncode == 0, result.stderr
    assert f"dir: {tmp_path / 'o2'}" in result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()

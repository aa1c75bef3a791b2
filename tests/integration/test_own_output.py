"""A run never reads its own output store, whatever the globs say (SPEC: "A run never
reads its own store")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.helpers import run_cli, write_config

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("executor", ["serial", "process"])
def test_a_glob_over_the_output_folder_counts_the_input_once_every_run(
    tmp_path: Path, executor: str
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "one.jsonl").write_text('{"n": 1}\n')
    config = write_config(
        tmp_path,
        {
            "input": {"paths": ["**/*.jsonl"], "format": "jsonl"},
            "stats": {"records": {"count": True}},
            "output": {"dir": "out", "records": "jsonl"},
            "execution": {"executor": executor, "workers": 2},
        },
    )
    for _ in range(4):
        result = run_cli("run", str(config), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert json.loads((tmp_path / "out" / "stats.json").read_text()) == {"records": 1}
        assert (tmp_path / "out" / "records.jsonl").read_text() == '{"n":1}\n'
    plan = run_cli("plan", str(config), cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "out/" not in plan.stdout and "one.jsonl" in plan.stdout

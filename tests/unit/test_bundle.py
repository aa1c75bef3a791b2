"""The config folder's modules as a bundle: what is shipped, the size limit, the install
on a worker, and forgetting another bundle's modules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import bundle
from pipeline.errors import ConfigError


def make_folder(folder: Path) -> Path:
    (folder / "pkg" / "sub").mkdir(parents=True)
    (folder / "plug.py").write_text("import helper\nVALUE = helper.VALUE + 1\n")
    (folder / "helper.py").write_text("VALUE = 41\n")
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "sub" / "mod.py").write_text("X = 1\n")
    (folder / "pkg" / "table.csv").write_text("a,b\n")  # data inside a package: not code
    (folder / "job.yaml").write_text("input: {}\n")
    (folder / "data").mkdir()
    (folder / "data" / "loose.py").write_text("")  # no __init__.py: not a package
    (folder / ".hidden.py").write_text("")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "plug.cpython-311.pyc").write_bytes(b"\0")
    return folder


def test_collect_takes_what_import_can_find_and_nothing_else(tmp_path: Path) -> None:
    found = bundle.collect(str(make_folder(tmp_path)))
    assert [path for path, _ in found.files] == [
        "helper.py",
        "pkg/__init__.py",
        "pkg/sub/mod.py",
        "plug.py",
    ]
    assert found.modules == ["helper", "pkg", "plug"]
    assert found.nbytes == sum(len(data) for _, data in found.files)


def test_the_digest_names_the_content(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    first = bundle.collect(str(folder))
    assert bundle.collect(str(folder)).digest == first.digest
    (folder / "job.yaml").write_text("changed: true\n")  # not shipped: same bundle
    assert bundle.collect(str(folder)).digest == first.digest
    (folder / "helper.py").write_text("VALUE = 1\n")
    assert bundle.collect(str(folder)).digest != first.digest


def test_a_folder_too_large_is_a_config_error_naming_the_largest(tmp_path: Path) -> None:
    folder = make_folder(tmp_path)
    (folder / "huge.py").write_text("X = '" + "x" * 3000 + "'\n")
    with pytest.raises(ConfigError, match=r"huge \(0\.0 MiB\)") as info:
        bundle.collect(str(folder), limit=2000)
    assert str(folder) in info.value.message
    assert "install big packages on the workers" in info.value.message


@pytest.fixture
def clean_imports() -> Iterator[None]:
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


@pytest.mark.usefixtures("clean_imports")
def test_install_then_forget_the_other_bundles(tmp_path: Path) -> None:
    """Two versions of a plugin on one worker: the one whose job is compiled is the one
    ``import`` finds, though the other was imported first."""
    old_src, new_src = make_folder(tmp_path / "old"), make_folder(tmp_path / "new")
    (new_src / "helper.py").write_text("VALUE = 99\n")
    root = tmp_path / "worker" / "plugins"
    old = bundle.install(bundle.collect(str(old_src)), str(root), "job")
    new = bundle.install(bundle.collect(str(new_src)), str(root), "job")
    assert old != new and Path(old, "pkg", "sub", "mod.py").read_text() == "X = 1\n"
    assert bundle.install(bundle.collect(str(new_src)), str(root), "job") == new  # reused
    assert not [p for p in root.iterdir() if p.name.startswith(".install-")]

    sys.path.insert(0, old)
    assert importlib.import_module("plug").VALUE == 42
    bundle.forget_other_bundles(str(root), new)
    assert old not in sys.path and "plug" not in sys.modules and "helper" not in sys.modules
    sys.path.insert(0, new)
    assert importlib.import_module("plug").VALUE == 100

    bundle.forget_bundle(new)
    assert new not in sys.path and "plug" not in sys.modules

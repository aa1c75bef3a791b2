"""The config folder's plugin modules as one bundle, for workers that cannot see the folder
(a Dask cluster): collected by the client, installed by each worker into a folder of its
own, first on ``sys.path``.

What is shipped is what ``import`` can find in the folder when it is on ``sys.path``: its
top-level ``*.py`` modules and its regular packages (folders with an ``__init__.py``),
with every ``.py`` file below them. Data files, namespace packages, compiled extensions,
hidden entries and ``__pycache__`` are not, so a config folder that also holds data never
uploads it; a bundle over ``MAX_BUNDLE_BYTES`` is refused with the largest items named.

A worker may serve several jobs, and the next run of a job may bring edited modules: each
bundle gets its own folder (named by its digest), and before a job is compiled the
modules imported from any other bundle folder are forgotten, so ``import`` finds this
bundle's. No pipeline import here beyond the errors: the worker side uses it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pipeline.errors import ConfigError

MAX_BUNDLE_BYTES = 10 << 20


@dataclass(frozen=True)
class Bundle:
    """Files by relative POSIX path, and a digest of all of them."""

    files: tuple[tuple[str, bytes], ...]
    digest: str

    @property
    def nbytes(self) -> int:
        return sum(len(data) for _, data in self.files)

    @property
    def modules(self) -> list[str]:
        """Top-level module and package names (for messages)."""
        return sorted({path.split("/")[0].removesuffix(".py") for path, _ in self.files})


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


def _package_files(folder: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(relative path, full path) of every ``.py`` file of a package, subfolders included
    (symlinked folders are not followed: a link to a big tree is not a package)."""
    for here, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        relative = os.path.relpath(here, folder)
        base = prefix if relative == "." else f"{prefix}/{relative.replace(os.sep, '/')}"
        for name in sorted(files):
            if name.endswith(".py") and not _skipped(name):
                yield f"{base}/{name}", os.path.join(here, name)


def _sources(folder: str) -> Iterator[tuple[str, str]]:
    with os.scandir(folder) as entries:
        found = sorted(entries, key=lambda e: e.name)
    for entry in found:
        if _skipped(entry.name):
            continue
        if entry.name.endswith(".py") and entry.is_file():
            yield entry.name, entry.path
        elif entry.is_dir(follow_symlinks=False) and os.path.isfile(
            os.path.join(entry.path, "__init__.py")
        ):
            yield from _package_files(entry.path, entry.name)


def collect(folder: str, limit: int = MAX_BUNDLE_BYTES) -> Bundle:
    """The bundle of ``folder`` (see the module docstring); ``ConfigError`` when it cannot
    be read or is larger than ``limit``."""
    files: list[tuple[str, bytes]] = []
    total = 0
    try:
        for relative, path in _sources(folder):
            with open(path, "rb") as handle:
                data = handle.read(limit + 1 - total)
            files.append((relative, data))
            total += len(data)
            if total > limit:
                break
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot read the plugin modules to ship: {exc}") from exc
    if total > limit:
        raise ConfigError(_too_large(folder, limit))
    digest = hashlib.sha256()
    for relative, data in files:
        digest.update(relative.encode("utf-8", "surrogateescape") + b"\0")
        digest.update(len(data).to_bytes(8, "little") + data)
    return Bundle(tuple(files), digest.hexdigest())


def _too_large(folder: str, limit: int) -> str:
    sizes: dict[str, int] = {}
    for relative, path in _sources(folder):
        with contextlib.suppress(OSError):
            top = relative.split("/")[0].removesuffix(".py")
            sizes[top] = sizes.get(top, 0) + os.path.getsize(path)
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
    shown = ", ".join(f"{name} ({size / 2**20:.1f} MiB)" for name, size in largest)
    return (
        f"{folder}: the Python modules and packages of the config's folder come to more "
        f"than {limit / 2**20:g} MiB, too much to send to every Dask worker (largest: "
        f"{shown}); keep the plugins in a small folder of their own beside the config, "
        "or install big packages on the workers"
    )


def install(bundle: Bundle, root: str, name: str) -> str:
    """Write ``bundle`` into its own folder under ``root`` (complete or not at all) and
    return that folder. A folder of the same digest is reused."""
    target = os.path.join(root, f"{name}-{bundle.digest[:16]}")
    if os.path.isdir(target):
        return target
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(dir=root, prefix=".install-")
    try:
        for relative, data in bundle.files:
            path = os.path.join(staging, *relative.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)
        try:
            os.rename(staging, target)
        except OSError:  # another process of this worker's folder got there first
            if not os.path.isdir(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def forget_other_bundles(root: str, keep: str) -> None:
    """Make ``keep`` the bundle ``import`` sees: modules loaded from any other folder under
    ``root`` leave ``sys.modules``, and those folders leave ``sys.path``."""
    own = os.path.join(keep, "")
    _forget(lambda path: not path.startswith(own), os.path.join(root, ""))


def forget_bundle(folder: str) -> None:
    """Modules loaded from ``folder`` leave ``sys.modules``, and it leaves ``sys.path``."""
    _forget(lambda path: True, os.path.join(folder, ""))


def _forget(chosen: Callable[[str], bool], prefix: str) -> None:
    sys.path[:] = [
        p
        for p in sys.path
        if not (os.path.join(p, "").startswith(prefix) and chosen(os.path.join(p, "")))
    ]
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and path.startswith(prefix) and chosen(path):
            del sys.modules[name]

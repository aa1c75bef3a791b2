"""Files in ``FAULT_DIR`` that tell a test, black-box, what the workers did.

``imports``: a line ``<role> <pid> <config-visible>`` each time a process imports the
plugin (``role`` is ``worker`` inside a Dask task, else ``client``); ``hits``: a line
``<pid>`` per matching record; ``busy-<pid>``: a worker reached its first record;
``once-<token>``: the ``*_once`` faults fired.
"""

from __future__ import annotations

import os
import sys


def _role() -> str:
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return "client"
    try:
        distributed.get_worker()
    except ValueError:
        return "client"
    return "worker"


def _append(folder: str, name: str, text: str) -> None:
    with open(os.path.join(folder, name), "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def note_import(folder: str, config_dir: str) -> None:
    _append(folder, "imports", f"{_role()} {os.getpid()} {os.path.exists(config_dir)}")


_first: set[int] = set()


def first_record(folder: str) -> None:
    if os.getpid() not in _first:
        _first.add(os.getpid())
        open(os.path.join(folder, f"busy-{os.getpid()}"), "w").close()


def hit(folder: str) -> None:
    _append(folder, "hits", str(os.getpid()))


def first_time(folder: str, token: str) -> bool:
    """True exactly once per folder and token, across processes (O_EXCL)."""
    try:
        fd = os.open(os.path.join(folder, f"once-{token}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return False
    os.close(fd)
    return True

"""Content digests of small files: a file whose mtime moved but whose bytes did not (a
``touch``, a copy that kept its content) is not processed again. Only files read whole
and no larger than ``CONTENT_CHECK_MAX`` get one, so the check always stays cheap."""

from __future__ import annotations

import hashlib

from pipeline.models import TaskSpec

CONTENT_CHECK_MAX = 1 << 20


def bytes_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return bytes_digest(handle.read())


def reads_small_file(task: TaskSpec) -> bool:
    """Whether the task reads all of a file small enough to digest (and to read in one go)."""
    return task.size <= CONTENT_CHECK_MAX and task.covers_file

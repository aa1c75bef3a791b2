"""Content digests of small files: a file whose mtime moved but whose bytes did not (a
``touch``, a copy that kept its content) is not processed again. Only files read whole
and no larger than ``CONTENT_CHECK_MAX`` get one, so the check always stays cheap."""

from __future__ import annotations

import hashlib

from pipeline.models import TaskSpec

CONTENT_CHECK_MAX = 1 << 20


def file_digest(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.blake2b(handle.read(), digest_size=16).hexdigest()


def content_digest(task: TaskSpec) -> str | None:
    """The digest of the file this task reads, if it reads all of a small file."""
    if task.offset != 0 or task.size > CONTENT_CHECK_MAX:
        return None
    if task.length is not None and task.length != task.size:
        return None
    return file_digest(task.path)

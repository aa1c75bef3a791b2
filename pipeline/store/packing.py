"""How a batch's done whole files are packed into one ledger row (``batches.members``).

The worker packs them (it has every value at hand, and its CPU is not the main
process's); the ledger stores and unpacks them. No SQLite here: workers import this.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from typing import Any

from pipeline.models import PackedTasks, TaskResult, TaskSpec


def pack_tasks(done: Sequence[tuple[TaskSpec, TaskResult]], merged: dict[str, Any]) -> PackedTasks:
    """Done whole-file tasks (at least two, results of one batch) and the merge of their
    partials, as one batch row will hold them. Called in the worker, which has every
    value at hand and spends its own CPU, not the main process's, on the encoding."""
    keys = [os.fsencode(task.path) for task, _ in done]
    if any(a > b for a, b in itertools.pairwise(keys)):  # members are kept in path order
        done = [pair for _, pair in sorted(zip(keys, done, strict=True), key=lambda kv: kv[0])]
    members = [member(task, r) for task, r in done]
    first_path, *totals = batch_totals(members)
    task_ids = frozenset(task.task_id for task, _ in done)
    return PackedTasks(
        task_ids,
        pack(members),
        merged,
        first_path,
        tuple(totals),
        next((r.part for _, r in done if r.part), None),
        row_id(task_ids),
    )


def row_id(task_ids: frozenset[str]) -> str:
    """A batch row's key: a hash of its members' task ids (a batch retried in part packs
    a different set, so a different row)."""
    digest = hashlib.blake2b(digest_size=16)
    for task_id in sorted(task_ids):
        digest.update(task_id.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def slim_results(results: list[TaskResult]) -> list[TaskResult]:
    """Results as they travel to the main process: the packed files are one result (the
    first, which carries ``packed`` and stands for all of them, without partials: the
    merge stands in), beside the batch's other results."""
    packed = next((r.packed for r in results if r.packed is not None), None)
    if packed is None:
        return results
    slim = []
    for result in results:
        if result.packed is not None:
            result.partials = {}
            slim.append(result)
        elif result.task_id not in packed.task_ids:
            slim.append(result)
    return slim


# A batch member, as packed in ``batches.members``: a JSON list with these fields.
(
    M_TASK_ID,
    M_PATH,
    M_LENGTH,
    M_SIZE,
    M_MTIME,
    M_COMPRESSION,
    M_RECORDS_IN,
    M_RECORDS_OUT,
    M_MALFORMED,
    M_UNDECODABLE,
    M_BYTES_READ,
    M_PARTIALS,
    M_PART_OFFSET,
    M_PART_SIZE,
    M_CONTENT,
    M_DURATION,
) = range(16)


def member(task: TaskSpec, r: TaskResult) -> list[Any]:
    return [
        task.task_id,
        task.path,
        task.length,
        task.size,
        task.mtime_ns,
        task.compression,
        r.records_in,
        r.records_out,
        r.malformed,
        r.undecodable,
        r.bytes_read,
        r.partials,
        r.part_offset,
        r.part_size,
        r.content,
        r.duration_s,
    ]


def pack(members: list[list[Any]]) -> str:
    """JSON with ASCII escapes: a path that is not valid UTF-8 keeps its lone surrogates
    as ``\\udcXX``, which ``json.loads`` turns back into the same str."""
    return json.dumps(members, separators=(",", ":"))


def batch_totals(members: list[list[Any]]) -> tuple[Any, ...]:
    """first_path, files, the four record counts, bytes_read and part_size of a batch
    (its members in path order, as they are always kept)."""
    return (
        os.fsencode(members[0][M_PATH]),
        len(members),
        *(sum(m[i] for m in members) for i in range(M_RECORDS_IN, M_BYTES_READ + 1)),
        sum(m[M_PART_SIZE] for m in members),
    )

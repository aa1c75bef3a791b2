"""How a batch's done whole files are packed into one ledger row (``batches.members``).

The worker packs them (it has every value at hand, and its CPU is not the main
process's); the ledger stores and unpacks them. No SQLite here: workers import this.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Sequence
from typing import Any

from pipeline.models import PackedTasks, TaskResult, TaskSpec


@functools.cache
def _orjson() -> Any:
    """orjson, ten times faster at packing (the stdlib does what it cannot: see ``pack``),
    or None without it. Imported on first use: a first run's main process never needs it
    (its workers pack), and its import is 3 ms of the main process's start."""
    try:
        import orjson
    except ImportError:  # a dependency, but the stdlib is enough
        return None
    return orjson


def pack_tasks(
    done: Sequence[tuple[TaskSpec, TaskResult]], merged: dict[str, Any], *, extremes: bool = True
) -> PackedTasks:
    """Done whole-file tasks (at least two, results of one batch) and the merge of their
    partials, as one batch row will hold them. Called in the worker, which has every
    value at hand and spends its own CPU, not the main process's, on the encoding.
    ``extremes``: whether the job has ``min``/``max`` stats (see ``pack``)."""
    keys = [os.fsencode(task.path) for task, _ in done]
    if any(a > b for a, b in itertools.pairwise(keys)):  # members are kept in path order
        done = [pair for _, pair in sorted(zip(keys, done, strict=True), key=lambda kv: kv[0])]
    members = [member(task, r) for task, r in done]
    first_path, *totals = batch_totals(members)
    task_ids = frozenset(task.task_id for task, _ in done)
    return PackedTasks(
        task_ids,
        pack(members, extremes=extremes),
        merged,
        first_path,
        tuple(totals),
        next((r.part for _, r in done if r.part), None),
        row_id(task_ids),
        tuple(
            (task.path, task.compression, r.records_in, r.malformed, r.rejected)
            for task, r in done
            if r.malformed
        ),
        (min(r.started for _, r in done), max(r.started + r.duration_s for _, r in done)),
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


def pack(members: list[list[Any]], *, extremes: bool = True) -> str:
    """Members as JSON text that ``unpack`` turns back into equal values.

    orjson when it is installed and can say it all; it cannot say a path that is not
    valid UTF-8 or an integer past 64 bits (it raises) nor a non-finite float (it would
    write null: only a ``min``/``max`` partial can hold one, so they are checked first).
    Then the stdlib, with ASCII escapes: a lone surrogate stays ``\\udcXX``. Without
    ``extremes`` (no ``min``/``max`` stat in the job) there is nothing to check."""
    orjson = _orjson()
    if orjson is not None and (
        not extremes or all(_finite_partials(m[M_PARTIALS]) for m in members)
    ):
        try:
            return orjson.dumps(members).decode()
        except TypeError:
            pass
    return json.dumps(members, separators=(",", ":"))


def _finite_partials(partials: dict[str, Any]) -> bool:
    for partial in partials.values():
        if type(partial) is dict:
            num = partial.get("num")
            if type(num) is float and not math.isfinite(num):
                return False
    return True


# Digits that may be an integer orjson reads as a float: it reads -2**63 ... 2**64 - 1
# exactly (an mtime in ns has 19 digits), beyond as a float. Digits in a string or a
# fraction match too: then the stdlib reads it, which is only slower.
_LONG_NUMBER = re.compile(r"\d{20}|-\d{19}")


def unpack(text: str) -> Any:
    """``pack``'s text (or any JSON the stdlib wrote) back as values: orjson unless the
    text may hold an integer orjson would turn into a float, or a value it refuses
    (a lone surrogate, ``Infinity``), which the stdlib reads."""
    orjson = _orjson()
    if orjson is not None and _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def batch_totals(members: list[list[Any]]) -> tuple[Any, ...]:
    """first_path, files, the four record counts, bytes_read and part_size of a batch
    (its members in path order, as they are always kept)."""
    return (
        os.fsencode(members[0][M_PATH]),
        len(members),
        *(sum(m[i] for m in members) for i in range(M_RECORDS_IN, M_BYTES_READ + 1)),
        sum(m[M_PART_SIZE] for m in members),
    )

"""Baseline: ``multiprocessing.Pool.imap_unordered`` written by hand. Jobs A, E, H:
line-aligned 8 MiB byte ranges, each read by the worker, one range per message; other jobs:
whole files, ``chunksize`` = files / (workers * 4). Workers return small partial answers.
Jobs E-H: ``--kernel dicts`` (the pipeline's per-record work) or ``bytes``."""

from __future__ import annotations

import multiprocessing

import common


def main() -> None:
    args = common.parse_args(__doc__)
    items = common.work_items(args.job, args.data)
    size = common.items_per_message(args.job, len(items), args.workers)
    with multiprocessing.Pool(args.workers) as pool:
        total = common.merge_all(
            pool.imap_unordered(common.task_for(args.job, args.kernel), items, chunksize=size)
        )
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

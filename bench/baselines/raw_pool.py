"""Baseline: ``multiprocessing.Pool.imap_unordered`` written by hand. Job A: line-aligned
8 MiB byte ranges, each read by the worker, one range per message; other jobs: whole files,
``chunksize`` = files / (workers * 4). Workers return small partial answers."""

from __future__ import annotations

import multiprocessing

import common


def main() -> None:
    args = common.parse_args(__doc__)
    items = common.work_items(args.job, args.data)
    size = 1 if args.job == "A" else common.chunksize(len(items), args.workers)
    with multiprocessing.Pool(args.workers) as pool:
        total = common.merge_all(pool.imap_unordered(common.TASKS[args.job], items, chunksize=size))
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

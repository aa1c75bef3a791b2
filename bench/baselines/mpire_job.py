"""Baseline: ``mpire.WorkerPool.imap_unordered``, the same split and chunk size as
raw_pool. mpire unpacks tuples into arguments, so every item is wrapped in a 1-tuple."""

from __future__ import annotations

import common
from mpire import WorkerPool


def main() -> None:
    args = common.parse_args(__doc__)
    items = common.work_items(args.job, args.data)
    size = 1 if args.job == "A" else common.chunksize(len(items), args.workers)
    with WorkerPool(n_jobs=args.workers) as pool:
        results = pool.imap_unordered(
            common.TASKS[args.job], [(item,) for item in items], chunk_size=size
        )
        total = common.merge_all(results)
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

"""Baseline: ``concurrent.futures.ProcessPoolExecutor.map``, the same split as raw_pool."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import common


def main() -> None:
    args = common.parse_args(__doc__)
    items = common.work_items(args.job, args.data)
    size = 1 if args.job == "A" else common.chunksize(len(items), args.workers)
    with ProcessPoolExecutor(args.workers) as executor:
        total = common.merge_all(executor.map(common.TASKS[args.job], items, chunksize=size))
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

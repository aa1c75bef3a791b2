"""Baseline: ``joblib.Parallel`` (default loky backend, ``batch_size="auto"``), the same
split as raw_pool, results consumed as they come."""

from __future__ import annotations

import common
from joblib import Parallel, delayed


def main() -> None:
    args = common.parse_args(__doc__)
    items = common.work_items(args.job, args.data)
    task = delayed(common.TASKS[args.job])
    parallel = Parallel(n_jobs=args.workers, return_as="generator_unordered")
    total = common.merge_all(parallel(task(item) for item in items))
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

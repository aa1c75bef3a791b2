"""Baseline: one process, a plain loop over the files (jobs A, E, H: over the 8 MiB
ranges, so memory stays bounded like everywhere else); the reference answer of the bench."""

from __future__ import annotations

import common


def main() -> None:
    args = common.parse_args(__doc__)
    task = common.task_for(args.job, args.kernel)
    total = common.merge_all(task(item) for item in common.work_items(args.job, args.data))
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

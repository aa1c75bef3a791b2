"""Baseline: one process, a plain loop over the files (job A: over its 8 MiB ranges, so
memory stays bounded like everywhere else)."""

from __future__ import annotations

import common


def main() -> None:
    args = common.parse_args(__doc__)
    task = common.TASKS[args.job]
    total = common.merge_all(task(item) for item in common.work_items(args.job, args.data))
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

"""Baseline: ``dask.bag`` on the multiprocessing scheduler, written the idiomatic way:
``read_text`` (8 MiB blocks of the big file for A, one partition per ``.gz`` for B) with a
function per partition; ``from_sequence`` over the file names for the many small files of
C and D. Each partition returns one small partial answer."""

from __future__ import annotations

import functools
from typing import Any

import common
import dask
import dask.bag as db


def logs_partition(lines: Any) -> list[common.Answer]:
    return [common.access_stats(lines)]


def files_partition(job: str, paths: Any) -> list[common.Answer]:
    return [common.merge_all(common.process_item(job, path) for path in paths)]


def main() -> None:
    args = common.parse_args(__doc__)
    files = common.input_files(args.job, args.data)
    if args.job == "A":
        bag = db.read_text(files, blocksize=common.BLOCK).map_partitions(logs_partition)
    elif args.job == "B":
        bag = db.read_text(files, compression="gzip").map_partitions(logs_partition)
    else:
        bag = db.from_sequence(files, npartitions=args.workers * 4)
        bag = bag.map_partitions(functools.partial(files_partition, args.job))
    with dask.config.set(scheduler="processes", num_workers=args.workers):
        total = common.merge_all(bag.compute())
    common.emit(args.job, total)


if __name__ == "__main__":
    main()

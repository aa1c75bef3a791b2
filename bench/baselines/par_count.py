"""The job run by GNU parallel: count the files named on the command line, or standard
input when there are none (``--pipepart`` hands each job a line-aligned block); print one
partial answer as a JSON line. bench/run.py adds up the lines."""

from __future__ import annotations

import argparse
import json
import sys

import common


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", choices="ABCD", required=True)
    parser.add_argument("files", nargs="*")
    args = parser.parse_args()
    if args.files:
        total = common.merge_all(common.process_item(args.job, path) for path in args.files)
    else:
        total = common.process_bytes(args.job, sys.stdin.buffer.read())
    sys.stdout.write(json.dumps(total) + "\n")


if __name__ == "__main__":
    main()

"""``python -m pipeline`` for bench/run.py, in this very process, which at exit writes
its own peak RSS (KiB, ``RUSAGE_SELF``: the main process alone, not its workers or the
Manager) to the file named by ``BENCH_RSS_FILE``.

    python bench/pipeline_main.py run CONFIG [options]
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path


def main() -> None:
    from pipeline.cli import main as cli_main

    sys.argv[0] = "pipeline"
    try:
        cli_main()
    finally:
        rss_file = os.environ.get("BENCH_RSS_FILE")
        if rss_file:
            Path(rss_file).write_text(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


if __name__ == "__main__":
    main()

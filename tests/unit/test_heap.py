"""heap: a worker's malloc thresholds are fixed, whatever its parent freed before fork."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from pipeline.heap import keep_freed_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_thresholds_take_effect_on_glibc() -> None:
    assert keep_freed_heap() is True


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
@pytest.mark.timeout(60)
def test_freed_blocks_are_reused_not_returned_to_the_kernel() -> None:
    """Blocks just under glibc's default mmap threshold (128 KiB), allocated and freed
    again and again: by default the freed top of the heap goes back to the kernel each
    time and comes back as page faults; with the thresholds set it is reused."""
    code = (
        "import resource, sys\n"
        "from pipeline.heap import keep_freed_heap\n"
        "if sys.argv[1] == 'set': keep_freed_heap()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(200):\n"
        "    blocks = [bytearray(100 << 10) for _ in range(4)]\n"
        "    del blocks\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    faults = {}
    for mode in ("set", "default"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        faults[mode] = int(done.stdout)
    assert faults["default"] > 5_000  # tens of pages a round, every round
    assert faults["set"] < faults["default"] / 20

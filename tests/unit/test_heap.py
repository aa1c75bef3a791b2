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
    """Four 2 MiB blocks written, freed, and again, 100 times. With a trim threshold of
    zero (what an unlucky inherited heap state comes close to) freed memory goes back to
    the kernel and comes back as page faults; with the thresholds ``keep_freed_heap``
    sets, the first round's pages (about 2,048) are reused for the rest."""
    code = (
        "import ctypes, resource, sys\n"
        "from pipeline import heap\n"
        "if sys.argv[1] == 'set':\n"
        "    assert heap.keep_freed_heap()\n"
        "else:\n"
        "    libc = ctypes.CDLL('libc.so.6')\n"
        "    libc.mallopt(heap.M_MMAP_THRESHOLD, heap.MMAP_THRESHOLD)\n"
        "    libc.mallopt(heap.M_TRIM_THRESHOLD, 0)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(100):\n"
        "    blocks = [b'x' * (2 << 20) for _ in range(4)]\n"
        "    del blocks\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    faults = {}
    for mode in ("set", "trim"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, done.stderr
        faults[mode] = int(done.stdout)
    assert faults["set"] < 4_000  # the first round's 8 MiB, then nothing new
    assert faults["trim"] > 3 * faults["set"]

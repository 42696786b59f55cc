"""The allocator setting: freed memory stays in the process instead of fresh pages per step."""

from __future__ import annotations

import platform
import statistics
import subprocess
import sys

import pytest

FAULTS = """
import resource, sys, torch
if sys.argv[1] == "keep":
    from physicsml.allocator import keep_freed_memory
    assert keep_freed_memory(256)
def step():  # a training step's edge and node tensors (0.6-5 MB), freed at its end
    tensors = [torch.empty(n).fill_(1.0) for n in (1200000, 800000, 300000, 1200000, 600000)]
    del tensors
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_kept_memory_saves_page_faults() -> None:
    def page_faults(mode: str) -> int:
        result = subprocess.run(
            [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
        )
        return int(result.stdout)

    # single processes vary 2x (default 5,000-11,000 faults, kept 2,300-4,700 here): medians
    runs = [(page_faults("default"), page_faults("keep")) for _ in range(5)]
    default = statistics.median(d for d, _ in runs)
    kept = statistics.median(k for _, k in runs)
    # glibc's defaults hand the step's blocks back to the OS: thousands of faults per 10 steps
    assert default > 2000
    assert kept < 0.8 * default, runs

"""resume.models.cpu_malloc: glibc keeps the GRPO step's large blocks in the heap (issue #12)."""

import subprocess
import sys

import pytest

# Allocate a 64 MiB tensor and say whether its memory lies in the process's [heap] (brk) mapping; glibc's
# default serves a block this large with its own mmap, outside it.
PROBE = """
import sys, torch
from resume.models.cpu_malloc import retain_freed_memory
result = retain_freed_memory() if sys.argv[1] == "retain" else "system"
t = torch.empty(64 * 2**20, dtype=torch.uint8)
t.fill_(1)
ptr = t.data_ptr()
in_heap = False
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
        in_heap |= lo <= ptr < hi
print(in_heap)
print(result)
"""

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator: Linux only")


def _probe(mode: str, **env: str) -> tuple[bool, str]:
    import os

    # the probe starts from glibc's defaults: no allocator settings or preloaded allocator from outside
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")} | env
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True,
                         env=run_env).stdout.splitlines()
    return out[-2] == "True", out[-1]


def test_retained_blocks_live_in_the_heap():
    in_heap, result = _probe("retain")
    assert result.startswith("glibc "), result
    assert in_heap


def test_system_allocator_maps_large_blocks():
    in_heap, _ = _probe("system")
    assert not in_heap  # the control: without the settings, the probe's block is mmap'd


def test_user_choice_is_left_alone():
    in_heap, result = _probe("retain", MALLOC_TRIM_THRESHOLD_="1000000")
    assert result == "allocator unchanged: the environment already sets the allocator (MALLOC_TRIM_THRESHOLD_)"
    assert not in_heap

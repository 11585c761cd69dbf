"""glibc's allocator told to keep freed memory, for training on CPU (issue #12: the GRPO step).

A GRPO step on CPU allocates and frees the same large tensors every micro-batch (logits of the completion
positions over a 49k vocabulary, about 160 MB; activations kept for the backward; the gathered prompt
cache). glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh `mmap` and gives
it back with `munmap` on free, and trims the heap's top when it is free, so each step faults the same
pages in again and the kernel zeroes them. `retain_freed_memory` turns that off for the process
(`mallopt`: no mmap'd blocks, no trimming, a padded heap top), the advice Intel's PyTorch CPU tuning guide
gives through jemalloc/tcmalloc, here without preloading a library. It changes where tensors live, not
what is computed: the same step, about 8 % less time in the loss forward and backward on SmolLM2-135M
(bench/README.md "The GRPO step"). The cost is resident memory that stays at the process's peak.

Written here because neither torch nor transformers sets the C allocator; it is three `mallopt` calls
through ctypes, skipped where they cannot apply (not glibc, or the user already chose an allocator).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import sys

__all__ = ["retain_freed_memory"]

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes a C int: trim only when ~2 GiB at the heap's top are free
_TOP_PAD = 512 * 2**20
_USER_CHOICE = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                "GLIBC_TUNABLES")


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform})"
    chosen = [k for k in _USER_CHOICE if k in os.environ]
    if chosen:
        return f"the environment already sets the allocator ({', '.join(chosen)})"
    preload = os.environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("jemalloc", "tcmalloc", "mimalloc")):
        return f"another allocator is preloaded ({preload})"
    return None


@functools.cache  # once per process: the settings are the process's
def retain_freed_memory() -> str:
    """Keep freed memory in this process (glibc only). Returns what was done, for the log."""
    reason = _skip_reason()
    if reason is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            version = libc.gnu_get_libc_version
        except (OSError, AttributeError):
            reason = "the C library is not glibc"
    if reason is None:
        version.restype = ctypes.c_char_p
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        ok = all(libc.mallopt(param, value) == 1 for param, value in (
            (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, _TRIM_THRESHOLD), (M_TOP_PAD, _TOP_PAD)))
        result = (f"glibc {version().decode()}: freed memory kept (no mmap'd blocks, no trimming)" if ok
                  else "mallopt refused a setting; the allocator may be partly changed")
    else:
        result = f"allocator unchanged: {reason}"
    log.info("cpu malloc: %s", result)
    return result

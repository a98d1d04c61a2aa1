"""Keep glibc from handing large freed blocks back to the kernel between batches (CPU serving).

A batch job alternates media decode, the encoders and the LLM, each allocating activations of a few MB to tens
of MB. glibc serves blocks above its mmap threshold (128 KiB, raised dynamically) with fresh ``mmap`` pages and
trims the heap top when free space passes 128 KiB, so each batch page-faults and zero-fills its activations
again. In ``affectrt batch`` on the ``small`` preset (2-core Xeon, batch 8) the encoders took 194 ms per clip
inside the job against 160 ms when timed alone on the same batch; with the two thresholds raised as below, 167
ms. PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this does it in-process
for the commands that own the process (``infer``, ``batch``, ``eval``) and the benchmarks, not on import.

The cost: the process keeps up to its peak heap instead of returning it between batches (as a caching
allocator does).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc caps the mmap threshold at 32 MiB on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); larger blocks still map.
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False (and nothing done) off glibc.

    Idempotent. Blocks up to 32 MiB then come from the heap and freed memory stays there for the next batch.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _done

"""affectrt.cpu_alloc: glibc's thresholds are raised once, for the commands that own the process."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from affectrt import cpu_alloc

# In a fresh interpreter: allocate eight 8 MiB blocks (one batch's activations), free them, and report how
# much of the main heap glibc kept (mallinfo2's arena). By default glibc trims the freed heap top back to the
# kernel (its trim threshold follows the largest freed block: 16 MiB here); once tuned it keeps all of it for
# the next batch.
_PROBE = """
import ctypes, sys
from affectrt.cpu_alloc import keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
if sys.argv[1] == "tuned":
    assert keep_freed_memory() and keep_freed_memory()
libc.free(libc.malloc(8 << 20))  # the dynamic threshold rises to 8 MiB: the blocks below come from the heap
blocks = [libc.malloc(8 << 20) for _ in range(8)]
for p in reversed(blocks):
    libc.free(p)
print(libc.mallinfo2().arena >> 20)
"""


def _kept_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_activations_stay_in_the_heap_once_tuned():
    assert _kept_mib("default") < 32  # trimmed back
    assert _kept_mib("tuned") >= 64  # all eight blocks kept for reuse


def test_off_linux_nothing_is_done(monkeypatch):
    monkeypatch.setattr(cpu_alloc, "_done", False)
    monkeypatch.setattr(cpu_alloc.sys, "platform", "darwin")
    assert cpu_alloc.keep_freed_memory() is False

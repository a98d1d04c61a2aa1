"""Keep helper threads' torch ops off OpenMP, so the main thread's OpenMP team stays hot.

torch runs its CPU ops' parallel loops on OpenMP, and every host thread that runs one gets an OpenMP team
of its own (``torch.get_num_threads()`` threads). The media loader decodes and normalises clips in worker
threads while the main thread encodes and generates; once those workers have run a torch op, the process
holds more OpenMP threads than there are cores, and libgomp then stops its idle threads from spin-waiting
(its "throttled" spin count): every parallel region of the main thread must wake its team from a futex
sleep. A decode step of the LLM is hundreds of small parallel regions, so on the 2-core Xeon the batch-8
``generate`` of the ``small`` preset took 224 ms after one loader batch against 136 ms before it, and 146 ms
with the loader's threads running their torch ops serially (:func:`serial_torch_in_this_thread`).

The loader's threads work on one clip each and many clips at once, so running each one's ops on a single
core costs them nothing.
"""

from __future__ import annotations

import ctypes
import functools

import torch

_OPENMP_LIBS = ("libgomp", "libiomp5", "libomp")


@functools.cache
def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime torch loaded (found in the process's mappings), or None."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/" in line}
    except OSError:
        return None
    for path in sorted(paths):
        name = path.rsplit("/", 1)[-1]
        if name.startswith(_OPENMP_LIBS) and ".so" in name:
            try:
                return ctypes.CDLL(path)  # already loaded: the same library and the same per-thread state
            except OSError:
                continue
    return None


def serial_torch_in_this_thread() -> bool:
    """Make the calling thread run its torch CPU ops on itself alone; False when no OpenMP runtime is found.

    Sets OpenMP's per-thread ``nthreads`` to 1 (``omp_set_num_threads`` changes only the calling thread's
    setting), after torch's lazy per-thread initialisation, which would otherwise reset it on the thread's
    first parallel op. Other threads, the main one included, keep ``torch.get_num_threads()``.
    """
    torch.get_num_threads()  # runs torch's per-thread OpenMP initialisation now, not later over our setting
    omp = _openmp_runtime()
    if omp is None:
        return False
    omp.omp_set_num_threads(1)
    return True

"""What the CPU offers for reduced precision: bf16 matrix units decide whether ``--precision bf16`` pays.

Intel AMX (Sapphire Rapids and later) and AVX512-BF16 (Cooper Lake, Zen 4) run bfloat16 matrix products
natively (oneDNN uses them under ``torch.autocast("cpu", torch.bfloat16)``); without them bf16 is emulated
and slower than fp32.
"""

from __future__ import annotations

import functools
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (empty where it does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_units() -> str | None:
    """ "AMX", "AVX512-BF16", or None when bfloat16 matrix products would be emulated."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    return None


def cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()

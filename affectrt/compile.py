"""``torch.compile`` for serving, where it pays: the LLM's decode step at batch 1.

Measured on a 2-core Intel Xeon with AMX, fp32, ``small`` preset (``python benchmarks/latency.py --compile``
and the scripts quoted in the issue notes), which decides what is compiled:

- **Decode step at batch 1**: a step of a small LLM is a few hundred tiny operators whose dispatch cost is the
  whole step; compiled (Inductor) it runs 3.4 -> 2.2 ms per token, after ~20 s of compilation. At batch 16 the
  same compiled step is *slower* than eager (13.2 vs 8.1 ms: the attended cache length changes every step, so
  the graph is compiled with dynamic shapes, and Inductor's CPU code for those loses to the eager kernels). So
  only batches of one row use it. Greedy tokens equal eager's. Where the fused eager step applies (float32 on
  the CPU, :mod:`affectrt.models.fused_decode`) it is faster still, 1.11 against 1.42 ms per token
  (``latency.py --repeats 5 --compile`` at commit 309dba0), and the pipeline does not use the compiled step:
  it serves the other cases (a bf16 or fp16 LLM, no ``affectrt._C``).
- **Encoders: not compiled.** With ``freezing`` (weights folded and prepacked, LayerNorm/GELU fused) CLIP ran
  ~1.1x faster and HuBERT ~0.9x (slower), 8 frames + 8 windows, interleaved medians: no net gain for ~8 s of
  compilation. Their time is GEMMs and convolutions that already run at ~75 % of the BLAS's rate.

Compilation is lazy (the first decode step compiles) and needs a C++ compiler on the CPU (Inductor generates
C++). Training never uses it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable

import torch
from torch import Tensor

from affectrt.errors import UsageError

# Batches of at most this many rows decode with the compiled step (see the module docstring).
COMPILED_DECODE_MAX_ROWS = 1


def check_compiler(device: torch.device) -> None:
    """Raise a :class:`UsageError` when ``torch.compile`` cannot run on ``device`` (no C++ compiler on CPU)."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise UsageError(
            "--compile",
            "torch.compile on the CPU generates C++ and no C++ compiler (g++, clang++) is on PATH",
            "install one (Debian: apt-get install g++) or run without --compile",
        )


def compiled_decode_step(llm: torch.nn.Module) -> Callable[..., Tensor]:
    """A compiled ``llm.forward`` for one decode step (same arguments and result), dynamic shapes."""
    return torch.compile(llm.forward, dynamic=True)

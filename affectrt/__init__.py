"""affectrt: a fast runtime for AffectGPT-style multimodal emotion understanding models.

Importing the package is cheap: it initialises no CUDA context and imports none of Triton, DALI,
TensorRT or ONNX; those load at the call that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from affectrt.config import AffectGPTConfig, get_preset

__all__ = ["AffectGPTConfig", "__version__", "get_preset"]

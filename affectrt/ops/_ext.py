"""Lazy loaders for the native extensions ``affectrt._C`` (CPU) and ``affectrt._C_cuda`` (CUDA).

Nothing is imported until a kernel is first needed, so ``import affectrt`` never loads libcudart. Each
loader returns the module or None; ``*_ext_reason()`` says why it is None (the import error text, or
what the build recorded when the extension was not built).

While a torch profiler records, :func:`cpu_ext` returns the CPU module wrapped (:class:`ProfiledExt`) so that
its kernels appear in the profiler's tables (``python benchmarks/latency.py --profile``): a pybind11 call is not
a torch operator, and the profiler would otherwise charge a C++ epilogue's time to nothing at all. Otherwise it
returns the module itself: a wrapper on every call cost a `small` decode step ~2 % (scratch A/B, 2-core Xeon).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch

# Must match enum DType in csrc/common.h.
DTYPE_CODES: dict[torch.dtype, int] = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


class ProfiledExt:
    """An extension module whose functions each run inside a ``record_function("affectrt._C.<name>")`` range:
    what :func:`cpu_ext` returns while a torch profiler records."""

    def __init__(self, module: ModuleType):
        self._module = module

    def __getattr__(self, name: str):
        attr = getattr(self._module, name)
        if not callable(attr):
            return attr
        label = f"affectrt.{self._module.__name__.rsplit('.', 1)[-1]}.{name}"

        def call(*args, **kwargs):
            with torch.profiler.record_function(label):
                return attr(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = attr.__doc__
        return call


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(f"affectrt.{name}"), None
    except ImportError as e:
        return None, _explain(name, e)


@functools.cache
def _profiled(module: ModuleType) -> ProfiledExt:
    return ProfiledExt(module)


def _explain(name: str, error: ImportError) -> str:
    from affectrt.build_info import build_info

    record = build_info().get("extensions", {}).get(f"affectrt.{name}")
    if isinstance(error, ModuleNotFoundError) and error.name == f"affectrt.{name}":
        if record and not record.get("built"):
            return f"affectrt.{name} was not built: {record.get('reason')}"
        return (
            f"affectrt.{name} is not built (running from a source tree? build it with "
            f"`pip install -e .` or `python setup.py build_ext --inplace`)"
        )
    return f"affectrt.{name} failed to import: {error}"


def cpu_ext() -> ModuleType | ProfiledExt | None:
    """The CPU kernel module ``affectrt._C``, or None (see :func:`cpu_ext_reason`); while a torch profiler
    records, the module wrapped so that each kernel call is a profiler range (:class:`ProfiledExt`)."""
    module = _load("_C")[0]
    if module is not None and torch.autograd._profiler_enabled():
        return _profiled(module)
    return module


def cpu_ext_reason() -> str | None:
    """Why :func:`cpu_ext` is None; None when it loaded."""
    return _load("_C")[1]


def cuda_ext() -> ModuleType | None:
    """The CUDA kernel module ``affectrt._C_cuda``, or None (see :func:`cuda_ext_reason`)."""
    return _load("_C_cuda")[0]


def cuda_ext_reason() -> str | None:
    """Why :func:`cuda_ext` is None; None when it loaded."""
    return _load("_C_cuda")[1]

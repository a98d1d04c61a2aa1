"""Declared backends per fused op and the one rule that picks among them (DESIGN §3).

Each op registers an ordered list of :class:`Backend`: what devices and dtypes it takes, whether it has
a backward, whether it is available at all (``available() -> reason | None``) and what else about the
inputs it cannot handle (``supports(inputs) -> [reasons]``). :func:`select` then does:

- ``backend="auto"``: the first backend, in declared order, with no reasons against it. Ops declare
  the CUDA extension first (fast inference), then Triton (has a backward), then the C++ CPU kernel,
  then the eager reference; since forward-only backends do not fit when a gradient is required, "auto"
  falls through to the first differentiable one.
- ``backend="<name>"``: that backend, or a :class:`BackendError` listing every reason it does not fit
  (including "forward only" when a gradient is required).

One vocabulary for every op: ``cuda`` (``affectrt._C_cuda``), ``triton`` (``affectrt.kernels``), ``cpu``
(``affectrt._C``), ``eager`` (the plain PyTorch reference). One rule for Triton on CPU: under
``TRITON_INTERPRET=1`` the ``triton`` backend also declares CPU tensors (the interpreter, how the tests
run the kernels), but "auto" never picks it there: on CPU "auto" keeps to the C++ kernel and the
reference. The availability checks every op shares live here: :func:`triton_reason`,
:func:`cuda_ext_available`, :func:`cpu_ext_available`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pkgutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Inputs = Mapping[str, Tensor]


class BackendError(ValueError):
    """An explicitly requested backend cannot run these inputs, or no backend can."""


def _no_extra_limits(inputs: Inputs) -> list[str]:
    return []


@dataclass(frozen=True)
class Backend:
    """One implementation of an op. ``run(**inputs)`` computes it."""

    name: str
    devices: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    has_backward: bool
    available: Callable[[], str | None]
    run: Callable[..., Any]
    supports: Callable[[Inputs], list[str]] = field(default=_no_extra_limits)
    about: str = ""

    def not_supported_reasons(self, inputs: Inputs, needs_grad: bool) -> list[str]:
        """Every reason, in words, why this backend cannot run ``inputs``; empty when it can."""
        reasons = []
        unavailable = self.available()
        if unavailable:
            reasons.append(f"unavailable: {unavailable}")
        first_name, first = next(iter(inputs.items()))
        if first.device.type not in self.devices:
            reasons.append(
                f"{first_name} is on {first.device.type}; this backend runs on {'/'.join(self.devices)}"
            )
        if first.dtype not in self.dtypes:
            names = ", ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(
                f"{first_name} has dtype {str(first.dtype).removeprefix('torch.')}; supported: {names}"
            )
        if needs_grad and not self.has_backward:
            reasons.append(
                "forward only, but a gradient is required (use backend='auto' or 'eager', "
                "or run under torch.no_grad())"
            )
        if not unavailable and not reasons:
            reasons += self.supports(inputs)
        return reasons


_REGISTRY: dict[str, list[Backend]] = {}


def register(op: str, backends: list[Backend]) -> None:
    """Declare ``op``'s backends, in "auto" priority order (re-registering replaces them)."""
    names = [b.name for b in backends]
    if len(set(names)) != len(names) or "auto" in names:
        raise ValueError(f"register({op!r}): backend names must be unique and not 'auto', got {names}")
    _REGISTRY[op] = list(backends)


def backends(op: str) -> list[Backend]:
    """The declared backends of ``op``, in priority order."""
    if op not in _REGISTRY:
        raise KeyError(f"no fused op named {op!r}; registered: {sorted(_REGISTRY)}")
    return list(_REGISTRY[op])


def needs_grad(*tensors: Tensor) -> bool:
    """True when autograd would record a graph through any of ``tensors``."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


# ------------------------------------------------------------------------------- shared availability checks


def triton_interpreted() -> bool:
    """True when ``TRITON_INTERPRET=1``: Triton kernels then run on CPU tensors through its interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_devices() -> tuple[str, ...]:
    """Devices a Triton backend declares: CUDA, plus CPU under the interpreter (read at import)."""
    return ("cuda", "cpu") if triton_interpreted() else ("cuda",)


@functools.cache
def triton_reason() -> str | None:
    """Why Triton kernels cannot run here; None when they can. Imports triton on first call only."""
    if importlib.util.find_spec("triton") is None:
        return "the triton package is not installed (pip install triton)"
    if triton_interpreted():
        return None
    try:
        import triton  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure is a reason, not a crash
        return f"import triton failed: {type(e).__name__}: {e}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device (set TRITON_INTERPRET=1 to run the kernels on CPU, slowly)"
    return None


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


@functools.cache
def _cuda_ext_reason() -> str | None:
    from affectrt.ops._ext import cuda_ext, cuda_ext_reason

    reason = cuda_ext_reason()
    if reason is not None:
        return reason
    ext = cuda_ext()
    # Ask the extension, not torch: it links its own CUDA runtime, which may need a newer driver than
    # torch's (a driver too old for it makes every launch fail with "driver version is insufficient").
    runtime, driver = ext.runtime_version(), ext.driver_version()
    if driver == 0:
        return "affectrt._C_cuda: no CUDA driver is installed"
    if runtime and driver < runtime:
        return (
            f"affectrt._C_cuda links CUDA runtime {_version(runtime)}, which needs a driver for CUDA >= "
            f"{_version(runtime)}; this driver supports CUDA {_version(driver)} (update the driver, or "
            "rebuild against an older nvidia-cuda-runtime)"
        )
    count, error = ext.device_count()
    if count < 0:
        return f"affectrt._C_cuda cannot use the GPU: {error}"
    if count == 0:
        return "affectrt._C_cuda sees no CUDA device"
    return None


def cuda_ext_available(function: str) -> Callable[[], str | None]:
    """An ``available()`` for a backend of ``affectrt._C_cuda.<function>``: the extension loads, its
    runtime's driver requirement is met, it counts at least one device, torch sees CUDA too."""

    def available() -> str | None:
        from affectrt.ops._ext import cuda_ext

        reason = _cuda_ext_reason()
        if reason is None and not hasattr(cuda_ext(), function):
            return f"affectrt._C_cuda has no {function}: rebuild it (pip install -e .)"
        if reason is None and not torch.cuda.is_available():
            return "affectrt._C_cuda sees a GPU, but torch does not (a CPU build of torch?)"
        return reason

    return available


def cpu_ext_available(function: str) -> Callable[[], str | None]:
    """An ``available()`` for a backend of ``affectrt._C.<function>``."""

    def available() -> str | None:
        from affectrt.ops._ext import cpu_ext, cpu_ext_reason

        reason = cpu_ext_reason()
        if reason is None and not hasattr(cpu_ext(), function):
            return f"affectrt._C has no {function}: rebuild it (pip install -e .)"
        return reason

    return available


def always() -> str | None:
    """``available()`` of a backend that always is (the eager reference)."""
    return None


# ----------------------------------------------------------------------------------------------- selection


def select(op: str, inputs: Inputs, backend: str = "auto", needs_grad: bool = False) -> Backend:
    """The backend that runs ``op`` on ``inputs`` (see the module docstring for the rule)."""
    declared = backends(op)
    if backend == "auto":
        first = next(iter(inputs.values()))
        rejected = []
        for b in declared:
            if b.name == "triton" and first.device.type == "cpu":
                rejected.append("  triton: the interpreter runs on CPU only when asked for by name")
                continue
            reasons = b.not_supported_reasons(inputs, needs_grad)
            if not reasons:
                return b
            rejected.append(f"  {b.name}: " + "; ".join(reasons))
        raise BackendError(f"{op}: no backend can run these inputs:\n" + "\n".join(rejected))
    for b in declared:
        if b.name == backend:
            reasons = b.not_supported_reasons(inputs, needs_grad)
            if reasons:
                raise BackendError(
                    f"{op}: backend {backend!r} cannot run these inputs: "
                    + "; ".join(reasons)
                    + f". Other backends: {[x.name for x in declared if x is not b]} or 'auto'."
                )
            return b
    raise BackendError(
        f"{op}: unknown backend {backend!r}; choose 'auto' or one of {[b.name for b in declared]}"
    )


def _out_of_resources(e: BaseException) -> bool:
    # triton.runtime.errors.OutOfResources, matched by name: checking must not import triton
    return type(e).__name__ == "OutOfResources"


def dispatch(op: str, inputs: Inputs, backend: str, needs_grad: bool, call: Callable[[Backend], Any]) -> Any:
    """``call(select(...))``; with ``backend="auto"``, a kernel that still runs out of GPU resources at its
    first launch (a GPU the resource model does not know) makes way for the next backend that fits, with a
    warning that names the reason. An explicit backend raises as it is."""
    chosen = select(op, inputs, backend, needs_grad=needs_grad)
    if backend != "auto":
        return call(chosen)
    try:
        return call(chosen)
    except Exception as e:
        if not _out_of_resources(e):
            raise
        declared = backends(op)
        for b in declared[declared.index(chosen) + 1 :]:
            if b.name == "triton" and next(iter(inputs.values())).device.type == "cpu":
                continue
            if not b.not_supported_reasons(inputs, needs_grad):
                warnings.warn(
                    f"{op}: backend {chosen.name!r} ran out of GPU resources ({e}); using {b.name!r}",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return call(b)
        raise


def describe_all() -> list[dict[str, Any]]:
    """Every registered op's backends and whether each is available (for ``affectrt info``).

    Imports every public module of ``affectrt.ops`` first so that all ops are registered; a module that
    fails to import is reported as a row with ``op`` = the module name and ``available`` False.
    """
    import affectrt.ops as ops_pkg

    rows: list[dict[str, Any]] = []
    for mod in pkgutil.iter_modules(ops_pkg.__path__):
        if mod.name.startswith("_"):
            continue
        try:
            importlib.import_module(f"affectrt.ops.{mod.name}")
        except Exception as e:  # noqa: BLE001 - info must report, not crash
            rows.append(
                {
                    "op": mod.name,
                    "backend": None,
                    "available": False,
                    "reason": f"import of affectrt.ops.{mod.name} failed: {type(e).__name__}: {e}",
                }
            )
    for op, declared in sorted(_REGISTRY.items()):
        for b in declared:
            reason = b.available()
            rows.append(
                {
                    "op": op,
                    "backend": b.name,
                    "devices": list(b.devices),
                    "dtypes": [str(d).removeprefix("torch.") for d in b.dtypes],
                    "has_backward": b.has_backward,
                    "available": reason is None,
                    "reason": reason,
                    "about": b.about,
                }
            )
    return rows

"""What every Triton launcher shares: the target's limits, the resource model's verdict and one launch call.

Launchers (``kernels/<op>.py``) never call ``kernel[grid](...)`` themselves; they build a
:class:`Launch` and hand it to :func:`launch`. That gives two things:

- :func:`recording` swaps the launch for a recorder, so :mod:`affectrt.kernels.aot` runs the very same
  launchers on ``meta`` tensors (no memory, no GPU) and compiles exactly the configurations they chose for
  a named target (sm_80, sm_90) ahead of time.
- :func:`target_limits` answers "how much shared memory may one program use" for the device the launcher
  runs on, or for the target an AOT compile names (:func:`for_target`).

A configuration is a dict of the kernel's ``constexpr`` block sizes plus ``num_warps`` and ``num_stages``.
Each kernel module estimates a configuration's shared memory and registers (:class:`Estimate`); the
config choosers take the first candidate that fits and raise :class:`DoesNotFit` when none does, so an
op's ``supports()`` can turn that into a reason and ``backend="auto"`` moves on.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Limits:
    """Per-program limits of one GPU architecture (CUDA compute capability ``cc``)."""

    name: str
    cc: int
    shared_bytes: int  # opt-in shared memory per block
    max_regs_per_thread: int = 255
    regs_per_sm: int = 65536


# The two architectures the release targets (A100, H100/H200); the numbers are the opt-in maxima.
SM80 = Limits("sm_80", 80, 166_912)
SM90 = Limits("sm_90", 90, 232_448)
ARCHS = {"sm_80": SM80, "sm_90": SM90}

_TARGET: contextvars.ContextVar[Limits | None] = contextvars.ContextVar(
    "affectrt_triton_target", default=None
)
_RECORDER: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "affectrt_triton_recorder", default=None
)


class DoesNotFit(ValueError):
    """No configuration of a kernel fits the target's limits for these shapes."""


@dataclass(frozen=True)
class Estimate:
    """A configuration's resource estimate: shared memory per program and registers per thread."""

    shared_bytes: int
    regs_per_thread: int

    def fits(self, limits: Limits, margin: float = 0.9) -> bool:
        """Within ``margin`` of the limits: the estimate is a model, ptxas has the last word (the AOT test)."""
        return (
            self.shared_bytes <= margin * limits.shared_bytes
            and self.regs_per_thread <= margin * limits.max_regs_per_thread
        )


@dataclass
class Launch:
    """One kernel launch: ``kernel[grid](*args, **config)``."""

    kernel: Any
    grid: tuple[int, ...]
    args: tuple
    config: dict[str, Any] = field(default_factory=dict)
    label: str = ""


def target_limits(device: torch.device | None = None) -> Limits:
    """The limits configurations are chosen for: the AOT target when one is set, else ``device``'s.

    CPU tensors (the Triton interpreter) get sm_90's, so the same configurations are chosen and tested.
    """
    target = _TARGET.get()
    if target is not None:
        return target
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        cc = props.major * 10 + props.minor
        shared = (
            getattr(props, "shared_memory_per_block_optin", 0) or (SM90 if cc >= 90 else SM80).shared_bytes
        )
        return Limits(f"sm_{cc}", cc, int(shared))
    return SM90


@contextlib.contextmanager
def for_target(limits: Limits) -> Iterator[None]:
    """Within this context launchers choose configurations for ``limits`` whatever the device."""
    token = _TARGET.set(limits)
    try:
        yield
    finally:
        _TARGET.reset(token)


@contextlib.contextmanager
def recording() -> Iterator[list[Launch]]:
    """Within this context :func:`launch` appends to the yielded list instead of running the kernel."""
    launches: list[Launch] = []
    token = _RECORDER.set(launches)
    try:
        yield launches
    finally:
        _RECORDER.reset(token)


def launch(item: Launch) -> None:
    """Run ``item`` (or record it inside :func:`recording`)."""
    rec = _RECORDER.get()
    if rec is not None:
        rec.append(item)
        return
    item.kernel[item.grid](*item.args, **item.config)


def is_interpreted() -> bool:
    """True under ``TRITON_INTERPRET=1``, where kernels run on CPU tensors (the tests' rule)."""
    import os

    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of ``device``; 1 for CPU and meta tensors (interpreter, AOT)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132 if _TARGET.get() is not None else 1

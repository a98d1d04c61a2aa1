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
"""

from __future__ import annotations

import importlib
import pkgutil
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


def select(op: str, inputs: Inputs, backend: str = "auto", needs_grad: bool = False) -> Backend:
    """The backend that runs ``op`` on ``inputs`` (see the module docstring for the rule)."""
    declared = backends(op)
    if backend == "auto":
        rejected = []
        for b in declared:
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

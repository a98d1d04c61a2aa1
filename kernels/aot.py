"""Ahead-of-time compile of every Triton kernel at the released shapes, for sm_80 and sm_90, without a GPU.

The project's own launchers run on ``meta`` tensors inside :func:`affectrt.kernels._launch.recording` and
:func:`~affectrt.kernels._launch.for_target`, so what is compiled is exactly the configuration a GPU of that
architecture would get. Each recorded launch is bound with Triton's own argument binder (the same
specialisation a launch does: pointer dtypes, 16-byte alignment, ints equal to 1) and compiled with
``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", cc, 32))``; ptxas'
report gives registers and spills, the compiled metadata the shared memory.

Run it as ``python -m affectrt.kernels.aot [--json F] [--arch sm_80,sm_90]`` (it must not run under
``TRITON_INTERPRET=1``: the interpreter replaces the kernels that it compiles).
The cases are the configurations that decide the limits: per kernel × dtype × arch the largest shapes of
the release (Q-Former width E = 1024, Nq = 32 × 12 heads, Nk = 4096, B = 64; fusion widths 768/1024 → 3584).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

from ._launch import ARCHS, Launch, Limits, for_target, recording

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Report:
    """One compiled kernel: its resources against the architecture's limits."""

    kernel: str
    dtype: str
    arch: str
    regs: int
    spills: int  # bytes of spill stores reported by ptxas
    shared: int  # bytes of shared memory per program
    shared_limit: int
    num_warps: int
    num_stages: int
    config: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.shared <= self.shared_limit and self.spills == 0 and self.regs <= 255


def _meta(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, device="meta", dtype=dtype)


def _cross_attn_launches(dtype: torch.dtype) -> list[Launch]:
    from .cross_attn import cross_attn_backward, cross_attn_forward

    B, R, Nk, E = 64, 12 * 32, 4096, 1024  # the widest Q-Former input, 32 queries × 12 heads
    qt, x = _meta(B, R, E, dtype=dtype), _meta(B, Nk, E, dtype=dtype)
    keep = _meta(B, Nk, dtype=torch.uint8)
    f32 = torch.float32
    with recording() as rec:
        cross_attn_forward(qt, x, keep)
        cross_attn_backward(
            qt,
            x,
            keep,
            _meta(B, R, dtype=f32),
            _meta(B, R, dtype=f32),
            _meta(B, R, E, dtype=f32),
            _meta(B, R, dtype=f32),
        )
    return rec


def _fusion_head_launches(dtype: torch.dtype) -> list[Launch]:
    from ._weights import FusedWeights
    from .fusion_head import fusion_head_forward

    B, T, dv, da, dm, D = 64, 64, 1024, 1024, 1024, 3584
    w = FusedWeights.empty_like_shapes(dv, da, dm, D, dtype=dtype, device="meta")
    out = _meta(B, 3, D, dtype=dtype)
    rows = _meta(B, 3, dtype=torch.int64)
    with recording() as rec:
        fusion_head_forward(_meta(B, T, dv, dtype=dtype), _meta(B, T, da, dtype=dtype), w, out, rows)
    return rec


def _attn_pool_launches(dtype: torch.dtype) -> list[Launch]:
    from .attn_pool import attn_pool_backward, attn_pool_forward

    B, T, D = 64, 64, 1024
    z, w, b = _meta(B, T, D, dtype=dtype), _meta(D, dtype=dtype), _meta(1, dtype=dtype)
    with recording() as rec:
        attn_pool_forward(z, w, b)
        attn_pool_backward(_meta(B, D, dtype=dtype), z, w, b)
    return rec


CASES: dict[str, Callable[[torch.dtype], list[Launch]]] = {
    "cross_attn": _cross_attn_launches,
    "fusion_head": _fusion_head_launches,
    "attn_pool": _attn_pool_launches,
}


@contextlib.contextmanager
def _capture_stdout() -> Iterator[io.StringIO]:
    # Triton prints ptxas' log to stdout when dump_ptxas_log is on; collect it for the register report.
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield buf


def compile_launch(item: Launch, limits: Limits) -> tuple[object, str]:
    """Compile ``item`` for ``limits``' architecture; (compiled kernel, ptxas log)."""
    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    try:  # Triton's own argument binder (private, Triton 3.3+): the exact specialisation of a launch
        from triton.runtime.jit import create_function_from_signature
    except ImportError as e:
        raise RuntimeError(
            f"triton {triton.__version__} has no triton.runtime.jit.create_function_from_signature: "
            "affectrt.kernels.aot follows Triton 3.9's launch path; update it for this version"
        ) from e

    kernel = item.kernel
    if not hasattr(kernel, "params"):
        raise RuntimeError("kernels are interpreted (TRITON_INTERPRET=1): run the AOT compile without it")
    target = GPUTarget("cuda", limits.cc, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*item.args, **item.config)
    options, signature, constexprs, attrs = kernel._pack_args(
        backend, item.config, bound, specialization, options
    )
    knobs.nvidia.dump_ptxas_log = True
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its report
    with _capture_stdout() as log:
        compiled = triton.compile(
            ASTSource(kernel, signature, constexprs, attrs), target=target, options=options.__dict__
        )
    return compiled, log.getvalue()


def _ptxas_numbers(log: str) -> tuple[int, int]:
    regs = re.findall(r"Used (\d+) registers", log)
    spills = re.findall(r"(\d+) bytes spill stores", log)
    if not regs:
        raise RuntimeError(f"no ptxas report in the compile log (was the kernel cached?):\n{log[-2000:]}")
    return int(regs[-1]), int(spills[-1]) if spills else 0


def run(
    kernels: list[str] | None = None, archs: list[str] | None = None, dtypes: list[str] | None = None
) -> list[Report]:
    """Compile every (deciding) launch of ``kernels`` × ``dtypes`` × ``archs``; one :class:`Report` each."""
    reports = []
    for arch in archs or list(ARCHS):
        limits = ARCHS[arch]
        for name in kernels or list(CASES):
            for dname in dtypes or list(DTYPES):
                with for_target(limits):
                    launches = CASES[name](DTYPES[dname])
                seen = set()
                for item in launches:
                    if item.label in seen:
                        continue
                    seen.add(item.label)
                    t0 = time.perf_counter()
                    compiled, log = compile_launch(item, limits)
                    regs, spills = _ptxas_numbers(log)
                    cfg = {k: v for k, v in item.config.items() if k.startswith("BLOCK")}
                    reports.append(
                        Report(
                            item.label, dname, arch, regs, spills, int(compiled.metadata.shared),
                            limits.shared_bytes, item.config.get("num_warps", 4), item.config.get("num_stages", 3),
                            " ".join(f"{k.removeprefix('BLOCK_')}={v}" for k, v in cfg.items()),
                            time.perf_counter() - t0,
                        )
                    )  # fmt: skip
    return reports


def markdown(reports: list[Report]) -> str:
    """The table kernel × dtype × arch: regs, spills, shared (for the README)."""
    lines = [
        "| kernel | dtype | arch | regs | spills (B) | shared (B) | limit (B) | warps | stages | blocks |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r.kernel} | {r.dtype} | {r.arch} | {r.regs} | {r.spills} | {r.shared:,} | {r.shared_limit:,} "
            f"| {r.num_warps} | {r.num_stages} | {r.config} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default="", help="comma-separated: " + ",".join(CASES))
    ap.add_argument("--arch", default="", help="comma-separated: " + ",".join(ARCHS))
    ap.add_argument("--dtypes", default="", help="comma-separated: " + ",".join(DTYPES))
    ap.add_argument("--json", help="write the reports here")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("unset TRITON_INTERPRET: the AOT compile needs the real kernels", file=sys.stderr)
        return 2
    split = lambda s: [p for p in s.split(",") if p] or None  # noqa: E731
    reports = run(split(args.kernels), split(args.arch), split(args.dtypes))
    print(markdown(reports))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) | {"ok": r.ok} for r in reports], f, indent=1)
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())

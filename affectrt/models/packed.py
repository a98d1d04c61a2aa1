"""Inference layout of the LLM's projections: the linears that read one input share one weight matrix.

A decode step multiplies a few rows (one per clip in the batch) by every projection, and unmerged LoRA triples
the calls (base, A, B). So the linears i = 1..n of one group (q/k/v; o; gate/up; down; lm_head) run as two GEMMs:

    [z | a] = x @ Wᵀ + b        W  = [W_1; …; W_n; A_1; …; A_n]     [ΣN_i + Σr_i, in]
    y       = z + s · (a @ Bᵀ)  B  = blockdiag(B_1, …, B_n)           [ΣN_i, Σr_i]
    y_i     = y[..., N_1 + … + N_{i-1} : … + N_i]

which is the unmerged forward ``base(x) + s·B(A(x))`` (:class:`~affectrt.models.lora.LoRALinear`) term for
term: the same products, the same order of multiply and add (A sits in W only when it has the base weight's
dtype; otherwise a second GEMM computes ``a = x.float() @ Aᵀ``, as peft's float32 adapters do). Linears
without an adapter, or merged ones, have zero columns in B.

The layout of the stacked matrices follows the GEMM that is fastest for them on a few rows (``python
benchmarks/decode.py --dtype …`` shows the effect). float32 on the CPU: a matrix of at least
:data:`ROWS_KERNEL_MIN_BYTES` keeps nn.Linear's [out, in] for :func:`affectrt.ops.rows_linear.rows_linear`,
which streams weights that live in memory once per step (4 to 64 rows; MKL below and above; bfloat16 and
float16 stacks of that size for one row, where torch's 16-bit linear reads them at 12.5-16 GB/s against the
kernel's 18.5 on a 2-core Xeon, and at more rows the AMX path is faster than the kernel); a smaller one,
which the caches hold and where MKL's call is cheaper, is stored transposed, [in, out], as MKL multiplies a
few rows by that layout faster than by [out, in] (2.0 against 3.0 ms for [16, 1536] × [1536, 4096] on a
2-core Xeon). bfloat16 and float16, whose CPU GEMMs run the other way round (0.9 against 1.2 ms), and every
CUDA dtype keep nn.Linear's layout.

The modules keep their parameters, and each becomes a view into the stacked tensors: packing costs no memory,
and in-place changes (``merge_lora``, loading adapters, an optimizer step) reach both. A change that replaces a
tensor (``.to()``, ``p.data = …``, ``load_state_dict(assign=True)``) breaks the aliasing, and so does a change
of a module's ``merged`` flag: the group then runs its modules again (checked on every call, by comparing
pointers; a compiled graph skips the check). The packed form runs only without autograd (``generate``, the
pipeline), so training computes through the modules and its gradients reach the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.models.lora import LoRALinear
from affectrt.ops import rows_linear as rows_linear_ops


def _base(m: nn.Module) -> nn.Linear:
    return m.base_layer if isinstance(m, LoRALinear) else m


def _repoint(param: nn.Parameter, view: Tensor) -> None:
    param.data = view


# float32 CPU matrices from this size on are streamed by rows_linear (module docstring): on the `medium`
# preset's decode step (batch 16, 2-core Xeon) its 49 projections took 96.5 against 129.7 ms with MKL (benchmarks/cpu_parts.py); on
# `small`'s, which the caches hold (all below 2 MB), MKL's 1.1 against 1.3 ms. 16-bit stacks take the same
# threshold (not measured separately below it).
ROWS_KERNEL_MIN_BYTES = 4 << 20
# The attribute of a packed LLM under which affectrt.models.fused_decode keeps its plan of the packs.
DERIVED_ATTR = "_fused_plan"
# Rows per call the kernel takes, by weight dtype (float32: MKL for one to three rows and for prefill; 16-bit:
# one row, `python benchmarks/cpu_parts.py --only rows_linear --dtype bfloat16 --rows 1`, 1.17x bf16, 1.48x
# fp16 there; with `--rows 16` torch's bf16 path read 13.8 GB/s against the kernel's 7.3).
ROWS_KERNEL_M: dict[torch.dtype, tuple[int, int]] = {
    torch.float32: (4, 64),
    torch.bfloat16: (1, 1),
    torch.float16: (1, 1),
}


def rows_kernel(dtype: torch.dtype, device: torch.device, nbytes: int) -> bool:
    """Whether a stacked matrix of ``nbytes`` runs its decode GEMMs in the rows_linear kernel."""
    return (
        device.type == "cpu"
        and dtype in ROWS_KERNEL_M
        and nbytes >= ROWS_KERNEL_MIN_BYTES
        and rows_linear_ops.cpu_kernel_available()
    )


def columns_layout(dtype: torch.dtype, device: torch.device, nbytes: int = 0) -> bool:
    """Whether a stack of ``dtype`` weights on ``device`` is stored [in, out] (module docstring)."""
    return device.type == "cpu" and dtype == torch.float32 and not rows_kernel(dtype, device, nbytes)


class _Stack:
    """Weights [n, in] stacked along their outputs into one matrix: rows [out, in] or columns [in, out]."""

    def __init__(self, n_out: int, n_in: int, dtype: torch.dtype, device: torch.device, zeros: bool = False):
        nbytes = n_out * n_in * torch.finfo(dtype).bits // 8
        self.rows_kernel = rows_kernel(dtype, device, nbytes)
        self.rows_m = ROWS_KERNEL_M.get(dtype, (0, -1))
        self.columns = columns_layout(dtype, device, nbytes)
        shape = (n_in, n_out) if self.columns else (n_out, n_in)
        self.t = (torch.zeros if zeros else torch.empty)(shape, dtype=dtype, device=device)

    def put(self, w: Tensor, out: int, inp: int = 0) -> Tensor:
        """Copy w [n, k] to outputs out.. and inputs inp..; returns that block as a view shaped like w."""
        n, k = w.shape
        if self.columns:
            self.t[inp : inp + k, out : out + n] = w.t()
            return self.t[inp : inp + k, out : out + n].t()
        self.t[out : out + n, inp : inp + k] = w
        return self.t[out : out + n, inp : inp + k]

    def __call__(self, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """x [M, in] -> x Wᵀ + bias [M, out]."""
        lo, hi = self.rows_m
        if self.rows_kernel and lo <= x.shape[0] <= hi and not torch.compiler.is_compiling():
            return rows_linear_ops.rows_linear(x.contiguous(), self.t, bias, backend="cpu")
        if not self.columns:
            return F.linear(x, self.t, bias)
        return x @ self.t if bias is None else torch.addmm(bias, x, self.t)


class PackedLinears:
    """The linears ``mods`` (same input size, dtype and device) as one stacked GEMM (module docstring).

    ``pack(x)`` [..., in] -> [..., ΣN_i], the outputs side by side in the order of ``mods``; ``sizes`` = N_i.
    Call it only when :meth:`usable` says so; else run the modules.
    """

    def __init__(self, mods: Sequence[nn.Module]):
        mods = list(mods)
        bases = [_base(m) for m in mods]
        w0 = bases[0].weight
        for b in bases:
            if not isinstance(b, nn.Linear):
                raise TypeError(f"PackedLinears: {type(b).__name__} is not an nn.Linear")
            if (b.in_features, b.weight.dtype, b.weight.device) != (
                bases[0].in_features,
                w0.dtype,
                w0.device,
            ):
                raise ValueError("PackedLinears: the linears differ in input size, dtype or device")
        self.lora = [m for m in mods if isinstance(m, LoRALinear)]
        self._merged = tuple(m.merged for m in self.lora)
        self.sizes = [b.out_features for b in bases]
        n_out, n_in = sum(self.sizes), bases[0].in_features
        # (adapter, its columns in z) for every adapter still added at run time
        adapters = [
            (m, col)
            for m, col in zip(mods, _offsets(self.sizes))
            if isinstance(m, LoRALinear) and not m.merged
        ]
        rank = sum(m.r for m, _ in adapters)
        a_dtype = adapters[0][0].lora_A.dtype if adapters else w0.dtype
        self.split = n_out if adapters and a_dtype == w0.dtype else None  # where a begins in [z | a]
        self._dropouts = [m.dropout for m, _ in adapters if isinstance(m.dropout, nn.Dropout)]

        # Normal tensors even under inference_mode: the parameters become views of them and an optimizer may
        # later update those in place.
        with torch.inference_mode(False), torch.no_grad():
            dev = w0.device
            cols = n_out + (rank if self.split else 0)
            self.w = _Stack(cols, n_in, w0.dtype, dev)
            has_bias = any(b.bias is not None for b in bases)
            self.bias = torch.zeros(cols, dtype=w0.dtype, device=dev) if has_bias else None
            self.a = None if self.split or not adapters else _Stack(rank, n_in, a_dtype, dev)
            self.b = _Stack(n_out, rank, a_dtype, dev, zeros=True) if adapters else None
            views: list[tuple[nn.Parameter, Tensor]] = []
            for b, col, n in zip(bases, _offsets(self.sizes), self.sizes):
                views.append((b.weight, self.w.put(b.weight, col)))
                if b.bias is not None:
                    self.bias[col : col + n] = b.bias
                    views.append((b.bias, self.bias[col : col + n]))
            a_stack, a_row = (self.w, n_out) if self.split else (self.a, 0)
            first_rows = _offsets([m.r for m, _ in adapters])
            # B is block-diagonal: adapter i's rank rows r0.. feed only its own output columns col..
            self.blocks = [(r0, m.r, col, m.out_features) for (m, col), r0 in zip(adapters, first_rows)]
            for (m, col), r0 in zip(adapters, first_rows):
                views.append((m.lora_A, a_stack.put(m.lora_A, a_row + r0)))
                views.append((m.lora_B, self.b.put(m.lora_B, col, r0)))
            for p, v in views:
                _repoint(p, v)
        scales = {m.scale for m, _ in adapters}
        if len(scales) <= 1:
            self.scale: float | Tensor = scales.pop() if scales else 1.0
        else:  # per-column scale: the same one rounding per element as a scalar
            self.scale = torch.zeros(n_out, dtype=a_dtype, device=w0.device)
            for (m, col), n in zip(adapters, (m.out_features for m, _ in adapters)):
                self.scale[col : col + n] = m.scale
        self._params = tuple(p for p, _ in views)
        self._ptrs = tuple(p.data_ptr() for p in self._params)

    def intact(self) -> bool:
        """Every parameter still a view into the packed tensors, and no adapter merged or unmerged since."""
        return (
            tuple(p.data_ptr() for p in self._params) == self._ptrs
            and tuple(m.merged for m in self.lora) == self._merged
        )

    def usable(self) -> bool:
        """Whether ``self(x)`` computes what the modules would: no autograd, no active dropout, intact."""
        if torch.is_grad_enabled() or any(d.training for d in self._dropouts):
            return False
        return torch.compiler.is_compiling() or self.intact()

    def __call__(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        y = self.w(x2, self.bias)
        if self.b is None:
            return y.view(*lead, -1)
        if self.split is not None:
            y, a = y[:, : self.split], y[:, self.split :]
        else:
            a = self.a(x2.to(self.a.t.dtype))
        dtype = y.dtype
        # base (its dtype) + adapter (float32) promotes to float32, as LoRALinear's forward; one cast back.
        y = (y + self.b(a) * self.scale).to(dtype)
        return y.view(*lead, -1)


def _offsets(sizes: Sequence[int]) -> list[int]:
    """Where each of consecutive blocks of ``sizes`` starts."""
    out, at = [], 0
    for n in sizes:
        out.append(at)
        at += n
    return out


def project(pack: PackedLinears | None, mods: Sequence[nn.Module], x: Tensor) -> Sequence[Tensor]:
    """The outputs of ``mods`` on ``x``: through ``pack`` when it is usable, else module by module."""
    if pack is not None and pack.usable():
        return pack(x).split(pack.sizes, -1)
    return [m(x) for m in mods]


def pack_projections(llm: nn.Module) -> int:
    """Pack each decoder layer's q/k/v, o, gate/up and down of ``llm`` (a Qwen2), and an untied ``lm_head``
    (tied, it is the embedding table, which lookups read by rows); returns the groups (re)packed.

    Idempotent: intact groups are kept. Pack after choosing the dtype, device and merged state (a later ``.to()``
    or merge only makes the groups fall back to their modules until packed again).
    """
    n = 0
    for layer in llm.layers:
        for owner, names in ((layer.self_attn, ("qkv", "o")), (layer.mlp, ("gate_up", "down"))):
            for name in names:
                pack = owner.packs.get(name)
                if pack is None or not pack.intact():
                    owner.packs[name] = PackedLinears(owner.group(name))
                    n += 1
    head = llm.packs.get("lm_head")
    if llm.lm_head is not None and (head is None or not head.intact()):
        llm.packs["lm_head"] = PackedLinears([llm.lm_head])
        n += 1
    if n:
        _forget_derived(llm)
    return n


def _forget_derived(llm: nn.Module) -> None:
    """Drop what other modules keep on ``llm`` about its packs (fused_decode's plan holds them): replaced
    stacks are then freed at once, not only at the next decode step (for a 7B model, a second copy of the
    weights in between)."""
    llm.__dict__.pop(DERIVED_ATTR, None)


def unpack_projections(llm: nn.Module) -> None:
    """Undo :func:`pack_projections`: every parameter gets its own contiguous storage again."""
    owners = [llm] + [o for layer in llm.layers for o in (layer.self_attn, layer.mlp)]
    with torch.inference_mode(False), torch.no_grad():
        for owner in owners:
            for pack in owner.packs.values():
                for p in pack._params:
                    _repoint(p, p.data.clone(memory_format=torch.contiguous_format))
            owner.packs.clear()
    _forget_derived(llm)

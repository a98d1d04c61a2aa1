"""Inference layout of the LLM's projections: the linears that read one input share one transposed weight.

A decode step multiplies a few rows (one per clip in the batch) by every projection. At so few rows a GEMM's
cost is mostly fixed, and MKL runs ``x @ Wᵀ`` with W stored [out, in] (``nn.Linear``'s layout) well below
``x @ Wt`` with Wt stored [in, out]: 74 µs against 45 µs for [16, 256] × [256, 768] on a 2-core Xeon.
Unmerged LoRA triples the calls (base, A, B). So the linears i = 1..n of one group (q/k/v; o; gate/up; down)
run as two GEMMs:

    [z | a] = x @ Wt + b        Wt = [W_1ᵀ … W_nᵀ | A_1ᵀ … A_nᵀ]   [in, ΣN_i + Σr_i]
    y       = z + s · (a @ Bt)  Bt = blockdiag(B_1ᵀ … B_nᵀ)         [Σr_i, ΣN_i]
    y_i     = y[..., N_1 + … + N_{i-1} : … + N_i]

which is the unmerged forward ``base(x) + s·B(A(x))`` (:class:`~affectrt.models.lora.LoRALinear`) term for
term: the same products, the same order of multiply and add (A sits in Wt only when it has the base weight's
dtype; otherwise a second GEMM computes ``a = x.float() @ At``, as peft's float32 adapters do). Linears
without an adapter, or merged ones, have zero columns in Bt.

The modules keep their parameters, and each becomes a view into Wt, b, At or Bt: packing costs no memory, and
in-place changes (``merge_lora``, loading adapters, an optimizer step) reach both. A change that replaces a
tensor (``.to()``, ``p.data = …``, ``load_state_dict(assign=True)``) breaks the aliasing, and so does a change
of a module's ``merged`` flag: the group then runs its modules again (checked on every call, by comparing
pointers; a compiled graph skips the check). The packed form runs only without autograd (``generate``, the
pipeline), so training computes through the modules and its gradients reach the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from affectrt.models.lora import LoRALinear


def _base(m: nn.Module) -> nn.Linear:
    return m.base_layer if isinstance(m, LoRALinear) else m


def _repoint(param: nn.Parameter, view: Tensor) -> None:
    param.data = view


class PackedLinears:
    """The linears ``mods`` (same input size, dtype and device) as one transposed GEMM (module docstring).

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
        adapters = [m for m in self.lora if not m.merged]
        self.sizes = [b.out_features for b in bases]
        n_out, n_in = sum(self.sizes), bases[0].in_features
        rank = sum(m.r for m in adapters)
        a_dtype = adapters[0].lora_A.dtype if adapters else w0.dtype
        a_in_wt = bool(adapters) and a_dtype == w0.dtype
        self.split = n_out if a_in_wt else None  # where a begins in x @ Wt
        self._dropouts = [m.dropout for m in adapters if isinstance(m.dropout, nn.Dropout)]

        # Normal tensors even under inference_mode: the parameters become views of them and an optimizer may
        # later update those in place.
        with torch.inference_mode(False), torch.no_grad():
            kw = dict(dtype=w0.dtype, device=w0.device)
            wt = torch.empty(n_in, n_out + (rank if a_in_wt else 0), **kw)
            has_bias = any(b.bias is not None for b in bases)
            bias = torch.zeros(wt.shape[1], **kw) if has_bias else None
            at = None if a_in_wt or not adapters else torch.empty(n_in, rank, dtype=a_dtype, device=w0.device)
            bt = torch.zeros(rank, n_out, dtype=a_dtype, device=w0.device) if adapters else None
            views: list[tuple[nn.Parameter, Tensor]] = []
            col = 0
            for b, n in zip(bases, self.sizes):
                wt[:, col : col + n] = b.weight.t()
                views.append((b.weight, wt[:, col : col + n].t()))
                if b.bias is not None:
                    bias[col : col + n] = b.bias
                    views.append((b.bias, bias[col : col + n]))
                col += n
            a_cols = (wt, n_out) if a_in_wt else (at, 0)
            a_col, b_row, b_col = a_cols[1], 0, 0
            for m, n in zip(bases, self.sizes):
                lora = next((x for x in adapters if x.base_layer is m), None)
                if lora is not None:
                    r = lora.r
                    a_cols[0][:, a_col : a_col + r] = lora.lora_A.t()
                    views.append((lora.lora_A, a_cols[0][:, a_col : a_col + r].t()))
                    bt[b_row : b_row + r, b_col : b_col + n] = lora.lora_B.t()
                    views.append((lora.lora_B, bt[b_row : b_row + r, b_col : b_col + n].t()))
                    a_col, b_row = a_col + r, b_row + r
                b_col += n
            for p, v in views:
                _repoint(p, v)
        self.wt, self.bias, self.at, self.bt = wt, bias, at, bt
        scales = {m.scale for m in adapters}
        if len(scales) <= 1:
            self.scale: float | Tensor = scales.pop() if scales else 1.0
        else:  # per-column scale: the same one rounding per element as a scalar
            s = torch.zeros(n_out, dtype=a_dtype, device=w0.device)
            col = 0
            for m, n in zip(mods, self.sizes):
                if isinstance(m, LoRALinear) and not m.merged:
                    s[col : col + n] = m.scale
                col += n
            self.scale = s
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
        y = x2 @ self.wt if self.bias is None else torch.addmm(self.bias, x2, self.wt)
        if self.bt is None:
            return y.view(*lead, -1)
        if self.split is not None:
            y, a = y[:, : self.split], y[:, self.split :]
        else:
            a = x2.to(self.at.dtype) @ self.at
        dtype = y.dtype
        # base (its dtype) + adapter (float32) promotes to float32, as LoRALinear's forward; one cast back.
        y = (y + (a @ self.bt) * self.scale).to(dtype)
        return y.view(*lead, -1)


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
    return n


def unpack_projections(llm: nn.Module) -> None:
    """Undo :func:`pack_projections`: every parameter gets its own contiguous storage again."""
    owners = [llm] + [o for layer in llm.layers for o in (layer.self_attn, layer.mlp)]
    with torch.inference_mode(False), torch.no_grad():
        for owner in owners:
            for pack in owner.packs.values():
                for p in pack._params:
                    _repoint(p, p.data.clone(memory_format=torch.contiguous_format))
            owner.packs.clear()

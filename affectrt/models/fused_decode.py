"""Decode steps and prefills with the work between the GEMMs in C++ (csrc/decode_glue*): float32, CPU.

A step of a small LLM (the `small` preset's, whose weights the caches hold) is a few hundred tiny operators:
per layer two RMSNorms, four packed GEMMs (:mod:`affectrt.models.packed`), the unmerged LoRA's B term after
each, RoPE, the cache write, attention, SiLU·up and two residual adds, ~40 dispatches. Here each layer is the
four GEMMs (torch, on the packed stacks, as before) and three C++ calls for everything between them::

    y = n1 W_qkv + b   -> dec_attn      (LoRA term, RoPE, k/v into the cache, attention)  -> o
                                        (a prefill's attention: SDPA on q and the cache, as the modules)
    y = o W_o          -> dec_add_norm  (LoRA term, x += y, n2 = RMSNorm(x))
    y = n2 W_gu        -> dec_silu_mul  (LoRA term, h = silu(gate)·up)
    y = h W_down       -> dec_add_norm  (LoRA term, x += y, n1 = the next layer's RMSNorm(x), or the final one)

A decode step (one new token per row) runs that whole loop, every layer, in one C++ call (csrc/decode_step.h)
whose GEMMs call the BLAS ``sgemm_`` that torch.mm calls, as the stacks' own calls do: the same bits as the
loop (``test_whole_step_equals_the_per_layer_loop_bit_for_bit``), without ~30 Python-level calls a step
(`small` preset, batch 1, 2-core Xeon, scratch A/B: run_layers 0.79 -> 0.55 ms, a generated token
1.17 -> 0.92 ms). A torch build that exports no ``sgemm_`` keeps the loop.

Each term is the modules' own formula in float32 (csrc/decode_glue.h), so logits agree to float32 rounding
(``tests/models/test_fused_decode.py``: against the module path and transformers). It runs only where it
applies exactly: a step over a static cache (one new token per row, or a prefill), float32 weights, cache and
LoRA, the projections packed with LoRA's A inside the stacked GEMM and one scale per stack, plain eager
inference (no autograd, tracing, export or compilation). Anything else takes the module path. On weights that
stream from memory (the `medium` preset, a real 7B) the GEMMs' reads dominate the step and this saves its few
dispatches only.
"""

from __future__ import annotations

import ctypes
import functools
import os
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor

from affectrt.models.activations import may_overwrite
from affectrt.models.kv_cache import StaticKVCache
from affectrt.models.packed import DERIVED_ATTR, PackedLinears
from affectrt.ops._ext import cpu_ext

_GROUPS = (("self_attn", "qkv"), ("self_attn", "o"), ("mlp", "gate_up"), ("mlp", "down"))
_NO_LORA = (0, 0, 0, 0, 0.0, 0, 0)


@functools.cache
def sgemm_address() -> int:
    """The address of the BLAS ``sgemm_`` that torch's CPU library exports (the one torch.mm calls), or 0.

    The whole-step kernel (csrc/decode_step.h) runs its GEMMs through it; without it (a torch build that
    exports none) the steps take the per-layer loop.
    """
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        path = os.path.join(lib_dir, name)
        if os.path.exists(path):
            try:
                return ctypes.cast(ctypes.CDLL(path).sgemm_, ctypes.c_void_p).value or 0
            except (OSError, AttributeError):
                return 0
    return 0


def available() -> bool:
    """Whether ``affectrt._C`` has the decode-glue kernels."""
    ext = cpu_ext()
    return ext is not None and hasattr(ext, "dec_attn")


def _lora(pack: PackedLinears) -> tuple[tuple, Tensor | None] | None:
    """(B stack pointer, rank, column of a in y, B in rows layout, scale, blocks pointer, block count) of a
    pack's LoRA term, _NO_LORA without one, or None when the pack's form is not the one the kernels take;
    with the blocks tensor the pointer points into (int64 [n_blocks, 4]: each adapter's first rank row, rank,
    first column and columns), which the caller keeps alive."""
    if pack.w.t.dtype != torch.float32 or pack.a is not None:
        return None
    if pack.b is None:
        return _NO_LORA, None
    if pack.split is None or not isinstance(pack.scale, float) or pack.b.t.dtype != torch.float32:
        return None
    b = pack.b.t
    if not b.is_contiguous():
        return None
    rank = b.shape[0] if pack.b.columns else b.shape[1]
    blocks = torch.tensor(pack.blocks, dtype=torch.int64).reshape(-1, 4)
    term = (
        b.data_ptr(),
        rank,
        pack.split,
        0 if pack.b.columns else 1,
        pack.scale,
        blocks.data_ptr(),
        len(blocks),
    )
    return term, blocks


class _Plan:
    """A model's fused step: each layer's four packs and their LoRA terms, with what keeps them valid.

    Built once per model (``_build_plan``) and checked by :meth:`valid`, which reads what
    :meth:`PackedLinears.usable` reads in one flat pass: every parameter still at the address it had (a
    replaced tensor, a re-pack or a dtype change moves it), no adapter merged or unmerged, no dropout training.
    It is checked once per KV cache (``cache``: the last one checked, weakly): a cache's keys and values are
    only meaningful for the weights that wrote them, so those cannot change while its steps run.
    """

    def __init__(
        self, model, packs: list[tuple[PackedLinears, ...]], loras: list[tuple], blocks: list[Tensor]
    ):
        self.packs, self.loras = packs, loras
        self.blocks = blocks  # the LoRA terms' block tables, which they point into
        layers = list(model.layers)
        self.post_norms = [layer.post_attention_layernorm.weight for layer in layers]
        # the norm after each layer: the next layer's input norm, the final norm after the last
        self.next_norms = [layer.input_layernorm.weight for layer in layers[1:]] + [model.norm.weight]
        self.first_norm = layers[0].input_layernorm.weight
        group_params = [p for group in packs for pack in group for p in pack._params]
        self.params = group_params + self.post_norms + self.next_norms + [self.first_norm]
        self.ptrs = [p.data_ptr() for p in self.params]
        self.lora_mods = [m for group in packs for pack in group for m in pack.lora]
        self.merged = [m.merged for m in self.lora_mods]
        self.dropouts = [d for group in packs for pack in group for d in pack._dropouts]
        self.cache: weakref.ref | None = None
        # a decode step's GEMMs write one buffer [M, width]: the widest stack's outputs
        self.width = max(pack.w.t.shape[1 if pack.w.columns else 0] for group in packs for pack in group)
        self.step = self._step_plan(model.cfg)

    def _step_plan(self, cfg):
        """The whole-step kernel's plan (csrc/decode_step.h) over these packs, or None without ``sgemm_``."""
        ext, sgemm = cpu_ext(), sgemm_address()
        if not sgemm or not hasattr(ext, "dec_step"):
            return None
        layers = []
        for group, lo, post, nxt in zip(self.packs, self.loras, self.post_norms, self.next_norms):
            gemms = []
            for pack in group:
                w = pack.w
                n, k = w.t.shape[::-1] if w.columns else w.t.shape
                rows_lo, rows_hi = w.rows_m if w.rows_kernel else (1, 0)  # an empty range: sgemm
                bias = 0 if pack.bias is None else pack.bias.data_ptr()
                gemms.append((w.t.data_ptr(), bias, n, k, int(w.columns), rows_lo, rows_hi))
            layers.append((gemms, list(lo), post.data_ptr(), nxt.data_ptr()))
        return ext.DecStepPlan(
            layers,
            self.first_norm.data_ptr(),
            sgemm,
            cfg.hidden_size,
            cfg.num_heads,
            cfg.num_kv_heads,
            cfg.head_dim,
            cfg.intermediate_size,
            cfg.rms_norm_eps,
        )

    def valid(self) -> bool:
        return (
            not any(d.training for d in self.dropouts)
            and all(p.data_ptr() == q for p, q in zip(self.params, self.ptrs))
            and all(m.merged == f for m, f in zip(self.lora_mods, self.merged))
        )


def _build_plan(model) -> _Plan | None:
    """Each layer's four packs and their LoRA terms, or None when any layer cannot take the fused step."""
    if model.norm.weight.dtype != torch.float32 or model.norm.weight.device.type != "cpu" or not available():
        return None
    packs, loras, keep = [], [], []
    for layer in model.layers:
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            if norm.weight.dtype != torch.float32 or not norm.weight.is_contiguous():
                return None
        group = tuple(getattr(layer, owner).packs.get(name) for owner, name in _GROUPS)
        if any(p is None or not p.usable() for p in group):
            return None
        terms = tuple(_lora(p) for p in group)
        if any(t is None for t in terms):
            return None
        packs.append(group)
        loras.append(tuple(term for term, _ in terms))
        keep += [blocks for _, blocks in terms if blocks is not None]
    return _Plan(model, packs, loras, keep)


def _plan(model, cache: StaticKVCache | None = None) -> _Plan | None:
    """The model's plan, rebuilt when the one kept on it no longer holds; checked once per ``cache``.

    Kept because the per-pack checks of ``PackedLinears.usable`` took ~75 us a step on the `small` preset, and
    checked once per cache because even the flat check (~175 addresses) took 30-40 us of a ~1 ms step.
    """
    plan = model.__dict__.get(DERIVED_ATTR)
    if plan is not None and cache is not None and plan.cache is not None and plan.cache() is cache:
        return plan
    if plan is None or not plan.valid():
        plan = _build_plan(model)
        model.__dict__[DERIVED_ATTR] = plan  # pack_projections drops it when it re-packs
    if plan is not None and cache is not None:
        plan.cache = weakref.ref(cache)
    return plan


def supported(model) -> bool:
    """Whether ``model``'s (a packed Qwen2) decode steps run fused; ask without autograd, as generate runs.

    The pipeline then leaves its compiled decode step unused: on the `small` preset at batch 1 the fused eager
    step took 1.11 ms per token against 1.42 compiled (``python benchmarks/latency.py --repeats 5 --compile`` at
    commit 309dba0, before the pipeline made this choice).
    """
    return _plan(model) is not None


def _layers_contiguous(t: Tensor) -> bool:
    """Whether each layer's block t[i] [B, kv_heads, max_len, head_dim] is contiguous (the layer stride may be
    larger: a cache whose finished rows were dropped, :meth:`StaticKVCache.keep_rows`)."""
    return t[0].is_contiguous() and t.stride(0) >= t[0].numel()


def run_layers(
    model, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: StaticKVCache | None, pos: Tensor
) -> Tensor | None:
    """The final-norm hidden states [B, L, d] of a step over the static cache, or None when it does not qualify.

    x [B, L, d]: the new tokens' embeddings; cos, sin [B, L, head_dim]; mask [B, 1, L, K] bool (K =
    ``cache.attend_len``); pos [L]: the cache slots written (arguments as Qwen2ForCausalLM.forward_hidden).
    L = 1 is a decode step, whose attention the C++ kernel computes; a prefill's (L > 1) is SDPA's, called as
    the module path calls it. Prefills of the `small` preset, forward_hidden, this path against the module path
    (scratch A/B, 2-core Xeon): 117 tokens 6.3 against 10.7 ms, 256: 12.0 against 17.1, 512: 23.2 against 29.8.
    With the kernel's own attention (a loop over the keys per query) they had been 6.6, 14.6 and 35.2 ms.
    """
    B, L, d = x.shape
    if (
        cache is None
        or mask is None
        or pos.numel() != L
        or pos.dtype != torch.int64
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or cache.k.dtype != torch.float32
        or tuple(cache.k.shape)
        != (len(model.layers), B, model.cfg.num_kv_heads, cache.max_len, model.cfg.head_dim)
        or not _layers_contiguous(cache.k)
        or cache.v.stride() != cache.k.stride()
        or mask.dtype != torch.bool
        or tuple(mask.shape) != (B, 1, L, cache.attend_len)
        or mask.stride(-1) != 1
        or not may_overwrite()
        or type(x) is not Tensor
    ):
        return None
    plan = _plan(model, cache)
    if plan is None:
        return None
    cfg = model.cfg
    H, Hkv, D, inter, eps = (
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.intermediate_size,
        cfg.rms_norm_eps,
    )
    ext = cpu_ext()
    M = B * L
    cos, sin = cos.reshape(M, D).contiguous(), sin.reshape(M, D).contiguous()
    pos = pos.reshape(L).contiguous()
    keys, max_len = cache.attend_len, cache.max_len
    mask_ptr, mask_sb, mask_sl = mask.data_ptr(), mask.stride(0), mask.stride(2)
    k_ptr, v_ptr, layer_bytes = cache.k.data_ptr(), cache.v.data_ptr(), cache.k.stride(0) * 4
    # One allocation for the step's activations, each reused by every layer (each is consumed before the
    # next layer rewrites it): the residual stream x2, then attn [M, H·D], n2 [M, d], h [M, inter], n1 [M, d]
    # and, for the whole-step kernel, its GEMMs' output y [M, width].
    whole = L == 1 and plan.step is not None
    sizes = (d, H * D, d, inter, d, plan.width if whole else 0)
    buf = torch.empty(M * sum(sizes), dtype=torch.float32).split([M * n for n in sizes])
    x2, attn, n2, h, n1, y = (t.view(M, n) for t, n in zip(buf, sizes))
    if whole:
        # a decode step: every layer in one C++ call (csrc/decode_step.h), the same operations as the loop below
        x = x.reshape(M, d).contiguous()
        ptrs = (t.data_ptr() for t in (x, x2, n1, attn, n2, h, y, cos, sin))
        ext.dec_step(plan.step, *ptrs, k_ptr, v_ptr, cache.k.stride(0), pos.data_ptr(), keys, max_len,
                     mask_ptr, mask_sb, M)  # fmt: skip
        return n1.view(B, L, d)
    x2.copy_(x.reshape(M, d))
    ext.dec_add_norm(0, 0, _NO_LORA, x2.data_ptr(), plan.first_norm.data_ptr(), n1.data_ptr(), M, d, eps)
    steps = zip(plan.packs, plan.loras, plan.post_norms, plan.next_norms)
    for i, ((qkv, o, gate_up, down), lo, post_w, next_w) in enumerate(steps):
        kc, vc = k_ptr + i * layer_bytes, v_ptr + i * layer_bytes
        y = qkv.w(n1, qkv.bias)
        ext.dec_attn(y.data_ptr(), y.stride(0), lo[0], cos.data_ptr(), sin.data_ptr(), kc, vc, pos.data_ptr(),
                     L, keys, max_len, mask_ptr, mask_sb, mask_sl, attn.data_ptr(), M, H, Hkv, D, int(L == 1))  # fmt: skip
        if L > 1:
            # a prefill: q rotated in place in y, k and v in the cache; SDPA as the module path calls it
            q = y[:, : H * D].view(B, L, H, D).transpose(1, 2)
            k, v = cache.k[i, :, :, :keys], cache.v[i, :, :, :keys]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=H != Hkv)
            attn.view(B, L, H, D).copy_(out.transpose(1, 2))
        y = o.w(attn, o.bias)
        ext.dec_add_norm(y.data_ptr(), y.stride(0), lo[1], x2.data_ptr(), post_w.data_ptr(), n2.data_ptr(), M, d, eps)  # fmt: skip
        y = gate_up.w(n2, gate_up.bias)
        ext.dec_silu_mul(y.data_ptr(), y.stride(0), lo[2], h.data_ptr(), M, inter)
        y = down.w(h, down.bias)
        ext.dec_add_norm(y.data_ptr(), y.stride(0), lo[3], x2.data_ptr(), next_w.data_ptr(), n1.data_ptr(), M, d, eps)  # fmt: skip
    return n1.view(B, L, d)

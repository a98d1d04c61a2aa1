"""Decode steps (and short prefills) with the work between the GEMMs in C++ (csrc/decode_glue*): float32, CPU.

A step of a small LLM (the `small` preset's, whose weights the caches hold) is a few hundred tiny operators:
per layer two RMSNorms, four packed GEMMs (:mod:`affectrt.models.packed`), the unmerged LoRA's B term after
each, RoPE, the cache write, attention, SiLU·up and two residual adds, ~40 dispatches. Here each layer is the
four GEMMs (torch, on the packed stacks, as before) and three C++ calls for everything between them::

    y = n1 W_qkv + b   -> dec_attn      (LoRA term, RoPE, k/v into the cache, attention)  -> o
    y = o W_o          -> dec_add_norm  (LoRA term, x += y, n2 = RMSNorm(x))
    y = n2 W_gu        -> dec_silu_mul  (LoRA term, h = silu(gate)·up)
    y = h W_down       -> dec_add_norm  (LoRA term, x += y, n1 = the next layer's RMSNorm(x), or the final one)

Each term is the modules' own formula in float32 (csrc/decode_glue.h), so logits agree to float32 rounding
(``tests/models/test_fused_decode.py``: against the module path and transformers). It runs only where it
applies exactly: a step over a static cache (one new token per row, or a prefill of up to :data:`MAX_PREFILL`
tokens), float32 weights, cache and LoRA, the projections
packed with LoRA's A inside the stacked GEMM and one scale per stack, plain eager inference (no autograd,
tracing, export or compilation). Anything else takes the module path. On weights that stream from memory (the
`medium` preset, a real 7B) the GEMMs' reads dominate the step and this saves its few dispatches only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from affectrt.models.activations import may_overwrite
from affectrt.models.kv_cache import StaticKVCache
from affectrt.models.packed import PackedLinears
from affectrt.ops._ext import cpu_ext

_GROUPS = (("self_attn", "qkv"), ("self_attn", "o"), ("mlp", "gate_up"), ("mlp", "down"))
_NO_LORA = (0, 0, 0, 0, 0.0)
# Prefills of up to this many tokens per row run here too. Their attention is a plain loop over the keys per
# query, which SDPA's blocked kernel overtakes on longer prompts: `small` preset, 2-core Xeon, a scratch A/B of
# forward_hidden: 117 tokens 6.6 against 8.2 ms (batch 8: 38.1 against 39.8), 256 tokens 14.6 against 14.4,
# 512 tokens 35.2 against 24.2.
MAX_PREFILL = 128


def available() -> bool:
    """Whether ``affectrt._C`` has the decode-glue kernels."""
    ext = cpu_ext()
    return ext is not None and hasattr(ext, "dec_attn")


def _lora(pack: PackedLinears) -> tuple[int, int, int, int, float] | None:
    """(B stack pointer, rank, column of a in y, B in rows layout, scale) of a pack's LoRA term, _NO_LORA
    without one, or None when the pack's form is not the one the kernels take."""
    if pack.w.t.dtype != torch.float32 or pack.a is not None:
        return None
    if pack.b is None:
        return _NO_LORA
    if pack.split is None or not isinstance(pack.scale, float) or pack.b.t.dtype != torch.float32:
        return None
    b = pack.b.t
    if not b.is_contiguous():
        return None
    rank = b.shape[0] if pack.b.columns else b.shape[1]
    return (b.data_ptr(), rank, pack.split, 0 if pack.b.columns else 1, pack.scale)


def _plan(model) -> tuple[list[tuple[PackedLinears, ...]], list[tuple]] | None:
    """Each layer's four packs and their LoRA terms, or None when any layer cannot take the fused step."""
    if model.norm.weight.dtype != torch.float32 or model.norm.weight.device.type != "cpu" or not available():
        return None
    packs, loras = [], []
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
        loras.append(terms)
    return packs, loras


def supported(model) -> bool:
    """Whether ``model``'s (a packed Qwen2) decode steps run fused; ask without autograd, as generate runs.

    The pipeline then leaves its compiled decode step unused: on the `small` preset at batch 1 the fused eager
    step took 1.11 ms per token against 1.42 compiled (``python benchmarks/latency.py --repeats 5 --compile`` at
    commit 309dba0, before the pipeline made this choice).
    """
    return _plan(model) is not None


def run_layers(
    model, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: StaticKVCache | None, pos: Tensor
) -> Tensor | None:
    """The final-norm hidden states [B, L, d] of a step over the static cache, or None when it does not qualify.

    x [B, L, d]: the new tokens' embeddings; cos, sin [B, L, head_dim]; mask [B, 1, L, K] bool (K =
    ``cache.attend_len``); pos [L]: the cache slots written (arguments as Qwen2ForCausalLM.forward_hidden).
    L = 1 is a decode step; a prefill of up to :data:`MAX_PREFILL` tokens runs here too.
    """
    B, L, d = x.shape
    if (
        L > MAX_PREFILL
        or cache is None
        or mask is None
        or pos.numel() != L
        or pos.dtype != torch.int64
        or x.device.type != "cpu"
        or x.dtype != torch.float32
        or cache.k.dtype != torch.float32
        or tuple(cache.k.shape)
        != (len(model.layers), B, model.cfg.num_kv_heads, cache.max_len, model.cfg.head_dim)
        or not cache.k.is_contiguous()
        or not cache.v.is_contiguous()
        or mask.dtype != torch.bool
        or tuple(mask.shape) != (B, 1, L, cache.attend_len)
        or mask.stride(-1) != 1
        or not may_overwrite()
        or type(x) is not Tensor
    ):
        return None
    planned = _plan(model)
    if planned is None:
        return None
    plan, loras = planned
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
    x2 = x.reshape(M, d).clone()  # the residual stream, updated in place
    n1 = model.layers[0].input_layernorm(x2)
    norms = [layer.input_layernorm.weight for layer in model.layers[1:]] + [model.norm.weight]
    for i, ((qkv, o, gate_up, down), lo, next_w) in enumerate(zip(plan, loras, norms)):
        kc, vc = cache.k[i], cache.v[i]
        y = qkv.w(n1, qkv.bias)
        attn = torch.empty((M, H * D))
        ext.dec_attn(y.data_ptr(), y.stride(0), lo[0], cos.data_ptr(), sin.data_ptr(), kc.data_ptr(), vc.data_ptr(),
                     pos.data_ptr(), L, keys, max_len, mask_ptr, mask_sb, mask_sl, attn.data_ptr(), M, H, Hkv, D)  # fmt: skip
        y = o.w(attn, o.bias)
        n2 = torch.empty((M, d))
        ext.dec_add_norm(y.data_ptr(), y.stride(0), lo[1], x2.data_ptr(),
                         model.layers[i].post_attention_layernorm.weight.data_ptr(), n2.data_ptr(), M, d, eps)  # fmt: skip
        y = gate_up.w(n2, gate_up.bias)
        h = torch.empty((M, inter))
        ext.dec_silu_mul(y.data_ptr(), y.stride(0), lo[2], h.data_ptr(), M, inter)
        y = down.w(h, down.bias)
        n1 = torch.empty((M, d))
        ext.dec_add_norm(
            y.data_ptr(), y.stride(0), lo[3], x2.data_ptr(), next_w.data_ptr(), n1.data_ptr(), M, d, eps
        )
    return n1.view(B, L, d)

"""Qwen2 / Qwen2.5 decoder-only LLM (MODEL_SPEC §1.8), numerically matching ``transformers``.

Per layer (pre-norm):  h = x + o_proj(Attn(RoPE(q_proj(n1)), RoPE(k_proj(n1)), v_proj(n1))), n1 = RMSNorm(x)
                       y = h + down_proj(silu(gate_proj(n2)) * up_proj(n2)),              n2 = RMSNorm(h)
Attention is grouped-query (``num_kv_heads`` key/value heads shared by ``num_heads // num_kv_heads``
query heads each), bias on q/k/v only, RoPE in the ``rotate_half`` convention with θ = ``rope_theta``.

Module names below the top level equal Hugging Face's below its ``model.`` prefix
(``layers.N.self_attn.q_proj``, ``layers.N.mlp.gate_proj``, ...), so peft/LoRA key names carry over;
:func:`hf_key` / :func:`own_key` convert. Inputs are left-padded for batching: ``attention_mask`` [B, S]
(1 = real token) and, when ``position_ids`` is omitted, positions cumsum(mask) - 1 as in HF ``generate``,
so each row of a padded batch computes what it would alone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from affectrt.config import Qwen2Config
from affectrt.models import fused_decode
from affectrt.models.hf_io import check_keys, load_state_dict, read_config
from affectrt.models.kv_cache import StaticKVCache, attention_mask_for_cache
from affectrt.models.packed import PackedLinears, project


def qwen2_config_from_hf(cfg: dict) -> Qwen2Config:
    """Build a :class:`Qwen2Config` from a Hugging Face ``config.json`` dict (transformers 4.x or 5.x)."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"config.json: rope type {rope_type!r} is not supported; only default RoPE is")
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if cfg.get("use_sliding_window", False):
        raise ValueError("config.json: use_sliding_window=true is not supported; set it to false")
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"config.json: hidden_act {cfg['hidden_act']!r} is not supported; Qwen2 uses silu")
    out = Qwen2Config(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=cfg["num_attention_heads"],
        num_kv_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
        rope_theta=float(theta),
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        max_position_embeddings=cfg.get("max_position_embeddings", 32768),
        tie_word_embeddings=cfg.get("tie_word_embeddings", False),
    )
    head_dim = cfg.get("head_dim")
    if head_dim is not None and head_dim != out.head_dim:
        raise ValueError(
            f"config.json: head_dim={head_dim} differs from hidden_size/num_attention_heads={out.head_dim}; "
            "such configurations are not supported"
        )
    return out


def hf_key(our_key: str) -> str:
    """Our parameter name -> the HF ``Qwen2ForCausalLM`` name (``model.`` prefix, no LoRA wrapper)."""
    key = our_key.replace(".base_layer.", ".")
    return key if key.startswith("lm_head.") else "model." + key


def own_key(key: str) -> str:
    """HF ``Qwen2ForCausalLM`` name -> our name on a model without LoRA (inverse of :func:`hf_key`)."""
    return key.removeprefix("model.")


class RMSNorm(nn.Module):
    """y = w * (x / sqrt(mean(x², -1) + eps)), computed in float32, cast back before the weight (as HF)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        if dtype == torch.float32 and x.device.type == "cpu" and not torch.is_grad_enabled():
            # torch's rms_norm: on CPU in float32 the same result bit for bit (the casts are no-ops and
            # w·(x·r) = (x·r)·w). It runs the same elementwise ops, but from C++: ~14 instead of ~21 µs per call
            # at [16, 1, 256], and a decode step makes 2·layers + 1 of these calls.
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class RotaryEmbedding(nn.Module):
    """cos/sin [B, L, head_dim] for integer positions; inv_freq = 1/θ^(2i/d) in float32 as in HF.

    ``inv_freq`` stays float32 even when the model is cast to fp16/bf16 (see ``_apply``), so the angles
    never lose precision.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        # Explicit CPU device: still real when the model is built under ``torch.device("meta")``.
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim))
        self._inv_freq_master = inv
        self.register_buffer("inv_freq", inv.clone(), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.inv_freq = self._inv_freq_master.to(self.inv_freq.device)
        return self

    def forward(self, position_ids: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x [B, H, L, D], cos/sin [B, L, D]: x·cos + rotate_half(x)·sin."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


class Qwen2Attention(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = nn.Linear(d, cfg.num_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, cfg.num_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(cfg.num_heads * hd, d, bias=False)
        # Inference layout (affectrt.models.packed.pack_projections); not part of the state dict.
        self.packs: dict[str, PackedLinears] = {}

    def group(self, name: str) -> tuple[nn.Module, ...]:
        return (self.q_proj, self.k_proj, self.v_proj) if name == "qkv" else (self.o_proj,)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | None,
        kv_cache: StaticKVCache | None,
        cache_position: Tensor,
    ) -> Tensor:
        """x [B, L, d]; mask [B, 1, L, K] bool or None (= plain causal, no cache)."""
        B, L, _ = x.shape
        H, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        pack = self.packs.get("qkv")
        if pack is not None and pack.usable():
            y = pack(x)
            # One RoPE over the query and key heads side by side: the same products per element, half the ops.
            qk = apply_rope(y[..., : (H + Hkv) * D].view(B, L, H + Hkv, D).transpose(1, 2), cos, sin)
            q, k, v = qk[:, :H], qk[:, H:], y[..., (H + Hkv) * D :]
        else:
            q, k, v = (m(x) for m in self.group("qkv"))
            q = apply_rope(q.view(B, L, H, D).transpose(1, 2), cos, sin)
            k = apply_rope(k.view(B, L, Hkv, D).transpose(1, 2), cos, sin)
        v = v.view(B, L, Hkv, D).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, cache_position, k, v)
        if L == 1 and mask is not None and H != Hkv:
            # One new token: the G = H / Hkv query heads that share a key/value head (head h reads kv head
            # h // G, as repeat_kv) are G queries of one attention over that head, sparing SDPA's GQA expansion.
            y = F.scaled_dot_product_attention(q.reshape(B, Hkv, H // Hkv, D), k, v, attn_mask=mask)
        else:
            gqa = H != Hkv
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=mask is None, enable_gqa=gqa
            )
            y = y.transpose(1, 2)
        return project(self.packs.get("o"), self.group("o"), y.reshape(B, L, H * D))[0]


class Qwen2MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.packs: dict[str, PackedLinears] = {}  # as Qwen2Attention.packs

    def group(self, name: str) -> tuple[nn.Module, ...]:
        return (self.gate_proj, self.up_proj) if name == "gate_up" else (self.down_proj,)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = project(self.packs.get("gate_up"), self.group("gate_up"), x)
        return project(self.packs.get("down"), self.group("down"), F.silu(gate) * up)[0]


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config, layer_idx: int):
        super().__init__()
        self.self_attn = Qwen2Attention(cfg, layer_idx)
        self.mlp = Qwen2MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask, kv_cache, cache_position) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache, cache_position)
        return x + self.mlp(self.post_attention_layernorm(x))


def training_attention_mask(padding_mask: Tensor) -> Tensor:
    """The release's training mask for a right-padded batch: [B, L] (1 = real) -> bool [B, 1, L, L].

    allowed[b, q, k] = k <= q and padding_mask[b, k], as Hugging Face builds it for a training forward (with
    ``arange`` positions): a masked query (padding, or the final eos, which equals the pad id) attends to the
    real tokens before it but not to itself. Every row keeps at least its first (bos) key, so no softmax row
    is empty.
    """
    L = padding_mask.shape[1]
    keys = torch.arange(L, device=padding_mask.device)
    causal = keys[None, :] <= keys[:, None]
    return (causal[None] & padding_mask.to(torch.bool)[:, None, :])[:, None]


class Qwen2ForCausalLM(nn.Module):
    """Qwen2 LM: ``embed_tokens`` → ``layers`` → ``norm`` → ``lm_head`` (shares ``embed_tokens`` if tied)."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(cfg, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = (
            None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        )
        self.rotary_emb = RotaryEmbedding(cfg.head_dim, cfg.rope_theta)
        self.packs: dict[str, PackedLinears] = {}  # "lm_head", as Qwen2Attention.packs
        # Recompute each layer in the backward pass (training only) to save activation memory.
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def forward_hidden(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: StaticKVCache | None = None,
        cache_position: Tensor | None = None,
    ) -> Tensor:
        """Final-norm hidden states [B, L, d].

        - ``input_ids`` [B, L] or ``inputs_embeds`` [B, L, d] (exactly one).
        - ``attention_mask`` [B, S] (1 = keep): S = L without a cache; with a cache, S covers at least
          the slots up to the last ``cache_position`` (at most ``kv_cache.max_len``).
        - ``kv_cache``: the new keys/values are written at ``cache_position`` (default 0..L-1, i.e. a
          prefill) and the queries attend over all cached slots.
        - ``position_ids`` [B, L]: default (cumsum(mask) - 1)[:, cache_position], or cache_position.
        - A 4-D boolean ``attention_mask`` [B, 1, L, K] (True = attend) is used as given: K = L without a cache
          (the training forward's right-padding mask, :func:`training_attention_mask`), K =
          ``kv_cache.attend_len`` with one (``generate`` builds a decode step's mask once per answer).
        Without cache and mask the attention is plain causal (training on unpadded rows).
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Qwen2ForCausalLM: pass exactly one of input_ids and inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, L, _ = x.shape
        if cache_position is None:
            cache_position = torch.arange(L, device=x.device)
        full_mask = attention_mask is not None and attention_mask.dim() == 4
        keys = L if kv_cache is None else kv_cache.attend_len
        if full_mask and attention_mask.shape[-1] != keys:
            raise ValueError(
                f"Qwen2ForCausalLM: a 4-D attention_mask needs {keys} key columns (L without a kv_cache, "
                f"kv_cache.attend_len with one), got shape {tuple(attention_mask.shape)}"
            )
        if position_ids is None:
            if full_mask:
                position_ids = cache_position[None].expand(B, -1)
            elif attention_mask is not None:
                pos = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
                position_ids = pos[:, cache_position]
            else:
                position_ids = cache_position[None].expand(B, -1)
        if full_mask:
            mask = attention_mask.to(device=x.device, dtype=torch.bool)
        elif kv_cache is None and attention_mask is None:
            mask = None
        else:
            num_keys = kv_cache.attend_len if kv_cache is not None else L
            if kv_cache is not None and attention_mask is not None:
                attention_mask = attention_mask[:, :num_keys]  # later slots are not attended this step
            mask = attention_mask_for_cache(attention_mask, cache_position, num_keys, B)
        cos, sin = self.rotary_emb(position_ids, x.dtype)
        if kv_cache is not None and not torch.is_grad_enabled():
            # a step over the static cache: the work between the GEMMs in C++ where it applies (fused_decode)
            hidden = fused_decode.run_layers(self, x, cos, sin, mask, kv_cache, cache_position)
            if hidden is not None:
                return hidden
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, cos, sin, mask, kv_cache, cache_position, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache, cache_position)
        return self.norm(x)

    def logits_from_hidden(self, hidden: Tensor) -> Tensor:
        """[..., d] -> logits [..., V] in the model dtype (as HF; ``generate`` upcasts to float32)."""
        if self.lm_head is None:
            return F.linear(hidden, self.embed_tokens.weight)
        return project(self.packs.get("lm_head"), (self.lm_head,), hidden)[0]

    def forward(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        kv_cache: StaticKVCache | None = None,
        cache_position: Tensor | None = None,
    ) -> Tensor:
        """Logits [B, L, V] for every position; arguments as in :meth:`forward_hidden`."""
        h = self.forward_hidden(
            input_ids, inputs_embeds, attention_mask, position_ids, kv_cache, cache_position
        )
        return self.logits_from_hidden(h)

    # ----- loading -------------------------------------------------------------------------------------

    def hf_shapes(self) -> dict[str, torch.Size]:
        """Expected HF key -> shape of every base weight (LoRA adapters excluded)."""
        return {hf_key(k): v.shape for k, v in self.state_dict().items() if ".lora_" not in k}

    def load_hf_state_dict(
        self, sd: dict[str, Tensor], source: str = "state dict", dtype: torch.dtype | None = None
    ) -> Qwen2ForCausalLM:
        """Load an HF ``Qwen2ForCausalLM`` state dict (``model.*`` and ``lm_head.weight``).

        With tied embeddings a stored ``lm_head.weight`` is ignored. Works before or after
        :func:`~affectrt.models.lora.apply_lora` (adapters are left untouched). On a ``meta`` module
        the tensors are assigned, cast to ``dtype`` when given (else kept as stored); otherwise they
        are copied into the existing parameters (cast to their dtype).
        """
        expected = self.hf_shapes()
        ignore = ("lm_head.",) if self.lm_head is None else ()
        check_keys(expected, sd, source, ignore_unexpected=ignore)
        to_hf = {k: hf_key(k) for k in self.state_dict() if ".lora_" not in k}
        on_meta = any(p.is_meta for p in self.parameters())
        own = {}
        for k, h in to_hf.items():
            t = sd[h]
            own[k] = t.to(dtype) if (dtype is not None and on_meta) else t
        result = self.load_state_dict(own, strict=False, assign=on_meta)
        left = [k for k in result.missing_keys if ".lora_" not in k]
        if left or result.unexpected_keys:  # cannot happen after check_keys; guards the key mapping
            raise RuntimeError(f"{source}: internal key mapping error: {left} {result.unexpected_keys}")
        return self

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None) -> Qwen2ForCausalLM:
        """Load a Hugging Face Qwen2/Qwen2.5 folder; eval mode, no gradients.

        Weights keep the dtype stored in the files unless ``dtype`` is given (the release loads
        Qwen2.5-7B-Instruct in float16, MODEL_SPEC §1.8).
        """
        cfg = qwen2_config_from_hf(read_config(folder))
        sd = load_state_dict(folder)
        with torch.device("meta"):
            model = cls(cfg)
        model.load_hf_state_dict(sd, source=str(folder), dtype=dtype)
        return model.eval().requires_grad_(False)

"""CLIP ViT vision tower + visual projection (MODEL_SPEC §1.3), loading Hugging Face weights.

The computation, for pixel values x [N, 3, H, W] (already ``(uint8/255 - mean) / std``):

    p   = Conv2d(x, kernel=stride=patch, no bias)                  [N, P, d]   P = (H/patch)^2
    h   = pre_LN(cat(cls, p) + pos)                                [N, P+1, d]
    h   = h + MHA(LN1(h));  h = h + fc2(quick_gelu(fc1(LN2(h))))   (num_layers pre-LN layers)
    out = visual_projection(post_LN(h[:, 0]))                      [N, projection_dim]

which is ``CLIPModel.get_image_features`` of ``transformers``. q, k and v are one fused linear here (one GEMM
instead of three); the loader concatenates the Hugging Face ``q_proj``/``k_proj``/``v_proj`` weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.config import CLIPVisionConfig
from affectrt.models.activations import linear_act
from affectrt.models.hf_io import check_keys, load_converted, load_state_dict, read_config

# Defaults of transformers' CLIPVisionConfig / CLIPConfig: config.json files omit keys equal to them.
_HF_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "num_channels": 3,
    "layer_norm_eps": 1e-5,
    "hidden_act": "quick_gelu",
}
_HF_PROJECTION_DIM = 512

# Keys of a full CLIPModel folder that the vision encoder deliberately does not load.
_IGNORED_PREFIXES = ("text_model.", "text_projection.", "logit_scale", "vision_model.embeddings.position_ids")


# fc1's activations (affectrt.models.activations.linear_act: bias + activation fused on CPU at inference).
_ACTIVATIONS = ("quick_gelu", "gelu")


def clip_vision_config_from_hf(cfg: dict) -> CLIPVisionConfig:
    """Build a :class:`CLIPVisionConfig` from a ``config.json`` dict.

    Accepts a full ``CLIPModel`` config (``vision_config`` nested, ``projection_dim`` at the top) or a
    ``CLIPVisionModelWithProjection`` config (flat, ``model_type == "clip_vision_model"``).
    """
    if "vision_config" in cfg:
        vision = {**_HF_VISION_DEFAULTS, **(cfg["vision_config"] or {})}
        projection_dim = cfg.get("projection_dim", _HF_PROJECTION_DIM)
    elif cfg.get("model_type") == "clip_vision_model" or "patch_size" in cfg:
        vision = {**_HF_VISION_DEFAULTS, **cfg}
        projection_dim = cfg.get("projection_dim", _HF_PROJECTION_DIM)
    else:
        raise ValueError(
            f"config.json of model_type {cfg.get('model_type')!r} is not a CLIP config: expected a CLIPModel "
            "config (with 'vision_config') or a CLIPVisionModelWithProjection config ('clip_vision_model')"
        )
    if vision["hidden_act"] not in _ACTIVATIONS:
        raise ValueError(
            f"CLIP vision hidden_act {vision['hidden_act']!r} is not supported; supported: {sorted(_ACTIVATIONS)}"
        )
    return CLIPVisionConfig(
        hidden_size=vision["hidden_size"],
        intermediate_size=vision["intermediate_size"],
        num_layers=vision["num_hidden_layers"],
        num_heads=vision["num_attention_heads"],
        image_size=vision["image_size"],
        patch_size=vision["patch_size"],
        num_channels=vision["num_channels"],
        projection_dim=projection_dim,
        layer_norm_eps=vision["layer_norm_eps"],
        hidden_act=vision["hidden_act"],
    )


class Attention(nn.Module):
    """Multi-head self-attention with biases, fused qkv. x [N, T, d] -> [N, T, d]."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor, queries: int | None = None) -> Tensor:
        """``queries``: only the first ``queries`` tokens attend (all tokens still serve as keys/values)."""
        n, t, d = x.shape
        h = self.num_heads
        if queries is None:
            # [N, T, 3, H, Dh] -> 3 x [N, H, T, Dh]
            q, k, v = self.qkv(x).view(n, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        else:
            # The other tokens' queries would be computed and dropped: project q for the first ``queries``
            # tokens only, k and v for all (the qkv weight's rows are q, then k, then v).
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x[:, :queries], w[:d], None if b is None else b[:d])
            q = q.view(n, queries, h, d // h).transpose(1, 2)
            k, v = (
                F.linear(x, w[d:], None if b is None else b[d:])
                .view(n, t, 2, h, d // h)
                .permute(2, 0, 3, 1, 4)
            )
            t = queries
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(Dh), no mask: every token sees all
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-LN transformer layer: h + attn(LN1(h)), then h + fc2(act(fc1(LN2(h))))."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = cfg.hidden_act

    def mlp(self, x: Tensor) -> Tensor:
        """fc2(act(fc1(x)))."""
        return self.fc2(linear_act(self.fc1, x, self.act))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))

    def forward_cls(self, x: Tensor) -> Tensor:
        """The layer's output at the CLS token only: [N, T, d] -> [N, 1, d].

        The image features read nothing else of the last layer, so its query projection, out-projection and MLP
        run on one token instead of 257 (about 80% of that layer's work) with the same result.
        """
        x = x[:, :1] + self.attn(self.ln1(x), queries=1)
        return x + self.mlp(self.ln2(x))


class CLIPVisionEncoder(nn.Module):
    """CLIP ViT vision tower with its visual projection (frozen encoder of AffectGPT)."""

    def __init__(self, cfg: CLIPVisionConfig):
        super().__init__()
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
        self.cfg = cfg
        d = cfg.hidden_size
        self.patch_embed = nn.Conv2d(cfg.num_channels, d, cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.cls_token = nn.Parameter(torch.zeros(d))
        self.pos_embed = nn.Parameter(torch.zeros(cfg.num_tokens, d))
        self.ln_pre = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_post = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.proj = nn.Linear(d, cfg.projection_dim, bias=False)

    def forward_tokens(self, pixel_values: Tensor) -> Tensor:
        """[N, C, H, W] normalised pixels -> last hidden state [N, num_tokens, hidden] (no post-LN)."""
        self._check_size(pixel_values)
        return self._run(pixel_values, self.blocks)

    def _check_size(self, pixel_values: Tensor) -> None:
        h, w = pixel_values.shape[-2:]
        if h != self.cfg.image_size or w != self.cfg.image_size:
            raise ValueError(
                f"pixel_values of size {h}x{w}: the encoder takes {self.cfg.image_size}x{self.cfg.image_size} "
                "images (resize and crop them first; position embeddings are not interpolated)"
            )

    def _run(self, pixel_values: Tensor, blocks) -> Tensor:
        n = pixel_values.shape[0]
        x = self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype))  # [N, d, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [N, P, d]
        x = torch.cat([self.cls_token.expand(n, 1, -1), x], dim=1) + self.pos_embed
        x = self.ln_pre(x)
        for block in blocks:
            x = block(x)
        return x

    def forward(self, pixel_values: Tensor) -> Tensor:
        """[N, C, H, W] normalised pixels -> image embeds [N, projection_dim] (``get_image_features``)."""
        self._check_size(pixel_values)
        x = self._run(pixel_values, self.blocks[:-1])
        return self.proj(self.ln_post(self.blocks[-1].forward_cls(x)[:, 0]))

    # ---- Hugging Face weights -------------------------------------------------------------------

    def hf_shapes(self) -> dict[str, torch.Size]:
        """The Hugging Face keys (CLIPModel / CLIPVisionModelWithProjection naming) and their shapes."""
        c, d, f = self.cfg, self.cfg.hidden_size, self.cfg.intermediate_size
        shapes = {
            "vision_model.embeddings.class_embedding": (d,),
            "vision_model.embeddings.patch_embedding.weight": (d, c.num_channels, c.patch_size, c.patch_size),
            "vision_model.embeddings.position_embedding.weight": (c.num_tokens, d),
            "vision_model.pre_layrnorm.weight": (d,),  # sic: "layrnorm" is HF's spelling
            "vision_model.pre_layrnorm.bias": (d,),
            "vision_model.post_layernorm.weight": (d,),
            "vision_model.post_layernorm.bias": (d,),
            "visual_projection.weight": (c.projection_dim, d),
        }
        for i in range(c.num_layers):
            p = f"vision_model.encoder.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[p + f"self_attn.{name}.weight"] = (d, d)
                shapes[p + f"self_attn.{name}.bias"] = (d,)
            for ln in ("layer_norm1", "layer_norm2"):
                shapes[p + f"{ln}.weight"] = (d,)
                shapes[p + f"{ln}.bias"] = (d,)
            shapes[p + "mlp.fc1.weight"] = (f, d)
            shapes[p + "mlp.fc1.bias"] = (f,)
            shapes[p + "mlp.fc2.weight"] = (d, f)
            shapes[p + "mlp.fc2.bias"] = (d,)
        return {k: torch.Size(v) for k, v in shapes.items()}

    def load_hf_state_dict(self, sd: dict[str, Tensor], source: str = "state dict") -> CLIPVisionEncoder:
        """Load a ``CLIPModel`` or ``CLIPVisionModelWithProjection`` state dict into this module.

        Text-tower keys, ``logit_scale`` and the ``position_ids`` buffer are ignored; any other missing,
        unexpected or mis-shaped key raises one :class:`~affectrt.models.hf_io.WeightsError`. Works on a
        module built on the ``meta`` device (tensors are then assigned, not copied).
        """
        check_keys(self.hf_shapes(), sd, source, ignore_unexpected=_IGNORED_PREFIXES)
        own = hf_to_own(sd, self.cfg.num_layers)
        load_converted(self, own)
        return self

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None) -> CLIPVisionEncoder:
        """Load the vision tower of a Hugging Face CLIP folder; eval mode, no gradients.

        Weights are kept in float32 unless ``dtype`` is given (the release loads CLIP in float32 and runs
        it under fp16 autocast, MODEL_SPEC §1.9).
        """
        cfg = clip_vision_config_from_hf(read_config(folder))
        sd = load_state_dict(folder, keep=("vision_model.", "visual_projection."))
        with torch.device("meta"):
            model = cls(cfg)
        model.load_hf_state_dict(sd, source=str(folder))
        if dtype is not None:
            model.to(dtype)
        return model.eval().requires_grad_(False)


def hf_to_own(sd: dict[str, Tensor], num_layers: int) -> dict[str, Tensor]:
    """Map Hugging Face CLIP vision keys to this module's state dict (q/k/v fused into ``qkv``)."""
    v = "vision_model."
    own = {
        "cls_token": sd[v + "embeddings.class_embedding"],
        "patch_embed.weight": sd[v + "embeddings.patch_embedding.weight"],
        "pos_embed": sd[v + "embeddings.position_embedding.weight"],
        "ln_pre.weight": sd[v + "pre_layrnorm.weight"],
        "ln_pre.bias": sd[v + "pre_layrnorm.bias"],
        "ln_post.weight": sd[v + "post_layernorm.weight"],
        "ln_post.bias": sd[v + "post_layernorm.bias"],
        "proj.weight": sd["visual_projection.weight"],
    }
    renames = {
        "layer_norm1": "ln1",
        "layer_norm2": "ln2",
        "self_attn.out_proj": "attn.out",
        "mlp.fc1": "fc1",
        "mlp.fc2": "fc2",
    }
    for i in range(num_layers):
        hf, me = f"{v}encoder.layers.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            own[me + f"attn.qkv.{t}"] = torch.cat([sd[hf + f"self_attn.{x}_proj.{t}"] for x in "qkv"])
            for src, dst in renames.items():
                own[me + f"{dst}.{t}"] = sd[hf + f"{src}.{t}"]
    return own

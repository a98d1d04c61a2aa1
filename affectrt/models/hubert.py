"""HuBERT, stable-layer-norm variant (chinese-hubert-large, MODEL_SPEC §1.3), loading Hugging Face weights.

For raw audio x [N, S] (already zero-mean/unit-variance normalised):

    f  = x[:, None];  f = GELU(LN_c(Conv1d_i(f)))  for the 7 convs       [N, 512, T]   LN over channels
    h  = Linear(LN(f^T))                                                 [N, T, d]
    h  = h + GELU(trim(Conv1d_grouped(h^T, kernel K, padding K//2)))^T   positional conv (weight-norm)
    h  = h + MHA(LN1(h));  h = h + FFN(LN2(h))                           (num_layers pre-LN layers)
    out = LN_final(h)

Hidden states as the release sees them (transformers 4.x, ``output_hidden_states=True``): entry 0 is the input
of layer 1 (after the positional conv), entry i the output of layer i for i < L, and entry L is
``LN_final(output of layer L)``. transformers >= 5 returns the *un-normalised* output of layer L as its last
entry (``last_hidden_state`` is still normalised); this module keeps the release's definition.

The positional conv's weight norm is folded into one plain weight at load time (inference only), and q/k/v
are one fused linear. Eval semantics only: no dropout, SpecAugment or layerdrop.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.config import HubertConfig
from affectrt.models.activations import gelu, linear_act, may_overwrite
from affectrt.models.hf_io import check_keys, load_converted, load_state_dict, read_config
from affectrt.models.window_overlap import conv_stack_shared
from affectrt.ops import feat_conv

# Defaults of transformers' HubertConfig: config.json files omit keys equal to them.
_HF_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "conv_dim": (512,) * 7,
    "conv_kernel": (10, 3, 3, 3, 3, 2, 2),
    "conv_stride": (5, 2, 2, 2, 2, 2, 2),
    "conv_bias": False,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "layer_norm_eps": 1e-5,
    "hidden_act": "gelu",
    "feat_extract_activation": "gelu",
    "feat_extract_norm": "group",
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
    "conv_pos_batch_norm": False,
}

# Keys of HuBERT folders that inference deliberately does not load: the SpecAugment mask vector (training
# only) and task heads (HubertForCTC's lm_head, HubertForSequenceClassification's projector/classifier).
_IGNORED_PREFIXES = ("masked_spec_embed", "lm_head.", "projector.", "classifier.", "layer_weights")

# The conv front end's LayerNorms use torch's default eps in transformers, not config.layer_norm_eps.
_CONV_LN_EPS = 1e-5


def hubert_config_from_hf(cfg: dict) -> HubertConfig:
    """Build a :class:`HubertConfig` from a HuBERT ``config.json`` dict.

    Only the stable-layer-norm variant (``do_stable_layer_norm: true``, ``feat_extract_norm: "layer"``,
    feature-projection LayerNorm, weight-normed positional conv, GELU) is implemented; anything else raises.
    """
    c = {**_HF_DEFAULTS, **cfg}
    wrong = []
    if not c["do_stable_layer_norm"]:
        wrong.append("do_stable_layer_norm is false (need true: pre-LN encoder)")
    if c["feat_extract_norm"] != "layer":
        wrong.append(f"feat_extract_norm is {c['feat_extract_norm']!r} (need 'layer')")
    if not c["feat_proj_layer_norm"]:
        wrong.append("feat_proj_layer_norm is false (need true)")
    if c["conv_pos_batch_norm"]:
        wrong.append("conv_pos_batch_norm is true (need the weight-normed positional conv)")
    for key in ("hidden_act", "feat_extract_activation"):
        if c[key] != "gelu":
            wrong.append(f"{key} is {c[key]!r} (need 'gelu')")
    if wrong:
        raise ValueError(
            "unsupported HuBERT config: "
            + "; ".join(wrong)
            + ". affectrt implements the stable-layer-norm HuBERT (e.g. chinese-hubert-large, hubert-large)."
        )
    return HubertConfig(
        hidden_size=c["hidden_size"],
        intermediate_size=c["intermediate_size"],
        num_layers=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"],
        conv_dim=tuple(c["conv_dim"]),
        conv_kernel=tuple(c["conv_kernel"]),
        conv_stride=tuple(c["conv_stride"]),
        conv_bias=c["conv_bias"],
        num_conv_pos_embeddings=c["num_conv_pos_embeddings"],
        num_conv_pos_embedding_groups=c["num_conv_pos_embedding_groups"],
        layer_norm_eps=c["layer_norm_eps"],
        hidden_act=c["hidden_act"],
    )


def _recording() -> bool:
    """Whether a tracer, exporter or compiler records the ops (data-dependent paths must stay out)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def _channels_last_weight(conv: nn.Conv1d) -> Tensor:
    """The conv's weight as a [C_out, C_in/groups, 1, k] channels-last tensor.

    At inference it is kept on the module while the weight is the same tensor at the same version (a load,
    ``.to()`` or optimizer step changes one of them): the reorder copies the whole weight, 0.35 ms a clip for
    the `small` preset's positional conv. With autograd, tracing or compilation it is made afresh each call.
    """
    weight = conv.weight
    if not may_overwrite() or weight.is_inference():  # an inference tensor keeps no version to check
        return weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)
    key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
    kept = conv.__dict__.get("_channels_last_weight")
    if kept is None or kept[0] != key:
        kept = (key, weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last))
        conv.__dict__["_channels_last_weight"] = kept
    return kept[1]


def _conv1d_channels_last(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """``conv`` over time on channels-last input: x [N, T, C_in] -> [N, T_out, C_out] (a view of NHWC memory).

    Runs as a 1×k conv2d on channels-last (NHWC) memory with the Conv1d's own weight: oneDNN then needs no
    layout conversion, and for the grouped positional conv it picks a kernel 2.4× faster than for the
    Conv1d (7.3 against 3.1 ms on the `small` preset's [8, 256, 99], kernel 64, 8 groups; 2-core Xeon).
    """
    nhwc = x.transpose(1, 2).unsqueeze(2)  # [N, C, 1, T] view with channels-last strides
    w = _channels_last_weight(conv)
    y = F.conv2d(
        nhwc, w, conv.bias, stride=(1, conv.stride[0]), padding=(0, conv.padding[0]), groups=conv.groups
    )
    return y.permute(0, 2, 3, 1).squeeze(1)


class ConvLayer(nn.Module):
    """Conv1d -> LayerNorm over channels -> GELU, channels last: [N, T_in, C_in] -> [N, T_out, C_out].

    The conv runs as a 1×k conv2d on channels-last (NHWC) memory, so the LayerNorm over channels reads a
    contiguous last dimension: no transpose copies around every layer (about 1.5× faster on CPU). The weight
    stays the Conv1d's, so checkpoints load unchanged.
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, bias: bool):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=bias)
        self.norm = nn.LayerNorm(c_out, eps=_CONV_LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        conv, norm = self.conv, self.norm
        # At CPU inference (float32, or under bf16/fp16 autocast): the first layer whole in one C++ pass, the
        # others' LayerNorm + GELU in one (affectrt.ops.feat_conv), in float32 and rounded once to the autocast
        # dtype; else torch's ops, GELU in place at inference.
        if conv.in_channels == 1 and may_overwrite() and feat_conv.cpu_kernel_fits(x, norm.weight):
            if conv.weight.dtype == x.dtype == torch.float32:
                autocast = torch.is_autocast_enabled("cpu")
                out_dtype = torch.get_autocast_dtype("cpu") if autocast else x.dtype
                args = (conv.weight, conv.bias, norm.weight, norm.bias, conv.stride[0], norm.eps)
                return feat_conv.conv0_ln_gelu(x[:, :, 0], *args, backend="cpu", out_dtype=out_dtype)
        y = _conv1d_channels_last(conv, x)
        if may_overwrite() and feat_conv.cpu_kernel_fits(y, norm.weight):
            return feat_conv.ln_gelu_(y, norm.weight, norm.bias, norm.eps, backend="cpu")
        return gelu(norm(y))


class Attention(nn.Module):
    """Multi-head self-attention with biases, fused qkv. x [N, T, d] -> [N, T, d]."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # unpadded clips: no mask
        return self.out(y.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Stable-LN (pre-LN) layer: h + attn(LN1(h)), then h + fc2(GELU(fc1(LN2(h))))."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(linear_act(self.fc1, self.ln2(x), "gelu"))


class HubertEncoder(nn.Module):
    """HuBERT (stable-layer-norm) audio encoder, eval semantics (frozen encoder of AffectGPT)."""

    def __init__(self, cfg: HubertConfig):
        super().__init__()
        if cfg.hidden_size % cfg.num_heads:
            raise ValueError(f"hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
        if cfg.hidden_size % cfg.num_conv_pos_embedding_groups:
            raise ValueError(
                f"hidden_size {cfg.hidden_size} is not divisible by "
                f"num_conv_pos_embedding_groups {cfg.num_conv_pos_embedding_groups}"
            )
        self.cfg = cfg
        d, k = cfg.hidden_size, cfg.num_conv_pos_embeddings
        c_in = (1,) + tuple(cfg.conv_dim[:-1])
        self.convs = nn.ModuleList(
            ConvLayer(i, o, kk, s, cfg.conv_bias)
            for i, o, kk, s in zip(c_in, cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)
        )
        self.feat_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.feat_proj = nn.Linear(cfg.conv_dim[-1], d)
        self.pos_conv = nn.Conv1d(d, d, k, padding=k // 2, groups=cfg.num_conv_pos_embedding_groups)
        # Padding k//2 on both sides yields T+1 frames for an even kernel; drop the last to keep T.
        self.pos_trim = 1 if k % 2 == 0 else 0
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.ln_final = nn.LayerNorm(d, eps=cfg.layer_norm_eps)

    def embed(self, input_values: Tensor) -> Tensor:
        """[N, S] audio -> encoder input [N, T, d]: conv features, projection and positional conv."""
        if input_values.dim() != 2:
            raise ValueError(f"input_values must be [N, samples], got shape {tuple(input_values.shape)}")
        x = self.conv_features(input_values.to(self.feat_proj.weight.dtype))
        h = self.feat_proj(self.feat_norm(x))  # [N, T, d]
        # GELU before the trim, on the whole contiguous tensor: torch's vectorised and scalar GELU differ in
        # the last bit, and on a trimmed view which elements take which path would depend on the batch size.
        pos = gelu(_conv1d_channels_last(self.pos_conv, h))  # [N, T + pos_trim, d]
        return h + (pos[:, : -self.pos_trim] if self.pos_trim else pos)

    @property
    def conv_frame_macs(self) -> list[int]:
        """Multiply-adds of one output frame of each conv layer: kernel · C_in · C_out."""
        c = self.cfg
        return [k * i * o for k, i, o in zip(c.conv_kernel, (1, *c.conv_dim[:-1]), c.conv_dim)]

    def conv_features(self, x: Tensor) -> Tensor:
        """The conv feature extractor, channels last: [N, S] -> [N, T, C].

        Rows that continue one another (a clip's overlapping windows) share the convolutions of their common
        samples (:mod:`affectrt.models.window_overlap`); not while tracing, exporting or compiling, whose
        graphs must not depend on the data.
        """
        if x.shape[0] > 1 and not _recording():
            c = self.cfg
            shared = conv_stack_shared(
                x, list(self.convs), c.conv_kernel, c.conv_stride, self.conv_frame_macs
            )
            if shared is not None:
                return shared
        x = x[:, :, None]  # [N, S, 1]
        for conv in self.convs:
            x = conv(x)
        return x

    def forward(self, input_values: Tensor) -> list[Tensor]:
        """[N, S] audio -> ``num_layers + 1`` hidden states [N, T, d], the last one after the final LN."""
        h = self.embed(input_values)
        states = [h]
        for block in self.blocks:
            h = block(h)
            states.append(h)
        states[-1] = self.ln_final(h)
        return states

    def pooled(self, input_values: Tensor) -> Tensor:
        """[N, S] audio -> [N, d]: mean of the last ``pool_last_layers`` hidden states, then mean over frames.

        As the release's ``torch.stack(hidden_states[-k:]).mean(0)``, so a model with fewer than k hidden
        states averages all of them. Only a running sum is kept, not the earlier hidden states.
        """
        num_states = self.cfg.num_layers + 1
        k = min(self.cfg.pool_last_layers, num_states)
        h = self.embed(input_values)
        acc = h if num_states - 1 < k else None  # hidden state i is among the last k iff i >= num_states - k
        for i, block in enumerate(self.blocks, start=1):
            h = block(h)
            out = self.ln_final(h) if i == num_states - 1 else h
            if i >= num_states - k:
                acc = out if acc is None else acc + out
        return (acc / k).mean(dim=1)

    # ---- Hugging Face weights -------------------------------------------------------------------

    def hf_shapes(self, weight_norm_keys: tuple[str, str] | None = None) -> dict[str, torch.Size]:
        """The ``HubertModel`` keys and shapes; ``weight_norm_keys`` names the positional conv's g and v."""
        c, d, f = self.cfg, self.cfg.hidden_size, self.cfg.intermediate_size
        k, groups = c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups
        shapes: dict[str, tuple[int, ...]] = {}
        c_in = (1,) + tuple(c.conv_dim[:-1])
        for i, (ci, co, kk) in enumerate(zip(c_in, c.conv_dim, c.conv_kernel)):
            p = f"feature_extractor.conv_layers.{i}."
            shapes[p + "conv.weight"] = (co, ci, kk)
            if c.conv_bias:
                shapes[p + "conv.bias"] = (co,)
            shapes[p + "layer_norm.weight"] = (co,)
            shapes[p + "layer_norm.bias"] = (co,)
        shapes["feature_projection.layer_norm.weight"] = (c.conv_dim[-1],)
        shapes["feature_projection.layer_norm.bias"] = (c.conv_dim[-1],)
        shapes["feature_projection.projection.weight"] = (d, c.conv_dim[-1])
        shapes["feature_projection.projection.bias"] = (d,)
        g_key, v_key = weight_norm_keys or _weight_norm_keys({})
        shapes[g_key] = (1, 1, k)  # weight_norm(dim=2): one gain per kernel tap
        shapes[v_key] = (d, d // groups, k)
        shapes["encoder.pos_conv_embed.conv.bias"] = (d,)
        shapes["encoder.layer_norm.weight"] = (d,)
        shapes["encoder.layer_norm.bias"] = (d,)
        for i in range(c.num_layers):
            p = f"encoder.layers.{i}."
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[p + f"attention.{name}.weight"] = (d, d)
                shapes[p + f"attention.{name}.bias"] = (d,)
            for ln in ("layer_norm", "final_layer_norm"):
                shapes[p + f"{ln}.weight"] = (d,)
                shapes[p + f"{ln}.bias"] = (d,)
            shapes[p + "feed_forward.intermediate_dense.weight"] = (f, d)
            shapes[p + "feed_forward.intermediate_dense.bias"] = (f,)
            shapes[p + "feed_forward.output_dense.weight"] = (d, f)
            shapes[p + "feed_forward.output_dense.bias"] = (d,)
        return {key: torch.Size(s) for key, s in shapes.items()}

    def load_hf_state_dict(self, sd: dict[str, Tensor], source: str = "state dict") -> HubertEncoder:
        """Load a ``HubertModel`` state dict (keys may carry a ``hubert.`` prefix, as in ``HubertForCTC``).

        The positional conv's weight norm may come as ``weight_g``/``weight_v`` (old files) or as
        ``parametrizations.weight.original0``/``original1`` (newer saves). ``masked_spec_embed`` and task
        heads are ignored; any other missing, unexpected or mis-shaped key raises one
        :class:`~affectrt.models.hf_io.WeightsError`.
        """
        sd = {key.removeprefix("hubert."): t for key, t in sd.items()}
        check_keys(self.hf_shapes(_weight_norm_keys(sd)), sd, source, ignore_unexpected=_IGNORED_PREFIXES)
        load_converted(self, hf_to_own(sd, self.cfg))
        return self

    @classmethod
    def from_pretrained(cls, folder: str | Path, dtype: torch.dtype | None = None) -> HubertEncoder:
        """Load a Hugging Face HuBERT folder; eval mode, no gradients.

        Weights are kept in float32 unless ``dtype`` is given (the release loads HuBERT in float32 and runs
        it under fp16 autocast, MODEL_SPEC §1.9).
        """
        try:
            cfg = hubert_config_from_hf(read_config(folder))
        except ValueError as e:
            raise ValueError(f"{folder}: {e}") from None
        sd = load_state_dict(folder)
        with torch.device("meta"):
            model = cls(cfg)
        model.load_hf_state_dict(sd, source=str(folder))
        if dtype is not None:
            model.to(dtype)
        return model.eval().requires_grad_(False)


_POS = "encoder.pos_conv_embed.conv."


def _weight_norm_keys(sd: dict[str, Tensor]) -> tuple[str, str]:
    """The (g, v) key names of the positional conv in ``sd``: the old ``weight_g``/``weight_v`` if present,
    else the parametrization names of newer saves."""
    old = (_POS + "weight_g", _POS + "weight_v")
    new = (_POS + "parametrizations.weight.original0", _POS + "parametrizations.weight.original1")
    return old if any(key in sd for key in old) else new


def fold_weight_norm(g: Tensor, v: Tensor, dim: int = 2) -> Tensor:
    """weight = g * v / ||v||, the norm over every dim except ``dim`` (``torch weight_norm(dim=dim)``)."""
    dims = [i for i in range(v.dim()) if i != dim]
    v32 = v.float()
    return (g.float() * v32 / v32.norm(dim=dims, keepdim=True)).to(v.dtype)


def hf_to_own(sd: dict[str, Tensor], cfg: HubertConfig) -> dict[str, Tensor]:
    """Map ``HubertModel`` keys (no ``hubert.`` prefix) to this module's state dict.

    Folds the positional conv's weight norm and fuses q/k/v into ``qkv``.
    """
    g_key, v_key = _weight_norm_keys(sd)
    own = {
        "feat_norm.weight": sd["feature_projection.layer_norm.weight"],
        "feat_norm.bias": sd["feature_projection.layer_norm.bias"],
        "feat_proj.weight": sd["feature_projection.projection.weight"],
        "feat_proj.bias": sd["feature_projection.projection.bias"],
        "pos_conv.weight": fold_weight_norm(sd[g_key], sd[v_key], dim=2),
        "pos_conv.bias": sd[_POS + "bias"],
        "ln_final.weight": sd["encoder.layer_norm.weight"],
        "ln_final.bias": sd["encoder.layer_norm.bias"],
    }
    for i in range(len(cfg.conv_dim)):
        hf = f"feature_extractor.conv_layers.{i}."
        own[f"convs.{i}.conv.weight"] = sd[hf + "conv.weight"]
        if cfg.conv_bias:
            own[f"convs.{i}.conv.bias"] = sd[hf + "conv.bias"]
        own[f"convs.{i}.norm.weight"] = sd[hf + "layer_norm.weight"]
        own[f"convs.{i}.norm.bias"] = sd[hf + "layer_norm.bias"]
    renames = {
        "layer_norm": "ln1",
        "final_layer_norm": "ln2",
        "attention.out_proj": "attn.out",
        "feed_forward.intermediate_dense": "fc1",
        "feed_forward.output_dense": "fc2",
    }
    for i in range(cfg.num_layers):
        hf, me = f"encoder.layers.{i}.", f"blocks.{i}."
        for t in ("weight", "bias"):
            own[me + f"attn.qkv.{t}"] = torch.cat([sd[hf + f"attention.{x}_proj.{t}"] for x in "qkv"])
            for src, dst in renames.items():
                own[me + f"{dst}.{t}"] = sd[hf + f"{src}.{t}"]
    return own

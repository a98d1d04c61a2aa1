"""The fusion head: per-modality token compression and the multimodal pre-fusion (MODEL_SPEC §1.4-1.6).

Input: encoder features Z_v [B,Tv,d_v] (faces or frames; both share one set of weights) and Z_a [B,Ta,d_a].
Output: the LLM embeddings of the three placeholders, each [B,K,D] (D = the LLM hidden size).

Per-modality compression (``video_fusion`` / ``audio_fusion``), then the projection W, c to D:

    attention   H = W (Σ_t (Z_t·w + b) Z_t) + c        raw linear scores, no softmax; K copies of one vector
    mean        H = W (mean_t Z_t) + c                 K copies of one vector
    qformer     H = W QFormer(queries, Z + P[:T]) + c  K learned queries, learned temporal positions P

Pre-fusion (``multi_fusion``), on the encoder features, not on H:

    attention   u_v = W_mv mean_t Z_v + b_mv,  u_a = W_ma mean_t Z_a + b_ma          (both [B, d_m])
                g   = W2 (W1 [u_v; u_a] + b1) + b2                                      ([B,2]; no act, no softmax)
                H   = W_mp (g0 u_v + g1 u_a) + b_mp                                     K copies
    qformer     X = [W_mv Z_v + b_mv ; W_ma Z_a + b_ma] + P[:Tv+Ta]   (video first)  -> QFormer -> W_mp
    none        no <MultiHere> token

W2·W1 folds into one 2×2d_m affine map at inference (:meth:`FusionHead.fold_gate`).

For the released configuration (attention / attention / attention) ``forward`` runs the fused op
:func:`affectrt.ops.fusion_head.fusion_head` (all three embeddings at once; the C++ or CUDA kernel at
inference, Triton or the differentiable reference for training) with ``FusionHead.backend`` = "auto";
set ``backend`` to "cuda", "triton", "cpu" or "eager" to force one of the op's backends, or to "module"
for the per-module path below (what every other configuration runs, and the reference).

Attribute names are the release's (``affectgpt.py``), so ``FusionHead.state_dict()`` has exactly the keys
of the released checkpoints for these modules: ``video_attention_mlp``, ``affectgpt_proj``,
``audio_attention_mlp``, ``audio_llama_proj``, ``multi_video_embs``, ``multi_audio_embs``, ``attention_mlp``,
``fc_att``, ``multi_llama_proj``, ``image_llama_proj`` (still-image projection: trainable but unused for
video, kept so checkpoints load and the trainable count matches), and for Q-Former variants
``{video,audio,multi}_Qformer``, ``{video,audio,multi}_query_tokens``, ``video_frame_position_embedding``,
``audio_position_embedding``, ``multi_position_embedding``.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn

from affectrt.config import AffectGPTConfig, QFormerConfig
from affectrt.models.activations import may_overwrite
from affectrt.models.qformer import INITIALIZER_RANGE, QFormer
from affectrt.ops.attn_pool import attn_pool
from affectrt.ops.fusion_head import FusionHeadWeights, fusion_head


class FusionOutput(NamedTuple):
    """LLM embeddings for ``<MultiHere>`` [B,Km,D] (None without pre-fusion), ``<AudioHere>`` [B,Ka,D] and
    ``<FaceHere>``/``<FrameHere>`` [B,Kv,D]."""

    multi: Tensor | None
    audio: Tensor
    video: Tensor


def _query_tokens(cfg: QFormerConfig, k: int) -> nn.Parameter:
    # N(0, initializer_range) as in the release's init_video_Qformer.
    return nn.Parameter(torch.empty(1, k, cfg.hidden_size).normal_(0.0, INITIALIZER_RANGE))


def _check_features(z: Tensor, dim: int, name: str) -> None:
    if z.ndim != 3 or z.shape[-1] != dim or z.shape[1] == 0:
        raise ValueError(f"FusionHead: {name} must be [B, T>=1, {dim}], got {tuple(z.shape)}")


def _check_positions(t: int, table: nn.Embedding, name: str) -> None:
    if t > table.num_embeddings:
        raise ValueError(
            f"FusionHead: {name} has {t} time steps but its learned position table has only "
            f"{table.num_embeddings} rows; pass at most {table.num_embeddings} steps"
        )


class FusionHead(nn.Module):
    """Token compression for video and audio plus the pre-fusion; see the module docstring."""

    def __init__(self, cfg: AffectGPTConfig):
        super().__init__()
        f = cfg.fusion
        dv, da, dm, d = cfg.video_dim, cfg.audio_dim, cfg.multi_dim, cfg.llm.hidden_size
        qh = f.qformer.hidden_size
        for name in ("video_fusion", "audio_fusion"):
            if getattr(f, name) not in ("attention", "mean", "qformer"):
                raise ValueError(
                    f"FusionConfig.{name}={getattr(f, name)!r}; use 'attention', 'mean' or 'qformer'"
                )
        if f.multi_fusion not in ("attention", "qformer", "none"):
            raise ValueError(
                f"FusionConfig.multi_fusion={f.multi_fusion!r}; use 'attention', 'qformer' or 'none'"
            )
        self.video_fusion = f.video_fusion
        self.audio_fusion = f.audio_fusion
        self.multi_fusion = f.multi_fusion
        self.num_video_query_token = f.num_video_query_token
        self.num_audio_query_token = f.num_audio_query_token
        self.num_multi_query_token = f.num_multi_query_token
        self.video_dim, self.audio_dim, self.multi_dim = dv, da, dm
        self.backend = "auto"  # see the module docstring
        self._gate_cache: tuple | None = None
        self._cast_cache: tuple | None = None

        self.image_llama_proj = nn.Linear(dv, d)

        if f.video_fusion == "qformer":
            self.video_frame_position_embedding = nn.Embedding(f.video_qformer_positions, dv)
            self.video_Qformer = QFormer(f.qformer, dv)
            self.video_query_tokens = _query_tokens(f.qformer, f.num_video_query_token)
        elif f.video_fusion == "attention":
            self.video_attention_mlp = nn.Linear(dv, 1)
        self.affectgpt_proj = nn.Linear(qh if f.video_fusion == "qformer" else dv, d)

        if f.audio_fusion == "qformer":
            self.audio_position_embedding = nn.Embedding(f.audio_qformer_positions, da)
            self.audio_Qformer = QFormer(f.qformer, da)
            self.audio_query_tokens = _query_tokens(f.qformer, f.num_audio_query_token)
        elif f.audio_fusion == "attention":
            self.audio_attention_mlp = nn.Linear(da, 1)
        self.audio_llama_proj = nn.Linear(qh if f.audio_fusion == "qformer" else da, d)

        # "none" is not a release option: no pre-fusion modules at all then.
        if f.multi_fusion != "none":
            self.multi_audio_embs = nn.Linear(da, dm)
            self.multi_video_embs = nn.Linear(dv, dm)
            if f.multi_fusion == "qformer":
                self.multi_position_embedding = nn.Embedding(f.multi_qformer_positions, dm)
                self.multi_Qformer = QFormer(f.qformer, dm)
                self.multi_query_tokens = _query_tokens(f.qformer, f.num_multi_query_token)
            else:
                self.attention_mlp = nn.Linear(2 * dm, dm)
                self.fc_att = nn.Linear(dm, 2)
            self.multi_llama_proj = nn.Linear(qh if f.multi_fusion == "qformer" else dm, d)

    # -- per-modality compression ----------------------------------------------------------------------

    @staticmethod
    def _qformer_tokens(
        z: Tensor, pos: nn.Embedding, qformer: QFormer, queries: Tensor, proj: nn.Linear, name: str
    ) -> Tensor:
        """proj(QFormer(queries, Z + P[:T])): [B,T,d] -> [B,K,D]."""
        _check_positions(z.shape[1], pos, name)
        x = z + pos.weight[: z.shape[1]]
        return proj(qformer(queries.expand(z.shape[0], -1, -1), x))

    @staticmethod
    def _pooled_tokens(z: Tensor, mlp: nn.Linear | None, proj: nn.Linear, k: int) -> Tensor:
        """K copies of proj(pool(Z)); attention pooling when ``mlp`` is given, else the mean. [B,T,d] -> [B,K,D]."""
        pooled = attn_pool(z, mlp.weight, mlp.bias) if mlp is not None else z.mean(dim=1)
        return proj(pooled).unsqueeze(1).expand(-1, k, -1)

    def encode_video(self, z_video: Tensor) -> Tensor:
        """Z_v [B,Tv,d_v] -> H_v [B,Kv,D] (``affectgpt_proj``; faces and frames share these weights)."""
        _check_features(z_video, self.video_dim, "z_video")
        if self.video_fusion == "qformer":
            return self._qformer_tokens(
                z_video,
                self.video_frame_position_embedding,
                self.video_Qformer,
                self.video_query_tokens,
                self.affectgpt_proj,
                "z_video",
            )
        mlp = self.video_attention_mlp if self.video_fusion == "attention" else None
        return self._pooled_tokens(z_video, mlp, self.affectgpt_proj, self.num_video_query_token)

    def encode_audio(self, z_audio: Tensor) -> Tensor:
        """Z_a [B,Ta,d_a] -> H_a [B,Ka,D] (``audio_llama_proj``)."""
        _check_features(z_audio, self.audio_dim, "z_audio")
        if self.audio_fusion == "qformer":
            return self._qformer_tokens(
                z_audio,
                self.audio_position_embedding,
                self.audio_Qformer,
                self.audio_query_tokens,
                self.audio_llama_proj,
                "z_audio",
            )
        mlp = self.audio_attention_mlp if self.audio_fusion == "attention" else None
        return self._pooled_tokens(z_audio, mlp, self.audio_llama_proj, self.num_audio_query_token)

    # -- pre-fusion ------------------------------------------------------------------------------------

    def fold_gate(self) -> tuple[Tensor, Tensor]:
        """The attention pre-fusion gate as one affine map: (W2·W1 [2, 2·d_m], W2·b1 + b2 [2]).

        Computed in float64 and returned in the weights' dtype; recompute after the weights change.
        """
        if self.multi_fusion != "attention":
            raise ValueError(
                f"FusionHead.fold_gate: needs multi_fusion='attention', not {self.multi_fusion!r}"
            )
        w1, b1 = self.attention_mlp.weight.double(), self.attention_mlp.bias.double()
        w2, b2 = self.fc_att.weight.double(), self.fc_att.bias.double()
        dtype = self.fc_att.weight.dtype
        device_type = w1.device.type
        # An enclosing autocast would run these float64 matmuls in half precision.
        no_autocast = (
            torch.autocast(device_type, enabled=False) if device_type in ("cpu", "cuda") else nullcontext()
        )
        with no_autocast:
            return (w2 @ w1).to(dtype), (w2 @ b1 + b2).to(dtype)

    def encode_multi(
        self, z_video: Tensor, z_audio: Tensor, gate: tuple[Tensor, Tensor] | None = None
    ) -> Tensor | None:
        """Pre-fusion of Z_v [B,Tv,d_v] and Z_a [B,Ta,d_a] -> H_multi [B,Km,D], or None for "none".

        ``gate``: the output of :meth:`fold_gate`, to use the folded 2×2·d_m map instead of W1 then W2.
        """
        if self.multi_fusion == "none":
            return None
        _check_features(z_video, self.video_dim, "z_video")
        _check_features(z_audio, self.audio_dim, "z_audio")
        if z_video.shape[0] != z_audio.shape[0]:
            raise ValueError(
                f"FusionHead: batch sizes differ: z_video {z_video.shape[0]}, z_audio {z_audio.shape[0]}"
            )
        if self.multi_fusion == "qformer":
            # Video tokens first, then audio, as the release concatenates them.
            x = torch.cat([self.multi_video_embs(z_video), self.multi_audio_embs(z_audio)], dim=1)
            return self._qformer_tokens(
                x,
                self.multi_position_embedding,
                self.multi_Qformer,
                self.multi_query_tokens,
                self.multi_llama_proj,
                "z_video + z_audio",
            )
        u_v = self.multi_video_embs(z_video.mean(dim=1))
        u_a = self.multi_audio_embs(z_audio.mean(dim=1))
        u = torch.cat([u_v, u_a], dim=-1)
        if gate is None:
            g = self.fc_att(self.attention_mlp(u))  # [B,2]; no activation between, no softmax after
        else:
            g = torch.nn.functional.linear(u, gate[0], gate[1])
        # As the release: stack to [B,d_m,2] and matmul with g [B,2,1].
        fused = torch.matmul(torch.stack([u_v, u_a], dim=2), g.unsqueeze(2)).squeeze(2)
        return self.multi_llama_proj(fused).unsqueeze(1).expand(-1, self.num_multi_query_token, -1)

    # -- the fused head -------------------------------------------------------------------------------

    @property
    def fused(self) -> bool:
        """True when ``forward`` runs the fused op: the released configuration and backend != "module"."""
        released = self.video_fusion == self.audio_fusion == self.multi_fusion == "attention"
        return released and self.backend != "module"

    def fused_weights(self) -> FusionHeadWeights:
        """The parameters in :class:`FusionHeadWeights` order (released configuration only)."""
        return FusionHeadWeights(
            self.video_attention_mlp.weight, self.video_attention_mlp.bias,
            self.affectgpt_proj.weight, self.affectgpt_proj.bias,
            self.audio_attention_mlp.weight, self.audio_attention_mlp.bias,
            self.audio_llama_proj.weight, self.audio_llama_proj.bias,
            self.multi_video_embs.weight, self.multi_video_embs.bias,
            self.multi_audio_embs.weight, self.multi_audio_embs.bias,
            self.attention_mlp.weight, self.attention_mlp.bias, self.fc_att.weight, self.fc_att.bias,
            self.multi_llama_proj.weight, self.multi_llama_proj.bias,
        )  # fmt: skip

    def _cached_gate(self) -> tuple[Tensor, Tensor]:
        """fold_gate(), recomputed only when a gate parameter changed (in place or replaced)."""
        params = (self.attention_mlp.weight, self.attention_mlp.bias, self.fc_att.weight, self.fc_att.bias)
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
        if self._gate_cache is None or self._gate_cache[0] != key:
            self._gate_cache = (key, self.fold_gate())
        return self._gate_cache[1]

    def _autocast_weights(
        self, weights: FusionHeadWeights, folded: tuple[Tensor, Tensor] | None, dtype: torch.dtype
    ) -> tuple[FusionHeadWeights, tuple[Tensor, Tensor] | None]:
        """The op's weights and folded gate in the autocast dtype: at inference kept while every weight is the
        same tensor at the same version and the gate the same cached one; with autograd, tracing or
        compilation (or inference-tensor weights, which keep no version) cast afresh.

        The same values as casting each call (a cast is exact and deterministic), without its cost: at the
        released dims the cast read 48 MB and wrote 24 MB per call, 5.4 ms against 1.3 for the whole fp32 head
        at B = 1 under CPU bf16 autocast (2-core Xeon, scratch timing).
        """
        if not may_overwrite() or any(t.is_inference() for t in weights):
            cast = FusionHeadWeights(*(t.to(dtype) for t in weights))
            return cast, None if folded is None else tuple(t.to(dtype) for t in folded)
        key = (dtype, *((t.data_ptr(), t._version, t.dtype, t.device) for t in weights))
        kept = self._cast_cache
        if kept is None or kept[0] != key or kept[1] is not folded:
            cast = FusionHeadWeights(*(t.detach().to(dtype) for t in weights))
            kept = (key, folded, cast, None if folded is None else tuple(t.to(dtype) for t in folded))
            self._cast_cache = kept
        return kept[2], kept[3]

    def forward_fused(
        self,
        z_video: Tensor,
        z_audio: Tensor,
        gate: tuple[Tensor, Tensor] | None = None,
        out: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> Tensor:
        """The fused op: [B,3,D] (multi, audio, video), or written into out[b, rows[b, j]] (see fusion_head).

        Under autocast the op runs in the autocast dtype (weights cast to it), like the release's
        ``maybe_autocast``; the folded gate is cached and used whenever no gradient is needed.
        """
        _check_features(z_video, self.video_dim, "z_video")
        _check_features(z_audio, self.audio_dim, "z_audio")
        weights = self.fused_weights()
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (z_video, z_audio, *weights))
        folded = None if needs_grad else (gate if gate is not None else self._cached_gate())
        backend = "auto" if self.backend == "module" else self.backend
        device_type = z_video.device.type
        if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            cast, folded = self._autocast_weights(weights, folded, dtype)
            with torch.autocast(device_type, enabled=False):
                return fusion_head(
                    z_video.to(dtype), z_audio.to(dtype), cast, folded_gate=folded, backend=backend,
                    out=out, rows=rows,
                )  # fmt: skip
        return fusion_head(z_video, z_audio, weights, folded_gate=folded, backend=backend, out=out, rows=rows)

    def forward(
        self, z_video: Tensor, z_audio: Tensor, gate: tuple[Tensor, Tensor] | None = None
    ) -> FusionOutput:
        """Z_v [B,Tv,d_v], Z_a [B,Ta,d_a] -> FusionOutput(multi [B,Km,D] | None, audio [B,Ka,D], video [B,Kv,D])."""
        if self.fused:
            h = self.forward_fused(z_video, z_audio, gate)
            return FusionOutput(
                multi=h[:, 0:1].expand(-1, self.num_multi_query_token, -1),
                audio=h[:, 1:2].expand(-1, self.num_audio_query_token, -1),
                video=h[:, 2:3].expand(-1, self.num_video_query_token, -1),
            )
        return FusionOutput(
            multi=self.encode_multi(z_video, z_audio, gate),
            audio=self.encode_audio(z_audio),
            video=self.encode_video(z_video),
        )

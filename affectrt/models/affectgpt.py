"""The assembled AffectGPT model (MODEL_SPEC §1): encoders → fusion head → spliced prompt → Qwen2.5 + LoRA.

One clip's way: frames/faces [B,T,3,224,224] → CLIP image embeds Z_v [B,T,d_v]; audio windows [B,T,S] →
HuBERT pooled Z_a [B,T,d_a]; the fusion head turns (Z_v, Z_a) into the Multi, Audio and Face/Frame
embeddings [B,K,D]; they replace the ``<…Here>`` rows of the prompt's ``inputs_embeds``; the LLM generates.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from affectrt.config import AffectGPTConfig
from affectrt.models.clip import CLIPVisionEncoder
from affectrt.models.fusion import FusionHead
from affectrt.models.hubert import HubertEncoder
from affectrt.models.lora import apply_lora
from affectrt.models.qwen2 import Qwen2ForCausalLM
from affectrt.text.splice import IGNORE_INDEX, TokenBatch, embed_with_placeholders, placeholder_positions


class AffectGPT(nn.Module):
    """AffectGPT with its frozen encoders, trainable fusion head and LoRA-adapted LLM.

    ``visual_encoder`` (CLIP ViT + projection), ``acoustic_encoder`` (HuBERT), ``fusion`` (release key
    names), ``llm`` (Qwen2.5, LoRA applied when ``cfg.lora`` is set).
    """

    def __init__(self, cfg: AffectGPTConfig, with_lora: bool = True, with_encoders: bool = True) -> None:
        """``with_encoders=False`` builds the fusion head and LLM only (``visual_encoder`` and
        ``acoustic_encoder`` are None): for training or evaluation on cached encoder features."""
        super().__init__()
        self.cfg = cfg
        self.visual_encoder = CLIPVisionEncoder(cfg.vision) if with_encoders else None
        self.acoustic_encoder = HubertEncoder(cfg.audio) if with_encoders else None
        self.fusion = FusionHead(cfg)
        self.llm = Qwen2ForCausalLM(cfg.llm)
        self.has_lora = False
        if with_lora:
            self.add_lora()
        if with_encoders:
            for p in (*self.visual_encoder.parameters(), *self.acoustic_encoder.parameters()):
                p.requires_grad_(False)

    def add_lora(self) -> None:
        """Wrap the LLM's projections with LoRA adapters (after its base weights are loaded)."""
        if self.cfg.lora is not None and not self.has_lora:
            apply_lora(self.llm, self.cfg.lora)
            self.has_lora = True

    @property
    def video_placeholder(self) -> str:
        return "<FaceHere>" if self.cfg.visual_input == "face" else "<FrameHere>"

    def encode_video(self, pixels: Tensor) -> Tensor:
        """CLIP image embeds of every frame: [B, T, 3, H, W] (normalised) -> Z_v [B, T, d_v]."""
        self._need_encoders()
        b, t = pixels.shape[:2]
        feats = _encode_unique(self.visual_encoder, pixels.flatten(0, 1).to(self._dtype(self.visual_encoder)))
        return feats.view(b, t, -1)

    def encode_audio(self, windows: Tensor) -> Tensor:
        """HuBERT features of every window: [B, T, S] (jointly normalised) -> Z_a [B, T, d_a]."""
        self._need_encoders()
        b, t = windows.shape[:2]
        flat = windows.flatten(0, 1).to(self._dtype(self.acoustic_encoder))
        return _encode_unique(self.acoustic_encoder.pooled, flat).view(b, t, -1)

    def _need_encoders(self) -> None:
        if self.visual_encoder is None or self.acoustic_encoder is None:
            raise RuntimeError(
                "AffectGPT was built without encoder weights (with_encoders=False): it takes cached features "
                "Z_v/Z_a; build it with the CLIP and HuBERT folders to encode media"
            )

    def multimodal_embeddings(self, z_video: Tensor, z_audio: Tensor) -> dict[str, Tensor]:
        """The fusion head's LLM embeddings keyed by placeholder token: each [B, K, D]."""
        dtype = self._dtype(self.fusion)
        out = self.fusion(z_video.to(dtype), z_audio.to(dtype))
        feats = {"<AudioHere>": out.audio, self.video_placeholder: out.video}
        if out.multi is not None:
            feats["<MultiHere>"] = out.multi
        return feats

    def inputs_embeds(
        self, input_ids: Tensor, features: dict[str, Tensor], placeholder_ids: dict[str, int]
    ) -> Tensor:
        """Prompt embeddings with the multimodal rows spliced in: [B, L] -> [B, L, D]."""
        by_id = {placeholder_ids[name]: f for name, f in features.items()}
        return embed_with_placeholders(self.llm.embed_tokens, input_ids, by_id)

    def spliced_embeds(
        self, input_ids: Tensor, z_video: Tensor, z_audio: Tensor, placeholder_ids: dict[str, int]
    ) -> Tensor:
        """Prompt embeddings with the fusion head's outputs in the placeholder rows: [B, L] -> [B, L, D].

        For the released configuration at inference the fused op writes its three rows straight into
        ``inputs_embeds`` (no intermediate [B,3,D] tensor, no copy); otherwise this is
        :meth:`multimodal_embeddings` followed by :meth:`inputs_embeds`. Both give the same values.
        """
        f = self.cfg.fusion
        single = f.num_video_query_token == f.num_audio_query_token == f.num_multi_query_token == 1
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in self.fusion.parameters())
        names = ("<MultiHere>", "<AudioHere>", self.video_placeholder)
        compute = _autocast_dtype(z_video) or self._dtype(self.fusion)
        if not (
            self.fusion.fused and single and not needs_grad and compute == self.llm.embed_tokens.weight.dtype
        ):
            return self.inputs_embeds(
                input_ids, self.multimodal_embeddings(z_video, z_audio), placeholder_ids
            )
        rows = torch.stack([placeholder_positions(input_ids, placeholder_ids[n], 1, n) for n in names], dim=1)
        ids = input_ids.masked_fill(
            torch.isin(input_ids, rows.new_tensor([placeholder_ids[n] for n in names])), 0
        )
        embeds = self.llm.embed_tokens(ids)
        self.fusion.forward_fused(z_video.to(compute), z_audio.to(compute), out=embeds, rows=rows)
        return embeds

    def training_logits(
        self, batch: TokenBatch, z_video: Tensor, z_audio: Tensor, placeholder_ids: dict[str, int]
    ) -> Tensor:
        """Logits [B, L, V] of a right-padded training batch, as the release computes them at every position.

        Positions are HF's ``arange`` 0..L-1 for every row and the mask is causal ∧ key-not-padding, so
        padding queries (and the final eos, which equals pad) attend to the real tokens before them but not
        to themselves (:func:`~affectrt.models.qwen2.training_attention_mask`). Real positions get the same
        values as with the inference rule; padding positions get the release's values.
        """
        from affectrt.models.qwen2 import training_attention_mask

        feats = self.multimodal_embeddings(z_video, z_audio)
        embeds = self.inputs_embeds(batch.input_ids, feats, placeholder_ids)
        mask = training_attention_mask(batch.attention_mask.to(embeds.device))
        return self.llm(inputs_embeds=embeds, attention_mask=mask)

    def loss(
        self,
        batch: TokenBatch,
        z_video: Tensor,
        z_audio: Tensor,
        placeholder_ids: dict[str, int],
        reduction: str = "mean",
    ) -> Tensor:
        """The release's training loss: causal-LM cross-entropy over the labelled tokens of the whole batch.

        ``reduction="mean"``: the token mean over the batch (the release's value); ``"sum"``: the token sum,
        for callers that divide by a token count gathered over several ranks or micro-batches.
        """
        from affectrt.models.qwen2 import training_attention_mask

        feats = self.multimodal_embeddings(z_video, z_audio)
        embeds = self.inputs_embeds(batch.input_ids, feats, placeholder_ids)
        pad = batch.attention_mask.to(embeds.device)
        if bool((pad[:, 1:] & ~pad[:, :-1]).any()):  # not right-padded: the explicit release mask
            hidden = self.llm.forward_hidden(
                inputs_embeds=embeds, attention_mask=training_attention_mask(pad)
            )
        else:
            # Right-padded rows: a real query's keys (0..q) are all real, so the release mask equals plain
            # causal attention at every position the loss reads; only padding queries (never read) differ.
            # Plain causal runs the faster causal kernels (no [B,1,L,L] mask).
            hidden = self.llm.forward_hidden(inputs_embeds=embeds)
        # Only positions whose next token is labelled enter the loss: project just those rows to the
        # vocabulary (the same logits there; for a 152k vocabulary this skips most of the head's work and
        # memory, since the prompt is most of each row).
        shift_labels = batch.labels[:, 1:].to(hidden.device)
        keep = shift_labels != IGNORE_INDEX
        logits = self.llm.logits_from_hidden(hidden[:, :-1][keep]).float()
        return nn.functional.cross_entropy(logits, shift_labels[keep], reduction=reduction)

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The tensors a checkpoint stores: every parameter that requires grad (fusion + LoRA)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    @staticmethod
    def _dtype(module: nn.Module) -> torch.dtype:
        return next(module.parameters()).dtype


def _autocast_dtype(t: Tensor) -> torch.dtype | None:
    kind = t.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def _encode_unique(encode, x: Tensor) -> Tensor:
    """``encode(x)`` computed once per distinct row of ``x`` [N, ...] -> [N, F].

    Repeated inputs are common in the release's sampling: a clip of 2 s or less gives eight identical audio
    windows, and a video of fewer than 8 frames repeats its last frame. The encoders are frozen and per-sample,
    so encoding each distinct input once and scattering the results back gives the same features.
    """
    if x.shape[0] < 2:
        return _encode_chunked(encode, x)
    flat = x.reshape(x.shape[0], -1)
    # torch.equal stops at the first difference: distinct frames are told apart in microseconds, where an
    # elementwise comparison reads every pixel (1.3 ms for 8 CLIP frames on a 2-core Xeon).
    if not any(torch.equal(flat[i], flat[i - 1]) for i in range(1, flat.shape[0])):
        return _encode_chunked(encode, x)  # the common case: consecutive rows differ, nothing to share
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
    return _encode_chunked(encode, uniq.view(-1, *x.shape[1:]))[inverse]


def cpu_encoder_rows() -> int:
    """Frames or audio windows per encoder call on the CPU: ``AFFECTRT_ENCODER_ROWS``, else 8.

    Past a handful of rows the activations leave the caches and every row gets slower; which count is best
    depends on the CPU's caches. ``python benchmarks/cpu_parts.py --only encoder_rows`` measures it and prints
    the value to set: on the 2-core Xeon (AMX, 2 MB L2 per core; `small` preset, 8 clips) 130.2 ms per clip at
    8 rows against 144.2 at 4 and 130.9 at 16 (commit e0393ee). Read per call, so a process can be tuned without a restart; the count changes no feature
    (each frame and window is encoded on its own) beyond the last bits a different GEMM shape may round.
    """
    raw = os.environ.get("AFFECTRT_ENCODER_ROWS", "").strip()
    if not raw:
        return 8
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(
            f"AFFECTRT_ENCODER_ROWS must be a positive integer (rows per encoder call), got {raw!r}"
        )
    return int(raw)


def _encode_chunked(encode, x: Tensor) -> Tensor:
    rows = cpu_encoder_rows() if x.device.type == "cpu" else x.shape[0]
    if x.shape[0] <= rows:
        return encode(x)
    return torch.cat([encode(chunk) for chunk in x.split(rows)])

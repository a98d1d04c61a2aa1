"""The reference: AffectGPT's inference path as the upstream release runs it, built from ``transformers``/``peft``.

This is the yardstick of the parity tests and the baseline of ``benchmarks/latency.py``: one clip at a time,
``transformers`` models (CLIPModel, HubertModel, Qwen2ForCausalLM) with unmerged ``peft`` LoRA, frames through
PIL and ``CLIPImageProcessor``, audio through ``Wav2Vec2FeatureExtractor`` with the device → host → device
round trips of the release, the fusion head as the release's sequence of small eager ops, and HF ``generate``
with the release's stopping criterion (which checks only row 0) and the folder's eos ids.

It never calls the affectrt code it judges: its frame-index rule, audio windows (pytorchvideo 0.1.5's
``ConstantClipsPerVideoSampler`` arithmetic), prompt text, stop tokens and answer post-processing are written
here from the release's behaviour. Frames come from decord and faces are resized with OpenCV, as in the
release; audio is the release's ``.wav`` read as ``torchaudio.load`` reads 16-bit PCM (stdlib ``wave``),
resampled with torchaudio when the rate is not 16 kHz. When one of these oracles is missing, the reference
raises :class:`OracleMissing` instead of falling back to affectrt's readers. The release's unused ImageBind
fbank features are not computed, which makes this baseline faster than the real one.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from affectrt.checkpoint import AUDIO_DIRS, LLM_DIRS, VISION_DIRS, find_subdir
from affectrt.config import AffectGPTConfig


class OracleMissing(ImportError):
    """A library the release reads media with is not installed: the reference cannot judge without it."""


def _oracle(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OracleMissing(f"the reference needs {module} ({what}); install it: pip install '.[dev]'") from e


# The release's prompt (base_dataset.py get_prompt_for_multimodal) and questions, written out in full.
_RELEASE_PROMPT = {
    "face": "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as "
    "follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw frames from the video and extract "
    "faces from these frames: <Video><FaceHere></Video>. The subtitle of this video is: <Subtitle>{subtitle}"
    "</Subtitle>. Now, please answer my question based on all the provided information. {question} "
    "###Assistant: ",
    "frame": "###Human: The audio and video merged info is: <Multi><MultiHere></Multi>. The audio content is as "
    "follows: <Audio><AudioHere></Audio>. Meanwhile, we uniformly sample raw frames from the video: "
    "<Video><FrameHere></Video>. The subtitle of this video is: <Subtitle>{subtitle}</Subtitle>. Now, please "
    "answer my question based on all the provided information. {question} ###Assistant: ",
}
_RELEASE_QUESTIONS = {
    "ovlabel": "Please recognize all possible emotional states of the character.",
    "description": "Please infer the person's emotional state and provide your reasoning process.",
}


@dataclass
class UpstreamModels:
    clip: torch.nn.Module
    clip_processor: object
    hubert: torch.nn.Module
    feature_extractor: object
    llm: torch.nn.Module  # peft model
    tokenizer: object  # transformers PreTrainedTokenizerFast
    fusion: dict[str, Tensor]  # release key names → tensors
    cfg: AffectGPTConfig
    device: torch.device


def load_upstream(
    model_dir: str | Path, release_sd: dict[str, Tensor], cfg: AffectGPTConfig, device: str = "cpu"
) -> UpstreamModels:
    """Build the reference from the same Hugging Face folders and release-format trainable tensors."""
    import peft
    import transformers

    from affectrt.config import PLACEHOLDER_TOKENS

    dev = torch.device(device)
    vision_dir = find_subdir(model_dir, VISION_DIRS, "CLIP vision")
    audio_dir = find_subdir(model_dir, AUDIO_DIRS, "HuBERT audio")
    llm_dir = find_subdir(model_dir, LLM_DIRS, "Qwen2.5 LLM")
    clip = transformers.CLIPModel.from_pretrained(vision_dir).to(dev).eval()
    m = cfg.media
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": m.image_size},
        crop_size={"height": m.image_size, "width": m.image_size},
        image_mean=list(m.clip_mean),
        image_std=list(m.clip_std),
    )
    hubert = transformers.HubertModel.from_pretrained(audio_dir).to(dev).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=m.sample_rate, padding_value=0.0, do_normalize=True
    )
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(llm_dir / "tokenizer.json"))
    tokenizer.add_special_tokens({"additional_special_tokens": list(PLACEHOLDER_TOKENS)})
    base = transformers.Qwen2ForCausalLM.from_pretrained(llm_dir).to(dev)
    lora = cfg.lora
    llm = peft.get_peft_model(
        base,
        peft.LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.targets),
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    prefix = "llama_model."
    adapters = {k.removeprefix(prefix): v for k, v in release_sd.items() if k.startswith(prefix)}
    missing = set(adapters) - set(llm.state_dict())
    if missing:
        raise KeyError(f"LoRA keys the peft model lacks: {sorted(missing)[:4]}")
    llm.load_state_dict(adapters, strict=False)
    llm.eval()
    fusion = {k: v.to(dev) for k, v in release_sd.items() if not k.startswith(prefix)}
    return UpstreamModels(clip, processor, hubert, extractor, llm, tokenizer, fusion, cfg, dev)


# ------------------------------------------------------------------------------------------ media (CPU)


def release_frame_indices(vlen: int, n_frms: int) -> list[int]:
    """``load_video``/``load_face``: ``np.arange(0, vlen, vlen / min(n, vlen)).astype(int)``, the last index
    repeated when the clip has fewer than ``n_frms`` frames."""
    idx = np.arange(0, vlen, vlen / min(n_frms, vlen)).astype(int).tolist()
    while len(idx) < n_frms:
        idx.append(idx[-1])
    return idx


def read_visual(up: UpstreamModels, video: str | Path | None, face_npy: str | Path | None) -> Tensor:
    """``raw_frame`` / ``raw_face`` of the release: float [3, T, 224, 224] on the CPU."""
    n, size = up.cfg.media.n_frames, up.cfg.media.image_size
    if up.cfg.visual_input == "face":
        cv2 = _oracle("cv2", "the release resizes OpenFace faces with cv2.resize")
        faces = np.load(face_npy)
        resized = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in faces])
        frames = resized[release_frame_indices(len(resized), n)]
    else:
        decord = _oracle("decord", "the release reads frames with decord.VideoReader")
        vr = decord.VideoReader(str(video), height=size, width=size)
        frames = vr.get_batch(release_frame_indices(len(vr), n)).asnumpy()
    return torch.from_numpy(frames).float().permute(3, 0, 1, 2)


def release_audio_clips(duration: float, clip_duration: float = 2, clips_per_video: int = 8) -> list:
    """(start, end) seconds of ImageBind's ``get_clip_timepoints`` driving pytorchvideo 0.1.5's
    ``ConstantClipsPerVideoSampler``: start_i = Fraction(max(D − 2, 0)) / clips_per_video · i, in exact rationals
    (the float subtraction first, as ``float - Fraction`` gives a float)."""
    clip = Fraction(clip_duration)
    max_start = Fraction(max(duration - clip, 0))
    uniform = Fraction(max_start, clips_per_video)
    return [(uniform * i, uniform * i + clip) for i in range(clips_per_video)]


def _read_wav(path: str | Path) -> tuple[Tensor, int]:
    """``torchaudio.load`` of a 16-bit PCM ``.wav``: float32 [channels, samples] = int16 / 32768, and the rate."""
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise OracleMissing(
                f"{path}: the reference reads 16-bit PCM .wav files only, as the release's data has"
            )
        data = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, w.getnchannels()).T
        rate = w.getframerate()
    return torch.from_numpy(data.astype(np.float32) / np.float32(32768)), rate


def read_audio(up: UpstreamModels, path: str | Path) -> Tensor:
    """``raw_audio`` of the release (ImageBind ``load_audio``): [T, 1, 32000] on the CPU, from a ``.wav``."""
    m = up.cfg.media
    waveform, rate = _read_wav(path)
    if rate != m.sample_rate:
        torchaudio = _oracle("torchaudio", "the release resamples with torchaudio.functional.resample")
        waveform = torchaudio.functional.resample(waveform, orig_freq=rate, new_freq=m.sample_rate)
    if waveform.shape[0] == 2:
        waveform = waveform.mean(dim=0, keepdim=True)
    target = int(m.clip_seconds * m.sample_rate)
    if waveform.shape[1] < target:
        waveform = torch.nn.functional.pad(waveform, (0, target - waveform.shape[1]))
    duration = waveform.size(1) / m.sample_rate
    clips = [
        waveform[:, int(start * m.sample_rate) : int(end * m.sample_rate)]
        for start, end in release_audio_clips(duration, m.clip_seconds, m.n_audio_clips)
    ]
    return torch.stack(clips)[:, :1]  # HuBERT reads channel 0: [T, 1, S]


# ------------------------------------------------------------------------------------------ model


def _autocast(up: UpstreamModels):
    return torch.autocast(up.device.type, dtype=torch.float16, enabled=up.device.type == "cuda")


@torch.inference_mode()
def preprocess_visual(up: UpstreamModels, raw: Tensor) -> Tensor:
    """The release's CLIP input path: to the device, every frame back to the host, PIL, the processor, back.

    raw [3, T, 224, 224] float -> pixel_values [T, 3, 224, 224] on the device.
    """
    from PIL import Image

    raw = raw.to(up.device)[None]  # postprocess_*: to the GPU
    b, c, t, h, w = raw.shape
    frames = raw.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c)
    images = [Image.fromarray(f.cpu().numpy().astype(np.uint8)) for f in frames]
    return up.clip_processor(images, return_tensors="pt").pixel_values.to(up.device)


@torch.inference_mode()
def clip_forward(up: UpstreamModels, pixels: Tensor) -> Tensor:
    """CLIPModel.get_image_features under the release's autocast: [T, 3, H, W] -> [1, T, d_v]."""
    with _autocast(up):
        feats = up.clip.get_image_features(pixel_values=pixels)
    feats = feats.pooler_output if hasattr(feats, "pooler_output") else feats
    return feats[None]


def encode_visual(up: UpstreamModels, raw: Tensor) -> Tensor:
    """raw [3, T, 224, 224] -> Z_v [1, T, d_v]."""
    return clip_forward(up, preprocess_visual(up, raw))


@torch.inference_mode()
def preprocess_audio(up: UpstreamModels, raw: Tensor) -> Tensor:
    """The release's HuBERT input path: to the device, back to the host for the joint normalisation, back.

    raw [T, 1, S] -> input values [T, S] on the device.
    """
    raw = raw.to(up.device)[None]  # [1, T, 1, S]
    b, t = raw.shape[:2]
    flat = raw[:, :, 0, :].reshape(b * t, -1)
    values = up.feature_extractor(flat.cpu(), sampling_rate=up.cfg.media.sample_rate, return_tensors="pt")
    return values.input_values[0].to(up.device)


@torch.inference_mode()
def hubert_forward(up: UpstreamModels, values: Tensor) -> Tensor:
    """HubertModel, last-4 hidden-state average, time mean: [T, S] -> Z_a [1, T, d_a]."""
    with _autocast(up):
        out = up.hubert(values, output_hidden_states=True)
    # transformers 4.49 (the release) returns LN(last layer) as the last hidden state; 5.x returns it before
    # the final LayerNorm, so take last_hidden_state for that entry.
    states = [*out.hidden_states[-up.cfg.audio.pool_last_layers : -1], out.last_hidden_state]
    return torch.stack(states).mean(0).mean(1)[None]


def encode_audio(up: UpstreamModels, raw: Tensor) -> Tensor:
    """raw [T, 1, S] -> Z_a [1, T, d_a]."""
    return hubert_forward(up, preprocess_audio(up, raw))


@torch.inference_mode()
def fuse(up: UpstreamModels, z_v: Tensor, z_a: Tensor) -> dict[str, Tensor]:
    """The released "attention" fusion as the release writes it (MODEL_SPEC §1.4, §1.5a)."""
    f = up.fusion
    lin = torch.nn.functional.linear
    with _autocast(up):
        att_v = lin(z_v, f["video_attention_mlp.weight"], f["video_attention_mlp.bias"])  # [B,T,1]
        h_v = lin(torch.sum(z_v * att_v, dim=1), f["affectgpt_proj.weight"], f["affectgpt_proj.bias"])
        att_a = lin(z_a, f["audio_attention_mlp.weight"], f["audio_attention_mlp.bias"])
        h_a = lin(torch.sum(z_a * att_a, dim=1), f["audio_llama_proj.weight"], f["audio_llama_proj.bias"])
        u_v = lin(z_v.mean(1), f["multi_video_embs.weight"], f["multi_video_embs.bias"])
        u_a = lin(z_a.mean(1), f["multi_audio_embs.weight"], f["multi_audio_embs.bias"])
        att = lin(torch.cat([u_v, u_a], dim=1), f["attention_mlp.weight"], f["attention_mlp.bias"])
        gate = lin(att, f["fc_att.weight"], f["fc_att.bias"])  # [B, 2], no softmax
        stacked = torch.stack([u_v, u_a], dim=2)  # [B, 1024, 2]
        fused = torch.matmul(stacked, gate.unsqueeze(-1)).squeeze(-1)
        h_m = lin(fused, f["multi_llama_proj.weight"], f["multi_llama_proj.bias"])
    video_token = "<FaceHere>" if up.cfg.visual_input == "face" else "<FrameHere>"
    return {"<MultiHere>": h_m[:, None], "<AudioHere>": h_a[:, None], video_token: h_v[:, None]}


def release_prompt(cfg: AffectGPTConfig, subtitle: str, question: str) -> str:
    """The release's prompt text: template, subtitle and question, each ``<…Here>`` repeated K times."""
    prompt = _RELEASE_PROMPT[cfg.visual_input].format(
        subtitle=subtitle, question=_RELEASE_QUESTIONS.get(question, question)
    )
    f = cfg.fusion
    for token, k in (
        ("<MultiHere>", f.num_multi_query_token),
        ("<AudioHere>", f.num_audio_query_token),
        ("<FaceHere>", f.num_video_query_token),
        ("<FrameHere>", f.num_video_query_token),
    ):
        prompt = prompt.replace(token, token * k)
    return prompt


@torch.inference_mode()
def prompt_embeds(up: UpstreamModels, feats: dict[str, Tensor], subtitle: str, question: str) -> Tensor:
    """``answer_sample``'s splicing: placeholder ids → 0, embed, concatenate the features in. -> [1, L, D]."""
    prompt = release_prompt(up.cfg, subtitle, question)
    ids = up.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(up.device)
    embed = up.llm.get_input_embeddings()
    tok_ids = {name: up.tokenizer.convert_tokens_to_ids(name) for name in feats}
    clean = ids.clone()
    for tid in tok_ids.values():
        clean[clean == tid] = 0
    embeds = embed(clean)
    for name, tid in tok_ids.items():
        start = int((ids[0] == tid).nonzero()[0, 0])
        k = feats[name].shape[1]
        embeds = torch.cat([embeds[:, :start], feats[name].to(embeds.dtype), embeds[:, start + k :]], dim=1)
    return embeds


def release_stop_words(tokenizer) -> list[list[int]]:
    """The release's stop words: ``<|im_end|>``, the token ``###``, and the splits ``##``+``#``, ``#``+``##``
    (each only when the vocabulary has those tokens)."""
    vocab = tokenizer.get_vocab()
    stops = [[vocab["<|im_end|>"]]]
    for pieces in (("###",), ("##", "#"), ("#", "##")):
        if all(p in vocab for p in pieces):
            stops.append([vocab[p] for p in pieces])
    return stops


@torch.inference_mode()
def generate_ids(
    up: UpstreamModels,
    embeds: Tensor,
    max_new_tokens: int,
    stop_words: list[list[int]] | None = None,
    do_sample: bool = False,
) -> list[int]:
    """HF ``generate`` with the release's ``StoppingCriteriaSub`` (row 0 only) and the LLM folder's
    ``generation_config`` (its eos ids and top-k, which the release does not override). Returns row 0's ids.

    ``stop_words``: the release's by default; ``[]`` for none (timing a fixed number of tokens).
    """
    import transformers

    stops = [
        torch.tensor(s, device=embeds.device)
        for s in (release_stop_words(up.tokenizer) if stop_words is None else stop_words)
    ]

    class StoppingCriteriaSub(transformers.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            done = any(
                len(s) <= input_ids.shape[1] and bool(torch.all(s == input_ids[0][-len(s) :])) for s in stops
            )
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    extra = {} if stop_words is None else {"eos_token_id": None}
    out = up.llm.generate(
        inputs_embeds=embeds,
        attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device),
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        top_p=0.9,
        temperature=1.0,
        num_beams=1,
        min_length=1,
        repetition_penalty=1.0,
        stopping_criteria=transformers.StoppingCriteriaList([StoppingCriteriaSub()]),
        pad_token_id=up.tokenizer.convert_tokens_to_ids("<|im_end|>"),
        **extra,
    )
    return out[0].tolist()


def release_answer_text(decoded: str) -> str:
    """``answer_sample``'s post-processing of the output decoded with its special tokens."""
    if "<|im_start|>" in decoded:
        decoded = decoded.split("<|im_start|>")[1]
    if "<|im_end|>" in decoded:
        decoded = decoded.split("<|im_end|>")[0]
    decoded = decoded.rsplit("###", 1)[0]
    return decoded.split("Assistant:")[-1].strip()


def answer(
    up: UpstreamModels,
    video: str | Path | None,
    subtitle: str,
    face_npy: str | Path | None = None,
    audio: str | Path | None = None,
    question: str = "ovlabel",
    max_new_tokens: int = 64,
) -> tuple[str, list[int]]:
    """One clip end to end, as ``inference_hybird.py`` does it (``audio``: the clip's ``.wav``).

    Returns (text, generated ids)."""
    z_v = encode_visual(up, read_visual(up, video, face_npy))
    z_a = encode_audio(up, read_audio(up, audio))
    embeds = prompt_embeds(up, fuse(up, z_v, z_a), subtitle, question)
    ids = generate_ids(up, embeds, max_new_tokens)
    return release_answer_text(up.tokenizer.decode(ids, skip_special_tokens=False)), ids

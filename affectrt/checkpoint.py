"""Loading the three base models from Hugging Face folders, AffectGPT release checkpoints, and saving.

A model directory holds the three base models as Hugging Face folders, under affectrt's names or the
release's (``config.py`` of the release):

    MODEL_DIR/vision  or MODEL_DIR/clip-vit-large-patch14      CLIP (full CLIPModel or vision-only)
    MODEL_DIR/audio   or MODEL_DIR/chinese-hubert-large        HuBERT (stable-layer-norm)
    MODEL_DIR/llm     or MODEL_DIR/Qwen2.5-7B-Instruct         Qwen2.5 (+ tokenizer.json)

The AffectGPT checkpoint is the release's ``.pth`` (trainable tensors under the release's key names, in
``["model"]``, plus optimizer state that is ignored), loaded with ``weights_only=True``, the same tensors
converted to ``.safetensors`` (release key names, no affectrt metadata), or affectrt's own ``.safetensors``
(trainable tensors under affectrt's names, the config in the metadata). Every key is
accounted for: missing, unexpected or mis-shaped keys raise one :class:`WeightsError` naming them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor

from affectrt.config import AffectGPTConfig, config_from_dict, config_to_dict, get_preset
from affectrt.models.hf_io import WeightsError, check_keys, load_state_dict, read_config

VISION_DIRS = ("vision", "clip-vit-large-patch14")
AUDIO_DIRS = ("audio", "chinese-hubert-large")
LLM_DIRS = ("llm", "Qwen2.5-7B-Instruct")
RELEASE_LLM_PREFIX = "llama_model."
# Buffers some release checkpoints carry that hold no learned state (MODEL_SPEC §8).
_IGNORED_RELEASE_SUFFIXES = (".position_ids",)


def find_subdir(model_dir: str | Path, names: tuple[str, ...], what: str) -> Path:
    """The first of ``names`` that exists below ``model_dir``; raises naming all of them."""
    for name in names:
        path = Path(model_dir) / name
        if (path / "config.json").is_file():
            return path
    raise FileNotFoundError(
        f"{model_dir}: no {what} folder; expected one of {', '.join(names)} holding a Hugging Face "
        "config.json and weights"
    )


def generation_top_k(model_dir: str | Path, default: int = 20) -> int:
    """The LLM folder's ``generation_config.json`` top-k: the one sampling setting the release does not pass."""
    try:
        path = find_subdir(model_dir, LLM_DIRS, "Qwen2.5 LLM") / "generation_config.json"
    except FileNotFoundError:
        return default
    if not path.is_file():
        return default
    value = json.loads(path.read_text()).get("top_k")
    return int(value) if value is not None else default


def config_from_folders(
    vision_dir: str | Path, audio_dir: str | Path, llm_dir: str | Path, variant: str = "face"
) -> AffectGPTConfig:
    """The release configuration with the three base models' dimensions read from their folders."""
    from affectrt.models.clip import clip_vision_config_from_hf
    from affectrt.models.hubert import hubert_config_from_hf
    from affectrt.models.qwen2 import qwen2_config_from_hf

    base = get_preset(f"affectgpt-7b-{variant}")
    return dataclasses.replace(
        base,
        name=f"affectgpt-{variant}",
        vision=clip_vision_config_from_hf(read_config(vision_dir)),
        audio=hubert_config_from_hf(read_config(audio_dir)),
        llm=qwen2_config_from_hf(read_config(llm_dir)),
    )


def load_base_weights(
    model: torch.nn.Module,
    vision_dir: Path,
    audio_dir: Path,
    llm_dir: Path,
    llm_dtype: torch.dtype | None = None,
) -> None:
    """Load CLIP, HuBERT and Qwen2.5 weights from their Hugging Face folders into ``model``.

    The encoders keep float32 (the release loads them with AutoModel's default); the LLM takes ``llm_dtype``
    (the release: float16), or the dtype stored in its files when None.
    """
    model.visual_encoder.load_hf_state_dict(
        load_state_dict(vision_dir, keep=("vision_model.", "visual_projection.")), source=str(vision_dir)
    )
    model.acoustic_encoder.load_hf_state_dict(load_state_dict(audio_dir), source=str(audio_dir))
    model.llm.load_hf_state_dict(load_state_dict(llm_dir), source=str(llm_dir), dtype=llm_dtype)


def release_to_affectrt(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Trainable tensors under the release's key names (a ``.pth``'s ``model`` dict) → affectrt's names."""
    from affectrt.models.lora import lora_state_dict_from_release

    sd = {k: v for k, v in sd.items() if not k.endswith(_IGNORED_RELEASE_SUFFIXES)}
    llm_sd = {k: v for k, v in sd.items() if k.startswith(RELEASE_LLM_PREFIX)}
    ours = {f"fusion.{k}": v for k, v in sd.items() if not k.startswith(RELEASE_LLM_PREFIX)}
    ours.update(
        {f"llm.{k}": v for k, v in lora_state_dict_from_release(llm_sd, prefix=RELEASE_LLM_PREFIX).items()}
    )
    return ours


def release_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The model's trainable tensors under the release's key names (inverse of :func:`release_to_affectrt`)."""
    from affectrt.models.lora import lora_state_dict_to_release

    trainable = model.trainable_state_dict()
    sd = {k.removeprefix("fusion."): v.clone() for k, v in trainable.items() if k.startswith("fusion.")}
    llm = {k.removeprefix("llm."): v.clone() for k, v in trainable.items() if k.startswith("llm.")}
    sd.update(lora_state_dict_to_release(llm, prefix=RELEASE_LLM_PREFIX))
    return sd


def trainable_tensors(path: str | Path) -> dict[str, Tensor]:
    """The trainable tensors (affectrt names) of any checkpoint: a release ``.pth``, the same tensors
    converted to ``.safetensors`` (release key names), or an affectrt ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    fix = "pass the release's .pth, its tensors as .safetensors, or an affectrt .safetensors checkpoint"
    if path.suffix == ".safetensors":
        try:
            tensors, meta = _read_safetensors(path)
        except Exception as e:  # safetensors raises its own error types for a damaged or foreign file
            raise WeightsError(f"{path}: not a readable safetensors file ({type(e).__name__}); {fix}") from e
        # A converted .pth holds the release's names, whatever metadata the converter wrote.
        return tensors if meta.get("format") == "affectrt" else release_to_affectrt(tensors)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        # torch's own message may advise weights_only=False, which would run arbitrary code from the file:
        # never relay it.
        raise WeightsError(f"{path}: not a PyTorch checkpoint torch.load can read safely; {fix}") from e
    sd = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: not an AffectGPT checkpoint (expected a dict of tensors under 'model')")
    return release_to_affectrt(sd)


def load_release_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load an AffectGPT release ``.pth`` (trainable tensors) into a model with LoRA attached."""
    load_trainable(model, trainable_tensors(path), source=str(path))


def load_trainable(model: torch.nn.Module, sd: dict[str, Tensor], source: str) -> None:
    """Copy a full set of trainable tensors (affectrt names) into ``model``; every key must match."""
    expected = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    check_keys(expected, sd, source)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in sd.items():
            params[name].copy_(value.to(params[name].dtype))


def save_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Save the trainable tensors as safetensors with the config in the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in model.trainable_state_dict().items()}
    meta = {"format": "affectrt", "config": json.dumps(config_to_dict(model.cfg))}
    save_file(tensors, str(path), metadata=meta)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], AffectGPTConfig | None]:
    """Tensors and config of an affectrt ``.safetensors`` checkpoint."""
    tensors, meta = _read_safetensors(path)
    if meta.get("format") != "affectrt":
        raise WeightsError(f"{path}: not an affectrt checkpoint (no 'format: affectrt' metadata)")
    cfg = config_from_dict(json.loads(meta["config"])) if "config" in meta else None
    return tensors, cfg


def _read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> None:
    """Load any checkpoint :func:`trainable_tensors` reads into ``model``; every key must match."""
    load_trainable(model, trainable_tensors(path), source=str(path))


def load_model(
    model_dir: str | Path,
    checkpoint: str | Path | None = None,
    variant: str = "face",
    llm_dtype: torch.dtype | None = torch.float32,
):
    """Build AffectGPT from a model directory (see the module docstring) and an optional checkpoint.

    ``llm_dtype`` is the LLM's base-weight dtype (``torch.float16`` as in the release; None keeps the files'
    dtype). Encoders and the fusion head stay float32 and LoRA adapters float32, as in the release; on a GPU
    the pipeline runs encoders and fusion under float16 autocast like the release's ``maybe_autocast``.
    Returns ``(model, tokenizer)``. Without a checkpoint the fusion head and LoRA keep their initial values
    (LoRA B = 0, so the LLM is the base model): fine for tests, not for real answers.
    """
    from affectrt.models.affectgpt import AffectGPT
    from affectrt.models.fusion import FusionHead
    from affectrt.text.tokenizer import Tokenizer

    vision_dir = find_subdir(model_dir, VISION_DIRS, "CLIP vision")
    audio_dir = find_subdir(model_dir, AUDIO_DIRS, "HuBERT audio")
    llm_dir = find_subdir(model_dir, LLM_DIRS, "Qwen2.5 LLM")
    cfg = config_from_folders(vision_dir, audio_dir, llm_dir, variant=variant)
    tokenizer = Tokenizer.from_folder(llm_dir)
    if max(tokenizer.placeholder_ids.values()) >= cfg.llm.vocab_size:
        raise WeightsError(
            f"{llm_dir}: the placeholder tokens get ids up to {max(tokenizer.placeholder_ids.values())}, beyond "
            f"the {cfg.llm.vocab_size}-row embedding; the release never resizes it, so the tokenizer and model "
            "do not belong together"
        )
    # The base models are built on the meta device and their weights assigned from the files: no random
    # init of billions of parameters, no second copy. The small fusion head is initialised for real.
    with torch.device("meta"):
        model = AffectGPT(cfg, with_lora=False)
    model.fusion = FusionHead(cfg)
    load_base_weights(model, vision_dir, audio_dir, llm_dir, llm_dtype=llm_dtype)
    model.add_lora()
    left = [n for n, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise WeightsError(f"{model_dir}: tensors left unloaded after loading the base models: {left[:8]}")
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval(), tokenizer

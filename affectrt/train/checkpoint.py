"""Training checkpoints: full state, written atomically; export to the release's ``.pth`` layout.

A training checkpoint (``last.pt``) holds the trainable tensors (affectrt names), the optimizer, loss scaler
and scheduler states, the RNG states (torch CPU/CUDA, Python, NumPy), the data order and the loop position,
so ``--resume`` continues with a bit-identical loss curve on the CPU. It is written to a temporary file in
the same folder, fsynced and renamed over the old one: a crash leaves the previous checkpoint intact.

The export (:func:`export_release`) is what the release's runner saves and what ``affectrt infer
--checkpoint`` and :func:`affectrt.checkpoint.load_model` load: ``{"model": trainable tensors under the
release's key names, "config", "epoch"}``, the fusion head under its own names and LoRA under
``llama_model.base_model.model.model.….lora_A.default.weight``.
"""

from __future__ import annotations

import io
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from affectrt._atomic import fsync_replace
from affectrt.checkpoint import RELEASE_LLM_PREFIX


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file next to ``path``, fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    buf = io.BytesIO()
    torch.save(obj, buf)
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
    fsync_replace(tmp, path)
    return path


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_state(path: str | os.PathLike) -> dict:
    """A training checkpoint written by :func:`atomic_save` (full state; trusted, so not weights-only)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def release_state_dict(trainable: dict[str, Tensor]) -> dict[str, Tensor]:
    """affectrt trainable names -> the release's checkpoint keys (fusion head bare, LoRA in peft form)."""
    from affectrt.models.lora import lora_state_dict_to_release

    sd = {k.removeprefix("fusion."): v for k, v in trainable.items() if k.startswith("fusion.")}
    llm = {k.removeprefix("llm."): v for k, v in trainable.items() if k.startswith("llm.")}
    sd.update(lora_state_dict_to_release(llm, prefix=RELEASE_LLM_PREFIX))
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


def release_name(epoch: int, loss: float) -> str:
    """The release's file name: ``checkpoint_<epoch:06d>_loss_<epoch-mean loss %.3f>.pth``."""
    return f"checkpoint_{epoch:06d}_loss_{loss:.3f}.pth"


def export_release(
    trainable: dict[str, Tensor], path: str | os.PathLike, epoch: int, config: dict | None = None
) -> Path:
    """Write trainable tensors (affectrt names) in the release's ``.pth`` layout (atomically)."""
    obj = {"model": release_state_dict(trainable), "config": config or {}, "epoch": epoch}
    return atomic_save(obj, path)


def save_final(trainable: dict[str, Tensor], cfg, path: str | os.PathLike) -> Path:
    """affectrt ``.safetensors`` of the trainable tensors + config (what ``load_checkpoint`` reads), atomically."""
    import json

    from safetensors.torch import save_file

    from affectrt.config import config_to_dict

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    meta = {"format": "affectrt", "config": json.dumps(config_to_dict(cfg))}
    save_file({k: v.contiguous() for k, v in trainable.items()}, str(tmp), metadata=meta)
    fsync_replace(tmp, path)
    return path

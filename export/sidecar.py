"""The JSON sidecar beside every exported artifact, and the check a runner makes before trusting one.

``ARTIFACT.json`` (e.g. ``vision.onnx.json``, ``vision.plan.json``) records:

    format, piece, kind ("onnx" | "tensorrt"), file, file_bytes
    weights_sha256   hash of the exported module's state dict (names, dtypes, shapes, bytes), before any cast
    config           the configuration the piece was built from (the model sub-config + media sizes)
    dtype            the compute dtype of the artifact ("float32" | "float16" | "bfloat16")
    inputs, outputs  [{name, shape (ints and axis names), dtype}], dynamic_axes {input/output: {dim: name}}
    profiles         TensorRT optimisation profiles (min/opt/max per input), [] for ONNX
    versions         torch, onnx, onnxscript, onnxruntime, tensorrt, affectrt
    check            the export's parity check against PyTorch (max errors per batch size), if run

:func:`check_sidecar` compares a sidecar with what the caller is about to run (the weights hash and config of
the live model, the TensorRT version and GPU for engines) and raises :class:`StaleArtifactError` naming the
file and every difference.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "affectrt-export/1"


class StaleArtifactError(RuntimeError):
    """An exported artifact does not match the model, config or runtime it is asked to serve."""


def weights_hash(module: nn.Module) -> str:
    """sha256 over the state dict: every (name, dtype, shape, raw bytes) in name order.

    Hashes the weights as they are (a float32 module and its float16 copy hash differently), so export
    hashes the source module before casting. Tensors on a GPU are copied to the host one at a time.
    """
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        # Raw bytes through a same-size integer view: numpy has no bfloat16.
        flat = t.contiguous().reshape(-1).cpu()
        if flat.numel():
            ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()]
            h.update(flat.view(ints).numpy().tobytes())
    return h.hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of everything that shapes an artifact (None when not installed)."""
    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    trt = _version("tensorrt") or _version("tensorrt-cu12") or _version("tensorrt-cu13")
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "onnxruntime": ort,
        "tensorrt": trt,
        "affectrt": _version("affectrt"),
    }


def sidecar_path(artifact: str | Path) -> Path:
    """``vision.onnx`` -> ``vision.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` (plus format, file name and size, versions) beside ``artifact``; returns its path."""
    artifact = Path(artifact)
    full = {
        "format": FORMAT,
        "file": artifact.name,
        "file_bytes": artifact.stat().st_size,
        "versions": versions(),
        **data,
    }
    path = sidecar_path(artifact)
    path.write_text(json.dumps(full, indent=2, default=str) + "\n")
    return path


def read_sidecar(artifact: str | Path) -> dict[str, Any]:
    """The sidecar of ``artifact``; raises :class:`StaleArtifactError` when missing or unreadable."""
    artifact, path = Path(artifact), sidecar_path(artifact)
    if not artifact.is_file():
        raise FileNotFoundError(f"{artifact}: no such artifact; export it with `affectrt export`")
    if not path.is_file():
        raise StaleArtifactError(
            f"{artifact}: its sidecar {path.name} is missing, so nothing says which weights it holds; "
            "re-export it with `affectrt export`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StaleArtifactError(f"{path}: not valid JSON ({e}); re-export the artifact") from None
    if data.get("format") != FORMAT:
        raise StaleArtifactError(f"{path}: format {data.get('format')!r}, expected {FORMAT!r}; re-export it")
    return data


def _diff(expected: Any, found: Any, where: str) -> list[str]:
    """Human-readable differences between two JSON-like values (dicts compared key by key)."""
    if isinstance(expected, dict) and isinstance(found, dict):
        out = []
        for key in sorted(set(expected) | set(found), key=str):
            out += _diff(expected.get(key), found.get(key), f"{where}.{key}")
        return out
    if isinstance(expected, (list, tuple)) and isinstance(found, (list, tuple)):
        expected, found = list(expected), list(found)
    return [] if expected == found else [f"{where}: artifact has {found!r}, model has {expected!r}"]


def check_sidecar(artifact: str | Path, sidecar: dict[str, Any], expected: dict[str, Any]) -> None:
    """Raise :class:`StaleArtifactError` unless ``sidecar`` matches ``expected`` on every key it names.

    ``expected`` holds what the live side has: e.g. ``piece``, ``kind``, ``weights_sha256``, ``config``,
    ``tensorrt`` (the installed version, for engines), ``device_name``. The artifact's file size is
    compared with the one recorded at export (a replaced file without a new sidecar).
    """
    artifact = Path(artifact)
    problems = []
    if artifact.stat().st_size != sidecar.get("file_bytes"):
        problems.append(
            f"file size: {artifact.stat().st_size} bytes, the sidecar recorded {sidecar.get('file_bytes')}"
        )
    for key, value in expected.items():
        if key == "weights_sha256":
            if sidecar.get(key) != value:
                problems.append(
                    f"weights_sha256: the artifact was exported from other weights "
                    f"({str(sidecar.get(key))[:12]}… vs the model's {value[:12]}…)"
                )
        elif key == "tensorrt":
            found = sidecar.get("tensorrt_version") or (sidecar.get("versions") or {}).get("tensorrt")
            if found != value:
                problems.append(
                    f"tensorrt: engine built with {found}, installed {value} (engines are not portable)"
                )
        else:
            problems += _diff(value, sidecar.get(key), key)
    if problems:
        raise StaleArtifactError(
            f"{artifact}: stale or mismatched artifact, refusing to run it:\n  - "
            + "\n  - ".join(problems)
            + "\nRe-export it from this model with `affectrt export` (or pass the matching model/checkpoint)."
        )

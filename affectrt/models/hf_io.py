"""Reading Hugging Face model folders: ``config.json`` and the weights, without ``transformers``.

Weights are read from ``model.safetensors``, a sharded ``model.safetensors.index.json``, or, for old
folders, ``pytorch_model.bin`` (loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch


class WeightsError(ValueError):
    """A weight file or state dict does not fit the model it is loaded into."""


def read_config(folder: str | Path) -> dict:
    """Return the parsed ``config.json`` of a Hugging Face model folder."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no config.json; pass the folder of a Hugging Face model "
            "(the one holding config.json and the weights)"
        )
    return json.loads(path.read_text())


def weight_files(folder: str | Path) -> list[Path]:
    """The weight files of ``folder`` in load order; raises if there are none."""
    folder = Path(folder)
    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if bins:
        return [b for b in bins if not b.name.endswith(".index.json")]
    raise FileNotFoundError(
        f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def prefault(t: torch.Tensor) -> torch.Tensor:
    """Map every page of ``t`` now; returns ``t``.

    safetensors hands out tensors backed by a memory map of the file, whose pages are mapped at their first
    read. For most weights that is the warm-up, but the embedding table is read a few rows per decode step,
    each new token's rows faulting in then: 1-9 ms per step for the `medium` preset's batch of 16 (2-core
    Xeon), the whole cost of its lookup. One read per page at load maps them all (the file is read once,
    as a copy would; the memory stays the page cache's).
    """
    if t.device.type == "cpu" and t.numel():
        t.reshape(-1)[:: max(1, 4096 // t.element_size())].sum()
    return t


def load_state_dict(folder: str | Path, keep: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Load every tensor of a Hugging Face folder (only keys starting with a prefix in ``keep``).

    Reading by prefix lets the CLIP loader skip the text tower of a full ``CLIPModel`` folder.
    """
    prefixes = tuple(keep) if keep is not None else None
    out: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    if prefixes is None or key.startswith(prefixes):
                        out[key] = prefault(f.get_tensor(key))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
            out.update({k: v for k, v in sd.items() if prefixes is None or k.startswith(prefixes)})
    return out


def check_keys(
    expected: dict[str, torch.Size],
    given: dict[str, torch.Tensor],
    source: str,
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Raise one :class:`WeightsError` naming every missing, unexpected or mis-shaped key.

    ``ignore_unexpected`` holds key prefixes that may be present and are deliberately not loaded.
    """
    ignore = tuple(ignore_unexpected)
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(k for k in set(given) - set(expected) if not (ignore and k.startswith(ignore)))
    shapes = sorted(
        f"{k}: expected {tuple(expected[k])}, got {tuple(given[k].shape)}"
        for k in set(expected) & set(given)
        if tuple(expected[k]) != tuple(given[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            parts.append(f"mis-shaped keys ({len(shapes)}): {_short(shapes)}")
        raise WeightsError(
            f"{source}: the weights do not fit the model; "
            + "; ".join(parts)
            + ". Check that the folder/checkpoint matches the configuration (preset or config.json)."
        )


def _short(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... (+{len(items) - limit} more)" if len(items) > limit else "")


def load_converted(module: torch.nn.Module, own: dict[str, torch.Tensor]) -> None:
    """Load ``own`` (already in ``module``'s key names) strictly, cast to the module's parameter dtypes.

    On a ``meta`` module the tensors are assigned (no random init of hundreds of MB, no double copy).
    """
    params = dict(module.named_parameters())
    own = {k: t.to(params[k].dtype) if k in params else t for k, t in own.items()}
    module.load_state_dict(own, strict=True, assign=any(p.is_meta for p in params.values()))

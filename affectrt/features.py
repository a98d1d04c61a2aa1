"""The frozen-encoder feature cache: Z_v [T, d_v] and Z_a [T, d_a] per clip, computed once (DESIGN §8).

Content-addressed: a clip's key is

    sha256( media file hashes (sha256 of the bytes of the face .npy or video .mp4, and of the .wav)
            + preprocessing settings (media config, visual input, normalisation, encoder mode, dtype)
            + encoder weights hash )

so editing a clip, changing a preprocessing setting or swapping encoder weights gives new keys (old entries
are simply not hit). Cached features are the inference rule's: encoders in eval mode, HuBERT input normalised
per clip. Layout of a cache folder::

    shards/<uuid>.safetensors   tensors "<key>.v" and "<key>.a"; written to a temporary name, fsynced, renamed
    hashes.jsonl                memo of media file hashes by (path, size, mtime_ns): files are hashed once
    manifests/<id>.json         the settings and weights hash of each feature set (training finds it here)
    failures.jsonl              clips whose media could not be read, with the reason

Several writers may fill one cache at once (each writes its own shards; a rename is atomic), a killed run
loses at most its unflushed shard, and a rerun skips every key already present (resumable).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from affectrt._atomic import fsync_replace
from affectrt.config import AffectGPTConfig

log = logging.getLogger("affectrt.features")

CACHE_FORMAT = 1


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_sha256(module: torch.nn.Module) -> str:
    """Hex sha256 over a module's state dict (sorted names, shapes, dtypes and bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def feature_settings(cfg: AffectGPTConfig, dtype: str = "float32") -> dict:
    """Everything besides media and weights that decides the cached values (part of every key).

    Returned in its JSON form (tuples as lists), so it compares equal to a manifest read back from disk.
    """
    return _json_form(
        {
            "format": CACHE_FORMAT,
            "visual_input": cfg.visual_input,
            "media": dataclasses.asdict(cfg.media),
            "video_dim": cfg.video_dim,
            "audio_dim": cfg.audio_dim,
            "encoder_mode": "eval",
            "audio_normalisation": "per-clip",
            "dtype": dtype,
        }
    )


def _json_form(obj: dict) -> dict:
    return json.loads(json.dumps(obj))


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def settings_id(settings: dict, weights: str) -> str:
    """Identity of one feature set (settings + weights): names its manifest."""
    return _digest({"settings": settings, "weights": weights})[:24]


class FeatureCache:
    """A feature cache folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        (self.root / "manifests").mkdir(exist_ok=True)
        self._index: dict[str, Path] = {}
        self._seen: set[Path] = set()
        self._hashes: dict[tuple[str, int, int], str] | None = None
        self.refresh()

    # -- keys ------------------------------------------------------------------------------------------

    def media_hash(self, path: str | os.PathLike) -> str:
        """sha256 of a media file, memoised by (absolute path, size, mtime_ns) in ``hashes.jsonl``."""
        p = Path(path).resolve()
        st = p.stat()
        memo_key = (str(p), st.st_size, st.st_mtime_ns)
        memo = self._load_hashes()
        if memo_key not in memo:
            memo[memo_key] = file_sha256(p)
            line = json.dumps(
                {
                    "path": memo_key[0],
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "sha256": memo[memo_key],
                }
            )
            with open(self.root / "hashes.jsonl", "a") as f:  # one short append: atomic with O_APPEND
                f.write(line + "\n")
        return memo[memo_key]

    def _load_hashes(self) -> dict[tuple[str, int, int], str]:
        if self._hashes is None:
            self._hashes = {}
            path = self.root / "hashes.jsonl"
            if path.is_file():
                for line in path.read_text().splitlines():
                    try:
                        r = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a crash: ignore it, it is re-hashed
                        continue
                    self._hashes[(r["path"], r["size"], r["mtime_ns"])] = r["sha256"]
        return self._hashes

    def key(self, media: Sequence[str | os.PathLike], settings: dict, weights: str) -> str:
        """The content key of one clip: its media files' hashes + settings + encoder weights hash."""
        return _digest(
            {"media": [self.media_hash(m) for m in media], "settings": settings, "weights": weights}
        )

    # -- manifests ---------------------------------------------------------------------------------------

    def write_manifest(self, settings: dict, weights: str, info: dict | None = None) -> str:
        sid = settings_id(settings, weights)
        data = {"settings": settings, "weights": weights, **(info or {})}
        _atomic_write(self.root / "manifests" / f"{sid}.json", json.dumps(data, indent=1).encode())
        return sid

    def find_weights(self, settings: dict, weights: str | None = None) -> str:
        """The encoder weights hash of the feature set with these settings.

        With ``weights`` given it must exist; otherwise exactly one feature set with these settings must be in
        the cache (several: pass the one to use). Raises ``LookupError`` saying what to do.
        """
        found = []
        for path in sorted((self.root / "manifests").glob("*.json")):
            m = json.loads(path.read_text())
            if m.get("settings") == settings:
                found.append(m["weights"])
        if weights is not None:
            if weights not in found:
                raise LookupError(
                    f"{self.root}: no features for encoder weights {weights[:16]}… with these settings"
                )
            return weights
        if not found:
            raise LookupError(
                f"{self.root}: no cached features with these preprocessing settings "
                f"({settings['visual_input']}, {settings['dtype']}); run `affectrt features` first"
            )
        if len(set(found)) > 1:
            raise LookupError(
                f"{self.root}: features of {len(set(found))} encoder weight sets match; set "
                f"features.encoder_weights to one of {[w[:16] for w in sorted(set(found))]}"
            )
        return found[0]

    # -- tensors -----------------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Index the shards written since the last call (by this or any other process)."""
        from safetensors import safe_open

        for shard in sorted((self.root / "shards").glob("*.safetensors")):
            if shard in self._seen:
                continue
            with safe_open(str(shard), framework="pt") as f:
                for name in f.keys():
                    if name.endswith(".v"):
                        self._index[name[:-2]] = shard
            self._seen.add(shard)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def __len__(self) -> int:
        return len(self._index)

    def get(self, key: str) -> tuple[Tensor, Tensor]:
        """(Z_v [T, d_v], Z_a [T, d_a]) of a key; ``KeyError`` if absent."""
        from safetensors import safe_open

        shard = self._index[key]
        with safe_open(str(shard), framework="pt") as f:
            return f.get_tensor(f"{key}.v"), f.get_tensor(f"{key}.a")

    def put(self, items: dict[str, tuple[Tensor, Tensor]]) -> Path | None:
        """Write features of several keys as one new shard (atomic); returns its path."""
        from safetensors.torch import save_file

        if not items:
            return None
        tensors = {}
        for key, (zv, za) in items.items():
            tensors[f"{key}.v"] = zv.detach().cpu().contiguous()
            tensors[f"{key}.a"] = za.detach().cpu().contiguous()
        final = self.root / "shards" / f"{uuid.uuid4().hex}.safetensors"
        tmp = final.with_name(f".{final.stem}.tmp")
        save_file(tensors, str(tmp), metadata={"format": f"affectrt-features-{CACHE_FORMAT}"})
        fsync_replace(tmp, final)
        for key in items:
            self._index[key] = final
        self._seen.add(final)
        return final

    def record_failure(self, name: str, path: str, reason: str) -> None:
        with open(self.root / "failures.jsonl", "a") as f:
            f.write(json.dumps({"name": name, "path": path, "reason": reason}) + "\n")

    def failures(self) -> dict[str, str]:
        """Clip name -> the last recorded reason its media could not be read."""
        path = self.root / "failures.jsonl"
        out: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                out[r["name"]] = r["reason"]
        return out


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    fsync_replace(tmp, path)


def media_files(sample, visual_input: str) -> list[Path]:
    """The files a clip's features depend on: faces (.npy) or video (.mp4), then the .wav."""
    return [sample.face if visual_input == "face" else sample.video, sample.audio]


@dataclass
class FeatureReport:
    """What a feature run did: clips computed, found in the cache, and failed (name, reason)."""

    computed: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    settings_id: str = ""


def compute_features(
    model,
    samples: Iterable,
    cache: FeatureCache,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    autocast: bool | None = None,
    shard_size: int = 256,
    progress: bool = True,
) -> FeatureReport:
    """Fill ``cache`` with Z_v / Z_a of every sample (objects with ``name``, ``face``/``video``, ``audio``).

    Eval-mode encoders and per-clip HuBERT normalisation (the inference rule). A clip whose media cannot be
    read is logged with its name and reason, recorded in ``failures.jsonl`` and skipped. Keys already in
    the cache are not recomputed; a shard is written every ``shard_size`` clips.
    """
    from affectrt.pipeline import AffectGPTPipeline, ClipInput

    samples = list(samples)
    pipe = AffectGPTPipeline(model, None, device=device, autocast=autocast)
    settings, weights = pipeline_feature_key(pipe)
    report = FeatureReport(settings_id=cache.write_manifest(settings, weights, {"clips": len(samples)}))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(samples), desc="features", unit="clip")
    pending: dict[str, tuple[Tensor, Tensor]] = {}
    todo: list[tuple[str, object]] = []

    def run(batch: list[tuple[str, object]]) -> None:
        media, keys = [], []
        for key, s in batch:
            try:
                clip = ClipInput(video=s.video, face_npy=s.face, audio=s.audio, name=s.name)
                media.append(pipe.load_media(clip))
                keys.append(key)
            except Exception as e:  # any unreadable clip is skipped, never fatal
                reason = f"{type(e).__name__}: {e}"
                log.warning("features: skipped %s: %s", s.name, reason)
                cache.record_failure(s.name, str(media_files(s, model.cfg.visual_input)[0]), reason)
                report.failed.append((s.name, reason))
        if media:
            zv, za = pipe.encode(pipe.preprocess(media, [""] * len(media)))
            for i, key in enumerate(keys):
                pending[key] = (zv[i].float() if zv.dtype == torch.bfloat16 else zv[i], za[i])
            report.computed += len(keys)

    for s in samples:
        try:
            key = cache.key(media_files(s, model.cfg.visual_input), settings, weights)
        except OSError as e:
            reason = f"{type(e).__name__}: {e}"
            log.warning("features: skipped %s: %s", s.name, reason)
            cache.record_failure(s.name, str(media_files(s, model.cfg.visual_input)[0]), reason)
            report.failed.append((s.name, reason))
            if bar is not None:
                bar.update(1)
            continue
        if key in cache or key in pending:
            report.cached += 1
            if bar is not None:
                bar.update(1)
            continue
        todo.append((key, s))
        if len(todo) == batch_size:
            run(todo)
            if bar is not None:
                bar.update(len(todo))
            todo = []
        if len(pending) >= shard_size:
            cache.put(pending)
            pending = {}
    if todo:
        run(todo)
        if bar is not None:
            bar.update(len(todo))
    cache.put(pending)
    if bar is not None:
        bar.close()
    if report.failed:
        log.warning(
            "features: %d clip(s) skipped (see %s)", len(report.failed), cache.root / "failures.jsonl"
        )
    return report


def pipeline_feature_key(pipe) -> tuple[dict, str]:
    """(settings, encoder weights hash) that key the features ``pipe`` computes: what :func:`compute_features`
    writes and evaluation reads, so both find each other's features."""
    dtype = {"fp16": "float16", "bf16": "bfloat16"}.get(pipe.precision)
    if dtype is None:
        dtype = str(next(pipe.model.fusion.parameters()).dtype).removeprefix("torch.")
    return feature_settings(pipe.model.cfg, dtype), _encoder_weights_hash(pipe.model)


def _encoder_weights_hash(model) -> str:
    h = hashlib.sha256()
    h.update(weights_sha256(model.visual_encoder).encode())
    h.update(weights_sha256(model.acoustic_encoder).encode())
    return h.hexdigest()


class CachedFeatures:
    """Feature lookup for training/evaluation: sample -> (Z_v, Z_a) from a cache, no encoders needed.

    ``settings`` must equal the feature run's (:func:`feature_settings`); ``weights`` picks the encoder
    weights when the cache holds features of several (default: the only one).
    """

    def __init__(self, cache: FeatureCache, settings: dict, weights: str | None = None) -> None:
        self.cache = cache
        self.settings = settings
        self.weights = cache.find_weights(settings, weights)
        self._keys: dict[str, str] = {}
        self._failures = cache.failures()

    def key_for(self, sample) -> str:
        if sample.name not in self._keys:
            files = media_files(sample, self.settings["visual_input"])
            self._keys[sample.name] = self.cache.key(files, self.settings, self.weights)
        return self._keys[sample.name]

    def __call__(self, sample) -> tuple[Tensor, Tensor]:
        """(Z_v [T,d_v], Z_a [T,d_a]); raises ``LookupError`` with the reason when absent."""
        try:
            key = self.key_for(sample)
        except OSError as e:
            raise LookupError(f"media unreadable: {type(e).__name__}: {e}") from None
        if key not in self.cache:
            self.cache.refresh()
        if key not in self.cache:
            why = self._failures.get(sample.name)
            raise LookupError(
                f"media unreadable: {why}"
                if why
                else "no cached features; run `affectrt features` on this set"
            )
        return self.cache.get(key)

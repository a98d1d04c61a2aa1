"""TensorRT engines from the exported ONNX files (``tensorrt`` Python API, imported only when called).

For each piece, ``OUT_DIR/<piece>.onnx`` -> ``OUT_DIR/<piece>.plan`` + ``<piece>.plan.json``:

- optimisation profiles over the ``clips`` axis (every input shares it): ``latency`` min=opt=max=1 (tactics
  tuned for one clip), and ``throughput`` min=1, opt=max=``batch_max``; the runner picks per call;
- precision: the ONNX file already computes in the export dtype; the builder flag of that dtype (``FP16`` /
  ``BF16``) lets TensorRT pick reduced-precision tactics for it, or ``strongly_typed=True`` builds a
  strongly-typed network that keeps exactly the ONNX file's types (TensorRT >= 9);
- a timing cache (``OUT_DIR/timing.cache`` by default) shared by the builds, loaded before and saved after,
  so rebuilding (another piece, a new profile) does not re-time every tactic.

The engine sidecar copies the ONNX sidecar (weights hash, config, names, shapes, dtypes) and adds the
profiles, the TensorRT version and the GPU; engines are tied to both, so the runner checks them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .sidecar import read_sidecar, write_sidecar
from .wrappers import CLIPS, TensorSpec


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA GPU is missing here."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse an ONNX file or build an engine from it."""


@dataclass(frozen=True)
class Profile:
    """An optimisation profile over the number of clips."""

    name: str
    min: int
    opt: int
    max: int


def default_profiles(batch_max: int) -> list[Profile]:
    """``latency`` (exactly one clip) and, for ``batch_max > 1``, ``throughput`` (1..batch_max, tuned at max)."""
    if batch_max < 1:
        raise ValueError(f"batch_max must be >= 1, got {batch_max}")
    profiles = [Profile("latency", 1, 1, 1)]
    if batch_max > 1:
        profiles.append(Profile("throughput", 1, batch_max, batch_max))
    return profiles


def tensorrt_unavailable_reason() -> str | None:
    """Why engines cannot be built or run here, or None when they can."""
    try:
        import tensorrt  # noqa: F401
    except ImportError as e:
        return (
            f"the tensorrt Python package is not installed ({e}); install it with "
            "pip install 'affectrt[trt]' on a machine with an NVIDIA GPU"
        )
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU; TensorRT builds and runs engines on a GPU"
    return None


def require_tensorrt():
    """Import and return ``tensorrt``, or raise :class:`TensorRTUnavailable` saying why not."""
    reason = tensorrt_unavailable_reason()
    if reason:
        raise TensorRTUnavailable(reason)
    import tensorrt

    return tensorrt


def trt_dtype_to_torch(trt, dtype) -> torch.dtype:
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT8: torch.int8,
        trt.DataType.BOOL: torch.bool,
    }
    for name, td in (("BF16", torch.bfloat16), ("INT64", torch.int64)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = td
    if dtype not in table:
        raise TypeError(f"TensorRT tensor dtype {dtype} has no torch equivalent here")
    return table[dtype]


def gpu_identity(device: int | torch.device | None = None) -> dict:
    """The GPU an engine is built for: its name and compute capability."""
    index = torch.device(device).index if isinstance(device, torch.device) else device
    index = torch.cuda.current_device() if index is None else index
    major, minor = torch.cuda.get_device_capability(index)
    return {"device_name": torch.cuda.get_device_name(index), "compute_capability": f"{major}.{minor}"}


def _shape(t: TensorSpec, clips: int) -> tuple[int, ...]:
    return t.concrete(clips)


def build_engine(
    onnx_file: str | Path,
    engine_file: str | Path | None = None,
    profiles: Sequence[Profile] = tuple(default_profiles(16)),
    timing_cache: str | Path | None = None,
    workspace_gib: float = 8.0,
    strongly_typed: bool = False,
    log=print,
) -> Path:
    """Build ``<piece>.plan`` from ``<piece>.onnx`` (whose sidecar gives names, shapes and dtype); see the
    module docstring. Returns the engine path; raises :class:`TensorRTUnavailable` or
    :class:`EngineBuildError` with TensorRT's parser errors."""
    trt = require_tensorrt()
    onnx_file = Path(onnx_file)
    meta = read_sidecar(onnx_file)
    engine_file = Path(engine_file) if engine_file else onnx_file.with_suffix(".plan")
    timing_cache = Path(timing_cache) if timing_cache else onnx_file.parent / "timing.cache"
    inputs = [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in meta["inputs"]]
    dtype = meta["dtype"]

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if not strongly_typed and not hasattr(trt.BuilderFlag, "FP16"):
        # TensorRT 11 removed weak typing (BuilderFlag.FP16/BF16): the network then takes the ONNX file's
        # own dtypes, which the export already wrote in the piece's dtype.
        strongly_typed = True
    if int(trt.__version__.split(".")[0]) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "\n  ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_file}: TensorRT's ONNX parser failed:\n  {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed:
        if dtype == "float16":
            config.set_flag(trt.BuilderFlag.FP16)
        elif dtype == "bfloat16":
            config.set_flag(trt.BuilderFlag.BF16)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    profile_json = []
    for p in profiles:
        prof = builder.create_optimization_profile()
        shapes = {}
        for t in inputs:
            mn, opt, mx = _shape(t, p.min), _shape(t, p.opt), _shape(t, p.max)
            prof.set_shape(t.name, mn, opt, mx)
            shapes[t.name] = {"min": list(mn), "opt": list(opt), "max": list(mx)}
        config.add_optimization_profile(prof)
        profile_json.append({**asdict(p), "shapes": shapes})

    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_file}: TensorRT failed to build an engine (see its log above)")
    engine_file.write_bytes(bytes(serialized))
    timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - started

    keep = (
        "piece",
        "weights_sha256",
        "config",
        "dtype",
        "inputs",
        "outputs",
        "dynamic_axes",
        "opset",
        "check",
    )
    data = {k: meta[k] for k in keep if k in meta}
    data.update(
        kind="tensorrt",
        tensorrt_version=trt.__version__,
        source_onnx=onnx_file.name,
        profiles=profile_json,
        clips_axis=CLIPS,
        strongly_typed=strongly_typed,
        workspace_gib=workspace_gib,
        timing_cache=timing_cache.name,
        build_seconds=round(seconds, 2),
        **gpu_identity(),
    )
    write_sidecar(engine_file, data)
    log(
        f"affectrt export: wrote {engine_file} ({seconds:.1f} s; profiles {json.dumps([p.name for p in profiles])})"
    )
    return engine_file


def build_engines(
    onnx_files: dict[str, Path],
    batch_max: int = 16,
    timing_cache: str | Path | None = None,
    workspace_gib: float = 8.0,
    strongly_typed: bool = False,
    log=print,
) -> dict[str, Path]:
    """:func:`build_engine` for every piece with the default latency/throughput profiles."""
    profiles = default_profiles(batch_max)
    return {
        name: build_engine(
            path,
            profiles=profiles,
            timing_cache=timing_cache,
            workspace_gib=workspace_gib,
            strongly_typed=strongly_typed,
            log=log,
        )
        for name, path in onnx_files.items()
    }

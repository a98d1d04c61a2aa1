"""Serving the exported pieces: ONNX Runtime and TensorRT runners, and the encoder backend the pipeline uses.

    backend = load_encoders("onnx" | "trt" | "torch", artifact_dir, model, device)
    z_v   = backend.encode_video(pixels)    # [B,T,3,S,S] -> [B,T,d_v]   == model.encode_video
    z_a   = backend.encode_audio(windows)   # [B,T,samples] -> [B,T,d_a] == model.encode_audio
    feats = backend.fuse(z_v, z_a)          # {placeholder: [B,K,D]}      == model.multimodal_embeddings

Before running anything a runner reads the artifact's sidecar and refuses (:class:`StaleArtifactError`) an
artifact whose weights hash or config differ from the live model's, or an engine built by another TensorRT
or for another GPU. Outputs come back in the artifact's dtype on the runner's device.

- :class:`OrtRunner`: ONNX Runtime. On CPU, tensors are shared with numpy (no copies). On CUDA (needs
  ``onnxruntime-gpu``) inputs and outputs are bound to torch device tensors with I/O binding, on torch's
  current stream; ``providers`` may name the TensorRT execution provider first.
- :class:`TrtRunner`: a TensorRT engine, one execution context per optimisation profile; input and output
  addresses are torch CUDA tensors' ``data_ptr()`` and it enqueues on torch's current stream: no host copies.
  It picks the profile whose range holds the batch, nearest its ``opt`` (one clip: ``latency``), and splits a
  batch larger than every profile into chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from .sidecar import StaleArtifactError, check_sidecar, read_sidecar, weights_hash
from .wrappers import CLIPS, DTYPES, PIECES, TensorSpec, piece_config, source_module

ARTIFACT_SUFFIX = {"onnx": ".onnx", "trt": ".plan"}
SIDECAR_KIND = {"onnx": "onnx", "trt": "tensorrt"}


def expected_sidecar(model: nn.Module, name: str, kind: str, verify_weights: bool = True) -> dict:
    """What a sidecar must say to serve ``name`` of ``model``: piece, kind, config and (optionally) weights."""
    expected = {"piece": name, "kind": SIDECAR_KIND[kind], "config": piece_config(model.cfg, name)}
    if verify_weights:
        expected["weights_sha256"] = weights_hash(source_module(model, name))
    return expected


class _Runner:
    """Shared by both runners: the sidecar check and input validation against the recorded specs."""

    kind = ""

    def __init__(self, path: str | Path, expected: dict | None, device: str | torch.device):
        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        if expected is not None:
            check_sidecar(self.path, self.meta, expected)
        self.device = torch.device(device)
        self.inputs = [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in self.meta["inputs"]]
        self.outputs = [TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in self.meta["outputs"]]
        self.dtype = DTYPES[self.meta["dtype"]]

    def _prepare(self, args: Sequence[Tensor]) -> tuple[list[Tensor], int]:
        """Check shapes against the specs (any number of clips), cast to the artifact dtype, make contiguous
        on the runner's device. Returns the tensors and the number of clips."""
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.path.name}: takes {len(self.inputs)} inputs, got {len(args)}")
        clips = args[0].shape[0] if args[0].dim() else -1
        out = []
        for spec, x in zip(self.inputs, args):
            want = spec.concrete(clips)
            if tuple(x.shape) != want:
                shown = tuple(CLIPS if d == CLIPS else d for d in spec.shape)
                raise ValueError(
                    f"{self.path.name}: input {spec.name} must be {shown} (same clips for every input), got "
                    f"{tuple(x.shape)}; the artifact was exported for this shape, re-export for another"
                )
            out.append(x.to(device=self.device, dtype=self.dtype).contiguous())
        return out, clips

    def __call__(self, *args: Tensor) -> tuple[Tensor, ...]:
        xs, clips = self._prepare(args)
        return self.run(xs, clips)

    def run(self, xs: list[Tensor], clips: int) -> tuple[Tensor, ...]:
        raise NotImplementedError


class OrtRunner(_Runner):
    """One ONNX file under ONNX Runtime (see the module docstring)."""

    kind = "onnx"

    def __init__(
        self,
        path: str | Path,
        expected: dict | None = None,
        device: str | torch.device = "cpu",
        providers: Sequence[str | tuple[str, dict]] | None = None,
        threads: int = 0,
    ):
        import onnxruntime as ort

        super().__init__(path, expected, device)
        if self.dtype == torch.bfloat16:
            raise ValueError(
                f"{self.path}: a bfloat16 ONNX file cannot be served by ONNX Runtime from Python here; "
                "export with --dtype float16 or float32, or build a TensorRT engine from it"
            )
        available = ort.get_available_providers()
        if providers is None:
            if self.device.type == "cuda":
                if "CUDAExecutionProvider" not in available:
                    raise RuntimeError(
                        f"device {self.device} asked, but this onnxruntime has only {available}: install "
                        "onnxruntime-gpu, or run the ONNX encoders on the CPU (--device cpu)"
                    )
                stream = torch.cuda.current_stream(self.device).cuda_stream
                opts = {"device_id": self.device.index or 0, "user_compute_stream": str(stream)}
                providers = [("CUDAExecutionProvider", opts), "CPUExecutionProvider"]
            else:
                providers = ["CPUExecutionProvider"]
        missing = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in missing if p not in available]
        if missing:
            raise RuntimeError(f"ONNX Runtime providers {missing} are not available here (have {available})")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=list(providers))
        # A provider that fails to initialise (missing cuDNN, a driver too old for onnxruntime-gpu's CUDA)
        # is dropped with a log line, and the session silently runs on the next one: check what it got.
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        got = self.session.get_providers()
        if wanted[0] not in got:
            raise RuntimeError(
                f"{self.path}: ONNX Runtime did not start {wanted[0]} (the session has {got}); on a GPU check "
                "that only onnxruntime-gpu is installed (not onnxruntime too) and that its CUDA/cuDNN libraries "
                "load"
            )
        self._np = {torch.float32: "float32", torch.float16: "float16"}

    def run(self, xs: list[Tensor], clips: int) -> tuple[Tensor, ...]:
        if self.device.type == "cpu":
            feeds = {s.name: x.numpy() for s, x in zip(self.inputs, xs)}
            outs = self.session.run([s.name for s in self.outputs], feeds)
            return tuple(torch.from_numpy(o) for o in outs)
        import numpy as np

        binding = self.session.io_binding()
        index = self.device.index or 0
        elem = np.dtype(self._np[self.dtype])
        for s, x in zip(self.inputs, xs):
            binding.bind_input(s.name, "cuda", index, elem, tuple(x.shape), x.data_ptr())
        outs = []
        for s in self.outputs:
            o = torch.empty(s.concrete(clips), dtype=self.dtype, device=self.device)
            binding.bind_output(s.name, "cuda", index, elem, tuple(o.shape), o.data_ptr())
            outs.append(o)
        self.session.run_with_iobinding(binding)
        return tuple(outs)


class TrtRunner(_Runner):
    """One TensorRT engine (see the module docstring)."""

    kind = "trt"

    def __init__(self, path: str | Path, expected: dict | None = None, device: str | torch.device = "cuda"):
        from .trt_build import gpu_identity, require_tensorrt, trt_dtype_to_torch

        trt = require_tensorrt()
        device = torch.device(device)
        if device.type != "cuda":
            raise ValueError(f"TensorRT engines run on a CUDA device, not {device}")
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if expected is not None:
            ident = gpu_identity(device)
            expected = {
                **expected,
                "tensorrt": trt.__version__,
                "compute_capability": ident["compute_capability"],
            }
        super().__init__(path, expected, device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise StaleArtifactError(
                    f"{self.path}: TensorRT {trt.__version__} could not deserialize this engine (built by "
                    "another TensorRT or for another GPU?); rebuild it with `affectrt export --trt`"
                )
            stream = torch.cuda.current_stream(self.device)
            self.profiles = self.meta["profiles"]
            self.contexts = []
            for i in range(len(self.profiles)):
                ctx = self.engine.create_execution_context()
                ctx.set_optimization_profile_async(i, stream.cuda_stream)
                self.contexts.append(ctx)
            stream.synchronize()
        self._out_dtypes = [
            trt_dtype_to_torch(trt, self.engine.get_tensor_dtype(s.name)) for s in self.outputs
        ]

    def _profile_for(self, clips: int) -> int:
        fits = [i for i, p in enumerate(self.profiles) if p["min"] <= clips <= p["max"]]
        return min(fits, key=lambda i: abs(self.profiles[i]["opt"] - clips))

    def run(self, xs: list[Tensor], clips: int) -> tuple[Tensor, ...]:
        largest = max(p["max"] for p in self.profiles)
        if clips > largest:  # split into chunks the engine takes
            parts = [
                self.run([x[i : i + largest] for x in xs], min(largest, clips - i))
                for i in range(0, clips, largest)
            ]
            return tuple(torch.cat(chunk) for chunk in zip(*parts))
        ctx = self.contexts[self._profile_for(clips)]
        with torch.cuda.device(self.device):
            for s, x in zip(self.inputs, xs):
                ctx.set_input_shape(s.name, tuple(x.shape))
                ctx.set_tensor_address(s.name, x.data_ptr())
            outs = []
            for s, dt in zip(self.outputs, self._out_dtypes):
                o = torch.empty(tuple(ctx.get_tensor_shape(s.name)), dtype=dt, device=self.device)
                ctx.set_tensor_address(s.name, o.data_ptr())
                outs.append(o)
            if not ctx.execute_async_v3(torch.cuda.current_stream(self.device).cuda_stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed (see its log)")
        return tuple(outs)


# ------------------------------------------------------------------------------------------- backends


class TorchEncoders:
    """The PyTorch modules of ``model`` behind the backend interface (``--encoders torch``)."""

    kind = "torch"

    def __init__(self, model: nn.Module):
        self.model = model

    def encode_video(self, pixels: Tensor) -> Tensor:
        return self.model.encode_video(pixels)

    def encode_audio(self, windows: Tensor) -> Tensor:
        return self.model.encode_audio(windows)

    def fuse(self, z_video: Tensor, z_audio: Tensor) -> dict[str, Tensor]:
        return self.model.multimodal_embeddings(z_video, z_audio)


class EncoderBackend(TorchEncoders):
    """Encoders and fusion head served from exported artifacts; a piece without a runner runs in PyTorch."""

    def __init__(self, kind: str, runners: dict[str, _Runner], model: nn.Module):
        super().__init__(model)
        self.kind = kind
        self.runners = runners

    def encode_video(self, pixels: Tensor) -> Tensor:
        """[B,T,3,S,S] normalised pixels -> Z_v [B,T,d_v]."""
        if "vision" not in self.runners:
            return super().encode_video(pixels)
        return self.runners["vision"](pixels)[0]

    def encode_audio(self, windows: Tensor) -> Tensor:
        """[B,T,samples] jointly normalised windows -> Z_a [B,T,d_a]."""
        if "audio" not in self.runners:
            return super().encode_audio(windows)
        return self.runners["audio"](windows)[0]

    def fuse(self, z_video: Tensor, z_audio: Tensor) -> dict[str, Tensor]:
        """{"<MultiHere>", "<AudioHere>", "<FaceHere>"|"<FrameHere>": [B,K,D]} as ``multimodal_embeddings``."""
        if "fusion" not in self.runners:
            return super().fuse(z_video, z_audio)
        runner = self.runners["fusion"]
        out = dict(zip((s.name for s in runner.outputs), runner(z_video, z_audio)))
        feats = {"<AudioHere>": out["audio"], self.model.video_placeholder: out["video"]}
        if "multi" in out:
            feats["<MultiHere>"] = out["multi"]
        return feats


def load_encoders(
    kind: str,
    artifact_dir: str | Path | None,
    model: nn.Module,
    device: str | torch.device = "cpu",
    pieces: Sequence[str] = PIECES,
    verify_weights: bool = True,
    **runner_kwargs,
) -> TorchEncoders:
    """The encoder backend of ``kind`` ("torch", "onnx" or "trt") for ``model`` on ``device``.

    ``artifact_dir`` holds ``<piece>.onnx`` / ``<piece>.plan`` and their sidecars (``affectrt export``); each of
    ``pieces`` must be there and match ``model`` (config, and weights unless ``verify_weights=False``, which
    skips hashing the weights at start-up). Pieces not listed run in PyTorch.
    """
    if kind == "torch":
        return TorchEncoders(model)
    if kind not in ARTIFACT_SUFFIX:
        raise ValueError(f"encoders {kind!r}: choose 'torch', 'onnx' or 'trt'")
    if artifact_dir is None:
        raise ValueError(f"--encoders {kind} needs the folder written by `affectrt export` (artifact_dir)")
    runners: dict[str, _Runner] = {}
    for name in pieces:
        path = Path(artifact_dir) / f"{name}{ARTIFACT_SUFFIX[kind]}"
        if not path.is_file():
            flag = "--onnx" if kind == "onnx" else "--trt"
            raise FileNotFoundError(
                f"{path}: not found; write it with `affectrt export {flag} {artifact_dir}`"
            )
        expected = expected_sidecar(model, name, kind, verify_weights)
        cls = OrtRunner if kind == "onnx" else TrtRunner
        runners[name] = cls(path, expected, device, **runner_kwargs)
    return EncoderBackend(kind, runners, model)

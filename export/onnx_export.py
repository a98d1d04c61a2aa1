"""ONNX export of the pieces (``torch.onnx.export(dynamo=True)``) and the parity check with ONNX Runtime.

Each piece (``wrappers.py``) is exported through ``torch.export`` with one dynamic axis, ``clips``, shared
by every input and output, in the requested dtype (float32, float16 or bfloat16: the weights and the
inputs/outputs are cast, so the graph computes in that dtype end to end).

Attention: ``F.scaled_dot_product_attention`` (no mask) is emitted at the default opset (20) as
``MatMul(q·√s, (k·√s)ᵀ) → Softmax → MatMul(·, v)``, the pattern TensorRT's Myelin backend fuses into one
multi-head-attention kernel; at ``opset >= 23`` the exporter may emit the ONNX ``Attention`` op instead,
which needs a TensorRT that implements it (pass ``opset=23`` only for such a TensorRT). The op counts of
each file are recorded in its sidecar (``onnx_ops``) so what the exporter emitted is visible.

Fused ops: the models call fused ops (``affectrt.ops``: attention pooling, the Q-Former's cross-attention,
...) that run C++/CUDA/Triton kernels through ``affectrt::*_native`` torch.library ops. ONNX has no
translation for those, so export runs inside :func:`eager_fused_ops`, which makes every fused op pick its
eager reference (its definition in plain PyTorch): attention pooling becomes MatMul → Add → Mul → ReduceSum,
the Q-Former's attention SDPA (the pattern above). TensorRT fuses these chains itself.

Parity check (:func:`check_onnx`): ``onnx.checker`` on the file, then ONNX Runtime (CPU provider) against the
float32 PyTorch piece on random inputs of 1, 2 and 3 clips. The error measure is
``max|ort − torch| / max(max|torch|, 1e-6)`` (relative to the output's scale), with tolerances
``float32: 1e-4``, ``float16: 2e-2`` (10-bit mantissa, errors accumulate over layers), ``bfloat16: 6e-2``.
ONNX Runtime's CPU provider has no bfloat16 kernels for most ops, so bfloat16 files are checked by
``onnx.checker`` only: the sidecar then records ``"checked": false`` and the reason, never ``"passed"``; a float16
op missing on CPU is reported the same way.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .sidecar import weights_hash, write_sidecar
from .wrappers import (
    CLIPS,
    DTYPES,
    PIECES,
    build_piece,
    example_inputs,
    piece_config,
    piece_spec,
    source_module,
)

TOLERANCE = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 6e-2}
DEFAULT_OPSET = 20
MAX_CLIPS = 4096  # upper bound of the dynamic axis the exporter is told (engines set their own)


class ExportCheckError(RuntimeError):
    """An exported file disagrees with PyTorch beyond the tolerance."""


def require_onnx() -> None:
    """Raise ImportError naming what to install when onnx / onnxscript / onnxruntime are missing."""
    missing = []
    for mod in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: pip install 'affectrt[export]' onnxruntime "
            "(onnxruntime-gpu on a CUDA machine)"
        )


@contextlib.contextmanager
def eager_fused_ops():
    """Within this context every fused op (``affectrt.ops``) called with ``backend="auto"`` runs its eager
    reference: plain PyTorch ops the exporter translates, instead of ``affectrt::*_native`` custom ops
    (C++/CUDA/Triton kernels) that ONNX has no translation for. The computation is the same by definition.
    """
    from affectrt.ops import _backends

    # Re-declare each op with its eager backend alone (public ``register``), and restore afterwards: every
    # selection path ("auto", op-specific rules) reads the registry, so none can pick a kernel meanwhile.
    saved = {op: _backends.backends(op) for op in list(_backends._REGISTRY)}
    try:
        for op, declared in saved.items():
            eager = [b for b in declared if b.name == "eager"]
            if eager:
                _backends.register(op, eager)
        yield
    finally:
        for op, declared in saved.items():
            _backends.register(op, declared)


def onnx_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}.onnx"


def export_piece(
    model: nn.Module,
    name: str,
    out_dir: str | Path,
    dtype: str = "float32",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    check_batches: Sequence[int] = (1, 2, 3),
) -> Path:
    """Export one piece of ``model`` (an ``AffectGPT``) to ``OUT_DIR/<name>.onnx`` plus its sidecar.

    ``check``: run :func:`check_onnx` and record the result in the sidecar (raises
    :class:`ExportCheckError` beyond tolerance, after writing both files so they can be inspected).
    """
    require_onnx()
    import onnx

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    cfg = model.cfg
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = piece_spec(cfg, name, dtype)
    piece = build_piece(model, name, dtype)
    # Two clips: torch.export specialises axes of size 0 and 1.
    args = example_inputs(cfg, name, clips=2, dtype=dtype)
    clips = torch.export.Dim(CLIPS, min=1, max=MAX_CLIPS)
    # The exporter logs a line per torchvision op it cannot register (torchvision is not a dependency).
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    started = time.perf_counter()
    with torch.no_grad(), eager_fused_ops(), warnings.catch_warnings():
        # Deprecation chatter of torch's own pytree and a note that the shared axis keeps one name.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        program = torch.onnx.export(
            piece,
            args,
            dynamo=True,
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=tuple({0: clips} for _ in spec.inputs),
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        path = onnx_path(out_dir, name)
        program.save(str(path))
    seconds = time.perf_counter() - started
    ops = collections.Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)
    data = {
        "piece": name,
        "kind": "onnx",
        "weights_sha256": weights_hash(source_module(model, name)),
        "config": piece_config(cfg, name),
        "dtype": dtype,
        **spec.to_json(),
        "opset": opset,
        "profiles": [],
        "onnx_ops": dict(sorted(ops.items())),
        "export_seconds": round(seconds, 2),
    }
    write_sidecar(path, data)
    if check:
        result = check_onnx(path, model, name, dtype, check_batches)
        write_sidecar(path, {**data, "check": result})
        if not result["checked"]:
            warnings.warn(f"{path}: not checked against PyTorch: {result['reason']}", stacklevel=2)
        elif not result["passed"]:
            raise ExportCheckError(f"{path}: ONNX Runtime disagrees with PyTorch: {result}")
    return path


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | Path, model: nn.Module, name: str, dtype: str = "float32", batches: Sequence[int] = (1, 2, 3)
) -> dict:
    """``onnx.checker``, then ONNX Runtime CPU vs the float32 PyTorch piece at each batch size.

    Returns ``{"checker": "ok", "checked": True, "provider", "tolerance", "batches": {n: relative error},
    "passed"}``, or ``{"checker": "ok", "checked": False, "reason"}`` when ONNX Runtime cannot run the file on
    CPU (bfloat16, a missing kernel): no parity was measured, so nothing claims it passed.
    """
    import onnx

    path = Path(path)
    onnx.checker.check_model(str(path), full_check=True)
    if dtype == "bfloat16":
        return {"checker": "ok", "checked": False, "reason": "ONNX Runtime CPU has no bfloat16 kernels"}
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

    try:
        session = _ort_session(path)
    except (OrtNotImplemented, Fail) as e:
        return {"checker": "ok", "checked": False, "reason": f"ONNX Runtime CPU cannot load it: {e}"}
    result: dict = {"checker": "ok", "checked": True, "tolerance": TOLERANCE[dtype], "batches": {}}
    result["provider"] = session.get_providers()[0]
    reference = build_piece(model, name, "float32")
    spec = piece_spec(model.cfg, name, dtype)
    worst = 0.0
    for n in batches:
        inputs = example_inputs(model.cfg, name, clips=n, dtype=dtype, seed=n)
        feeds = {t.name: x.numpy() for t, x in zip(spec.inputs, inputs)}
        outs = session.run([t.name for t in spec.outputs], feeds)
        with torch.no_grad():
            ref = reference(*(x.float() for x in inputs))
        ref = (ref,) if isinstance(ref, torch.Tensor) else ref
        errs = []
        for t, got, want in zip(spec.outputs, outs, ref):
            got = torch.from_numpy(got).float()
            if tuple(got.shape) != tuple(want.shape):
                raise ExportCheckError(
                    f"{path}: output {t.name} has shape {tuple(got.shape)}, want {tuple(want.shape)}"
                )
            errs.append(((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item())
        result["batches"][n] = max(errs)
        worst = max(worst, *errs)
    result["passed"] = worst <= TOLERANCE[dtype]
    return result


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    dtype: str = "float32",
    pieces: Sequence[str] = PIECES,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    log=print,
) -> dict[str, Path]:
    """Export every piece in ``pieces`` to ``OUT_DIR/<piece>.onnx`` (+ ``.onnx.json``); returns their paths."""
    paths = {}
    for name in pieces:
        started = time.perf_counter()
        paths[name] = export_piece(model, name, out_dir, dtype=dtype, opset=opset, check=check)
        log(f"affectrt export: wrote {paths[name]} ({time.perf_counter() - started:.1f} s, {dtype})")
    return paths

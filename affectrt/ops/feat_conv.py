"""HuBERT's feature-extractor epilogues on CPU: LayerNorm over channels + GELU, and the whole first layer.

Channels last, for the stable-layer-norm HuBERT (MODEL_SPEC §1.3; ``affectrt.models.hubert.ConvLayer``):

    ln_gelu_:       y[r, :] ← GELU(LN(y[r, :]) · γ + β)                                  y [..., C], in place
    conv0_ln_gelu:  out[n, t, :] = GELU(LN(Σ_k w[:, 0, k] · x[n, t·s + k] + b) · γ + β)    x [N, S] -> [N, T, C]
                    with T = (S − K) / s + 1 (Conv1d with one input channel, kernel K, stride s)

LN is ``F.layer_norm`` over the last dimension (biased variance), GELU the erf form. The first layer's output
is the audio encoder's largest tensor ([N, S/5, C]: 26 MB for 8 two-second windows at the `small` preset's
C=128, 105 MB at the release's 512); conv, LayerNorm and GELU as three torch ops move it through memory
five times, the fused kernel once. The later layers' convolutions stay with oneDNN (GEMM-class work);
``ln_gelu_`` is their one-pass epilogue.

Under CPU autocast a conv's output is bfloat16 (or float16) while the LayerNorm parameters stay float32: such
y is normalised and activated in float32 and rounded once (the references upcast), and ``conv0_ln_gelu``
writes its float32 result rounded to ``out_dtype``. torch's path there was a bfloat16 conv, a mixed-dtype
LayerNorm and a bfloat16 GELU.

Backends (DESIGN §3), in "auto" order: ``cpu`` (``affectrt._C``, csrc/feat_conv*.{h,cpp}: CPU tensors, y
float32, bfloat16 or float16, x and every parameter float32, forward only) and ``eager`` (the ``*_ref``
definitions, differentiable). No CUDA or Triton layer on purpose: on a GPU the release runs the feature
extractor under fp16 autocast and the export path (TensorRT) fuses these epilogues; this op exists for CPU
inference. ``HubertEncoder`` uses it only where nothing can observe the in-place write (no autograd,
tracing, export or compilation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from affectrt.ops import _backends
from affectrt.ops._cpu_only import matrix_rows, register_cpu_and_eager
from affectrt.ops._ext import DTYPE_CODES, cpu_ext

LN_GELU = "ln_gelu"
CONV0 = "conv0_ln_gelu"


def _at_least_f32(t: Tensor) -> Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def ln_gelu_ref(y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    """The definition, out of place: GELU(LayerNorm(y) over the last dimension), computed in at least float32
    and returned in y's dtype."""
    w, b = _at_least_f32(weight), _at_least_f32(bias)
    return F.gelu(F.layer_norm(_at_least_f32(y), (y.shape[-1],), w, b, eps)).to(y.dtype)


def conv0_ln_gelu_ref(
    x: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    weight: Tensor,
    bias: Tensor,
    stride: int,
    eps: float,
) -> Tensor:
    """The definition: x [N, S], conv_weight [C, 1, K] -> [N, T, C] in x's dtype (then rounded to the op's
    ``out_dtype`` by its caller)."""
    y = F.conv1d(x[:, None], conv_weight, conv_bias, stride=stride).transpose(1, 2)
    return ln_gelu_ref(y, weight, bias, eps)


def _check_norm(name: str, c: int, y: Tensor, weight: Tensor, bias: Tensor) -> None:
    for what, t in (("weight", weight), ("bias", bias)):
        if tuple(t.shape) != (c,):
            raise ValueError(f"{name}: LayerNorm {what} must be [{c}], got shape {tuple(t.shape)}")
        widened = t.dtype == torch.float32 and y.dtype in (torch.bfloat16, torch.float16)
        if t.device != y.device or (t.dtype != y.dtype and not widened):
            raise ValueError(
                f"{name}: LayerNorm {what} is {t.dtype} on {t.device} but the input is {y.dtype} on {y.device}; "
                "give parameters of the input's dtype (or float32 for a bfloat16 / float16 input) on its device"
            )


# ------------------------------------------------------------------------------------------------ ln_gelu


def _ln_cpu_limits(inputs: _backends.Inputs) -> list[str]:
    reasons = []
    if matrix_rows(inputs["y"]) is None:
        reasons.append("y is neither contiguous nor a matrix with unit column stride (make it contiguous)")
    if not (inputs["weight"].is_contiguous() and inputs["bias"].is_contiguous()):
        reasons.append("the LayerNorm weight or bias is not contiguous")
    if inputs["weight"].dtype != torch.float32 or inputs["bias"].dtype != torch.float32:
        reasons.append("the LayerNorm weight or bias is not float32 (the kernel reads float32 parameters)")
    return reasons


def _ln_cpu(y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    rows, stride = matrix_rows(y)
    if rows:
        code = DTYPE_CODES[y.dtype]
        cpu_ext().ln_gelu(
            y.data_ptr(), weight.data_ptr(), bias.data_ptr(), rows, y.shape[-1], stride, eps, code
        )
    return y


def _ln_eager(y: Tensor, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
    return y.copy_(ln_gelu_ref(y.clone(), weight, bias, eps))  # a clone: autograd keeps the input it saw


def ln_gelu_(y: Tensor, weight: Tensor, bias: Tensor, eps: float, backend: str = "auto") -> Tensor:
    """y ← GELU(LayerNorm(y)) in place over the last dimension; returns y. y [..., C], weight/bias [C]."""
    if y.dim() < 1 or y.shape[-1] == 0:
        raise ValueError(f"ln_gelu_: y must have a non-empty last dimension, got shape {tuple(y.shape)}")
    _check_norm("ln_gelu_", y.shape[-1], y, weight, bias)
    inputs = {"y": y, "weight": weight, "bias": bias}
    chosen = _backends.select(LN_GELU, inputs, backend, needs_grad=_backends.needs_grad(y, weight, bias))
    return chosen.run(y, weight, bias, eps)


# ---------------------------------------------------------------------------------------------- conv0


def _conv0_cpu_limits(inputs: _backends.Inputs) -> list[str]:
    others = [n for n, t in inputs.items() if n != "x" and not t.is_contiguous()]
    return [f"{', '.join(others)} not contiguous"] if others else []


def _conv0_cpu(x, conv_weight, conv_bias, weight, bias, stride, eps, out_dtype) -> Tensor:
    n, s = x.shape
    c, _, k = conv_weight.shape
    t = (s - k) // stride + 1
    out = torch.empty((n, t, c), dtype=out_dtype)
    if out.numel():
        cb = 0 if conv_bias is None else conv_bias.data_ptr()
        cpu_ext().conv0_ln_gelu(
            x.data_ptr(), conv_weight.data_ptr(), cb, weight.data_ptr(), bias.data_ptr(), out.data_ptr(),
            n, s, t, c, k, stride, x.stride(0), x.stride(1), eps, DTYPE_CODES[out_dtype],
        )  # fmt: skip
    return out


def _conv0_eager(x, conv_weight, conv_bias, weight, bias, stride, eps, out_dtype) -> Tensor:
    return conv0_ln_gelu_ref(x, conv_weight, conv_bias, weight, bias, stride, eps).to(out_dtype)


def conv0_ln_gelu(
    x: Tensor,
    conv_weight: Tensor,
    conv_bias: Tensor | None,
    weight: Tensor,
    bias: Tensor,
    stride: int,
    eps: float,
    backend: str = "auto",
    out_dtype: torch.dtype | None = None,
) -> Tensor:
    """HuBERT's first feature-extractor layer: x [N, S] -> [N, T, C] (module docstring), computed in x's dtype
    and returned in ``out_dtype`` (default x's; under autocast the autocast dtype, rounded once)."""
    if x.dim() != 2:
        raise ValueError(f"conv0_ln_gelu: x must be [N, samples], got shape {tuple(x.shape)}")
    if conv_weight.dim() != 3 or conv_weight.shape[1] != 1:
        raise ValueError(
            f"conv0_ln_gelu: conv_weight must be [C, 1, K] (one input channel), got {tuple(conv_weight.shape)}"
        )
    c, _, k = conv_weight.shape
    if stride < 1 or x.shape[1] < k:
        raise ValueError(
            f"conv0_ln_gelu: {x.shape[1]} samples with kernel {k} and stride {stride}: need stride >= 1 and "
            f"at least {k} samples"
        )
    _check_norm("conv0_ln_gelu", c, x, weight, bias)
    inputs = {"x": x, "conv_weight": conv_weight, "weight": weight, "bias": bias}
    if conv_bias is not None:
        _check_norm("conv0_ln_gelu (conv bias)", c, x, conv_bias, conv_bias)
        inputs["conv_bias"] = conv_bias
    out_dtype = x.dtype if out_dtype is None else out_dtype
    if out_dtype not in (x.dtype, torch.bfloat16, torch.float16):
        raise ValueError(f"conv0_ln_gelu: out_dtype must be x's dtype, bfloat16 or float16, got {out_dtype}")
    chosen = _backends.select(CONV0, inputs, backend, needs_grad=_backends.needs_grad(*inputs.values()))
    return chosen.run(x, conv_weight, conv_bias, weight, bias, stride, eps, out_dtype)


def cpu_kernel_fits(t: Tensor, norm_weight: Tensor) -> bool:
    """Whether a HuBERT feature layer's epilogue runs in the C++ kernels: ``t`` (the first layer's samples, or a
    later layer's conv output) on the CPU, float32 or, under CPU autocast, bfloat16 / float16; its LayerNorm
    parameters float32; the extension built."""
    ok = (
        (torch.float32, torch.bfloat16, torch.float16)
        if torch.is_autocast_enabled("cpu")
        else (torch.float32,)
    )
    return (
        t.device.type == "cpu"
        and t.dtype in ok
        and norm_weight.dtype == torch.float32
        and _backends.cpu_ext_available(CONV0)() is None
    )


_ABOUT = "affectrt._C (csrc/feat_conv_cpu.cpp): {}, one pass per row in L1, OpenMP over rows"
register_cpu_and_eager(
    LN_GELU,
    "ln_gelu",
    _ln_cpu,
    _ln_cpu_limits,
    _ln_eager,
    _ABOUT.format("ln_gelu"),
    "ln_gelu_ref: torch ops",
    cpu_dtypes=(torch.float32, torch.bfloat16, torch.float16),
)
register_cpu_and_eager(
    CONV0,
    "conv0_ln_gelu",
    _conv0_cpu,
    _conv0_cpu_limits,
    _conv0_eager,
    _ABOUT.format("conv0_ln_gelu"),
    "conv0_ln_gelu_ref: torch's conv, layer_norm and gelu",
)

"""LoRA adapters on the LLM projections, numerically matching peft (MODEL_SPEC §1.8).

    y = base(x) + scale · B(A(dropout(x))),   A [r, in], B [out, r], scale = alpha / r

Like peft's ``autocast_adapter_dtype=True``, A and B are float32 even on an fp16/bf16 base: the
unmerged forward casts x to float32 for the adapter path, adds it to the base result in float32 and casts
the sum back to the base dtype (peft 0.21 ``lora.Linear.forward``). ``merge()`` folds W += scale·B·A
(computed in float32, then cast), which is faster but rounds differently (issue #44).

Key names: our adapter parameters are ``layers.N.self_attn.q_proj.lora_A`` / ``.lora_B``. peft names
them ``base_model.model.model.layers.N.self_attn.q_proj.lora_A.default.weight`` and the release stores
the peft model as ``llama_model`` inside AffectGPT, hence :func:`lora_state_dict_to_release` /
:func:`lora_state_dict_from_release`.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from affectrt.config import LoRAConfig
from affectrt.models.hf_io import WeightsError, check_keys

PEFT_PREFIX = "base_model.model.model."
RELEASE_PREFIX = "llama_model."
ADAPTER_NAME = "default"


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` (``base_layer``) plus float32 adapters ``lora_A`` [r, in], ``lora_B`` [out, r]."""

    def __init__(
        self, base_layer: nn.Linear, r: int, alpha: float, dropout: float = 0.0, init_b_std: float = 0.0
    ):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be positive, got {r}")
        self.base_layer = base_layer
        self.r, self.alpha, self.scale = r, alpha, alpha / r
        dev = base_layer.weight.device
        self.lora_A = nn.Parameter(torch.empty(r, base_layer.in_features, dtype=torch.float32, device=dev))
        self.lora_B = nn.Parameter(torch.empty(base_layer.out_features, r, dtype=torch.float32, device=dev))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_parameters(init_b_std)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base_layer.bias

    def reset_parameters(self, init_b_std: float = 0.0) -> None:
        """peft init: A kaiming-uniform(a=√5), B zeros (or N(0, init_b_std²) for tests)."""
        if self.lora_A.is_meta:
            return
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if init_b_std > 0:
            nn.init.normal_(self.lora_B, std=init_b_std)
        else:
            nn.init.zeros_(self.lora_B)

    def delta_weight(self) -> Tensor:
        """scale · B @ A in float32, [out, in]."""
        return (self.lora_B.float() @ self.lora_A.float()) * self.scale

    def forward(self, x: Tensor) -> Tensor:
        result = self.base_layer(x)
        if self.merged:
            return result
        dtype = result.dtype
        xa = x.to(self.lora_A.dtype)
        # result (base dtype) + adapter (float32) promotes to float32; one cast back at the end.
        result = result + F.linear(F.linear(self.dropout(xa), self.lora_A), self.lora_B) * self.scale
        return result.to(dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W <- W + scale·B·A (float32 sum, cast to W's dtype); the forward then uses W only."""
        if self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.float() + self.delta_weight()).to(w.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W <- W - scale·B·A. Exact in float32; in fp16/bf16 the weights keep a rounding error."""
        if not self.merged:
            return
        w = self.base_layer.weight
        w.copy_((w.float() - self.delta_weight()).to(w.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def apply_lora(model: nn.Module, cfg: LoRAConfig, init_b_std: float = 0.0) -> nn.Module:
    """Wrap every ``nn.Linear`` whose name ends with one of ``cfg.targets`` in a :class:`LoRALinear`.

    As peft does, everything but the adapters is then frozen (``requires_grad=False``). Returns
    ``model`` (modified in place). ``init_b_std > 0`` draws B at random (tests; peft starts at zero).
    """
    targets = set(cfg.targets)
    found = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets
    ]
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("apply_lora: the model already has LoRA adapters")
    if not found:
        raise ValueError(f"apply_lora: no nn.Linear named one of {sorted(targets)} in the model")
    model.requires_grad_(False)
    for name, lin in found:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(lin, cfg.r, cfg.alpha, cfg.dropout, init_b_std))
    for m in model.modules():
        if isinstance(m, LoRALinear):
            m.lora_A.requires_grad_(True)
            m.lora_B.requires_grad_(True)
    return model


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight (fast inference)."""
    for m in lora_modules(model):
        m.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for m in lora_modules(model):
        m.unmerge()
    return model


def lora_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The adapter tensors only, under our key names (``layers.N.….lora_A`` / ``.lora_B``)."""
    return {k: v for k, v in model.state_dict().items() if _is_lora_key(k)}


def load_lora_state_dict(model: nn.Module, sd: dict[str, Tensor], source: str = "state dict") -> nn.Module:
    """Copy adapters (our key names) into ``model``; every adapter must be given, with its shape.

    Adapters still on the ``meta`` device (model built on meta, then :func:`apply_lora`) are assigned,
    as float32 like peft's; otherwise the values are copied into the existing parameters.
    """
    expected = {k: v.shape for k, v in lora_state_dict(model).items()}
    check_keys(expected, sd, source)
    if any(m.merged for m in lora_modules(model)):
        raise ValueError(f"{source}: unmerge the LoRA adapters before loading new ones")
    on_meta = any(m.lora_A.is_meta for m in lora_modules(model))
    if on_meta:
        sd = {k: v.float() for k, v in sd.items()}
    result = model.load_state_dict(sd, strict=False, assign=on_meta)
    if result.unexpected_keys:  # cannot happen after check_keys; guards the key names
        raise RuntimeError(f"{source}: internal key mapping error: {result.unexpected_keys}")
    return model


def _is_lora_key(key: str) -> bool:
    return key.endswith((".lora_A", ".lora_B"))


def peft_key(our_key: str, prefix: str = "") -> str:
    """``layers.0.self_attn.q_proj.lora_A`` -> ``{prefix}base_model.model.model.layers.0.….lora_A.default.weight``."""
    if not _is_lora_key(our_key):
        raise ValueError(f"peft_key: {our_key!r} is not a LoRA adapter key (…lora_A / …lora_B)")
    return f"{prefix}{PEFT_PREFIX}{our_key}.{ADAPTER_NAME}.weight"


_PEFT_RE = re.compile(r"^(?P<body>.+\.lora_[AB])\.(?P<adapter>[^.]+)\.weight$")


def our_key_from_peft(key: str, prefix: str = "") -> str:
    """Inverse of :func:`peft_key`."""
    head = prefix + PEFT_PREFIX
    m = _PEFT_RE.match(key[len(head) :]) if key.startswith(head) else None
    if m is None:
        raise WeightsError(
            f"{key!r} is not a peft LoRA key of the form {head}<module>.lora_A|lora_B.<adapter>.weight"
        )
    if m["adapter"] != ADAPTER_NAME:
        raise WeightsError(f"{key!r}: adapter {m['adapter']!r} is not supported; only {ADAPTER_NAME!r} is")
    return m["body"]


def lora_state_dict_to_release(sd: dict[str, Tensor], prefix: str = RELEASE_PREFIX) -> dict[str, Tensor]:
    """Our adapter keys -> the release checkpoint's (``llama_model.base_model.model.model.….default.weight``)."""
    return {peft_key(k, prefix): v for k, v in sd.items()}


def lora_state_dict_from_release(sd: dict[str, Tensor], prefix: str = RELEASE_PREFIX) -> dict[str, Tensor]:
    """Pick the LoRA adapters out of a release checkpoint (other keys are ignored) under our key names."""
    head = prefix + PEFT_PREFIX
    return {our_key_from_peft(k, prefix): v for k, v in sd.items() if k.startswith(head) and ".lora_" in k}

"""The release's optimizer and learning-rate schedule (MODEL_SPEC §2.2; LAVIS ``runner_base`` / ``optims``).

Parameter groups: weight decay ``wd`` (0.05) for every trainable tensor with ndim >= 2 whose name holds no
"bias", "ln" or "bn"; no decay for the rest (biases, 1-D tensors). AdamW β = (0.9, 0.999).

``linear_warmup_cosine_lr`` at (epoch e, step i within the epoch), with total t = e·iters_per_epoch + i:

    t <  warmup_steps:  lr = min(init_lr, warmup_start_lr + (init_lr - warmup_start_lr) · i / max(warmup_steps, 1))
    t >= warmup_steps:  lr = min_lr + (init_lr - min_lr) · ½ (1 + cos(π t / (max_epoch · iters_per_epoch)))

The warm-up uses the step *within the epoch* ``i``, not ``t``: as the release runs (epochs numbered from 1,
scheduler called before each step, warmup_steps = iters_per_epoch = 5000) the warm-up branch is never taken
and, with init_lr = min_lr = 1e-5, the lr is the constant 1e-5 for the whole run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups of the release: [{decayed params, wd}, {the rest, 0}] over trainable parameters."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bias" in name or "ln" in name or "bn" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999)
) -> torch.optim.AdamW:
    """AdamW over the release's decay groups (the schedule sets the lr before the first step)."""
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, weight_decay=weight_decay)


@dataclass
class LinearWarmupCosineLR:
    """The release's ``LinearWarmupCosineLRScheduler``; :meth:`step` sets every group's lr and returns it."""

    optimizer: torch.optim.Optimizer
    max_epoch: int
    iters_per_epoch: int
    init_lr: float
    min_lr: float
    warmup_steps: int = 0
    warmup_start_lr: float = -1.0

    def lr_at(self, cur_epoch: int, cur_step: int) -> float:
        total = cur_epoch * self.iters_per_epoch + cur_step
        start = self.warmup_start_lr if self.warmup_start_lr >= 0 else self.init_lr
        if total < self.warmup_steps:
            # The release passes the step within the epoch here (not ``total``).
            return min(self.init_lr, start + (self.init_lr - start) * cur_step / max(self.warmup_steps, 1))
        span = self.max_epoch * self.iters_per_epoch
        return self.min_lr + (self.init_lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * total / span))

    def step(self, cur_epoch: int, cur_step: int) -> float:
        lr = self.lr_at(cur_epoch, cur_step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("max_epoch", "iters_per_epoch", "init_lr", "min_lr", "warmup_steps", "warmup_start_lr")
        }

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

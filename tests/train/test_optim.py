"""The release's AdamW decay groups and its linear_warmup_cosine_lr, as it really runs."""

from __future__ import annotations

import math

import torch

from affectrt.train.optim import LinearWarmupCosineLR, build_optimizer, param_groups


def test_decay_groups_follow_the_release():
    from affectrt.train.model import ModelSpec, build_model

    model, _ = build_model(ModelSpec(preset="tiny"), with_encoders=False)
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    d = {names[id(p)] for p in decay["params"]}
    nd = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert (
        "fusion.affectgpt_proj.weight" in d
        and any(".lora_A" in n for n in d)
        and any(".lora_B" in n for n in d)
    )
    assert "fusion.affectgpt_proj.bias" in nd and "fusion.fc_att.bias" in nd
    assert all(".lora_" not in n for n in nd)
    assert not any("embed_tokens" in n for n in d | nd)  # the frozen LLM base is not optimised


def _sched(**kw):
    opt = build_optimizer(torch.nn.Linear(2, 2), lr=0.0)
    return LinearWarmupCosineLR(opt, **kw)


def test_release_schedule_never_warms_up_and_is_constant():
    s = _sched(
        max_epoch=60, iters_per_epoch=5000, init_lr=1e-5, min_lr=1e-5, warmup_steps=5000, warmup_start_lr=1e-6
    )
    # The release's epochs are numbered from 1: total = epoch*5000 + i >= 5000 = warmup_steps from the first step.
    lrs = {s.step(epoch, i) for epoch in (1, 30, 60) for i in (0, 1, 2500, 4999)}
    assert lrs == {1e-5}
    assert s.optimizer.param_groups[0]["lr"] == 1e-5


def test_warmup_uses_the_step_within_the_epoch_and_cosine_uses_the_total():
    s = _sched(
        max_epoch=4, iters_per_epoch=10, init_lr=1e-3, min_lr=1e-5, warmup_steps=25, warmup_start_lr=1e-4
    )
    # epoch 2, step 3: total 23 < 25 -> warm-up at cur_step = 3 (not 23).
    assert math.isclose(s.lr_at(2, 3), 1e-4 + (1e-3 - 1e-4) * 3 / 25)
    assert math.isclose(s.lr_at(0, 0), 1e-4)
    # total 30 >= 25: cosine over max_epoch*iters = 40 steps of the total.
    assert math.isclose(s.lr_at(3, 0), 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 30 / 40)))
    # warmup_start_lr < 0 means "start at init_lr".
    s2 = _sched(max_epoch=1, iters_per_epoch=10, init_lr=2e-4, min_lr=0.0, warmup_steps=5)
    assert s2.lr_at(0, 1) == 2e-4

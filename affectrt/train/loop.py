"""The training loop of one stage, as the release's ``RunnerBase.train`` runs it, on affectrt's fused modules.

Per iteration i of epoch e (epochs numbered from 1, as the release does):

    lr  = schedule(e, i)                         set before the step (so the release's warm-up never runs)
    idx = the next ``batch_size`` indices of the data order (reshuffled per pass, drop_last, endless)
    ex  = draw(idx[k]) for this rank's share     release sample rule (hybird label type, 1024-token limit)
    L   = Σ token losses / N_global              N_global: labelled tokens of the whole global batch
    backward(scale · L / accum_grad_iters)       (DDP averages the ranks' gradients: the loss is × world)
    every accum_grad_iters iterations: [unscale, clip], optimizer step, scaler update, zero grad

so a 2-rank run equals a 1-rank run with the same global batch. With accumulation the gradient is the mean
over the accumulated iterations (LAVIS, which the release runs with accumulation 1, sums them; AdamW is nearly
invariant to that scale). Each draw has its own Python RNG seeded by
(seed, iteration, slot in the global batch): label types and replacements do not depend on how the batch is
split, nor on whether the run was resumed. Dropout draws come from torch's RNG, saved in checkpoints.

Writes, under ``<output>/<stage>/``: ``last.pt`` (resumable full state; atomic), ``metrics.jsonl`` (one line
per iteration), ``checkpoint_<epoch>_loss_<L>.pth`` (release layout: epoch 0 = the initial state, then every
epoch with its mean loss), ``final.safetensors``
(trainable tensors when the stage is done) and ``curve.png`` (loss/lr; needs matplotlib).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from affectrt.text.splice import IGNORE_INDEX, TokenBatch, training_batch
from affectrt.train import checkpoint as ckpt
from affectrt.train.data import TrainingSet
from affectrt.train.distributed import DistInfo, full_trainable
from affectrt.train.optim import LinearWarmupCosineLR, build_optimizer
from affectrt.train.recipe import Recipe, StageSpec

log = logging.getLogger("affectrt.train")

# Test hook: kill the process (SIGKILL, no clean-up) right after this global iteration. Used to prove
# that a crash leaves a valid checkpoint and that --resume continues bit-identically.
_KILL_ENV = "AFFECTRT_TRAIN_KILL_AFTER"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss without a loss scaler); the message says what to do."""


class DataOrder:
    """The release's endless shuffled order: a fresh permutation per pass, the last partial batch dropped.

    state = (pass, offset); the permutation of pass p is ``randperm(n)`` from a generator seeded (seed, p).
    """

    def __init__(self, n: int, batch: int, seed: int) -> None:
        if batch > n:
            raise ValueError(f"batch_size {batch} exceeds the {n} samples of the dataset; lower batch_size")
        self.n, self.batch, self.seed = n, batch, seed
        self.epoch_pass, self.offset = 0, 0
        self._perm: tuple[int, Tensor] | None = None

    def _permutation(self) -> Tensor:
        if self._perm is None or self._perm[0] != self.epoch_pass:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch_pass)
            self._perm = (self.epoch_pass, torch.randperm(self.n, generator=g))
        return self._perm[1]

    def next(self) -> list[int]:
        if self.offset + self.batch > self.n:
            self.epoch_pass, self.offset = self.epoch_pass + 1, 0
        idx = self._permutation()[self.offset : self.offset + self.batch].tolist()
        self.offset += self.batch
        return idx

    def state_dict(self) -> dict:
        return {"pass": self.epoch_pass, "offset": self.offset}

    def load_state_dict(self, s: dict) -> None:
        self.epoch_pass, self.offset = s["pass"], s["offset"]


class _LossModule(nn.Module):
    """model.loss as a module forward, so DDP can wrap it: returns the token *sum* of the local batch."""

    def __init__(self, model: nn.Module, placeholder_ids: dict[str, int]) -> None:
        super().__init__()
        self.model = model
        self.placeholder_ids = placeholder_ids

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor, zv: Tensor, za: Tensor
    ) -> Tensor:
        batch = TokenBatch(input_ids, attention_mask, labels)
        return self.model.loss(batch, zv, za, self.placeholder_ids, reduction="sum")


@dataclass
class StageResult:
    final: Path
    iterations: int
    skipped_samples: int
    skipped_steps: int
    losses: list[float] = field(default_factory=list)


def _amp(recipe: Recipe, device: torch.device):
    if recipe.amp == "none":
        return nullcontext()
    dtype = torch.float16 if recipe.amp == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def run_stage(
    recipe: Recipe,
    stage: StageSpec,
    model: nn.Module,
    tokenizer,
    data: TrainingSet,
    source,
    out_dir: Path,
    dist: DistInfo,
    resume: bool = False,
    progress: bool = True,
) -> StageResult:
    """Train one stage (see the module docstring); returns where its final tensors are."""
    device = torch.device(recipe.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    model.train()
    loss_module: nn.Module = _LossModule(model, tokenizer.placeholder_ids)
    if dist.world > 1:
        loss_module = dist.wrap(loss_module)

    opt = build_optimizer(model, stage.init_lr, stage.weight_decay, stage.betas)
    sched = LinearWarmupCosineLR(
        opt,
        stage.max_epoch,
        stage.iters_per_epoch,
        stage.init_lr,
        stage.min_lr,
        stage.warmup_steps,
        stage.warmup_lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=recipe.amp == "fp16")
    order = DataOrder(len(data), stage.batch_size, recipe.seed)
    total = stage.max_epoch * stage.iters_per_epoch
    start_it, skipped_steps = 0, 0
    epoch_losses: list[float] = []
    metrics_path = out_dir / "metrics.jsonl"
    last = out_dir / "last.pt"

    if resume and last.is_file():
        if dist.fsdp:
            raise TrainingError(
                f"{last}: --resume under FSDP is not supported yet (the sharded optimizer state is not saved); "
                "resume with DDP (unset AFFECTRT_FSDP) or start the stage again"
            )
        state = ckpt.load_state(last)
        from affectrt.checkpoint import load_trainable

        load_trainable(model, state["trainable"], source=str(last))
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        sched.load_state_dict(state["scheduler"])
        order.load_state_dict(state["data"])
        ckpt.set_rng_state(state["rng"][dist.rank] if isinstance(state["rng"], list) else state["rng"])
        start_it, skipped_steps = state["iteration"], state["skipped_steps"]
        epoch_losses = state["epoch_losses"]
        data.skips.count = state["skipped_samples"]
        if dist.is_main:
            _truncate_metrics(metrics_path, start_it)
        log.info("resumed %s at iteration %d from %s", stage.name, start_it, last)
    else:
        torch.manual_seed(recipe.seed + dist.rank)  # dropout draws; the release seeds 42 + rank
        if dist.is_main and metrics_path.exists():
            metrics_path.unlink()
        if stage.export:  # the release also saves the untrained state first: epoch 0, loss field 0.000
            initial = full_trainable(model)
            if dist.is_main:
                ckpt.export_release(initial, out_dir / ckpt.release_name(0, 0.0), 0, {"stage": stage.name})

    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start_it, desc=stage.name, unit="it", dynamic_ncols=True)
    kill_after = int(os.environ.get(_KILL_ENV, "-1"))
    losses: list[float] = []
    t_last, seen = time.perf_counter(), 0
    sink = open(metrics_path, "a") if dist.is_main else None
    try:
        for it in range(start_it, total):
            epoch, i = it // stage.iters_per_epoch + 1, it % stage.iters_per_epoch
            lr = sched.step(epoch, i)
            loss = _iteration(
                recipe, stage, loss_module, tokenizer, data, source, order, it, dist, device, scaler
            )
            boundary = (i + 1) % stage.accum_grad_iters == 0
            if boundary:
                skipped_steps += _update(recipe, stage, model, opt, scaler, loss)
            if not math.isfinite(loss) and recipe.amp != "fp16" and recipe.nan == "stop":
                raise TrainingError(
                    f"stage {stage.name}: loss is {loss} at iteration {it}; stopped. The last good checkpoint "
                    f"({last if last.is_file() else 'none yet'}) is kept. Lower init_lr, use amp: bf16, or set "
                    "nan: skip"
                )
            losses.append(loss)
            epoch_losses.append(loss)
            seen += stage.batch_size
            now = time.perf_counter()
            rate = seen / max(now - t_last, 1e-9)
            if sink is not None:
                rec = {"stage": stage.name, "iteration": it, "epoch": epoch, "step": i, "loss": loss, "lr": lr,
                       "samples_per_s": round(rate, 3), "skipped_samples": data.skips.count,
                       "skipped_steps": skipped_steps}  # fmt: skip
                sink.write(json.dumps(rec) + "\n")
                sink.flush()
            if bar is not None:
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", sps=f"{rate:.1f}", refresh=False)
                bar.update(1)
            epoch_end = i + 1 == stage.iters_per_epoch
            if boundary and ((it + 1) % stage.save_every == 0 or epoch_end):
                trainable = full_trainable(model)  # collective under FSDP: every rank gathers
                if epoch_end and stage.export and dist.is_main:
                    mean = sum(epoch_losses) / max(len(epoch_losses), 1)
                    name = ckpt.release_name(epoch, mean)
                    ckpt.export_release(trainable, out_dir / name, epoch, {"stage": stage.name})
                if epoch_end:
                    epoch_losses = []
                _save(
                    trainable,
                    opt,
                    scaler,
                    sched,
                    order,
                    it + 1,
                    skipped_steps,
                    data,
                    epoch_losses,
                    dist,
                    last,
                )
            if it == kill_after:
                if sink is not None:
                    sink.flush()
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        if sink is not None:
            sink.close()
        if bar is not None:
            bar.close()
    final = out_dir / "final.safetensors"
    trainable = full_trainable(model)
    if dist.is_main:
        ckpt.save_final(trainable, model.cfg, final)
        if recipe.plot:
            plot_curve(metrics_path, out_dir / "curve.png")
    # Every rank drew its own share of the samples: the run's skip count is the sum over ranks.
    skipped = int(dist.all_reduce_sum(torch.tensor(float(data.skips.count), dtype=torch.float64)))
    if skipped and dist.is_main:
        log.warning(
            "stage %s: %d sample attempt(s) skipped (rank 0: %s)", stage.name, skipped, data.skips.by_kind
        )
    dist.barrier()
    return StageResult(final, total - start_it, skipped, skipped_steps, losses)


def _iteration(recipe, stage, loss_module, tokenizer, data, source, order, it, dist, device, scaler) -> float:
    """Forward + backward of one global batch (this rank's share); returns the global token-mean loss."""
    indices = order.next()
    slots = range(dist.rank, len(indices), dist.world)
    examples = [data.draw(indices[s], random.Random(f"{recipe.seed}:{it}:{s}")) for s in slots]
    tb = training_batch(tokenizer, [e.prompt for e in examples], [e.answer for e in examples])
    zv, za = source.batch(examples, device)
    n_local = (tb.labels[:, 1:] != IGNORE_INDEX).sum().to(torch.float64)
    n_global = dist.all_reduce_sum(n_local.clone())
    sync = nullcontext()
    boundary = (it % stage.iters_per_epoch + 1) % stage.accum_grad_iters == 0
    if dist.world > 1 and not boundary:
        sync = loss_module.no_sync()
    with sync:
        with _amp(recipe, device):
            loss_sum = loss_module(
                tb.input_ids.to(device), tb.attention_mask.to(device), tb.labels.to(device), zv, za
            )
        scaled = loss_sum * (dist.world / float(n_global) / stage.accum_grad_iters)
        (scaler.scale(scaled) if scaler.is_enabled() else scaled).backward()
    total = dist.all_reduce_sum(loss_sum.detach().to(torch.float64).cpu())
    return float(total / n_global)


def _update(recipe, stage, model, opt, scaler, loss: float) -> int:
    """Optimizer step at an accumulation boundary; returns 1 if the fp16 scaler skipped it (inf/NaN)."""
    params = [p for p in model.parameters() if p.requires_grad]
    skipped = 0
    if scaler.is_enabled():
        if stage.clip_grad is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, stage.clip_grad)
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        skipped = int(scaler.get_scale() < before)
        if skipped:
            log.warning(
                "non-finite gradients: step skipped by the loss scaler (scale %.0f -> %.0f)",
                before,
                scaler.get_scale(),
            )
    elif not math.isfinite(loss) and recipe.nan == "skip":
        skipped = 1
        log.warning("non-finite loss %s: step skipped", loss)
    else:
        if stage.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(params, stage.clip_grad)
        opt.step()
    opt.zero_grad(set_to_none=True)
    return skipped


def _save(
    trainable, opt, scaler, sched, order, iteration, skipped_steps, data, epoch_losses, dist, path
) -> None:
    rng = dist.gather_object(ckpt.rng_state())
    if not dist.is_main:
        return
    state = {
        "format": "affectrt-train-1",
        "trainable": trainable,
        "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": rng if dist.world > 1 else rng[0],
        "data": order.state_dict(),
        "iteration": iteration,
        "skipped_steps": skipped_steps,
        "skipped_samples": data.skips.count,
        "epoch_losses": list(epoch_losses),
    }
    ckpt.atomic_save(state, path)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop metric lines at or after ``iteration`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] < iteration:
                keep.append(line)
        except (json.JSONDecodeError, KeyError):
            continue
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(k + "\n" for k in keep))
    os.replace(tmp, path)


def plot_curve(metrics: Path, out: Path) -> Path | None:
    """Loss and lr per iteration as a PNG; skipped with a log line when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib not installed (pip install 'affectrt[plot]'): no %s", out)
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    its = [r["iteration"] for r in rows]
    a.plot(its, [r["loss"] for r in rows], lw=0.8)
    a.set_ylabel("loss")
    b.plot(its, [r["lr"] for r in rows], lw=0.8, color="tab:orange")
    b.set_ylabel("lr")
    b.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out

"""Scale-out with ``torchrun``: one process per device, DDP over the trainable tensors (FSDP optional).

``torchrun --nproc_per_node=N -m affectrt.cli train RECIPE`` (or ``affectrt train`` under ``torchrun``) sets
RANK / WORLD_SIZE / LOCAL_RANK; :func:`init_distributed` then joins the process group (NCCL on CUDA, gloo on
the CPU). Each iteration's global batch (the recipe's ``batch_size``) is split over the ranks by slot
(rank r takes slots r, r+N, ...); the loss is divided by the global count of labelled tokens, so the averaged
gradient equals the 1-process gradient of the same global batch. Rank 0 writes checkpoints and metrics; the
RNG states of every rank are gathered into the checkpoint.

``AFFECTRT_FSDP=1`` shards the parameters with FSDP2 ``fully_shard`` (per decoder layer, then the rest)
instead of replicating them (memory for the 7B base on small GPUs); DDP is the default. Under FSDP the
trainable tensors are gathered for checkpoints and exports; ``--resume`` is not supported yet (the sharded
optimizer state is not saved).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class DistInfo:
    """rank, world size and local rank; with world == 1 every collective is a no-op."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    fsdp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        if self.world == 1:
            return t
        import torch.distributed as dist

        dev = _collective_device()
        out = t.to(dev)
        dist.all_reduce(out)
        return out.to(t.device)

    def gather_object(self, obj: object) -> list:
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def wrap(self, module: nn.Module) -> nn.Module:
        """DDP over the trainable tensors (frozen ones are ignored by DDP); FSDP2 layers first if asked."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            for layer in module.model.llm.layers:
                fully_shard(layer)
            fully_shard(module)  # the rest (fusion head, embeddings, head) as one root group
            return _NoSyncShim(module)
        ids = [self.local_rank] if torch.cuda.is_available() and _collective_device().type == "cuda" else None
        # image_llama_proj is trainable but never used for video: it gets no gradient (as in the release).
        return DDP(module, device_ids=ids, find_unused_parameters=True)


def full_trainable(model: nn.Module) -> dict[str, Tensor]:
    """Trainable tensors (affectrt names) as full CPU tensors; under FSDP each sharded one is gathered.

    Collective under FSDP: every rank must call it.
    """
    out = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            t = p.detach()
            if hasattr(t, "full_tensor"):  # a DTensor shard (FSDP2)
                t = t.full_tensor()
            out[name] = t.cpu().clone()
    return out


class _NoSyncShim(nn.Module):
    """FSDP2 modules reduce in backward themselves; ``no_sync`` is a no-op here (accumulation still works)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args):
        return self.module(*args)

    def no_sync(self):
        from contextlib import nullcontext

        return nullcontext()


def _collective_device() -> torch.device:
    import torch.distributed as dist

    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def init_distributed(device: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single-process DistInfo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    fsdp = os.environ.get("AFFECTRT_FSDP", "0") == "1"
    if world <= 1:
        return DistInfo(fsdp=False)
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistInfo(rank=rank, world=world, local_rank=local, fsdp=fsdp)


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

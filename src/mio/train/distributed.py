"""Distributed training: the process group, FSDP2 sharding, and full (unsharded) state.

Under `torchrun --nproc_per_node N` each rank joins the group (gloo on CPU, nccl on GPU), the
model is sharded with FSDP2 (`fully_shard`), and checkpoints gather the full state so that a
run directory never depends on how many ranks wrote it. Run alone, every function here is a
no-op or the plain single-process equivalent.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from mio.device import resolve_device


def setup(device_spec: str) -> tuple[int, int, torch.device]:
    """Join the process group under torchrun; (rank, world_size, device). Alone: (0, 1, device)."""
    device = resolve_device(device_spec)
    if "RANK" not in os.environ:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dist.get_rank(), dist.get_world_size(), device


def barrier(world_size: int) -> None:
    """Wait for every rank (nothing to wait for when run alone)."""
    if world_size > 1:
        dist.barrier()


def shard_model(model, world_size: int) -> None:
    """FSDP2: shard each decoder layer, then the root (embeddings, norm, head)."""
    if world_size == 1:
        return
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def unwrap(model):
    """The model under a wrapper that keeps it in `.module`, else the model itself."""
    return getattr(model, "module", model)


def full_state(model, optimizer, world_size: int) -> tuple[dict, dict]:
    """Unsharded model and optimizer state (gathered to CPU; identical on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    if world_size == 1:
        return model.state_dict(), optimizer.state_dict()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def load_full_state(model, optimizer, model_state: dict, optim_state: dict, world_size: int) -> None:
    """Load unsharded state into a (possibly sharded) model and its optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    if world_size == 1:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, optimizer, optim_state, options=opts)


def all_gather_objects(obj) -> list:
    """`obj` from every rank, in rank order."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()

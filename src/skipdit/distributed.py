"""One process per device under ``torchrun``: rank, world size and device, shared by training and
sampling. Without torchrun's environment everything runs in one process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import UserError


def init_distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; one process without it. The process
    group uses NCCL on CUDA and gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
    return rank, world, local_rank


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when CUDA is available, else the CPU; ``cuda`` means this process's GPU."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = check_device(name)
    if device.type == "cuda" and device.index is None:
        device = check_device(f"cuda:{local_rank}")
    return device


DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")  # what skipdit samples and trains on; torch knows more (meta, ipu ...)


def check_device(name: str | torch.device) -> torch.device:
    """``name`` as a device that exists here, else one line: torch's own errors are a RuntimeError listing
    twenty backends (``--device bogus``) or an AssertionError from deep inside ``.to()`` (``--device cuda`` on
    a CPU-only torch), both only once the model moves, after work has started."""
    if isinstance(name, torch.device):
        device = name
    else:
        try:
            device = torch.device(str(name).strip())
        except (RuntimeError, ValueError):
            raise UserError(f"unknown device {str(name)!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type not in DEVICE_TYPES:
        raise UserError(f"device {str(name)!r}: skipdit runs on {', '.join(DEVICE_TYPES)}, not {device.type}")
    if device.type == "cpu":
        return device
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        backend = getattr(torch.backends, "mps", None)
    if backend is None or not backend.is_available():
        raise UserError(f"device {str(name)!r} requested but {device.type} is not available in this torch "
                        f"({torch.__version__}); use --device cpu")
    count = getattr(backend, "device_count", lambda: 1)()
    if device.index is not None and device.index >= count:
        raise UserError(f"device {str(name)!r} does not exist: this machine has {count} {device.type} device(s) "
                        f"({device.type}:0..{device.type}:{count - 1})")
    return device


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def shutdown(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()

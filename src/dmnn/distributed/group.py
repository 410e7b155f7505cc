"""The process group of a ``torchrun`` launch: read from its environment, entered once per run.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` for every
worker; a plain ``dmnn train`` has none of them and runs as one process, exactly as before.
The backend follows the device: NCCL for CUDA, gloo for CPU. While a context is *active*
(:meth:`DistContext.activate`), batch statistics are global and evaluation gathers its shards;
outside it (and in a single process) everything is local.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import UsageError

BACKENDS = ("auto", "gloo", "nccl")
_ACTIVE: DistContext | None = None


@dataclass(frozen=True)
class DistContext:
    """One rank of a process group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device
    stats_group: object  # a second group for batch statistics (never interleaves with DDP's)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @contextmanager
    def activate(self) -> Iterator[DistContext]:
        global _ACTIVE
        previous, _ACTIVE = _ACTIVE, self
        try:
            yield self
        finally:
            _ACTIVE = previous

    def barrier(self) -> None:
        dist.barrier()

    def all_sum(self, values: list[float]) -> list[float]:
        """Sums of ``values`` over the ranks (one collective; float64)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) on every rank: DDP broadcasts them
        before each forward, so after the last step they differ by that step's update."""
        for buf in module.buffers():
            dist.broadcast(buf, 0)

    def same_everywhere(self, value: float) -> bool:
        """Whether ``value`` is equal on every rank (checked in tests and after resume)."""
        t = torch.tensor([value, -value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t[0].item() == -t[1].item()


def active() -> DistContext | None:
    """The context of the running data-parallel job, or None (one process, or outside a run)."""
    return _ACTIVE


def dist_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None without one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)")\
            from None
    return rank, world, local


def pick_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"--dist-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise UsageError("--dist-backend nccl needs CUDA devices: use --device cuda on GPUs, "
                         "or --dist-backend gloo (the default on CPU)")
    return backend


def setup(device: torch.device, backend: str = "auto", timeout_s: float = 600.0
          ) -> tuple[DistContext | None, torch.device]:
    """Join torchrun's process group (once per process); returns (context, this rank's device).

    ``device`` is what ``--device`` named: under torchrun, ``cuda`` becomes ``cuda:LOCAL_RANK``.
    ``timeout_s`` bounds how long a rank waits for a peer that died or hangs before it fails."""
    env = dist_env()
    if env is None or env[1] == 1:
        pick_backend(backend, device)  # refuse nccl on CPU in one process too
        return None, device
    rank, world, local = env
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA "
                             "device(s): lower --nproc-per-node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    name = pick_backend(backend, device)
    timeout = timedelta(seconds=timeout_s)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if name == "nccl" else {}
        dist.init_process_group(name, timeout=timeout, **kwargs)
    stats = dist.new_group(backend=name, timeout=timeout)
    return DistContext(rank, world, local, name, device, stats), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

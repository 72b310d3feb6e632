"""Multi-process training with torch.distributed (DistributedDataParallel).

A run is distributed when it is started by ``torchrun`` (or by ``python run.py train --nproc N``,
which starts torchrun for you): the environment then holds ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``. NCCL is used on GPUs, gloo on CPUs. Only rank 0 writes the run directory.

Example:
    >>> ctx = from_env("auto")  # doctest: +SKIP
    >>> ctx.mean([loss, err])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

#: a collective that waits longer than this fails the run instead of hanging it
COLLECTIVE_TIMEOUT_S = 120


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not started by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


@dataclasses.dataclass
class DistContext:
    """One process's place in a distributed run."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mean(self, values: list[float]) -> list[float]:
        """Average ``values`` over all ranks (NaN stays NaN)."""
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / self.world_size).tolist()

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any rank (used to stop together)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self._comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")


def from_env(device_spec: str | None) -> DistContext | None:
    """Join the process group described by the environment; ``None`` for a single process.

    Args:
        device_spec: the run's ``--device``; ``cpu`` forces gloo, anything else uses one GPU per
            local rank (NCCL) when CUDA is available.
    """
    world_size = env_world_size()
    if world_size <= 1:
        return None
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and str(device_spec or "auto") != "cpu"
    if use_cuda:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    return DistContext(rank, world_size, local_rank, device, backend)


def param_fingerprint(model: torch.nn.Module) -> list[float]:
    """A few numbers that differ when two ranks' parameters differ (sum and sum of squares)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    return [float(flat.sum()), float((flat * flat).sum())]

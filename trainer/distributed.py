"""Multi-process training with torch.distributed (DistributedDataParallel).

A run is distributed when it is started by ``torchrun`` (or by ``python run.py train --nproc N``,
which starts torchrun for you; with ``--nnodes M --node-rank R --rdzv-endpoint HOST:PORT`` one
torchrun per node, meeting through c10d rendezvous): the environment then holds ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``. NCCL is used on GPUs, gloo on CPUs. Only rank 0 writes the
run directory.

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

    def close(self, together: bool = False) -> bool:
        """Leave the process group.

        Args:
            together: wait for every rank first (after a clean end), so no rank leaves while
                another still writes its final files (rank 0's FINAL snapshot); after a
                failure no rank waits for the others.

        Returns:
            Whether every rank got here: the whole run's work is done.
        """
        if not dist.is_initialized():
            return False
        met = False
        if together:
            try:
                dist.barrier()
                met = True
            except (RuntimeError, dist.DistError):  # a rank is gone: nothing to wait for
                pass
        dist.destroy_process_group()
        return met

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


def parse_endpoint(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of a rendezvous endpoint, checked.

    Raises:
        ValueError: naming the value and the expected form.
    """
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"--rdzv-endpoint {text!r}: expected HOST:PORT with a port 1 to 65535, e.g. "
            "node001:29400 (the first node's name and a free port on it)"
        )
    return host, int(port)


def torchrun_argv(
    python: str,
    script: list[str],
    nproc: int,
    nnodes: int = 1,
    node_rank: int = 0,
    rdzv_endpoint: str | None = None,
) -> list[str]:
    """The command line of the torchrun that starts this node's ``nproc`` ranks.

    One node rendezvouses on its own (``--standalone``); ``nnodes`` > 1 meet through c10d
    rendezvous at ``rdzv_endpoint``: the agent on that host serves the store, the others join
    it, and the run starts when all ``nnodes`` have joined (torchrun waits up to 600 s). A
    rank that ends with an error ends every node's torchrun (no restarts).

    Example:
        >>> torchrun_argv("python", ["run.py", "train"], 2, 2, 1, "n1:29400")[3:7]
        ['--nnodes=2', '--node_rank=1', '--rdzv_backend=c10d', '--rdzv_endpoint=n1:29400']
    """
    head = [python, "-m", "torch.distributed.run"]
    if nnodes > 1:
        if rdzv_endpoint is None:
            raise ValueError("--nnodes > 1 needs --rdzv-endpoint HOST:PORT")
        parse_endpoint(rdzv_endpoint)
        head += [f"--nnodes={nnodes}", f"--node_rank={node_rank}", "--rdzv_backend=c10d",
                 f"--rdzv_endpoint={rdzv_endpoint}", "--rdzv_id=voxelboard", "--max_restarts=0"]  # fmt: skip
    else:
        head.append("--standalone")
    return [*head, f"--nproc_per_node={nproc}", "--monitor_interval=0.5", *script]


def agree_run_dir(ctx: DistContext, named: str | None, make: Any) -> str:
    """The one run directory of all ranks, on every rank.

    Ranks started with a directory (``--resume``, or ``--use-existing-dir`` with the one the
    first node's ``run.py`` made) name it; the other nodes' ranks name none. Where none does
    (``torchrun`` started by hand), rank 0 calls ``make()`` and its directory (named by its
    clock) is everyone's. Whichever node rank 0 lands on, the nodes need one shared file
    system for the run directory.

    Raises:
        ValueError: two ranks name different directories (the nodes were started with
            different ``--save-name``/``--resume``).
    """
    named_by = {}
    for rank, path in enumerate(ctx.gather(named)):
        if path is not None:
            named_by.setdefault(path, rank)
    if len(named_by) > 1:
        listed = ", ".join(f"rank {r}: {p}" for p, r in named_by.items())
        raise ValueError(
            f"the ranks name different run directories ({listed}); start every node with "
            "the same --resume RUN_DIR or --save-path/--save-name"
        )
    if named_by:
        return next(iter(named_by))
    return ctx.broadcast(str(make()) if ctx.is_main else None)


def param_fingerprint(model: torch.nn.Module) -> list[float]:
    """A few numbers that differ when two ranks' parameters differ (sum and sum of squares)."""
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double().cpu() for p in model.parameters()])
    return [float(flat.sum()), float((flat * flat).sum())]

"""What the machine is doing: CPU and RAM (psutil) and, where present, each GPU (NVML).

NVML (``pynvml`` from nvidia-ml-py) is imported and initialised on first use only; on a
machine without an NVIDIA driver every GPU query answers "no GPUs" instead of failing.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping

import psutil

_nvml_lock = threading.Lock()
_nvml_state: dict[str, bool] = {}  # "ok": NVML initialised in this process (or failed to)


@dataclasses.dataclass
class GpuStats:
    """One GPU as NVML sees it.

    Attributes:
        index: NVML index (what ``CUDA_VISIBLE_DEVICES`` takes).
        name: product name.
        util_percent: GPU utilisation over the last sample period.
        mem_used: bytes in use.
        mem_total: bytes on the card.
        pids: processes with a compute context on it.
        runs: run names using it (filled by ``system_stats``).
    """

    index: int
    name: str
    util_percent: float
    mem_used: int
    mem_total: int
    pids: list[int] = dataclasses.field(default_factory=list)
    runs: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SystemStats:
    """CPU, RAM and GPUs at one moment."""

    cpu_percent: float
    n_cpus: int
    ram_used: int
    ram_total: int
    gpus: list[GpuStats]


def _nvml():
    """The initialised ``pynvml`` module, or ``None`` without a usable driver."""
    with _nvml_lock:
        if "ok" not in _nvml_state:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_state["ok"] = True
            except Exception:  # no library, no driver, no device: all mean "no GPUs"
                _nvml_state["ok"] = False
        if not _nvml_state["ok"]:
            return None
    import pynvml

    return pynvml


def gpu_indices() -> list[int]:
    """Indices of the NVIDIA GPUs on this machine; ``[]`` without NVML."""
    nv = _nvml()
    if nv is None:
        return []
    try:
        return list(range(nv.nvmlDeviceGetCount()))
    except Exception:
        return []


def gpu_stats() -> list[GpuStats]:
    """Utilisation, memory and compute processes of every GPU; ``[]`` without NVML."""
    nv = _nvml()
    if nv is None:
        return []
    out = []
    for i in gpu_indices():
        try:
            h = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(h)
            util = nv.nvmlDeviceGetUtilizationRates(h).gpu
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            try:
                pids = [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h)]
            except Exception:
                pids = []
            out.append(
                GpuStats(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    util_percent=float(util),
                    mem_used=int(mem.used),
                    mem_total=int(mem.total),
                    pids=pids,
                )
            )
        except Exception:  # a GPU that fell off the bus should not hide the others
            continue
    return out


def system_stats(
    run_pids: Mapping[int, str] | None = None, run_gpus: Mapping[str, int] | None = None
) -> SystemStats:
    """CPU %, RAM and GPUs, with the runs using each GPU.

    Args:
        run_pids: pid -> run name of running runs; a GPU whose compute processes include
            that pid is marked as used by that run.
        run_gpus: run name -> GPU index the launcher assigned (covers runs that have not
            created a CUDA context yet).
    """
    vm = psutil.virtual_memory()
    gpus = gpu_stats()
    run_pids = run_pids or {}
    for g in gpus:
        names = {run_pids[p] for p in g.pids if p in run_pids}
        names |= {name for name, idx in (run_gpus or {}).items() if idx == g.index}
        g.runs = sorted(names)
    return SystemStats(
        cpu_percent=psutil.cpu_percent(interval=None),
        n_cpus=psutil.cpu_count() or 1,
        ram_used=int(vm.total - vm.available),
        ram_total=int(vm.total),
        gpus=gpus,
    )

"""Choosing the compute device and describing it for the log and the status file.

Nothing here runs at import time; CUDA is only queried when a function is called.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_CUDA_SPEC = re.compile(r"^cuda(?::(\d+))?$")


class DeviceUnavailableError(RuntimeError):
    """The requested device does not exist on this machine."""


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a ``--device`` value into a ``torch.device``.

    Args:
        spec: ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'`` or
            ``'cuda:N'``, or a ``torch.device``.

    Returns:
        The device; ``'cuda'`` resolves to ``cuda:0``.

    Raises:
        ValueError: a spec that is none of the above.
        DeviceUnavailableError: CUDA was asked for but no GPU is visible, or the index is out
            of range.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA_SPEC.match(text)
    if match is None:
        raise ValueError(
            f"device {spec!r} is not understood; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device {spec!r} was requested but no GPU is visible to PyTorch "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); "
            "use --device cpu (or --device auto)"
        )
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceUnavailableError(
            f"device {spec!r} was requested but only {count} GPU(s) are visible "
            f"(cuda:0 to cuda:{count - 1}); pick one of those or use --device cpu"
        )
    return torch.device("cuda", index)


def device_info(device: torch.device | str) -> dict[str, Any]:
    """Describe ``device`` for the log and ``status.json`` (JSON-serialisable values).

    Returns:
        ``device`` (e.g. ``'cuda:0'``), ``torch_version``, ``cuda_version`` (``None`` for a
        CPU-only build), ``gpu_name`` and ``gpu_memory_gib`` (``None`` on the CPU), and
        ``cpu_threads`` (torch's intra-op thread count).
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    info: dict[str, Any] = {
        "device": str(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "gpu_name": None,
        "gpu_memory_gib": None,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_name"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 2)
    return info

"""Optimiser hyper-parameter names: ELEKTRONN2's and PyTorch's, in one table.

ELEKTRONN2 configs and schedules say ``lr``, ``mom`` and ``wd``; PyTorch's optimisers say
``lr``, ``momentum`` and ``weight_decay``. A config may use either name. The optimisers
(``trainer.optimisers``), the schedules (``trainer.schedules``), the trainer and the dashboard
all translate through this table. It imports nothing, so the dashboard reads it without torch.

Example:
    >>> TORCH_NAMES["mom"], elektronn2_name("weight_decay")
    ('momentum', 'wd')
    >>> initial_value({"lr": 0.1, "momentum": 0.9}, "mom")
    0.9
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ELEKTRONN2 name -> PyTorch's name of the same hyper-parameter (``lr`` is ``lr`` in both)
TORCH_NAMES: dict[str, str] = {"mom": "momentum", "wd": "weight_decay"}

#: every name of an optimiser hyper-parameter a schedule may bind to
OPTIMISER_HYPERS: tuple[str, ...] = ("lr", *TORCH_NAMES, *TORCH_NAMES.values())


def elektronn2_name(name: str) -> str:
    """ELEKTRONN2's name of a hyper-parameter given either name (unknown names unchanged)."""
    return {torch: e2 for e2, torch in TORCH_NAMES.items()}.get(name, name)


def names_of(name: str) -> tuple[str, ...]:
    """Both names of a hyper-parameter, ELEKTRONN2's first: ``names_of('wd')`` is
    ``('wd', 'weight_decay')``; a name without a second one gives itself alone."""
    e2 = elektronn2_name(name)
    return (e2, TORCH_NAMES[e2]) if e2 in TORCH_NAMES else (name,)


def initial_value(params: Mapping[str, Any], name: str) -> Any:
    """The value ``optimiser_params`` gives a hyper-parameter under either of its names
    (``None`` if neither is there)."""
    for key in (name, *names_of(name)):
        if key in params:
            return params[key]
    return None

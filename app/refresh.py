"""How often the dashboard's open pages ask the server for news: one setting, ``--refresh``.

``python run.py dashboard --refresh SECONDS`` (``create_app(refresh_s=...)``, kept in the
app's ``AppContext``) is the period of a live page: the runs table, a run's curves, a sweep,
the jobs. Every other page interval is a fixed multiple of it, set here and nowhere else, so
the pages keep today's ratios at any refresh (TensorBoard's ``--reload_interval`` plays the
same part). A shorter refresh shows news sooner and costs the server more requests: each
open page asks once a period (a few stats and an append-only read, see ``app.series``).

Pure: no Dash, no files.

Example:
    >>> every = intervals(2.0)
    >>> every.live_ms, every.slow_ms, every.panel_ms
    (2000, 10000, 5000)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

#: seconds between two polls of a live page unless ``--refresh`` says otherwise
DEFAULT_REFRESH_S = 2.0
#: the accepted ``--refresh`` range, in seconds: below it a handful of open pages keep the
#: server's threads busy; above it a page would look frozen
MIN_REFRESH_S = 0.25
MAX_REFRESH_S = 60.0
#: a run that looks over but may yet change (``lost``, a damaged status.json or history)
SLOW_FACTOR = 5
#: pages whose news is rarely urgent and costlier to look for: the evaluation page's result
#: listing, the preview viewer's file listing, the experiments page's CPU/RAM/GPU panel
PANEL_FACTOR = 2.5


@dataclasses.dataclass(frozen=True)
class Intervals:
    """The page intervals of one refresh period, in milliseconds (``dcc.Interval``'s unit).

    Attributes:
        refresh_s: the refresh period in seconds.
        live_ms: live pages: the runs table, a run's curves, a sweep, the jobs.
        slow_ms: a run page whose run looks over but may yet change (``SLOW_FACTOR`` x).
        panel_ms: the evaluation page's result listing, the preview viewer and the system
            panel (``PANEL_FACTOR`` x).
    """

    refresh_s: float
    live_ms: int
    slow_ms: int
    panel_ms: int


def check_refresh(value: Any, name: str = "refresh_s") -> float:
    """``value`` as a number of seconds, or ``ValueError`` naming ``name`` and the range.

    Example:
        >>> check_refresh(0.5)
        0.5
        >>> check_refresh(0.1, "--refresh")
        Traceback (most recent call last):
        ...
        ValueError: --refresh 0.1: expected seconds between two page refreshes in 0.25..60 (e.g. --refresh 2)
    """
    number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if number is None or not math.isfinite(number) or not MIN_REFRESH_S <= number <= MAX_REFRESH_S:
        example = f"{name} 2" if name.startswith("-") else f"{name}=2"
        raise ValueError(
            f"{name} {value!r}: expected seconds between two page refreshes in "
            f"{MIN_REFRESH_S:g}..{MAX_REFRESH_S:g} (e.g. {example})"
        )
    return float(number)


def intervals(refresh_s: float = DEFAULT_REFRESH_S) -> Intervals:
    """The page intervals of a refresh period of ``refresh_s`` seconds (checked, see
    ``check_refresh``)."""
    refresh_s = check_refresh(refresh_s)
    live = round(refresh_s * 1000)
    return Intervals(refresh_s, live, round(live * SLOW_FACTOR), round(live * PANEL_FACTOR))


#: the intervals of ``DEFAULT_REFRESH_S``
DEFAULT = intervals()

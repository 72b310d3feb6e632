"""Callback inputs and state as the pages may use them, whatever a client sent.

A browser normally sends what the page's controls hold, but a request can carry any JSON:
``null``, ``true``, ``1e308``, ``Infinity``, ``NaN``, 300-character strings, nested lists.
Pages read such values through these functions, which never raise: a value of the wrong
type, a non-finite number or one out of range becomes ``None`` or the default, so the
callback answers with its usual message or ignores the value.

Example:
    >>> integer(float("inf")) is None, integer(2.0), integer("3"), integer(True)
    (True, 2, None, None)
    >>> number(7, lo=0, hi=1), strings(["logy", 3, {"a": 1}]), strings(True)
    (1.0, ['logy'], [])
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def number(value: Any, *, lo: float | None = None, hi: float | None = None) -> float | None:
    """``value`` as a finite float clamped to ``[lo, hi]``; ``None`` for anything else.

    Booleans, strings, containers, NaN and infinities are not numbers here.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        x = float(value)
    except OverflowError:  # an integer beyond the float range
        return None
    if not math.isfinite(x):
        return None
    if lo is not None:
        x = max(x, float(lo))
    if hi is not None:
        x = min(x, float(hi))
    return x


def integer(value: Any, *, lo: int | None = None, hi: int | None = None) -> int | None:
    """``value`` as an int (a finite float is truncated) clamped to ``[lo, hi]``, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = int(value)
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    return value


def text(value: Any) -> str | None:
    """``value`` if it is a string, else ``None``."""
    return value if isinstance(value, str) else None


def choice(value: Any, options: Iterable[str], default: Any = None) -> Any:
    """``value`` if it is one of the string ``options``, else ``default``.

    Safe for unhashable values (a list or dict sent where a name was expected).
    """
    return value if isinstance(value, str) and value in set(options) else default


def strings(value: Any) -> list[str]:
    """The strings in a list value (a multi-select dropdown or checklist), else ``[]``."""
    if not isinstance(value, list | tuple):
        return []
    return [v for v in value if isinstance(v, str)]

"""Page callbacks, declared once at import and registered on every app that is built.

Page modules are ordinary modules, imported once. They declare their callbacks with
``callback`` and ``clientside_callback`` from here, which take the same arguments as Dash's
and only record them; ``create_app`` then registers every recorded callback on its own app
with ``Dash.callback`` (public API). So each app owns a complete set of callbacks, several
apps can live in one process (tests build one per test), and nothing depends on Dash's
process-wide callback list.

Example:
    >>> from dash import Input, Output
    >>> @callback(Output("out", "children"), Input("in", "value"))
    ... def echo(value):
    ...     return value
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: (args, kwargs, function) of every server-side callback, in declaration order
_SERVER: list[tuple[tuple, dict, Callable]] = []
#: (args, kwargs) of every clientside callback
_CLIENT: list[tuple[tuple, dict]] = []


def callback(*args: Any, **kwargs: Any) -> Callable[[Callable], Callable]:
    """Declare a server-side callback (arguments as ``dash.callback``)."""

    def record(func: Callable) -> Callable:
        _SERVER.append((args, kwargs, func))
        return func

    return record


def clientside_callback(*args: Any, **kwargs: Any) -> None:
    """Declare a clientside callback (arguments as ``dash.clientside_callback``)."""
    _CLIENT.append((args, kwargs))


def register(app: Any) -> None:
    """Register every declared callback on ``app``."""
    for args, kwargs, func in _SERVER:
        app.callback(*args, **kwargs)(func)
    for args, kwargs in _CLIENT:
        app.clientside_callback(*args, **kwargs)

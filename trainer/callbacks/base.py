"""The events of the training loop and the list of handlers that hears them.

The loop (``Trainer.run``) announces five events; a handler defines any of their hooks:

=============================================  ============================================
hook                                           when
=============================================  ============================================
``on_train_start(trainer)``                    before the first step (after a resume, too)
``on_step_end(trainer, step, loss)``           after every training step (``loss``: its loss)
``on_history_row(trainer, row)``               a monitoring row was measured (``row``: the
                                               dict written to the history)
``on_snapshot(trainer, name, path)``           a snapshot was written (``name``: ``LAST``,
                                               ``BEST``, ``FINAL`` or ``step-<N>``)
``on_train_end(trainer, state)``               the loop ended (``state``: ``finished``,
                                               ``stopped`` or ``pruned``)
=============================================  ============================================

The built-in handlers (``trainer.callbacks``) use two more hooks of their own:
``columns(trainer)`` names the history columns a handler adds, and
``add_columns(trainer, row, counts)`` fills them in before the row is written.

A config's own handlers (config key ``callbacks``) run after the built-in ones that write the
run directory and before the status and console ones. One that raises fails the run: the
error (``CallbackError``) names the handler and the hook, and status.json gets state
``failed`` with that message.

This module is pure Python (no torch), so ``trainer.config`` checks the ``callbacks`` key
with it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

#: the hooks a config's handler may define
HOOKS = ("on_train_start", "on_step_end", "on_history_row", "on_snapshot", "on_train_end")


class CallbackError(RuntimeError):
    """A config's callback raised; the message names the callback and the hook."""


class Callback:
    """A handler of the loop's events: every hook does nothing until a subclass defines it.

    A config's callbacks need not derive from it: any object that defines at least one of
    ``HOOKS`` will do.

    Attributes:
        untimed: the seconds spent in this handler's ``on_step_end`` are not training time
            (previews, as in ELEKTRONN2).
    """

    untimed = False

    def on_train_start(self, trainer: Any) -> None:
        """Before the first step."""

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        """After every step."""

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        """A monitoring row was measured."""

    def on_snapshot(self, trainer: Any, name: str, path: Any) -> None:
        """A snapshot was written."""

    def on_train_end(self, trainer: Any, state: str) -> None:
        """The loop ended with ``state``."""


def callback_name(obj: Any) -> str:
    """The name an error gives a callback: its class's qualified name."""
    cls = obj if isinstance(obj, type) else type(obj)
    return cls.__qualname__


def check_callbacks(value: Any) -> list[str]:
    """Problems with a ``callbacks`` config value; empty if fine.

    Each item must define at least one of ``HOOKS``, and each hook it defines must be
    callable. A class where an object is meant is named with the fix.
    """
    if not isinstance(value, list | tuple):
        return [
            f"'callbacks': expected a list of callback objects, got {type(value).__name__} "
            f"{value!r:.60}; e.g. callbacks = [MyCallback()]"
        ]
    problems = []
    for i, obj in enumerate(value):
        name = callback_name(obj)
        if isinstance(obj, type):
            problems.append(f"'callbacks[{i}]': {name} is a class; give an object: {name}()")
            continue
        hooks = [h for h in HOOKS if getattr(obj, h, None) is not None]
        if not hooks:
            problems.append(
                f"'callbacks[{i}]': {name} defines none of the hooks {', '.join(HOOKS)}; "
                "define at least one, e.g. `def on_history_row(self, trainer, row): ...`"
            )
        for hook in hooks:
            if not callable(getattr(obj, hook)):
                problems.append(
                    f"'callbacks[{i}]': {name}.{hook} is a {type(getattr(obj, hook)).__name__}, "
                    f"not a method; define `def {hook}(self, ...)`"
                )
    return problems


class CallbackList:
    """Handlers in order; each event calls the hook of every handler that defines it.

    Args:
        handlers: the built-in handlers, in order.
        user: the config's callbacks; their errors become ``CallbackError``.
        trainer: passed to every hook.
        after_user: built-in handlers that run after the config's callbacks (status, console).
    """

    def __init__(
        self,
        trainer: Any,
        handlers: Sequence[Any] = (),
        user: Sequence[Any] = (),
        after_user: Sequence[Any] = (),
    ):
        self.trainer = trainer
        self.handlers = [*handlers, *user, *after_user]
        self._user = {id(h) for h in user}
        self._snapshots: list[tuple[str, Any]] = []

    def columns(self) -> tuple[str, ...]:
        """The extra history columns the handlers add, in order."""
        cols: tuple[str, ...] = ()
        for h in self.handlers:
            if hasattr(h, "columns"):
                cols = (*cols, *h.columns(self.trainer))
        return cols

    def train_start(self) -> None:
        self._call("on_train_start")

    def step_end(self, step: int, loss: float) -> float:
        """Announce a step's end. Returns the seconds spent in ``untimed`` handlers."""
        untimed = 0.0
        for h in self.handlers:
            if getattr(h, "on_step_end", None) is None:
                continue
            t0 = time.perf_counter()
            self._call_one(h, "on_step_end", step, loss)
            if getattr(h, "untimed", False):
                untimed += time.perf_counter() - t0
        return untimed

    def history_row(self, row: dict[str, float], counts: Any = None) -> None:
        """Let handlers add their columns to ``row``, then announce it."""
        for h in self.handlers:
            if hasattr(h, "add_columns"):
                h.add_columns(self.trainer, row, counts)
        self._call("on_history_row", row)

    def snapshot(self, name: str, path: Any) -> None:
        """Announce a snapshot. One written while another is announced (BEST, copied from
        LAST) is announced after it, so every handler sees LAST before BEST."""
        self._snapshots.append((name, path))
        if len(self._snapshots) > 1:
            return  # the announcement under way takes it next
        try:
            while self._snapshots:
                self._call("on_snapshot", *self._snapshots[0])
                self._snapshots.pop(0)
        finally:
            self._snapshots.clear()

    def train_end(self, state: str) -> None:
        self._call("on_train_end", state)

    def _call(self, hook: str, *args: Any) -> None:
        for h in self.handlers:
            if getattr(h, hook, None) is not None:
                self._call_one(h, hook, *args)

    def _call_one(self, handler: Any, hook: str, *args: Any) -> None:
        if id(handler) not in self._user:
            getattr(handler, hook)(self.trainer, *args)
            return
        try:
            getattr(handler, hook)(self.trainer, *args)
        except Exception as e:
            raise CallbackError(
                f"callback {callback_name(handler)}.{hook} raised {type(e).__name__}: {e}; "
                "fix it or remove it from the config's 'callbacks'"
            ) from e

"""Handlers of the training loop's events: every optional feature of a run, one per module.

``Trainer.run`` announces its events (``base.HOOKS``) to a ``CallbackList``; the handlers
here do the rest:

==================  ==========================================================================
module              handler
==================  ==========================================================================
``history_rows``    ``HistoryRows``: each row into the history store, the HTML report at the end
``scores``          ``ClassScores``, ``NeuronScore``: per-class IoU/Dice and ``valid_are``
``pruning``         ``Pruning``: a sweep trial's rows to its pruner
``snapshots``       ``Snapshots`` (LAST, step-N, FINAL) and ``BestSnapshot`` (BEST)
``previews``        ``Previews``: preview predictions when due
``status``          ``StatusFields`` and ``recording``: status.json
``console``         ``ConsoleLog``: the log lines
==================  ==========================================================================

A config adds its own with the ``callbacks`` key (docs/config.md). They run on rank 0 only
under DDP, as the built-in ones do.

Example:
    >>> class PrintRows:
    ...     def on_history_row(self, trainer, row):
    ...         print(row["steps"], row["valid_loss"])
    >>> check_callbacks([PrintRows()])
    []
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trainer.callbacks.base import HOOKS, Callback, CallbackError, CallbackList, check_callbacks

__all__ = ["HOOKS", "Callback", "CallbackError", "CallbackList", "check_callbacks", "register"]


def register(trainer: Any, column_handlers: Sequence[Any]) -> CallbackList:
    """The handlers of ``trainer``'s run: the built-in ones its config asks for, then the
    config's ``callbacks``, then status and console.

    Off rank 0 only the column handlers are kept (every rank must agree on the history
    columns to average the per-class counts); no event reaches them there.
    """
    if not trainer.is_main:
        return CallbackList(trainer, column_handlers)
    from trainer.callbacks.console import ConsoleLog
    from trainer.callbacks.history_rows import HistoryRows
    from trainer.callbacks.previews import Previews
    from trainer.callbacks.pruning import Pruning
    from trainer.callbacks.snapshots import BestSnapshot, Snapshots
    from trainer.callbacks.status import StatusFields

    first = [HistoryRows(), *column_handlers]
    if trainer.trial is not None:
        first.append(Pruning(trainer.trial))
    first += [BestSnapshot(), Snapshots(), Previews()]
    user = list(trainer.exp_config.callbacks or ())
    return CallbackList(trainer, first, user=user, after_user=[StatusFields(), ConsoleLog()])

"""Curve colours shared by the trainer's HTML reports and the dashboard's figures.

Plain strings (no plotting import), so ``trainer.plotting`` and ``app.figures`` both read them:
a training and a validation curve look the same in a report and on the run page.
"""

from __future__ import annotations

__all__ = ["LR_COLOUR", "MOM_COLOUR", "TRAIN_COLOUR", "VALID_COLOUR"]

#: training curves (``train_loss``, ``train_err``)
TRAIN_COLOUR = "#1f77b4"
#: validation curves (``valid_loss``, ``valid_err``, ``valid_are``)
VALID_COLOUR = "#ff7f0e"
#: the learning rate
LR_COLOUR = "#2ca02c"
#: the momentum
MOM_COLOUR = "#9467bd"

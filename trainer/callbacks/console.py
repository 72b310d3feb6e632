"""Console logging: the start line, a status line per history row (``print_status``), the end."""

from __future__ import annotations

import logging
from typing import Any

import torch

from trainer.callbacks.base import Callback
from trainer.devices import device_info

logger = logging.getLogger("voxelboard")


class ConsoleLog(Callback):
    """Logs to the ``voxelboard`` logger, as ELEKTRONN2 printed to its console."""

    def on_train_start(self, trainer: Any) -> None:
        info = device_info(trainer.device)
        logger.info(
            "Training %s on %s (torch %s%s), %d steps from step %d, run dir %s",
            trainer.exp_config.save_name, info.get("device"), torch.__version__,
            f", {info['gpu_name']}" if info.get("gpu_name") else "",
            int(trainer.exp_config.n_steps), trainer.step, trainer.run_dir,
        )  # fmt: skip
        logger.info("Data: %r", trainer.data)

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        if not trainer.exp_config.print_status:
            return
        speed = trainer.speed()
        logger.info(
            "%05i L_m=%.3f, L=%.2f, tr=%05.2f%%, vl=%05.2f%%, L_diff=%+.1e, LR=%.2e, "
            "%.2f it/s, %.2f MVx/s, %s",
            row["steps"], trainer.smoothed_loss(), trainer.last_loss, row["train_err"],
            row["valid_err"], row["loss_gain"], row["lr"], speed["it_per_s"],
            speed["voxels_per_s"] / 1e6, pretty_time(trainer.train_time),
        )  # fmt: skip

    def on_train_end(self, trainer: Any, state: str) -> None:
        logger.info("End of training (%s) after %d steps, %s", state, trainer.step,
                    pretty_time(trainer.train_time))  # fmt: skip


def pretty_time(seconds: float) -> str:
    """``t=42s``, ``t=7m`` or ``t=1.5h``: training time in the status line."""
    if seconds > 4000:
        return f"t={seconds / 3600:.1f}h"
    if seconds > 300:
        return f"t={seconds / 60:.0f}m"
    return f"t={seconds:.0f}s"

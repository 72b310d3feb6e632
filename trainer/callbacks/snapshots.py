"""Snapshots: ``LAST`` at every history row, ``step-<N>`` every ``param_save_it`` steps,
``FINAL`` at the end, and ``BEST`` whenever ``best_metric`` improved; what a snapshot holds
(``save_snapshot``) and how a run continues from one (``resume_from_latest``)."""

from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import runs
from trainer.callbacks.base import Callback
from trainer.modelio import SNAPSHOT_FORMAT, load_snapshot

logger = logging.getLogger("voxelboard")


class Snapshots(Callback):
    """Writes ``LAST``, the periodic ``step-<N>`` and ``FINAL`` (``save_snapshot``
    announces each one to ``on_snapshot``)."""

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        save_snapshot(trainer, runs.LAST)

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        if step > 0 and step % int(trainer.exp_config.param_save_it) == 0:
            save_snapshot(trainer, step)

    def on_train_end(self, trainer: Any, state: str) -> None:
        save_snapshot(trainer, runs.FINAL)


class BestSnapshot(Callback):
    """Keeps ``trainer.best`` (``best_metric``) up to date from each row, and copies the
    ``LAST`` snapshot written for a row that improved it to ``BEST``.

    Runs before ``Snapshots``, so ``LAST`` holds the updated best value.
    """

    def __init__(self) -> None:
        self._improved = False

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        best = trainer.best
        self._improved = best.update(row.get(best.metric, math.nan), row["steps"],
                                     trainer.train_time)  # fmt: skip

    def on_snapshot(self, trainer: Any, name: str, path: Any) -> None:
        if name != runs.LAST or not self._improved:
            return
        self._improved = False
        best = runs.snapshot_path(trainer.run_dir, runs.BEST)
        with runs.writing(best, trainer.run_dir):
            runs.keep_snapshot_as(trainer.run_dir, runs.LAST, runs.BEST)
        trainer.callbacks.snapshot(runs.BEST, best)


def save_snapshot(trainer: Any, which: str | int) -> Path | None:
    """Write snapshot ``which`` (``LAST``, ``FINAL`` or a step number) of ``trainer``'s run
    and announce it (``on_snapshot``); ``None`` off rank 0.

    A snapshot holds everything a resumed run needs (``resume_from_latest``) in layout
    ``trainer.modelio.SNAPSHOT_FORMAT``.
    """
    if not trainer.is_main:
        return None
    state = {
        "format": SNAPSHOT_FORMAT,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedules": {k: s.state_dict() for k, s in trainer.schedules.items()},
        "scaler": trainer.scaler.state_dict(),
        "step": trainer.step,
        "train_time_s": trainer.train_time,
        "save_name": trainer.exp_config.save_name,
        "preview_hours_done": trainer.preview_hours_done,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
        "best": trainer.best.state_dict(),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    path = runs.snapshot_path(trainer.run_dir, which)
    with runs.writing(path, trainer.run_dir):
        path.parent.mkdir(parents=True, exist_ok=True)
        # a failed write leaves the previous snapshot of this name as it was
        runs.atomic_write_bytes(path, buf.getvalue())
    trainer.callbacks.snapshot(path.stem, path)
    return path


def resume_from_latest(trainer: Any) -> None:
    """Continue ``trainer``'s run from the newest snapshot in its run directory: model,
    optimiser, schedules, scaler, step, time, best value and random state; the history rows
    past the snapshot's step are dropped.

    Raises:
        FileNotFoundError: the run has no snapshot.
        SnapshotError: the newest snapshot cannot be loaded.
        ValueError: the snapshot's optimiser state does not fit this optimiser.
    """
    path = runs.latest_snapshot(trainer.run_dir)
    if path is None:
        folder = trainer.run_dir / runs.SNAPSHOT_DIR
        raise FileNotFoundError(
            f"cannot resume {trainer.run_dir}: no snapshot in {folder}; start a new run instead"
        )
    state = load_snapshot(
        path, trainer.device, hint="move it out of snapshots/ so --resume takes the next newest"
    )
    trainer.model.load_state_dict(state["model"])
    saved_groups = len(state["optimizer"].get("param_groups", []))
    if saved_groups != len(trainer.optimizer.param_groups):
        raise ValueError(
            f"cannot resume from {path}: its optimiser state has {saved_groups} parameter "
            f"group(s), this optimiser has {len(trainer.optimizer.param_groups)} (weights, which "
            "are decayed, and the other parameters); the snapshot was written by a VoxelBoard "
            "that decayed every parameter. Continue it with that version, or start a new run"
        )
    trainer.optimizer.load_state_dict(state["optimizer"])
    for name, s in state.get("schedules", {}).items():
        if name in trainer.schedules:
            trainer.schedules[name].load_state_dict(s)
    if "scaler" in state:
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = int(state["step"])
    trainer.train_time = float(state.get("train_time_s", 0.0))
    trainer.preview_hours_done = state.get("preview_hours_done")
    trainer.best.load_state_dict(state.get("best"))
    rng = state.get("rng") or {}
    if "torch" in rng:
        torch.set_rng_state(rng["torch"].cpu())
    if "numpy" in rng:
        np.random.set_state(rng["numpy"])
    if trainer.is_main:
        with runs.writing(trainer.run_dir / runs.HISTORY_DIR, trainer.run_dir):
            trainer.tracker.truncate(trainer.step - 1)
    trainer.resumed_from = path
    logger.info("Resumed from %s at step %d", path, trainer.step)

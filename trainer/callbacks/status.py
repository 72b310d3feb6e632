"""status.json: the run's state, written by the trainer's rank 0 (one writer; docs/run-directory.md).

``recording(trainer)`` opens it around the loop (``running``, a heartbeat every ``heartbeat_s``,
and ``failed`` / ``diverged`` with the error when the loop raises); ``StatusFields`` keeps its
fields up to date from the loop's events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Iterator
from typing import Any

from trainer import runs
from trainer.callbacks.base import Callback
from trainer.devices import device_info
from trainer.errors import DivergedError

logger = logging.getLogger("voxelboard")


@contextlib.contextmanager
def recording(trainer: Any) -> Iterator[Any]:
    """status.json of ``trainer``'s run while the block runs; a stand-in off rank 0.

    An exception leaving the block is recorded (``diverged`` for ``DivergedError``, else
    ``failed`` with the error) and raised again.
    """
    if not trainer.is_main:
        yield _NoStatus()
        return
    cfg = trainer.exp_config
    status = runs.Status(state="running", step=trainer.step, n_steps=int(cfg.n_steps),
                         pid=os.getpid(), started=time.time())  # fmt: skip
    if trainer.dist is not None:
        status.extra.update(world_size=trainer.dist.world_size, backend=trainer.dist.backend,
                            rank_pids=trainer.rank_pids)  # fmt: skip
    resumed = str(getattr(trainer, "resumed_from", "") or "") or None
    status.extra.update(device_info(trainer.device), save_name=cfg.save_name,
                        config_file=str(cfg.exp_file), resumed_from=resumed, ended=None,
                        stop_reason=None)  # fmt: skip
    with runs.StatusFile(trainer.run_dir, status, interval=float(cfg.heartbeat_s)) as sf:
        try:
            yield sf
        except DivergedError as e:
            logger.error("Diverged: %s", e)
            _final_state(sf, state="diverged", error=str(e), step=trainer.step)
            raise
        except runs.RunWriteError as e:
            logger.error("Training stopped at step %d: %s", trainer.step, e)
            logger.debug("%s", traceback.format_exc())
            _final_state(sf, state="failed", error=str(e), step=trainer.step)
            raise
        except BaseException as e:
            # the traceback goes to train.log; the terminal shows it with --debug (run.py)
            logger.error("Training failed at step %d: %s: %s", trainer.step, type(e).__name__, e,
                         exc_info=True)  # fmt: skip
            _final_state(sf, state="failed", error=f"{type(e).__name__}: {e}", step=trainer.step)
            raise


class StatusFields(Callback):
    """Step, speed and times after every step (and a check that the heartbeat still writes),
    the monitoring values and ``best_*`` per history row, and the end state."""

    def on_step_end(self, trainer: Any, step: int, loss: float) -> None:
        trainer.status.update(write=False, step=trainer.step, train_time_s=trainer.train_time,
                              data_wait_s=trainer.data_wait_s, **trainer.speed())  # fmt: skip
        trainer.status.check()  # the heartbeat could not write status.json: stop, do not train unseen

    def on_history_row(self, trainer: Any, row: dict[str, float]) -> None:
        trainer.status.update(
            train_loss=row["train_loss"], valid_loss=row["valid_loss"],
            train_err=row["train_err"], valid_err=row["valid_err"], lr=row["lr"],
            error_metric=trainer.loss_spec.error_label, **trainer.best.state_dict(),
            **trainer.speed(),
        )  # fmt: skip

    def on_train_end(self, trainer: Any, state: str) -> None:
        trainer.status.update(state=state, step=trainer.step, ended=time.time(),
                              stop_reason=trainer.stop_reason)  # fmt: skip


class _NoStatus:
    """Stands in for the status file on ranks other than 0."""

    def update(self, write: bool = True, **fields: Any) -> None:
        pass

    def check(self) -> None:
        pass


def _final_state(sf: runs.StatusFile, state: str, error: str, step: int) -> None:
    """Write a failure into status.json if the disk still lets us; else say so in the log."""
    try:
        sf.update(state=state, error=error, step=step, ended=time.time())
    except runs.RunWriteError as e:
        logger.error("The final state (%s) could not be recorded either: %s", state, e)

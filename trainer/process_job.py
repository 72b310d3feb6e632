"""The job folder of a one-process ``run.py predict|segment``, so the jobs page lists it.

Without ``--workers`` or ``--backend slurm`` the command predicts or segments in its own
process (``trainer.predictions.predict_to_disk``, ``trainer.segment_volume.segment_to_disk``),
its blocks recorded in the output's own record. ``ProcessJob`` gives it the same job folder a
distributed job keeps (``trainer.block_claims``), as a one-worker local job:

* ``job.json``: kind, output, key, command, folder, ``backend: local``, ``workers: 1``,
  ``single: true``, the worker's name and one step with the command's blocks; written once
  the output is open (at the first block: a command that fails before it lists no job).
* ``workers/<name>.json``: the one worker's file (``BlockWorker``: state, host, pid,
  heartbeat), with ``progress`` added: the step being worked on, blocks done and in all, the
  ends of the latest blocks, the CPU seconds and the blocks done by this process.

No claims and no done markers (one process needs no claims; its blocks are in the output's
record), so a later ``--workers N`` run over the same output sees no block as done that its
own record does not say is. ``trainer.jobs.job_progress`` reads both files. The data written
are the command's alone: the job folder is written from its progress callback.

Example:
    >>> with ProcessJob("prob.zarr", "predict", "prob", sys.argv, os.getcwd()) as job:  # doctest: +SKIP
    ...     predict_to_disk(..., progress=lambda d, t, s: job.progress("predict", d, t))
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from trainer.block_claims import BlockWorker, job_folder, write_job

__all__ = ["ProcessJob"]

_log = logging.getLogger("voxelboard.jobs")

#: block ends kept in the worker file, for the throughput (``job_progress``'s ``window``)
ENDS_KEPT = 50
#: seconds between two writes of the worker file while blocks are done
SAVE_S = 0.5


class ProcessJob:
    """A one-process job's folder: made at the first block, its worker file kept up.

    Args:
        output: the command's OUTPUT.
        kind: ``predict`` or ``segment``.
        key: the output array's key.
        command: the command line (``[sys.executable, *sys.argv]``), for a Resume.
        cwd: the folder the command runs in.
        on_start: called once, when the job folder is made (the run's job record).
        save_s: seconds between two writes of the worker file (the last block always writes).
    """

    def __init__(self, output: str | os.PathLike, kind: str, key: str | None,
                 command: Sequence[str], cwd: str | os.PathLike,
                 on_start: Callable[[], None] | None = None, save_s: float = SAVE_S) -> None:  # fmt: skip
        self.output, self.kind, self.key = Path(output), kind, key
        self.command, self.cwd = [str(a) for a in command], str(cwd)
        self.on_start, self.save_s = on_start, save_s
        self.name = f"process-{os.getpid()}"
        self.worker: BlockWorker | None = None
        self._ends: deque[float] = deque(maxlen=ENDS_KEPT)
        self._here = 0
        self._cpu0 = time.process_time()
        self._began = time.time()
        self._saved = 0.0
        self._off = False  # the job folder could not be written: the command goes on

    def __enter__(self) -> ProcessJob:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        if self.worker is not None:
            try:
                self.worker.__exit__(kind, value, tb)
            except OSError as e:  # a full disk: the command's own error (or result) stands
                _log.warning("cannot write this job's final state in %s (%s)",
                             job_folder(self.output), e.strerror or e)  # fmt: skip

    def progress(self, step: str, done: int, total: int) -> None:
        """``done`` of ``total`` blocks are done, the latest of them in pass ``step``."""
        if self._off:
            return
        now = time.time()
        if self.worker is None:
            try:
                self._start(total)
            except OSError as e:
                self._off = True
                _log.warning("the jobs page will not list this job: cannot write %s (%s)",
                             job_folder(self.output), e.strerror or e)  # fmt: skip
                return
        self._here += 1
        self._ends.append(now)
        worker = self.worker
        worker.state["progress"] = {
            "step": step, "done": int(done), "total": int(total), "ends": list(self._ends),
            "started": self._began, "cpu_s": time.process_time() - self._cpu0,
            "blocks_here": self._here,
        }  # fmt: skip
        worker.state.update(blocks=self._here, block=f"{step}-{done}", beat=now)
        if done >= total or now - self._saved >= self.save_s:
            try:
                worker.save_state()
            except OSError:  # a full disk: the blocks' own writes say so
                return
            self._saved = now

    def _start(self, total: int) -> None:
        folder = job_folder(self.output)
        write_job(folder, {
            "kind": self.kind, "output": str(self.output.resolve()), "key": self.key,
            "command": self.command, "cwd": self.cwd, "backend": "local", "workers": 1,
            "slurm_job_id": None, "single": True, "worker": self.name, "created": time.time(),
            "steps": [{"name": self.kind, "blocks": int(total)}],
        })  # fmt: skip
        # no heartbeat thread: the worker file is written only here, between blocks, so nothing
        # else writes on the output's disk between a block's free-space check and its write (an
        # HDF5 file cannot survive running out of space); each block's progress is its beat
        worker = BlockWorker(folder, self.name, heartbeat=None)
        worker.state["progress"] = None  # the key exists before the heartbeat runs
        self.worker = worker.__enter__()  # kept only once its file is written
        if self.on_start is not None:
            self.on_start()

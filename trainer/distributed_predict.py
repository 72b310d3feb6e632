"""``run.py predict`` by many workers: the job's setup and one worker's loop.

The submitting command (``prepare_predict``) opens the output exactly as one process would
(``trainer.predictions.plan_prediction``: the same tiles, the same record, the same refusal
of another input, run or snapshot) and writes the job file with what every worker needs.
Each worker (``predict_worker``) rebuilds the same plan from the job file, checks that its
model has the recorded weights (a snapshot changed after the submission is refused), and
claims blocks through ``trainer.block_claims``. Block ``i`` is tile ``i`` of
``plan_tiles``, predicted as ``predict_to_disk`` predicts it, so the output equals one
process's bit for bit. Blocks are not chunk-aligned (tiles are not), so a block's writes to
a chunk it shares with a neighbour hold that chunk's lock. The last step, ``finish``, run
by whichever worker first finds every block done, writes the record complete.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from trainer.block_claims import (
    BlockWorker,
    JobError,
    check_writable,
    job_folder,
    locked_chunks,
    shared_chunks,
    write_job,
)
from trainer.prediction_store import PredictionError, PredictionOutput

__all__ = ["predict_steps", "prepare_predict", "predict_worker", "run_provenance"]


def run_provenance(run_dir: str | os.PathLike, run: Any) -> dict[str, Any]:
    """What a prediction records about the run it predicts with: run, snapshot, step and
    the config copy (text and hash)."""
    from trainer import runs

    copy = runs.config_copy(run_dir)
    text = copy.read_text(encoding="utf-8") if copy is not None else ""
    return {
        "run": os.path.abspath(run_dir),
        "snapshot": os.path.abspath(run.snapshot),
        "step": run.state.get("step"),
        "config": {
            "file": copy.name if copy else None,
            "text": text,
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
    }


def predict_steps(n_blocks: int) -> list[dict[str, Any]]:
    """The job's steps: every block, then the one ``finish``."""
    return [{"name": "predict", "blocks": n_blocks}, {"name": "finish", "blocks": 1}]


def _open(spec: dict[str, Any], device: str | None, create: bool,
          overwrite: bool = False) -> tuple[Any, ...]:  # fmt: skip
    """The run's model, the input, the tile plan, padding and the opened output."""
    from trainer.evaluation import load_run
    from trainer.predictions import check_input, plan_prediction, voxel_grid

    volume = check_input(spec["input"], spec["key"])
    run = load_run(spec["run_dir"], snapshot=spec["snapshot"], device=device)
    grid = voxel_grid(volume, spec["voxel_size"], run.config.voxel_size)
    plan, pad, record, attrs = plan_prediction(
        run.model, volume, spec["output_key"], spec["dtype"], spec["tile"], spec["padding"],
        grid, run_provenance(spec["run_dir"], run),
    )  # fmt: skip
    output = Path(spec["output"])
    if not create and not output.exists():
        raise PredictionError(f"{output}: the job's output is gone; submit the job again")
    out = PredictionOutput.open(output, spec["output_key"], record, attrs, overwrite=overwrite)
    return run, volume, plan, pad, out


def prepare_predict(spec: dict[str, Any], job: dict[str, Any], overwrite: bool = False) -> dict:
    """Create (or reopen) the output and write the job file; the submitting command's part.

    Args:
        spec: ``run_dir``, ``input``, ``key``, ``output``, ``output_key``, ``snapshot``
            (``None``: FINAL, else the newest; recorded as the file it resolves to),
            ``dtype``, ``tile``, ``padding`` (``None`` crops), ``voxel_size``.
        job: what the job file also records: ``command``, ``backend``, ``workers`` ...
        overwrite: start again over an existing prediction.

    Returns:
        The job as written (``steps`` and the resolved ``spec`` added).

    Raises:
        JobError: the output folder cannot be written.
        PredictionError: HDF5 output, or the output holds another prediction (names what
            differs: input, run, snapshot, weights ...).
    """
    output = Path(spec["output"])
    if output.suffix.lower() in (".h5", ".hdf5"):
        raise PredictionError(
            f"{output}: several workers write a zarr folder only (HDF5 has one writer); give "
            "a name such as prob.zarr, or predict without --workers/--backend slurm"
        )
    check_writable(output)
    run, _, plan, _, out = _open(spec, "cpu", create=True, overwrite=overwrite)
    out.close()
    spec = {**spec, "snapshot": os.path.abspath(run.snapshot)}
    folder = job_folder(output)
    job = {**job, "kind": "predict", "output": str(output.resolve()),
           "key": spec["output_key"], "created": time.time(),
           "steps": predict_steps(len(plan.tiles)), "spec": spec}  # fmt: skip
    try:
        write_job(folder, job)
    except OSError as e:
        raise JobError(f"cannot write the job folder {folder} ({e.strerror or e})") from None
    return job


def predict_worker(job: dict[str, Any], worker: BlockWorker, device: str | None = None) -> int:
    """Predict blocks of ``job`` until all are done; returns the blocks this worker did.

    Raises:
        PredictionError: the snapshot's weights are not the recorded ones, or the output
            now holds something else.
    """
    import torch

    from trainer.inference import _eval_mode, _forward_probs, _model_on
    from trainer.predictions import _block_values, _read_input

    spec = job["spec"]
    run, volume, plan, pad, out = _open(spec, device, create=False)
    net, run_device = _model_on(run.model, device)
    n = len(plan.tiles)
    spatial = tuple(out.record["shape"][1:])
    chunks = tuple(out.array.chunks[1:])
    grid = tuple(-(-s // c) for s, c in zip(spatial, chunks))
    lock = worker.folder / "write.lock"

    def work(i: int) -> None:
        x = _read_input(volume, plan, [ax[0] for ax in plan.tiles[i]], pad, spec["padding"])
        prob = _forward_probs(net, x[None], run_device, amp=False)[0]
        box, values = _block_values(out, plan, i, prob)
        with locked_chunks(lock, shared_chunks(box, chunks, spatial), grid):
            out.write(box, values)

    def finish(_: int) -> None:
        out.record["done"] = list(range(n))
        out.record["complete"] = True
        out.save_record()

    try:
        with _eval_mode(net), torch.inference_mode():
            if out.record.get("complete"):
                return 0
            did = worker.run_step("predict", n, work, already=out.done)
            worker.run_step("finish", 1, finish)
    finally:
        out.close()
    return did

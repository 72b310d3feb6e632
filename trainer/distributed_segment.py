"""``run.py segment`` by many workers: the job's setup and one worker's steps.

The same passes as ``trainer.segment_volume`` (one process), as steps of
``trainer.block_claims`` that every worker walks in order:

* components (``threshold``): ``faces`` (each block's components counted, its six faces
  kept in the work folder), ``merge`` (one label table for the volume, from all faces),
  ``labels`` (each block labelled again and written through the table), ``finish``;
* seeded watershed: ``seed-faces``, ``merge``, ``seeds`` (the seed labels, with their
  global ids, into the work folder's seed array), ``flood`` (each block flooded with its
  halo), ``finish``.

The cross-block ``merge`` is its own step: it starts only when every block of the step
before is done, and whichever worker gets there first claims and runs it while the others
wait for its done marker (a merger that dies is replaced like any block's holder). Its
memory is the table's: 8 bytes per component of the whole volume, plus two blocks' faces.
The block grid, the resolved setting (a quantile threshold becomes its value, found by the
submitting command in one pass) and the record are those of one process, so the labels
equal one process's bit for bit.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from trainer.block_claims import (
    BlockWorker,
    JobError,
    check_writable,
    job_folder,
    locked_chunks,
    shared_chunks,
    write_job,
)
from trainer.blockwise import block_table, grow_box, local_components, merge_faces, plan_blocks
from trainer.prediction_store import PredictionError, PredictionOutput
from trainer.runs.atomic import atomic_write_bytes
from trainer.segmentation import Quantile

__all__ = ["prepare_segment", "segment_steps", "segment_worker", "setting_to_json"]


def setting_to_json(setting: Any) -> dict[str, Any]:
    """A ``SegmentSetting`` as plain values (quantiles as ``{'quantile': q}``)."""
    d = dataclasses.asdict(setting)
    for k in ("hi_thresh", "lo_thresh"):
        v = getattr(setting, k)
        d[k] = {"quantile": v.q} if isinstance(v, Quantile) else float(v)
    return d


def _setting_from_json(d: dict[str, Any]) -> Any:
    from trainer.segment_volume import SegmentSetting

    d = dict(d)
    for k in ("hi_thresh", "lo_thresh"):
        if isinstance(d[k], dict):
            d[k] = Quantile(d[k]["quantile"])
    d["grow_it"], d["scale"] = tuple(d["grow_it"]), tuple(d["scale"])
    return SegmentSetting(**d)


def segment_steps(method: str, n_blocks: int) -> list[dict[str, Any]]:
    """The job's steps for ``method`` (``components`` or ``seeded``)."""
    names = ["faces", "merge", "labels"] if method == "components" else [
        "seed-faces", "merge", "seeds", "flood"]  # fmt: skip
    steps = [{"name": s, "blocks": 1 if s == "merge" else n_blocks} for s in names]
    return [*steps, {"name": "finish", "blocks": 1}]


def _block_shape(spec: dict[str, Any], shape: tuple[int, ...], setting: Any) -> list[int]:
    from trainer.blockwise import block_shape_for
    from trainer.segment_volume import BYTES_PER_VOXEL, RESERVE_BYTES

    if spec["block"] is not None:
        return [int(b) for b in spec["block"]]
    halo = spec["halo"] if setting.method == "seeded" else 0
    budget = max(spec["memory_gb"] * 2**30 - RESERVE_BYTES, 0.0)
    try:
        return list(block_shape_for(shape, budget, BYTES_PER_VOXEL[setting.method], halo))
    except ValueError as e:
        raise PredictionError(f"--memory-gb {spec['memory_gb']:g}: {e}") from None


class _Job:
    """The prediction, the block grid, the setting and the opened output of a job."""

    def __init__(self, spec: dict[str, Any], setting: Any, create: bool,
                 overwrite: bool = False) -> None:  # fmt: skip
        from trainer.predictions import read_prediction
        from trainer.segment_volume import LABELS_KEY, WORK_DIR, _attrs, _Reader, _record

        self.prob, prob_record = read_prediction(spec["prob"], spec["key"])
        channel = spec["channel"]
        if len(self.prob.shape) != 4 or not 0 <= channel < self.prob.shape[0]:
            raise PredictionError(
                f"{self.prob.name} has shape {self.prob.shape}: expected (classes, z, y, x) "
                f"with a membrane class {channel}; give --channel C for another class"
            )
        self.shape = tuple(int(n) for n in self.prob.shape[1:])
        self.reader = _Reader(self.prob, channel)
        self.block = spec.get("block_shape") or _block_shape(spec, self.shape, setting)
        self.blocks, self.grid = plan_blocks(self.shape, self.block)
        self.seeded = setting.method == "seeded"
        if self.seeded and create:
            from trainer.segment_volume import _resolved

            setting = _resolved(setting, self.reader, self.blocks)
        self.setting = setting
        self.halo = spec["halo"] if self.seeded else 0
        self.path = Path(spec["output"])
        if not create and not self.path.exists():
            raise PredictionError(f"{self.path}: the job's output is gone; submit it again")
        record = _record(self.prob, prob_record, self.shape, self.block, self.halo, setting,
                         channel)  # fmt: skip
        self.record = record
        self.out = PredictionOutput.open(self.path, LABELS_KEY, record,
                                         _attrs(prob_record, spec["label_name"]),
                                         overwrite=overwrite)  # fmt: skip
        self.work = self.path / WORK_DIR
        self.chunks = tuple(self.out.array.chunks[1:])
        self.chunk_grid = tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))

    def seeds(self) -> PredictionOutput:
        self.work.mkdir(parents=True, exist_ok=True)
        record = {**self.record, "done": []}
        return PredictionOutput.open(
            self.work / "seeds.zarr", "seeds", record, {"zarr": {}, "hdf5": {}}
        )

    def write(self, target: PredictionOutput, lock: Path, box: tuple, values: np.ndarray) -> None:
        with locked_chunks(lock, shared_chunks(box, self.chunks, self.shape), self.chunk_grid):
            target.write(box, values[None])


def prepare_segment(spec: dict[str, Any], setting: Any, job: dict[str, Any],
                    overwrite: bool = False) -> dict:  # fmt: skip
    """Create (or reopen) the label output and write the job file.

    Args:
        spec: ``prob``, ``key``, ``output``, ``channel``, ``memory_gb``, ``block``,
            ``halo``, ``label_name`` (as ``segment_to_disk``'s arguments).
        setting: the ``SegmentSetting`` (quantiles resolved here, once).
        job: what the job file also records (command, backend, workers ...).
        overwrite: start again over an existing segmentation.

    Raises:
        JobError: the output folder cannot be written.
        PredictionError: an HDF5 output, a bad channel or block, or the output holds
            another segmentation.
    """
    output = Path(spec["output"])
    if output.suffix.lower() in (".h5", ".hdf5"):
        raise PredictionError(
            f"{output}: segment writes an OME-Zarr label image, a folder; give a name "
            "such as neurons.zarr"
        )
    check_writable(output)
    j = _Job(spec, setting, create=True, overwrite=overwrite)
    try:
        if j.seeded and not j.out.record.get("complete"):
            j.seeds().close()
    finally:
        j.out.close()
    spec = {**spec, "block_shape": list(j.block), "setting": setting_to_json(j.setting)}
    folder = job_folder(output)
    job = {**job, "kind": "segment", "output": str(output.resolve()), "key": "0",
           "created": time.time(), "steps": segment_steps(j.setting.method, len(j.blocks)),
           "spec": spec}  # fmt: skip
    try:
        write_job(folder, job)
    except OSError as e:
        raise JobError(f"cannot write the job folder {folder} ({e.strerror or e})") from None
    return job


def segment_worker(job: dict[str, Any], worker: BlockWorker) -> int:
    """Do the steps of a segmentation job until all are done; returns blocks done here."""
    from trainer.segment_volume import _Faces, _flood_block, _inner, _seed_mask, register_label

    spec = job["spec"]
    j = _Job(spec, _setting_from_json(spec["setting"]), create=False)
    if j.out.record.get("complete"):
        j.out.close()
        return 0
    s, n, lock = j.setting, len(j.blocks), worker.folder / "write.lock"
    seeds = j.seeds() if j.seeded else None
    mask = (_seed_mask(j.reader, s, j.shape) if j.seeded
            else lambda box: j.reader.below(box, s.threshold))  # fmt: skip
    table: dict[str, Any] = {}

    def faces(i: int) -> None:
        c = local_components(mask(j.blocks[i]))
        buf = io.BytesIO()
        np.savez(buf, count=np.int64(c.count), **c.faces.as_arrays())
        atomic_write_bytes(j.work / f"faces-{i}.npz", buf.getvalue())

    def merge(_: int) -> None:
        f = _Faces(j.work)
        counts = [f.count(i) for i in range(n)]
        buf = io.BytesIO()
        np.savez(buf, table=merge_faces(j.grid, counts, f), counts=np.asarray(counts, np.int64))
        atomic_write_bytes(j.work / "table.npz", buf.getvalue())

    def load_table() -> None:
        if not table:
            with np.load(j.work / "table.npz") as f:
                table.update(table=f["table"], counts=[int(c) for c in f["counts"]])

    def labelled(i: int) -> np.ndarray:
        load_table()
        labels = local_components(mask(j.blocks[i])).labels
        return block_table(table["table"], table["counts"], i)[labels]

    def labels(i: int) -> None:
        j.write(j.out, lock, j.blocks[i], labelled(i))

    def seed(i: int) -> None:
        j.write(seeds, j.work / "seeds.lock", j.blocks[i], labelled(i))

    def flood(i: int) -> None:
        box = j.blocks[i]
        grown = grow_box(box, spec["halo"], j.shape)
        markers = seeds.read(grown)[0].astype(np.int64)
        load_table()
        n_seeds = int(table["table"].max()) if table["table"].size else 0
        ws = _flood_block(j.reader.uint8(grown), markers, n_seeds, s)
        j.write(j.out, lock, box, ws[_inner(box, grown)].astype(np.uint64))

    def finish(_: int) -> None:
        j.out.record["done"] = list(range((3 if j.seeded else 2) * n))
        j.out.record["complete"] = True
        j.out.save_record()
        if spec.get("label_name"):
            register_label(spec["prob"], spec["label_name"])
        remove_work(j.path)

    work = {"faces": faces, "seed-faces": faces, "merge": merge, "labels": labels,
            "seeds": seed, "flood": flood, "finish": finish}  # fmt: skip
    did = 0
    try:
        j.work.mkdir(parents=True, exist_ok=True)
        for p, step in enumerate(job["steps"]):
            name = step["name"]
            already = _recorded(j.out.done, name, n, p)
            did += worker.run_step(name, step["blocks"], work[name], already=already)
    finally:
        j.out.close()
        if seeds is not None:
            seeds.close()
    return did


def _recorded(done: set[int], step: str, n: int, index: int) -> set[int]:
    """Blocks of ``step`` a one-process run recorded (its pass ``p`` entry ``p * n + i``)."""
    passes = {"faces": 0, "seed-faces": 0, "labels": 1, "seeds": 1, "flood": 2}
    if step not in passes or not done:
        return set()
    p = passes[step]
    return {i for i in range(n) if p * n + i in done}


def remove_work(output: str | os.PathLike) -> None:
    """Drop the work folder of a finished segmentation (faces, table, seeds)."""
    import shutil

    from trainer.segment_volume import WORK_DIR

    shutil.rmtree(Path(output) / WORK_DIR, ignore_errors=True)

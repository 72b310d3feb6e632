"""``run.py segment --workers N`` / ``--backend slurm --jobs N``: the labels of many workers
equal one process's bit for bit; bad outputs are refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from trainer import runs
from trainer.block_claims import JOB_DIR, BlockWorker, job_folder
from trainer.distributed_segment import prepare_segment, segment_worker
from trainer.jobs import job_progress
from trainer.predictions import read_prediction
from trainer.segment_volume import SegmentSetting, segment_to_disk
from trainer.segmentation import Quantile

sys.path.insert(0, str(Path(__file__).parent))
from test_segment_volume import membrane, read_labels, write_prediction  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (16, 40, 36)
#: not a multiple of the output's 64-voxel chunks: neighbouring blocks share chunks
BLOCK = (8, 24, 20)


def spec(prob: Path, out: Path, block=BLOCK) -> dict:
    return {"prob": str(prob), "key": "prob", "output": str(out), "channel": 1,
            "memory_gb": 2.0, "block": list(block), "halo": 6, "label_name": None}  # fmt: skip


@pytest.mark.parametrize(
    "setting",
    [
        SegmentSetting("components", threshold=0.45),
        SegmentSetting(
            "seeded",
            thresh=0.0,
            hi_thresh=Quantile(0.8),
            lo_thresh=Quantile(0.2),
            grow_it=(1, 1, 1),
            scale=(2.0, 1.0, 1.0),
        ),  # fmt: skip
    ],
    ids=["components", "seeded"],
)
def test_the_block_steps_equal_one_process_bit_for_bit(tmp_path, setting):
    prob = write_prediction(tmp_path / "prob.zarr", membrane(SHAPE, seed=3), "uint8")
    vol, record = read_prediction(prob, "prob")
    one = segment_to_disk(vol, record, tmp_path / "one.zarr", setting, block=BLOCK, halo=6)
    job = prepare_segment(spec(prob, tmp_path / "many.zarr"), setting, {"backend": "local"})
    with BlockWorker(job_folder(tmp_path / "many.zarr"), "w0") as w:
        segment_worker(job, w)
    want, got = read_labels(one), read_labels(tmp_path / "many.zarr")
    assert want.max() > 3 and got.dtype == np.uint64
    np.testing.assert_array_equal(got, want)
    assert not (tmp_path / "many.zarr" / ".segment-work").exists()
    rec = zarr.open_array(str(tmp_path / "many.zarr"), path="0").attrs["voxelboard_prediction"]
    assert rec == zarr.open_array(str(one), path="0").attrs["voxelboard_prediction"]
    p = job_progress(tmp_path / "many.zarr")
    n = len(range(0, SHAPE[0], BLOCK[0])) * 2 * 2
    names = [s["name"] for s in p["steps"]]
    if setting.method == "components":
        assert names == ["faces", "merge", "labels", "finish"]
    else:
        assert names == ["seed-faces", "merge", "seeds", "flood", "finish"]
    assert p["complete"] and p["blocks"]["done"] == p["blocks"]["total"] == sum(
        1 if s in ("merge", "finish") else n for s in names
    )


def threshold_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    runs.write_threshold(run_dir, {"threshold": 0.45, "method": "f1", "beta": 1, "run": "r",
                                   "result": "FINAL", "split": "valid", "saved": 0,
                                   "metrics": {}})  # fmt: skip
    return run_dir


def segment_cli(run_dir: Path, prob: Path, out: Path, *extra: str, env=None, timeout=300):
    cmd = [sys.executable, str(ROOT / "run.py"), "segment", str(run_dir), str(prob), str(out)]
    return subprocess.run([*cmd, "--block", *map(str, BLOCK), *extra], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)  # fmt: skip


def one_process(prob: Path, out: Path) -> np.ndarray:
    """What `run.py segment` at the saved threshold writes in one process."""
    vol, record = read_prediction(prob, "prob")
    setting = SegmentSetting("components", threshold=0.45)
    return read_labels(segment_to_disk(vol, record, out, setting, block=BLOCK))


@pytest.mark.slow
def test_two_local_workers_label_as_one_process(tmp_path):
    prob = write_prediction(tmp_path / "prob.zarr", membrane(SHAPE, seed=4))
    run_dir = threshold_run(tmp_path)
    want = one_process(prob, tmp_path / "one.zarr")
    two = segment_cli(run_dir, prob, prob / "labels" / "neurons", "--workers", "2")
    assert two.returncode == 0, two.stderr
    assert "faces: block" in two.stderr and "finish: block 1/1, all steps 18/18" in two.stderr
    assert want.max() > 3
    np.testing.assert_array_equal(read_labels(prob / "labels" / "neurons"), want)
    assert "neurons" in (prob / "labels" / ".zattrs").read_text()  # registered by the finisher
    p = job_progress(prob / "labels" / "neurons")
    done_by = {w["worker"]: w["blocks"] for w in p["workers"]}
    assert len(done_by) == 2 and sum(done_by.values()) == p["blocks"]["total"] == 8 + 1 + 8 + 1
    assert p["backend"] == "local" and p["workers_asked"] == 2 and p["command"][2] == "segment"


def test_an_output_the_workers_cannot_write_is_named_in_one_line(tmp_path):
    prob = write_prediction(tmp_path / "prob.zarr", membrane((8, 16, 16), seed=1))
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                                 capture_output=True)  # fmt: skip
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode()[-300:]}")
    else:
        ro.chmod(0o500)
    try:
        proc = segment_cli(threshold_run(tmp_path), prob, ro / "labels.zarr", "--workers", "2")
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 2  # the "segmenting ..." line, then the one line
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"run.py segment: cannot write the output folder {ro} (")
    assert "Traceback" not in proc.stderr and not (ro / "labels.zarr").exists()


# -- Slurm -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_two_task_slurm_array_labels_as_one_process(tmp_path, cluster):
    prob = write_prediction(tmp_path / "prob.zarr", membrane((8, 40, 20), seed=6))
    run_dir = threshold_run(tmp_path)
    want = one_process(prob, tmp_path / "one.zarr")
    env = {**os.environ, "SLURM_CONF": str(cluster.conf)}
    out = tmp_path / "array.zarr"
    proc = segment_cli(run_dir, prob, out, "--backend", "slurm", "--jobs", "5", "--wait",
                       "--slurm-partition", "debug", "--slurm-time", "15", env=env,
                       timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr + "".join(
        p.read_text() for p in (out / JOB_DIR).glob("slurm-*.log")
    )
    assert "note: 5 workers for 2 blocks: 2 are started (one per block)" in proc.stderr
    np.testing.assert_array_equal(read_labels(out), want)
    p = job_progress(out)
    job_id = p["slurm_job_id"]
    assert p["backend"] == "slurm" and p["workers_asked"] == 2 and job_id
    assert sorted(w["worker"] for w in p["workers"]) == [f"slurm-{job_id}_0", f"slurm-{job_id}_1"]
    assert all(w["state"] == "finished" for w in p["workers"])
    from app.block_jobs import task_states

    assert task_states(out, cluster.slurm) == {f"{job_id}_0": "COMPLETED",
                                               f"{job_id}_1": "COMPLETED"}  # fmt: skip

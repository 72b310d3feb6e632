"""A full disk stops the run loudly: state failed with the cause and the file, the log says it,
what was written stays loadable, and ``--resume`` finishes once there is space again.

The end-to-end test trains into a real small file system: a tmpfs mount where the machine
allows it (root), else the same run with a fault-injecting file layer in the training
subprocess (writes under the runs folder fail with ENOSPC after a byte budget).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.readers import run_summary
from trainer import runs
from trainer.config import ExperimentConfig
from trainer.history import loadhistorytracker
from trainer.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]

# a small model on small demo cubes: a few seconds of training
TINY = """
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r}, shape=(16, 48, 48), preview_shape=(12, 48, 48))
def create_model():
    return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
preview_data_path = _demo.preview_data_path
preview_kwargs = dict(max_z_pred=2)
preview_every = 4
n_steps = {n_steps}
history_freq = 5
monitor_batch_size = 2
batch_size = 2
optimiser = "SGD"
optimiser_params = dict(lr=0.05, mom=0.9)
plot_on = False
heartbeat_s = 0.05
"""

# for the end-to-end run: a LAST snapshot at steps 0 and 5 (monitoring), no previews, and a
# model whose snapshot is large next to the small files (status, log, history)
QUICK = """
def create_model():
    return CNN3D(n_classes=2, base_filters=8, patch_size=(7, 24, 24))
history_freq = 5
preview_every = None
heartbeat_s = 0.2
"""

# Writes under VB_FAULT_ROOT fail with ENOSPC once VB_FAULT_BYTES have been written there, as
# on a disk of that size that never frees anything. Covers os.write (history store) and
# os.fdopen files (every atomic write); previews (h5py, C writes) are off in QUICK.
FAULT_LAYER = """
import errno, io, os

_root = os.environ.get("VB_FAULT_ROOT")
if _root:
    _left = [int(os.environ["VB_FAULT_BYTES"])]

    def _charge(fd, n):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if target.startswith(_root):
            if n > _left[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _left[0] -= n

    _write = os.write

    def write(fd, data):
        _charge(fd, memoryview(data).nbytes)
        return _write(fd, data)

    class _FileIO(io.FileIO):
        def write(self, b):
            _charge(self.fileno(), memoryview(b).nbytes)
            return super().write(b)

    _fdopen = os.fdopen

    def fdopen(fd, mode="r", buffering=-1, *args, **kw):
        if "w" in mode and "b" in mode and buffering != 0:
            return io.BufferedWriter(_FileIO(fd, "w"))
        return _fdopen(fd, mode, buffering, *args, **kw)

    os.write, os.fdopen = write, fdopen
"""


def _snapshot_bytes() -> int:
    """About the size of one snapshot of QUICK's model: weights and SGD momentum, float32."""
    from trainer.models import CNN3D

    model = CNN3D(n_classes=2, base_filters=8, patch_size=(7, 24, 24))
    return 2 * 4 * sum(p.numel() for p in model.parameters()) + 16 * 1024


class SmallDisk:
    """A runs folder with room for one snapshot and the small files, not for two.

    A LAST snapshot is replaced through a temporary file, so the second one needs room for two.
    """

    def __init__(self, root: Path, tmp: Path):
        self.root, self.tmp, self.kind = root, tmp, ""
        self.env: dict[str, str] = {}
        self.size = int(1.5 * _snapshot_bytes()) + 32 * 1024

    def __enter__(self) -> SmallDisk:
        self.root.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={self.size // 1024}k", "tmpfs"]
        done = None
        if not os.environ.get("VOXELBOARD_TEST_NO_MOUNT"):  # set it to try the fault layer
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                done = subprocess.run([*mount, str(self.root)], capture_output=True, timeout=30)
        if done is not None and done.returncode == 0:
            self.kind = "tmpfs"
            return self
        self.kind = "fault layer"
        layer = self.tmp / "fault_layer"
        layer.mkdir()
        (layer / "sitecustomize.py").write_text(FAULT_LAYER)
        path = os.pathsep.join(p for p in (str(layer), os.environ.get("PYTHONPATH")) if p)
        self.env = {"PYTHONPATH": path, "VB_FAULT_ROOT": str(self.root.resolve()),
                    "VB_FAULT_BYTES": str(self.size - 32 * 1024)}  # fmt: skip
        return self

    def free(self) -> None:
        """Make room: remount bigger, or leave the fault layer out."""
        if self.kind == "tmpfs":
            subprocess.run(["mount", "-o", "remount,size=64m", str(self.root)], check=True)
        self.env = {}

    def __exit__(self, *exc: object) -> None:
        if self.kind == "tmpfs":
            done = subprocess.run(["umount", str(self.root)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with SmallDisk(tmp_path / "runs", tmp_path) as disk:
        yield disk


def _train(tmp: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "run.py"), "train", *args, "--device", "cpu"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_full_disk_fails_the_run_in_words_and_resume_finishes(tmp_path, data_dir, small_disk):
    cfg = tmp_path / "quick.py"
    cfg.write_text(TINY.format(data=str(data_dir), n_steps=40) + QUICK)
    run_dir = small_disk.root / "full"
    proc = _train(tmp_path, small_disk.env, str(cfg), "--save-path", str(small_disk.root),
                  "--save-name", "full", "--n-steps", "40")  # fmt: skip
    assert proc.returncode == 1, f"{small_disk.kind}: {proc.stderr[-3000:]}"

    cause = re.compile(r"no space left on device while writing snapshots/LAST\.pt; free space on")
    status = runs.read_status(run_dir)
    assert status.state == "failed", status
    assert cause.search(status.error), status.error
    assert status.step == 6, "monitoring at step 5 wrote the second LAST snapshot"
    assert cause.search((run_dir / runs.LOG_FILE).read_text())
    assert cause.search(proc.stderr)
    assert "Traceback" not in proc.stderr

    # the dashboard's Issue column shows a failed run's error
    row = run_summary(run_dir)
    assert row["state"] == "failed" and cause.search(row["error"])

    # what was written stays loadable: the history store and the previous snapshot
    tracker = loadhistorytracker(run_dir)
    assert list(tracker.history["steps"]) == [0, 5]
    assert list(tracker.timeline.index) == list(range(6))
    assert torch.load(runs.snapshot_path(run_dir, "LAST"), weights_only=False)["step"] == 1
    assert not list(run_dir.rglob("*.tmp")), "the failed write left no temporary file"

    small_disk.free()
    proc = _train(tmp_path, small_disk.env, "--resume", str(run_dir), "--n-steps", "8")
    assert proc.returncode == 0, f"{small_disk.kind}: {proc.stderr[-3000:]}"
    status = runs.read_status(run_dir)
    assert (status.state, status.step, status.error) == ("finished", 8, None)
    tracker = loadhistorytracker(run_dir)
    assert list(tracker.timeline.index) == list(range(8)), "no gap and no duplicate step"
    assert list(tracker.history["steps"]) == [0, 5, 7]
    assert torch.load(runs.snapshot_path(run_dir, "FINAL"), weights_only=False)["step"] == 8


# ---------------------------------------------------------------------- in-process


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def _trainer(
    tmp: Path, data_dir: Path, n_steps: int, cls: type = Trainer, extra: str = ""
) -> Trainer:
    cfg_file = tmp / "tiny.py"
    cfg_file.write_text(TINY.format(data=str(data_dir), n_steps=n_steps) + extra)
    cfg = ExperimentConfig(str(cfg_file))
    cfg.apply_overrides(save_path=str(tmp / "runs"), save_name="run")
    cfg.make_dir()
    return cls(cfg, device="cpu")


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path)
    logging.getLogger("voxelboard").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("voxelboard").removeHandler(handler)
        handler.close()


def _block(path: Path) -> None:
    """Make every write of ``path`` fail for real: a non-empty folder cannot be replaced."""
    if path.is_dir():
        for p in path.iterdir():
            p.unlink()
        path.rmdir()
    while True:
        path.unlink(missing_ok=True)
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue  # a heartbeat wrote the file again between the unlink and the mkdir
    (path / "keep").write_text("a folder where a file belongs")


def test_a_heartbeat_that_cannot_write_is_raised_by_check(tmp_path):
    with runs.StatusFile(tmp_path, runs.Status(state="running"), interval=0.02) as sf:
        sf.check()  # a fresh status file has nothing to report
        _block(tmp_path / runs.STATUS_FILE)
        deadline = time.monotonic() + 30
        while sf.failure is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(
            runs.RunWriteError, match=r"is a directory while writing status\.json; check that"
        ):
            sf.check()
    assert sf.failure.path == tmp_path / runs.STATUS_FILE


def test_the_loop_stops_when_the_heartbeat_cannot_write_status(tmp_path, data_dir):
    class BreaksStatusAtStep2(Trainer):
        def _train_step(self, batch):
            if self.step == 2:
                _block(self.run_dir / runs.STATUS_FILE)
            if self.step >= 2:
                time.sleep(0.05)  # one heartbeat interval per step: the beat gets its turn
            return super()._train_step(batch)

    # no monitoring between steps 0 and 59: only the heartbeat writes status.json meanwhile
    tr = _trainer(tmp_path, data_dir, 60, BreaksStatusAtStep2, "history_freq = 1000\n")
    log = tr.run_dir / runs.LOG_FILE
    with _log_to(log), pytest.raises(runs.RunWriteError, match=r"writing status\.json"):
        tr.run()
    assert 2 < tr.step < 60, "training stopped soon after status.json became unwritable"
    text = log.read_text()
    assert re.search(r"Training stopped at step \d+: .* while writing status\.json", text)
    assert "The final state (failed) could not be recorded either" in text


@pytest.mark.parametrize(
    ("folder", "file"),
    [
        (runs.HISTORY_DIR, "history/timeline.vbh"),
        (runs.SNAPSHOT_DIR, "snapshots/LAST.pt"),
        (runs.PREVIEW_DIR, "previews/preview-00000000.h5"),
    ],
)
def test_a_failed_write_stops_the_run_naming_the_file(tmp_path, data_dir, folder, file):
    tr = _trainer(tmp_path, data_dir, n_steps=8)
    target = tr.run_dir / folder
    if target.exists():
        target.rmdir()
    target.write_text("a file where the folder belongs")  # every write below it fails
    with pytest.raises(runs.RunWriteError, match=f"while writing {re.escape(file)}"):
        tr.run()
    status = runs.read_status(tr.run_dir)
    assert status.state == "failed"
    assert re.match(
        rf"file exists while writing {re.escape(file)}; check that folder", status.error
    )

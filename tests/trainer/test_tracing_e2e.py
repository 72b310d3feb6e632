"""End to end: both tracing demo configs train in a real subprocess and leave a complete run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer import runs
from trainer.history import loadhistorytracker

REPO = Path(__file__).resolve().parents[2]
#: steps of each demo: the RNN demo unrolls 8 batches of 8 traces a step (over a second each on
#: a CPU), so it trains two (a first and a last history row); the CNN tracer needs a few for
#: its traces to grow
N_STEPS = {"demo_tracing.py": 12, "demo_tracing_rnn.py": 2}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(demo_data_dir) -> Path:
    """The session's demo data (its tracing data set included; read only)."""
    return demo_data_dir


def _train(tmp: Path, data_dir: Path, config: str, name: str) -> Path:
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(REPO / "examples" / config),
           "--save-path", str(tmp / "runs"), "--save-name", name, "--n-steps", str(N_STEPS[config]),
           "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    run_dir = tmp / "runs" / name
    log = (run_dir / runs.LOG_FILE).read_text() if (run_dir / runs.LOG_FILE).exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    return run_dir


def _check_common(run_dir: Path, n_steps: int, history_freq: int) -> None:
    status = runs.read_status(run_dir)
    assert status.state == "finished" and status.step == n_steps == status.n_steps
    assert status.extra["traces_done"] is not None
    tracker = loadhistorytracker(run_dir)
    assert list(tracker.timeline.index) == list(range(n_steps))
    assert np.isfinite(tracker.timeline[["loss", "batch_char"]]).all().all()
    hist = tracker.history
    expected = sorted({*range(0, n_steps, history_freq), n_steps - 1})
    assert list(hist["steps"]) == expected
    assert hist[["train_loss", "valid_loss", "train_err", "valid_err"]].notna().all().all()
    assert (
        ((hist[["train_err", "valid_err"]] >= 0) & (hist[["train_err", "valid_err"]] <= 100))
        .all()
        .all()
    )
    assert len(tracker.debug_outputs) == n_steps
    for which in ("LAST", "FINAL"):
        snap = torch.load(runs.snapshot_path(run_dir, which), weights_only=False)
        assert snap["step"] == n_steps and "model" in snap
    assert runs.preview_files(run_dir) == [], "tracing writes no previews"
    assert "End of training (finished)" in (run_dir / runs.LOG_FILE).read_text()
    assert json.loads((run_dir / "config.json").read_text())["sequence_training"] > 1


def test_tracing_demo_trains_in_a_subprocess(tmp_path, data_dir):
    run_dir = _train(tmp_path, data_dir, "demo_tracing.py", "trace")
    _check_common(run_dir, N_STEPS["demo_tracing.py"], history_freq=100)
    tracker = loadhistorytracker(run_dir)
    assert tracker.regression is None
    assert list(tracker.debug_outputs.columns[2:]) == ["step_length", "off_centre", "trace_length"]
    # sequence training: traces grow beyond one step while they stay on track
    assert tracker.debug_outputs["trace_length"].max() > 1


def test_tracing_rnn_demo_trains_in_a_subprocess(tmp_path, data_dir):
    run_dir = _train(tmp_path, data_dir, "demo_tracing_rnn.py", "tracernn")
    _check_common(run_dir, N_STEPS["demo_tracing_rnn.py"], history_freq=50)
    tracker = loadhistorytracker(run_dir)
    pred, target = tracker.regression_track
    assert pred.shape == target.shape == (N_STEPS["demo_tracing_rnn.py"], 1)
    assert ((target > 2.0) & (target < 9.0)).all(), "true radii of the synthetic neurites"
    assert (tracker.history["loss_gain"] == 0).all()

"""examples/neuro3d.py, ELEKTRONN2's neuro3d config ported, trains through ``run.py train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import runs
from trainer.runs.history_store import read_table

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_neuro3d_trains_with_elektronn2s_numbers_unchanged(tmp_path):
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(REPO / "examples" / "neuro3d.py"),
           "--n-steps", "3", "--device", "cpu", "--save-path", str(tmp_path / "runs"),
           "--save-name", "neuro3d"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ConfigWarning" not in proc.stderr, proc.stderr
    run_dir = tmp_path / "runs" / "neuro3d"
    assert runs.read_status(run_dir).state == "finished"
    cfg = json.loads((run_dir / "config.json").read_text())
    # ELEKTRONN2's numbers as its config wrote them (1e6 -> int, np.array -> list)
    assert cfg["optimiser"] == "Adam"
    assert cfg["optimiser_params"] == {"lr": 5e-4, "mom": 0.9, "beta2": 0.999, "wd": 5e-5}
    assert cfg["schedules"] == {"lr": {"dec": 0.995}}
    assert cfg["class_weights"] == [0.2653, 0.7347]
    assert (cfg["batch_size"], cfg["history_freq"], cfg["monitor_batch_size"]) == (1, 200, 30)
    assert cfg["n_steps"] == 3  # the command line's override of 1e6
    history = read_table(run_dir / runs.HISTORY_DIR, "history")
    assert list(history["steps"]) == [0, 2]
    assert history["valid_loss"].notna().all()

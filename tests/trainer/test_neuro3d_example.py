"""examples/neuro3d.py, ELEKTRONN2's neuro3d config ported, trains through ``run.py train``."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import runs
from trainer.runs.history_store import read_table

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "neuro3d.py"

#: the training numbers of ELEKTRONN2's examples/neuro3d.py, with their Python types
ELEKTRONN2_NEURO3D = {
    "save_path": "~/elektronn2_training/",
    "initial_prev_h": 1.0,
    "prev_save_h": 1.0,
    "data_class": "BatchCreatorImage",
    "background_processes": 2,
    "data_batch_args": {
        "grey_augment_channels": [0],
        "warp": 0.5,
        "warp_args": {"sample_aniso": True, "perspective": True},
    },
    "n_steps": 1000000,
    "history_freq": 200,
    "monitor_batch_size": 30,
    "optimiser": "Adam",
    "optimiser_params": {"lr": 0.0005, "mom": 0.9, "beta2": 0.999, "wd": 0.5e-4},
    "schedules": {"lr": {"dec": 0.995}},
    "batch_size": 1,
    "preview_kwargs": {"export_class": [1], "max_z_pred": 3},
}


def _literal_assignments(path: Path) -> dict[str, object]:
    """Top-level ``name = <literal>`` of a config file, as written (no code is run)."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                found[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                found[node.targets[0].id] = ast.unparse(node.value)
    return found


def test_neuro3d_is_written_as_elektronn2_wrote_it():
    written = _literal_assignments(EXAMPLE)
    for key, value in ELEKTRONN2_NEURO3D.items():
        assert written[key] == value and type(written[key]) is type(value), key
    assert written["max_runtime"] == "7 * 24 * 3600"
    # ELEKTRONN2's neuro3d has never set class weights: its loss was unweighted
    assert "class_weights" not in written and "loss" not in written


@pytest.mark.slow
def test_neuro3d_trains_with_elektronn2s_numbers_and_an_unweighted_loss(tmp_path, demo_data_dir):
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(demo_data_dir), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(EXAMPLE),
           "--n-steps", "1", "--device", "cpu", "--save-path", str(tmp_path / "runs"),
           "--save-name", "neuro3d"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ConfigWarning" not in proc.stderr, proc.stderr
    run_dir = tmp_path / "runs" / "neuro3d"
    assert runs.read_status(run_dir).state == "finished"
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["optimiser"] == "Adam"
    assert cfg["optimiser_params"] == {"lr": 5e-4, "mom": 0.9, "beta2": 0.999, "wd": 5e-5}
    assert cfg["schedules"] == {"lr": {"dec": 0.995}}
    # the loss the run trained with: ELEKTRONN2's multinoulli NLL, no class weights
    assert (cfg["loss"], cfg["loss_params"], cfg["class_weights"]) == ("CrossEntropy", None, None)
    assert (cfg["batch_size"], cfg["history_freq"], cfg["monitor_batch_size"]) == (1, 200, 30)
    assert cfg["n_steps"] == 1  # the command line's override of 1000000
    history = read_table(run_dir / runs.HISTORY_DIR, "history")
    assert list(history["steps"]) == [0]  # step 0 is the last
    assert history["valid_loss"].notna().all()

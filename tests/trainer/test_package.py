"""The public surface: every name of the reference API imports from `trainer`, cheaply."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

REFERENCE_NAMES = [
    "ExperimentConfig", "HistoryTracker", "Schedule", "Trainer", "TracingTrainer",
    "TracingTrainerRNN", "BackgroundProc", "SharedQ", "TimeoutError", "binary_nll",
    "confusion_table", "error_hist", "eval_thresh", "evaluate", "evaluate_model_binary",
    "find_nearest", "loadhistorytracker", "performance_measure", "rescale_fudge", "roc_area",
    "user_input",
]  # fmt: skip


@pytest.mark.parametrize("name", REFERENCE_NAMES)
def test_reference_name_imports(name):
    code = f"from trainer import {name}; print({name}.__module__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("trainer.")


def test_import_is_cheap_and_has_no_side_effects(tmp_path):
    code = (
        "import sys, trainer, trainer.runs, trainer.history, trainer.config;"
        "print('torch' in sys.modules, 'dash' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"], "light modules must not pull in torch or dash"
    assert list(tmp_path.iterdir()) == [], "importing must not create files"


@pytest.mark.parametrize("command", [[], ["dashboard"], ["train"], ["evaluate"], ["demo-data"]])
def test_cli_help(command):
    out = subprocess.run([sys.executable, str(REPO / "run.py"), *command, "--help"],
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "usage: run.py" in out.stdout


def test_train_without_config_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "run.py"), "train"], cwd=tmp_path,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 2
    assert "needs a CONFIG file" in out.stderr and "Traceback" not in out.stderr

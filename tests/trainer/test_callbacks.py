"""The ``callbacks`` config key: a config's own handlers of the loop's events, for real."""

from __future__ import annotations

import json
import math
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from trainer import callbacks, runs
from trainer.callbacks import CallbackError
from trainer.config import ConfigError, ExperimentConfig
from trainer.history import loadhistorytracker
from trainer.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]

CONFIG = """
import json
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r}, shape=(16, 48, 48), preview_shape=(12, 48, 48))
def create_model():
    return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
n_steps = 6
history_freq = 5
monitor_batch_size = 2
batch_size = 2
optimiser = "SGD"
optimiser_params = dict(lr=0.05, mom=0.9)
param_save_it = 4
plot_on = False
{extra}
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def make_trainer(tmp: Path, data_dir: Path, extra: str) -> Trainer:
    cfg_file = tmp / "cfg.py"
    cfg_file.write_text(CONFIG.format(data=str(data_dir), extra=textwrap.dedent(extra)))
    cfg = ExperimentConfig(str(cfg_file))
    cfg.apply_overrides(save_path=str(tmp / "runs"), save_name="run")
    cfg.make_dir()
    return Trainer(cfg, device="cpu")


def test_a_config_callback_sends_every_history_row_to_a_tracker(tmp_path, data_dir):
    # a stand-in for "log each row to MLflow": a config file's class, nothing else changed
    tr = make_trainer(tmp_path, data_dir, """
        class Tracking:
            def on_history_row(self, trainer, row):
                with open(trainer.run_dir / "tracking.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\\n")
        callbacks = [Tracking()]
    """)  # fmt: skip
    assert tr.run() == "finished"
    lines = (tr.run_dir / "tracking.jsonl").read_text().splitlines()
    tracked = [json.loads(line) for line in lines]
    history = loadhistorytracker(tr.run_dir).history  # what the dashboard reads
    assert [r["steps"] for r in tracked] == list(history["steps"]) == [0, 5]
    for row, (_, stored) in zip(tracked, history.iterrows()):
        assert set(row) == set(history.columns)
        for col in history.columns:
            want = float(stored[col])
            assert (math.isnan(row[col]) and math.isnan(want)) or row[col] == pytest.approx(
                want, rel=1e-6
            ), col


def test_hooks_are_called_in_order_with_their_arguments(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, """
        best_metric = "steps"
        best_mode = "max"  # every row improves: BEST at every row
        class Recorder:
            def __init__(self):
                self.calls = []
            def on_train_start(self, trainer):
                self.calls.append(("start", trainer))
            def on_step_end(self, trainer, step, loss):
                self.calls.append(("step", step, loss, trainer.step))
            def on_history_row(self, trainer, row):
                self.calls.append(("row", dict(row)))
            def on_snapshot(self, trainer, name, path):
                self.calls.append(("snapshot", name, path, path.exists()))
            def on_train_end(self, trainer, state):
                self.calls.append(("end", state, trainer.step))
        callbacks = [Recorder()]
    """)  # fmt: skip
    assert tr.run() == "finished"
    calls = tr.exp_config.callbacks[0].calls
    snaps = tr.run_dir / runs.SNAPSHOT_DIR
    losses = tr.tracker.timeline["loss"].to_numpy()
    history = tr.tracker.history

    def row(i):
        return ("row", {k: float(v) for k, v in history.iloc[i].items()})

    def snap(name):
        return ("snapshot", name, snaps / f"{name}.pt", True)

    expected = [("start", tr),
                snap("LAST"), snap("BEST"), row(0), ("step", 0, losses[0], 1),
                ("step", 1, losses[1], 2), ("step", 2, losses[2], 3), ("step", 3, losses[3], 4),
                snap("step-00000004"), ("step", 4, losses[4], 5),
                snap("LAST"), snap("BEST"), row(1), ("step", 5, losses[5], 6),
                snap("FINAL"), ("end", "finished", 6)]  # fmt: skip
    got = [("row", {k: float(v) for k, v in c[1].items()}) if c[0] == "row" else c for c in calls]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if g[0] == "row":
            assert g[1].keys() == e[1].keys()
            np.testing.assert_allclose(list(g[1].values()), list(e[1].values()), rtol=1e-6)
        else:
            assert g == pytest.approx(e) if g[0] == "step" else g == e


def test_a_raising_callback_fails_the_run_naming_it_and_its_hook(tmp_path, data_dir):
    tr = make_trainer(tmp_path, data_dir, """
        class Exploding:
            def on_history_row(self, trainer, row):
                raise KeyError("no tracking server")
        callbacks = [Exploding()]
    """)  # fmt: skip
    with pytest.raises(CallbackError, match=r"callback Exploding\.on_history_row raised KeyError"):
        tr.run()
    status = runs.read_status(tr.run_dir)
    assert status.state == "failed" and status.step == 1
    assert "Exploding.on_history_row" in status.error and "no tracking server" in status.error


VALID = """
data_class = 'BatchCreatorImage'
batch_size = 2
n_steps = 100
history_freq = 10
monitor_batch_size = 4
optimiser = 'Adam'
optimiser_params = dict(lr=1e-3)
def create_model():
    return None
class Rows:
    def on_history_row(self, trainer, row):
        pass
class Nothing:
    pass
class NotAMethod:
    on_step_end = 5
"""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3", r"'callbacks': expected a list of callback objects, got int 3"),
        ("[Nothing()]", r"'callbacks\[0\]': Nothing defines none of the hooks on_train_start, "
                        r"on_step_end, on_history_row, on_snapshot, on_train_end"),
        ("[Rows(), Rows]", r"'callbacks\[1\]': Rows is a class; give an object: Rows\(\)"),
        ("[NotAMethod()]", r"'callbacks\[0\]': NotAMethod\.on_step_end is a int, not a method"),
    ],
)  # fmt: skip
def test_bad_callbacks_are_refused_with_what_to_do(tmp_path, monkeypatch, value, message):
    monkeypatch.delenv("VOXELBOARD_DEFAULTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(VALID + f"callbacks = {value}\n")
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(cfg)


def test_good_callbacks_and_the_default_pass(tmp_path, monkeypatch):
    monkeypatch.delenv("VOXELBOARD_DEFAULTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = tmp_path / "cfg.py"
    cfg.write_text(VALID)
    assert ExperimentConfig(cfg).callbacks == []
    cfg.write_text(VALID + "callbacks = (Rows(),)\n")
    assert type(ExperimentConfig(cfg).callbacks[0]).__name__ == "Rows"


def test_off_rank_0_no_event_reaches_a_handler():
    user = types.SimpleNamespace(on_step_end=lambda *a: pytest.fail("called off rank 0"))
    column = types.SimpleNamespace(columns=lambda trainer: ("valid_are",))
    trainer = types.SimpleNamespace(
        is_main=False, trial=None, exp_config=types.SimpleNamespace(callbacks=[user])
    )
    handlers = callbacks.register(trainer, [column])
    assert handlers.handlers == [column]  # kept for the history columns every rank agrees on
    assert handlers.columns() == ("valid_are",)
    assert handlers.step_end(0, 1.0) == 0.0


@pytest.mark.parametrize("pruned", [None, "pruned at step 3"])
def test_a_stop_signal_during_a_pruning_report_is_kept(pruned):
    """A sweep trial's SIGTERM can land while its pruning report reads and writes the study:
    the stop it asked for survives the report's answer, "not pruned" or "pruned"."""
    import os
    import signal

    from trainer.callbacks.pruning import Pruning

    trainer = types.SimpleNamespace(stop_reason=None, pruned_reason=None)

    class Reporter:
        def report(self, step: int, row: dict) -> str | None:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before this returns
            assert trainer.stop_reason == "signal SIGTERM"
            return pruned

    def on_term(signum, frame):
        trainer.stop_reason = "signal SIGTERM"

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        Pruning(Reporter()).on_history_row(trainer, {"steps": 3})
    finally:
        signal.signal(signal.SIGTERM, old)
    assert trainer.stop_reason == "signal SIGTERM"
    assert trainer.pruned_reason == pruned

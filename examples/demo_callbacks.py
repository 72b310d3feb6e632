"""Demo: a config's own callback, here one that sends every history row to a tracking file.

The same small CNN on the synthetic EM data as ``demo_cnn3d.py``, trained briefly. The
``callbacks`` key adds ``JsonLinesTracker``: each monitoring row the trainer writes to its
history also goes, as one JSON line, to ``tracking.jsonl`` in the run directory. Swap the
file for an experiment tracker (``mlflow.log_metrics(row, step=row["steps"])``) and nothing
else changes. Train it with ``python run.py train examples/demo_callbacks.py``.
"""

import json
import os

from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))


class JsonLinesTracker:
    """Appends each history row to ``<run dir>/tracking.jsonl``; notes snapshots and the end."""

    def on_history_row(self, trainer, row):
        with open(trainer.run_dir / "tracking.jsonl", "a") as f:
            f.write(json.dumps({k: float(v) for k, v in row.items()}) + "\n")

    def on_snapshot(self, trainer, name, path):
        print(f"snapshot {name} at step {trainer.step}: {path}")

    def on_train_end(self, trainer, state):
        print(f"run {trainer.run_dir.name} ended: {state}")


callbacks = [JsonLinesTracker()]


def create_model():
    return CNN3D(n_classes=2, in_channels=1)


data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)

n_steps = 200
history_freq = 20
monitor_batch_size = 4
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=2e-3, mom=0.9, beta2=0.999, wd=0.0)
param_save_it = 100

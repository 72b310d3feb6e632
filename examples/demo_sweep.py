"""Demo sweep: the demo CNN's learning rate and batch size searched with TPE, hopeless trials
pruned by the median rule.

Run it with ``python run.py sweep examples/demo_sweep.py`` (or launch it from the dashboard:
the form says how many runs it makes); follow it on the dashboard's ``/sweep/<id>`` page.
Trained alone with ``run.py train`` it is an ordinary run (the ``sweep`` section is ignored).
"""

import os

from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))


def create_model():
    return CNN3D(n_classes=2, in_channels=1)


data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
instance_files = _demo.instance_files_kwarg()
preview_data_path = _demo.preview_data_path
preview_kwargs = dict(export_class="all", max_z_pred=3)

n_steps = 300
max_runtime = 5 * 60  # seconds
history_freq = 20
monitor_batch_size = 4
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=2e-3, mom=0.9, beta2=0.999, wd=0.0)
param_save_it = 500

sweep = dict(
    method="tpe",
    n_runs=8,
    metric="valid_loss",
    goal="min",
    parameters=dict(
        lr=dict(low=1e-4, high=1e-2, log=True),
        batch_size=[1, 2],
    ),
    prune=True,
    pruner="median",
    warmup_steps=60,  # steps before a trial may be pruned
    startup_runs=2,  # trials that complete before the pruner judges the others
    max_parallel=2,
)

"""Demo: a small anisotropic 3D CNN learns cell membranes on VoxelBoard's synthetic EM data.

Runs on a CPU; the validation error is below 10% by step 200 in most runs (README's numbers,
measured with ``python bench/bench_demo_convergence.py``); how many seconds that takes depends on
the machine and its load.
Train it with ``python run.py train examples/demo_cnn3d.py`` or launch it from the dashboard.
The demo data is generated into ``$VOXELBOARD_DATA_DIR`` (default ``./data``) on first use.
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
instance_files = _demo.instance_files_kwarg()  # the true neurons, for `evaluate --instances`
preview_data_path = _demo.preview_data_path
preview_kwargs = dict(export_class="all", max_z_pred=3)
preview_every = 100  # steps; the time rule (initial_prev_h, prev_save_h) still applies too

n_steps = 1500
max_runtime = 15 * 60  # seconds
history_freq = 20
monitor_batch_size = 4
batch_size = 2
optimiser = "Adam"
# 4e-3: 8.5% validation error at step 200 over 5 seeds, against 10.6% with 2e-3 (README)
optimiser_params = dict(lr=4e-3, mom=0.9, beta2=0.999, wd=0.0)
schedules = dict(lr=dict(dec=0.8, period=500))
param_save_it = 500
background_processes = 2

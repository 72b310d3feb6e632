"""Demo: the CNN3D demo trained from the zarr copy of the synthetic data, read lazily.

The same cubes as ``demo_cnn3d.py``, stored as one zarr v3 group (``demo.zarr``, written by
``python run.py demo-data``: ``raw_<i>``, ``lab_<i>`` and the neurons ``ids_<i>``);
``BatchCreatorImage`` reads zarr patch by patch, so this is how a config points at a volume
too large for memory (see README, "Your own data").
Train it with ``python run.py train examples/demo_cnn3d_zarr.py``.
"""

import os

from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data, ensure_demo_zarr

_demo = ensure_demo_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))
ensure_demo_zarr(_demo)


def create_model():
    return CNN3D(n_classes=2, in_channels=1)


data_class = "BatchCreatorImage"
# d_files=[(".../demo.zarr", "raw_0"), ...], l_files=[(".../demo.zarr", "lab_0"), ...]
data_init_kwargs = _demo.zarr_data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
# the true neurons for `evaluate --instances`: [(".../demo.zarr", "ids_0"), ...]
instance_files = _demo.zarr_instance_files_kwarg()
preview_data_path = _demo.preview_data_path
preview_kwargs = dict(export_class="all", max_z_pred=3)
preview_every = 100

n_steps = 1500
max_runtime = 15 * 60  # seconds
history_freq = 20
monitor_batch_size = 4
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=2e-3, mom=0.9, beta2=0.999, wd=0.0)
schedules = dict(lr=dict(dec=0.8, period=500))
param_save_it = 500
background_processes = 2

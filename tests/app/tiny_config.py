"""The config the sweep and Slurm tests train: seconds on a CPU (``TINY.format(n_steps=N,
sweep=...)``; its data come from ``VOXELBOARD_DATA_DIR``, the session's demo data)."""

#: a config trained in seconds: a small net on small patches, its model imported in
#: ``create_model``, so a sweep driver that executes the config never imports torch
TINY = """
import os
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ["VOXELBOARD_DATA_DIR"])

def create_model():
    from trainer.models import CNN3D

    return CNN3D(n_classes=2, in_channels=1, base_filters=4, patch_size=(7, 24, 24))

data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
n_steps = {n_steps}
history_freq = 3
monitor_batch_size = 1
batch_size = 1
optimiser = "Adam"
optimiser_params = dict(lr=2e-3)
plot_on = False
sweep = {sweep}
"""

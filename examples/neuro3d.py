"""ELEKTRONN2's ``examples/neuro3d.py``, ported: only ``create_model`` and the paths changed.

Every training number is ELEKTRONN2's (Adam lr 5e-4, mom 0.9, beta2 0.999, wd 5e-5, lr decay
0.995 per 1000 steps, batch size 1, 1e6 steps, history every 2e2 steps on 30 examples, class
weights, grey-value and warp augmentation, previews after 1 h and then every hour), written as
ELEKTRONN2 configs write them (``1e6``, ``2e2``, ``np.array``). docs/porting.md says what
VoxelBoard does with each key.

Changed:

* the paths: the data is VoxelBoard's synthetic demo (``trainer/synthetic.py``), generated into
  ``$VOXELBOARD_DATA_DIR`` (default ``./data``) on first use, instead of ``~/neuro_data_zxy``.
* ``create_model``: ELEKTRONN2 built a Theano graph with input (1, 23, 185, 185) and a 2-class
  softmax. Here a VoxelBoard ``CNN3D`` with the same 23 input sections and 47 x 47 in-plane
  (the demo cubes are 128 voxels wide, so 185 would not fit). The size is chosen for CPUs,
  where the 30 monitoring examples of each history step dominate a short run; on a GPU, give
  ``CNN3D`` a larger ``patch_size`` and ``base_filters``.

Train it with ``python run.py train examples/neuro3d.py``.
"""

import os

import numpy as np

from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))

save_path = "~/elektronn2_examples/"
save_name = None  # the config name and a time stamp

preview_data_path = _demo.preview_data_path
preview_kwargs = {
    "export_class": [1],
    "max_z_pred": 3,
}
initial_prev_h = 1  # hours: time of first preview
prev_save_h = 1  # hours: interval between previews
data_class = "BatchCreatorImage"
background_processes = 2

n_steps = 1e6
max_runtime = 7 * 24 * 3600  # in seconds
history_freq = 2e2
monitor_batch_size = 30
optimiser = "Adam"
data_batch_args = {
    "grey_augment_channels": [0],
    "warp": 0.5,
    "warp_args": {
        "sample_aniso": True,
        "perspective": True,
    },
}
data_init_kwargs = _demo.data_init_kwargs()  # d_path, l_path, d_files, l_files, aniso_factor 2
data_init_kwargs["valid_cubes"] = [2]
optimiser_params = {
    "lr": 5e-4,
    "mom": 0.9,
    "beta2": 0.999,
    "wd": 0.5e-4,
}
schedules = {"lr": {"dec": 0.995}}  # decay (multiply) lr by this factor every 1000 steps
batch_size = 1
class_weights = np.array([0.2653, 0.7347])  # barrier voxels are the rarer class


def create_model():
    return CNN3D(n_classes=2, in_channels=1, patch_size=(23, 47, 47))

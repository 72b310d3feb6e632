"""ELEKTRONN2's ``examples/neuro3d.py``, ported: only ``create_model`` and the paths changed.

Every training number is ELEKTRONN2's and written as its example wrote it: Adam with lr
0.0005, mom 0.9, beta2 0.999, wd 0.5e-4, lr decay 0.995 per 1000 steps, batch size 1,
``n_steps = 1000000``, ``history_freq = 200`` on 30 monitoring examples, grey-value and warp
augmentation, previews after 1 h and then every hour. Like ELEKTRONN2's, the example sets no
``class_weights``: the loss is the unweighted multinoulli NLL. docs/porting.md says what
VoxelBoard does with each key (``perspective`` in ``warp_args`` is accepted and ignored: the
warp here is affine).

Changed on purpose:

* the paths: the data is VoxelBoard's synthetic demo (``trainer/synthetic.py``), generated into
  ``$VOXELBOARD_DATA_DIR`` (default ``./data``) on first use, instead of ``~/neuro_data_zxy``;
  ``data_init_kwargs`` therefore comes from the demo (same keys, ``aniso_factor`` 2,
  ``valid_cubes`` [2]).
* ``create_model``: ELEKTRONN2 built a Theano graph with input (1, 23, 185, 185) and a 2-class
  softmax. Here a VoxelBoard ``CNN3D`` with the same 23 input sections and 47 x 47 in-plane
  (the demo cubes are 128 voxels wide, so 185 would not fit). The size is chosen for CPUs,
  where the 30 monitoring examples of each history step dominate a short run; on a GPU, give
  ``CNN3D`` a larger ``patch_size`` and ``base_filters``.
* no ``if __name__ == '__main__'`` block: ELEKTRONN2's test-ran and drew the Theano graph.

Train it with ``python run.py train examples/neuro3d.py``.
"""

import os

from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))

save_path = "~/elektronn2_training/"
preview_data_path = _demo.preview_data_path  # port: the demo's preview cube
preview_kwargs = {
    "export_class": [1],
    "max_z_pred": 3,
}
initial_prev_h = 1.0  # hours: time after which the first preview is made
prev_save_h = 1.0  # hours: time interval between planned previews
data_class = "BatchCreatorImage"
background_processes = 2
data_init_kwargs = _demo.data_init_kwargs()  # port: d_path, l_path, d_files, l_files of the demo
data_init_kwargs["valid_cubes"] = [2]
data_batch_args = {
    "grey_augment_channels": [0],
    "warp": 0.5,
    "warp_args": {
        "sample_aniso": True,
        "perspective": True,
    },
}
n_steps = 1000000
max_runtime = 7 * 24 * 3600  # in seconds
history_freq = 200
monitor_batch_size = 30
optimiser = "Adam"
optimiser_params = {
    "lr": 0.0005,
    "mom": 0.9,
    "beta2": 0.999,
    "wd": 0.5e-4,
}
schedules = {
    "lr": {"dec": 0.995},  # decay (multiply) lr by this factor every 1000 steps
}
batch_size = 1


def create_model():
    # port: a PyTorch module instead of ELEKTRONN2's Theano graph (see the docstring)
    return CNN3D(n_classes=2, in_channels=1, patch_size=(23, 47, 47))

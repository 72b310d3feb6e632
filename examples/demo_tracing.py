"""Demo: a small 3D CNN learns to trace synthetic neurites along their skeletons.

The model sees a patch cut along the current tracing direction and predicts the step to the
next position; the loss is the distance of that position to the neurite's skeleton
(docs/tracing.md). With ``sequence_training`` the trainer follows the model's own
predictions, so the traces get longer as it learns. The "error" curves show the percentage
of steps that left the neurite. Runs on a CPU; the loss falls within a few minutes.

Train it with ``python run.py train examples/demo_tracing.py`` or launch it from the dashboard.
The tracing data is generated into ``$VOXELBOARD_DATA_DIR`` (default ``./data``) on first use.
"""

import os

from trainer.skeletons import ensure_tracing_data
from trainer.tracing import TracingCNN

_tracing = ensure_tracing_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))

trainer_class = "TracingTrainer"


def create_model():
    return TracingCNN(patch_size=(9, 27, 27), step_length=4.0, loss=dict(tolerance=0.5))


data_class = "AgentData"
data_init_kwargs = _tracing.data_init_kwargs()
data_batch_args = dict(gamma="rand", r_max_scale=0.9, tracing_dir_prior_c=0.5, max_angle=60.0)
sequence_training = 20  # follow the model's own predictions for up to 20 steps

n_steps = 20000
max_runtime = 5 * 60  # seconds
history_freq = 100
monitor_batch_size = 32
batch_size = 8
optimiser = "Adam"
optimiser_params = dict(lr=2e-3, mom=0.9, beta2=0.999, wd=0.0)
schedules = dict(lr=dict(dec=0.8, period=2000))
param_save_it = 1000

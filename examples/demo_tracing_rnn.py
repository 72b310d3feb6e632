"""Demo: a recurrent tracer (conv encoder + GRU) follows synthetic neurites and predicts their radius.

Every training step starts a few traces and unrolls the model along its own predictions for
``sequence_training`` steps, carrying the hidden state from step to step; the loss is the
distance to the skeleton plus the radius error. Predicted and true radii are logged as
regression data. Runs on a CPU; the loss falls within a few minutes.

Train it with ``python run.py train examples/demo_tracing_rnn.py`` or launch it from the
dashboard. The tracing data is generated into ``$VOXELBOARD_DATA_DIR`` (default ``./data``).
"""

import os

from trainer.skeletons import ensure_tracing_data
from trainer.tracing import TracingRNN

_tracing = ensure_tracing_data(os.environ.get("VOXELBOARD_DATA_DIR", "data"))

trainer_class = "TracingTrainerRNN"


def create_model():
    return TracingRNN(
        patch_size=(9, 27, 27), step_length=4.0, hidden_size=64, loss=dict(tolerance=0.5)
    )


data_class = "AgentData"
data_init_kwargs = _tracing.data_init_kwargs()
data_batch_args = dict(gamma="rand", r_max_scale=0.9, tracing_dir_prior_c=0.5, max_angle=60.0)
sequence_training = 8  # unrolled steps per training step

n_steps = 5000
max_runtime = 5 * 60  # seconds
history_freq = 50
monitor_batch_size = 16
batch_size = 8
optimiser = "Adam"
optimiser_params = dict(lr=2e-3, mom=0.9, beta2=0.999, wd=0.0)
schedules = dict(lr=dict(dec=0.8, period=1000))
param_save_it = 500

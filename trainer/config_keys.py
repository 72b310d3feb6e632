"""The config keys: every key's default, the required keys, and each key's value check.

The single source of each default (``DEFAULTS``, ``EXPERIMENT_DEFAULTS``); docs/config.md
lists them for users. Pure: no files, no torch. ``trainer.config`` reads a config file and
checks it against these tables.

Example:
    >>> DEFAULTS["loss_smoothing_length"], CHECKERS["n_steps"](0)
    (200, 'int > 0')
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from trainer.optimisers import OPTIMISERS

#: Global defaults; every key may be overridden by the user defaults file or the experiment file.
DEFAULTS: dict[str, Any] = {
    "save_path": "./runs",
    "plot_on": True,
    "print_status": True,
    "device": None,
    "param_save_it": 10000,
    "initial_prev_h": 1.0,
    "prev_save_h": 3.0,
    "preview_every": None,
    "background_processes": False,
    "time_per_step_smoothing_length": 50,
    "loss_smoothing_length": 200,
    "inspection": 0,
    "mixed_precision": False,
    "heartbeat_s": 2.0,
    # MiB of training cubes held in RAM; larger HDF5 data are read patch by patch (docs/data.md)
    "data_memory_budget_mb": 4096,
    # a membrane-probability threshold: the history gets valid_are, the adapted Rand error of the
    # validation cubes' neurons (instance_files) at it; None = off (each monitor step predicts
    # the whole validation cubes)
    "history_are_threshold": None,
}

#: Experiment keys and their defaults (``save_path`` lives in ``DEFAULTS``).
EXPERIMENT_DEFAULTS: dict[str, Any] = {
    "save_name": None,
    "create_model": None,
    "model_load_path": None,
    "model_load_args": None,
    "batch_size": None,
    "preview_data_path": None,
    "preview_kwargs": {},
    "data_class": None,
    "data_init_kwargs": {},
    "data_batch_args": {},
    # ground-truth neurons, one (file, key) per cube as l_files (names taken from l_path):
    # `run.py evaluate --instances` scores the segmentations of the validation cubes with them
    "instance_files": None,
    # true neuron ids not scored, as 0 (e.g. [999] for a region labelled "glia, not scored";
    # [2**64 - 1] for CREMI's background): `run.py evaluate --instances` and valid_are
    "instance_ignore_labels": [],
    # (z, y, x) voxel size in nm, for `run.py predict` outputs of inputs that declare none
    "voxel_size": None,
    "n_steps": None,
    "max_runtime": None,
    "history_freq": None,
    "monitor_batch_size": None,
    "optimiser": None,
    "optimiser_params": None,
    "schedules": {},
    "class_weights": None,
    "lazy_labels": None,
    "sequence_training": None,
    # VoxelBoard additions
    "trainer_class": None,  # None/'Trainer', 'TracingTrainer' or 'TracingTrainerRNN' (ELEKTRONN2's --func)
    "slurm": None,  # Slurm resources for the dashboard's slurm backend (docs/cluster.md)
    # True: batch-norm scales are decayed three times as strongly as weights, as in ELEKTRONN2
    # (trainer.update_rules.weight_groups); False: never decayed
    "decay_batchnorm_scales": False,
    "loss": "CrossEntropy",  # a name of trainer.losses.LOSSES, or a callable / torch.nn.Module
    "loss_params": None,  # e.g. dict(ce_weight=1.0, dice_weight=0.5) for 'CrossEntropy+Dice'
    "best_metric": "valid_loss",  # history column that decides snapshots/BEST.pt
    "best_mode": None,  # None (from the column's name), 'min' or 'max'
    "sweep": None,  # a hyperparameter sweep for `run.py sweep` (trainer/sweeps.py, docs/sweeps.md)
    # objects whose on_train_start/on_step_end/on_history_row/on_snapshot/on_train_end hooks
    # the trainer calls (trainer/callbacks, docs/config.md); checked by check_callbacks
    "callbacks": [],
    # data checks (docs/data.md): train on zarr/N5 cubes with chunk files missing (they
    # read as the fill value); False refuses them
    "allow_missing_chunks": False,
}

#: values of ``trainer_class``
TRAINER_CLASSES = ("Trainer", "TracingTrainer", "TracingTrainerRNN")

#: Accepted for compatibility, never used: ``schedules`` replaces them.
LEGACY_SCHEDULE_KEYS = (
    "lr_schedule",
    "wd_schedule",
    "mom_schedule",
    "dropout_schedule",
    "gradnet_schedule",
)

#: ELEKTRONN2 global defaults that meant something only to Theano or to its GUI.
IGNORED_KEYS = (
    "use_manual_cudnn_conv",
    "use_manual_cudnn_conv_not_w1",
    "use_manual_cudnn_pool",
    "allow_floatX_downcast",
    "show_axis_order_warning",
    "pad_b_warning_display",
    "use_ortho_init",
    "backupsrc",
    "gui_plot",
    "param_save_h",
)

#: Accepted, but an existing run directory is never deleted whatever its value.
OVERWRITE_KEY = "overwrite"

REQUIRED_KEYS: dict[str, str] = {
    "data_class": "data_class = 'BatchCreatorImage'  # or ('my_data.py', 'MyBatchCreator')",
    "batch_size": "batch_size = 1",
    "n_steps": "n_steps = 100000  # number of training steps",
    "history_freq": "history_freq = 200  # steps between monitoring/history rows",
    "monitor_batch_size": "monitor_batch_size = 10  # examples used for train/valid monitoring",
    "optimiser": "optimiser = 'Adam'  # one of " + ", ".join(OPTIMISERS),
    "optimiser_params": "optimiser_params = dict(lr=1e-3)",
}

OVERRIDE_KEYS = ("n_steps", "batch_size", "lr", "max_runtime", "save_name", "save_path", "device")

#: Every name a config file may define, in the order suggestions prefer.
KNOWN_KEYS: tuple[str, ...] = (
    *EXPERIMENT_DEFAULTS,
    *DEFAULTS,
    *LEGACY_SCHEDULE_KEYS,
    *IGNORED_KEYS,
    OVERWRITE_KEY,
)

_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def describe(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


def plain_value(v: Any) -> Any:
    """What ELEKTRONN2 configs wrote, as the plain value it means: a whole-number float
    (``n_steps = 1e6``) as an int, a numpy array or scalar as a list or number."""
    if _is_number(v) and not isinstance(v, numbers.Integral) and float(v).is_integer():
        return int(v)
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
        return v.tolist()
    return v


def is_pathlike(v: Any) -> bool:
    return isinstance(v, str | os.PathLike) and str(v) != ""


def expand_path(v: Any) -> Any:
    return os.path.expanduser(os.fspath(v)) if is_pathlike(v) else v


# Each checker returns None when the value is fine, else the "expected ..." description.
Checker = Callable[[Any], "str | None"]


def _check_int(minimum: int) -> Checker:
    expected = "int > 0" if minimum == 1 else f"int >= {minimum}"
    return lambda v: None if _is_int(v) and v >= minimum else expected


def check_number(minimum: float, strict: bool, allow_none: bool = False) -> Checker:
    expected = f"number {'>' if strict else '>='} {minimum:g}"
    if allow_none:
        expected += " or None"

    def check(v: Any) -> str | None:
        if v is None and allow_none:
            return None
        if _is_number(v) and (v > minimum if strict else v >= minimum):
            return None
        return expected

    return check


def _check_types(expected: str, *types_: type, allow_none: bool = False) -> Checker:
    def check(v: Any) -> str | None:
        if v is None and allow_none:
            return None
        return None if isinstance(v, types_) else expected

    return check


def _check_bool(v: Any) -> str | None:
    return None if isinstance(v, bool) else "bool (True or False)"


def _check_device(v: Any) -> str | None:
    if v is None or (_is_int(v) and v >= 0):
        return None
    if isinstance(v, str) and _DEVICE_RE.match(v):
        return None
    return "None, a GPU index (int >= 0) or one of 'auto', 'cpu', 'cuda', 'cuda:<n>', 'mps'"


def _check_save_name(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and os.sep not in v:
        return None
    return "None or a folder name (str without '/')"


def _check_background(v: Any) -> str | None:
    if isinstance(v, bool) or (_is_int(v) and v >= 0):
        return None
    return "bool or int >= 0 (number of batch-prefetch processes)"


def _check_inspection(v: Any) -> str | None:
    if isinstance(v, bool) or (_is_int(v) and 0 <= v <= 3):
        return None
    return "int from 0 to 3 (or bool)"


def _check_preview_every(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v > 0) else "None or int > 0"


def _check_sequence_training(v: Any) -> str | None:
    if v is None or isinstance(v, bool) or (_is_int(v) and v > 0):
        return None
    return "None, bool or int > 0 (maximum sequence length)"


def _check_trainer_class(v: Any) -> str | None:
    if v is None or v in TRAINER_CLASSES:
        return None
    return "None or one of " + ", ".join(repr(c) for c in TRAINER_CLASSES)


def _check_class_weights(v: Any) -> str | None:
    if v is None or (isinstance(v, list | tuple) and v and all(_is_number(x) for x in v)):
        return None
    return "None or a non-empty list of numbers (one weight per class)"


def _check_schedules(v: Any) -> str | None:
    if isinstance(v, Mapping) and all(
        isinstance(k, str) and isinstance(s, Mapping) for k, s in v.items()
    ):
        return None
    return "dict mapping a variable name (str) to a dict of schedule settings, e.g. {'lr': {'dec': 0.95}}"


def check_data_class(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if (
        isinstance(v, list | tuple)
        and len(v) == 2
        and is_pathlike(v[0])
        and isinstance(v[1], str)
        and v[1]
    ):
        return None
    return "a class name (str) or a (file path, class name) pair"


def check_preview_path(v: Any) -> str | None:
    if v is None or is_pathlike(v):
        return None
    if isinstance(v, list | tuple) and len(v) == 2 and is_pathlike(v[0]) and isinstance(v[1], str):
        return None
    return "None, an h5 file path (str) or a (file path, dataset key) pair"


def _check_unit_interval(v: Any) -> str | None:
    if v is None or (_is_number(v) and 0 < float(v) < 1):
        return None
    return "None or a threshold between 0 and 1 (exclusive)"


def _check_instance_files(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list | tuple) and all(
        isinstance(e, list | tuple) and len(e) == 2 and is_pathlike(e[0]) and isinstance(e[1], str)
        for e in v
    ):
        return None
    return "None or a list of (file, dataset key) pairs, one per cube as in l_files"


def _check_ignore_labels(v: Any) -> str | None:
    if isinstance(v, list | tuple | set | frozenset) and all(
        _is_int(x) and 0 <= int(x) < 2**64 for x in v
    ):
        return None
    return "a list of true neuron ids (whole numbers in 0 .. 2**64 - 1), e.g. [999]; [] for none"


def _check_voxel_size(v: Any) -> str | None:
    if v is None:
        return None
    if (
        isinstance(v, list | tuple)
        and len(v) == 3
        and all(isinstance(e, numbers.Real) and not isinstance(e, bool) and e > 0 for e in v)
    ):
        return None
    return "None or three positive numbers (z, y, x) in nm"


def _check_callable(v: Any) -> str | None:
    return None if v is None or callable(v) else "a function returning a torch.nn.Module"


_DICT = _check_types("dict", Mapping)
_DICT_OR_NONE = _check_types("dict or None", Mapping, allow_none=True)
_PATH_OR_NONE = _check_types("None or a file path (str)", str, os.PathLike, allow_none=True)

CHECKERS: dict[str, Checker] = {
    # experiment keys
    "save_name": _check_save_name,
    "create_model": _check_callable,
    "model_load_path": _PATH_OR_NONE,
    "model_load_args": _DICT_OR_NONE,
    "batch_size": _check_int(1),
    "preview_data_path": check_preview_path,
    "preview_kwargs": _DICT,
    "data_class": check_data_class,
    "data_init_kwargs": _DICT,
    "data_batch_args": _DICT,
    "instance_files": _check_instance_files,
    "instance_ignore_labels": _check_ignore_labels,
    "voxel_size": _check_voxel_size,
    "n_steps": _check_int(1),
    "max_runtime": check_number(0, strict=True, allow_none=True),
    "history_freq": _check_int(1),
    "monitor_batch_size": _check_int(1),
    "optimiser_params": _DICT,
    "decay_batchnorm_scales": _check_bool,
    "schedules": _check_schedules,
    "class_weights": _check_class_weights,
    "lazy_labels": _check_types("None or bool", bool, allow_none=True),
    "sequence_training": _check_sequence_training,
    "trainer_class": _check_trainer_class,
    "slurm": _check_types("None or a dict of Slurm resources", Mapping, allow_none=True),
    "sweep": _check_types("None or a dict (see docs/sweeps.md)", Mapping, allow_none=True),
    # global defaults
    "save_path": _check_types("a directory path (str)", str, os.PathLike),
    "plot_on": _check_bool,
    "print_status": _check_bool,
    "device": _check_device,
    "param_save_it": _check_int(1),
    "initial_prev_h": check_number(0, strict=False),
    "prev_save_h": check_number(0, strict=True),
    "preview_every": _check_preview_every,
    "background_processes": _check_background,
    "time_per_step_smoothing_length": _check_int(1),
    "loss_smoothing_length": _check_int(1),
    "inspection": _check_inspection,
    "mixed_precision": _check_bool,
    "heartbeat_s": check_number(0, strict=True),
    "data_memory_budget_mb": check_number(0, strict=False),
    "history_are_threshold": _check_unit_interval,
    OVERWRITE_KEY: _check_bool,
    # data checks
    "allow_missing_chunks": _check_bool,
}

"""Experiment configuration: read, check and record a config file.

A config file is a plain Python file; every top-level name it defines is a candidate config
key (see docs/config.md for the full list). Reading it is pure apart from executing the file:
the run directory is created only when ``make_dir()`` is called (by the trainer or the CLI).

Example:
    >>> cfg = ExperimentConfig("examples/demo_cnn3d.py")  # doctest: +SKIP
    >>> cfg.n_steps, cfg.param_save_it  # doctest: +SKIP
    (100000, 10000)
    >>> run_dir = cfg.make_dir()  # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import copy
import datetime
import inspect
import math
import numbers
import os
import re
import sys
import traceback
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainer.errors import ConfigError, ConfigWarning, levenshtein, suggest
from trainer.optimisers import OPTIMISERS, canonical_optimiser, check_optimiser_params
from trainer.runs import (
    EVAL_DIR,
    PREVIEW_DIR,
    RESOLVED_CONFIG_FILE,
    SNAPSHOT_DIR,
    atomic_write_bytes,
    atomic_write_json,
    config_copy_path,
)

#: Environment variable naming a user defaults file (a Python file like a config file).
DEFAULTS_ENV_VAR = "VOXELBOARD_DEFAULTS"
#: Used when ``VOXELBOARD_DEFAULTS`` is not set and the file exists (``~`` expanded at call time).
DEFAULTS_FILE = "~/.config/voxelboard/defaults.py"

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
    "loss": "CrossEntropy",  # a name of trainer.losses.LOSSES, or a callable / torch.nn.Module
    "loss_params": None,  # e.g. dict(ce_weight=1.0, dice_weight=0.5) for 'CrossEntropy+Dice'
    "best_metric": "valid_loss",  # history column that decides snapshots/BEST.pt
    "best_mode": None,  # None (from the column's name), 'min' or 'max'
    "sweep": None,  # a hyperparameter sweep for `run.py sweep` (trainer/sweeps.py, docs/sweeps.md)
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


# ---------------------------------------------------------------------------------------------
# pure helpers


def _is_ignored_name(name: str, value: Any) -> bool:
    """Names a config file defines that are never config keys: imports, functions, classes."""
    if name.startswith("_"):
        return True
    return isinstance(value, types.ModuleType | type) or inspect.isroutine(value)


def _describe(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)


def _plain_value(v: Any) -> Any:
    """What ELEKTRONN2 configs wrote, as the plain value it means: a whole-number float
    (``n_steps = 1e6``) as an int, a numpy array or scalar as a list or number."""
    if _is_number(v) and not isinstance(v, numbers.Integral) and float(v).is_integer():
        return int(v)
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
        return v.tolist()
    return v


def _is_pathlike(v: Any) -> bool:
    return isinstance(v, str | os.PathLike) and str(v) != ""


def _expand(v: Any) -> Any:
    return os.path.expanduser(os.fspath(v)) if _is_pathlike(v) else v


# Each checker returns None when the value is fine, else the "expected ..." description.
Checker = Callable[[Any], "str | None"]


def _check_int(minimum: int) -> Checker:
    expected = "int > 0" if minimum == 1 else f"int >= {minimum}"
    return lambda v: None if _is_int(v) and v >= minimum else expected


def _check_number(minimum: float, strict: bool, allow_none: bool = False) -> Checker:
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


def _check_data_class(v: Any) -> str | None:
    if isinstance(v, str) and v:
        return None
    if (
        isinstance(v, list | tuple)
        and len(v) == 2
        and _is_pathlike(v[0])
        and isinstance(v[1], str)
        and v[1]
    ):
        return None
    return "a class name (str) or a (file path, class name) pair"


def _check_preview_path(v: Any) -> str | None:
    if v is None or _is_pathlike(v):
        return None
    if isinstance(v, list | tuple) and len(v) == 2 and _is_pathlike(v[0]) and isinstance(v[1], str):
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
        isinstance(e, list | tuple) and len(e) == 2 and _is_pathlike(e[0]) and isinstance(e[1], str)
        for e in v
    ):
        return None
    return "None or a list of (file, dataset key) pairs, one per cube as in l_files"


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
    "preview_data_path": _check_preview_path,
    "preview_kwargs": _DICT,
    "data_class": _check_data_class,
    "data_init_kwargs": _DICT,
    "data_batch_args": _DICT,
    "instance_files": _check_instance_files,
    "n_steps": _check_int(1),
    "max_runtime": _check_number(0, strict=True, allow_none=True),
    "history_freq": _check_int(1),
    "monitor_batch_size": _check_int(1),
    "optimiser_params": _DICT,
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
    "initial_prev_h": _check_number(0, strict=False),
    "prev_save_h": _check_number(0, strict=True),
    "preview_every": _check_preview_every,
    "background_processes": _check_background,
    "time_per_step_smoothing_length": _check_int(1),
    "loss_smoothing_length": _check_int(1),
    "inspection": _check_inspection,
    "mixed_precision": _check_bool,
    "heartbeat_s": _check_number(0, strict=True),
    "data_memory_budget_mb": _check_number(0, strict=False),
    "history_are_threshold": _check_unit_interval,
    OVERWRITE_KEY: _check_bool,
}


def to_jsonable(value: Any) -> Any:
    """A JSON-serialisable rendering of any config value.

    Functions, classes and modules become descriptive strings, paths become strings, numpy
    scalars and arrays become numbers and lists, non-finite floats become ``'inf'``, ``'-inf'``
    or ``None`` (NaN), anything else unknown becomes its ``repr``.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return None
        return f if math.isfinite(f) else ("inf" if f > 0 else "-inf")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((to_jsonable(v) for v in value), key=repr)
    if isinstance(value, types.ModuleType):
        return f"<module {value.__name__}>"
    if isinstance(value, type):
        return f"<class {value.__module__}.{value.__qualname__}>"
    if callable(value) and hasattr(value, "__qualname__"):
        return f"<function {value.__qualname__}>"
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars, torch tensors
    if callable(tolist):
        try:
            return to_jsonable(tolist())
        except Exception:  # noqa: BLE001 - a repr is good enough for a record
            pass
    return repr(value)


def execute_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Execute a config (or user defaults) file and return its namespace.

    The file runs in a single namespace, so functions defined in it (``create_model``) see
    the file's other top-level names. The file's folder is on ``sys.path`` while it runs, so
    it can import modules next to it.

    Raises:
        ConfigError: the file is missing, or executing it raised; the message names the file
            and line and includes the original error.
    """
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from e
    namespace: dict[str, Any] = {
        "__name__": "__voxelboard_config__",
        "__file__": str(path),
        "__builtins__": builtins,
    }
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        code = compile(source, str(path), "exec")
        exec(code, namespace)  # noqa: S102 - executing the config file is the point
    except SyntaxError as e:
        line = f"{e.lineno}" if e.lineno else "?"
        raise ConfigError(
            f"{path}:{line}: syntax error in config file: {e.msg}\n    {(e.text or '').strip()}"
        ) from e
    except (Exception, SystemExit) as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == str(path)]
        where = f"{path}:{frames[-1].lineno}" if frames else str(path)
        code_line = f"\n    {frames[-1].line}" if frames and frames[-1].line else ""
        raise ConfigError(
            f"{where}: error while executing config file: {type(e).__name__}: {e}{code_line}"
        ) from e
    finally:
        try:
            sys.path.remove(folder)
        except ValueError:
            pass
    return namespace


def user_defaults_file() -> Path | None:
    """The user defaults file to read now: ``$VOXELBOARD_DEFAULTS``, else the per-user file.

    Raises:
        ConfigError: ``VOXELBOARD_DEFAULTS`` names a file that does not exist.
    """
    env = os.environ.get(DEFAULTS_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"{path}: the user defaults file named by ${DEFAULTS_ENV_VAR} does not exist; "
                f"create it or unset {DEFAULTS_ENV_VAR}"
            )
        return path
    path = Path(DEFAULTS_FILE).expanduser()
    return path if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# the config object


class ExperimentConfig:
    """A checked experiment config: every key is an attribute (``cfg.n_steps``, ...).

    Construction reads the user defaults and the experiment file and checks the result, so a
    bad config fails here with one ``ConfigError`` listing every problem. The run directory is
    made later by ``make_dir()`` (ELEKTRONN2 made it in the constructor).

    Args:
        exp_file: path of the experiment config (a Python file).
        host_script_file: the script that started training; recorded in ``config.json``.
        use_existing_dir: let ``make_dir()`` reuse an existing run directory (resume, or a
            directory the dashboard's launcher prepared).

    Raises:
        ConfigError: the file cannot be read or executed, or the config is invalid.
    """

    def __init__(
        self,
        exp_file: str | os.PathLike,
        host_script_file: str | os.PathLike | None = None,
        use_existing_dir: bool = False,
    ) -> None:
        self.exp_file = Path(exp_file).expanduser().absolute()
        self.host_script_file = (
            Path(host_script_file).expanduser().absolute() if host_script_file else None
        )
        self.use_existing_dir = bool(use_existing_dir)
        self.run_dir: Path | None = None
        self.defaults_file: Path | None = None
        self.helper_variables: list[str] = []
        self._unknown: dict[str, Path] = {}
        self._warned = False
        for key, value in {**EXPERIMENT_DEFAULTS, **DEFAULTS}.items():
            setattr(self, key, copy.deepcopy(value))
        self.read_user_config()
        self.check_config()

    def __repr__(self) -> str:
        return f"ExperimentConfig({str(self.exp_file)!r}, save_name={self.save_name!r})"

    @classmethod
    def levenshtein(cls, s1: str, s2: str) -> int:
        """Edit distance between two strings (see the module function ``levenshtein``)."""
        return levenshtein(s1, s2)

    @staticmethod
    def suggest(name: str) -> str | None:
        """The known config key closest to ``name`` if it looks like a typo, else ``None``."""
        return suggest(name, KNOWN_KEYS)

    # -- reading --------------------------------------------------------------------------

    def read_user_config(self) -> None:
        """Read the user defaults file (if any), then the experiment file over it.

        The defaults file is ``$VOXELBOARD_DEFAULTS`` or else
        ``~/.config/voxelboard/defaults.py`` if it exists, looked up now. Names the files
        define that are not keys are remembered for ``check_config``.

        Raises:
            ConfigError: a file is missing or raised while executing.
        """
        if not self.exp_file.is_file():
            raise ConfigError(f"{self.exp_file}: config file does not exist")
        self.defaults_file = user_defaults_file()
        sources = [self.defaults_file] if self.defaults_file else []
        for path in [*sources, self.exp_file]:
            for name, value in execute_config_file(path).items():
                if name in KNOWN_KEYS:
                    setattr(self, name, value)
                    self._unknown.pop(name, None)
                elif not _is_ignored_name(name, value):
                    self._unknown[name] = path
        if self.save_name is None:
            stamp = datetime.datetime.now().strftime("%y-%m-%d_%H-%M-%S")
            self.save_name = f"{self.exp_file.stem}__{stamp}"

    # -- checking -------------------------------------------------------------------------

    def check_config(self) -> None:
        """Check every key; raise one ``ConfigError`` listing all problems.

        Also normalises a few values in place: the optimiser name gets its canonical
        spelling, ``~`` is expanded in file paths, ``None`` dicts become ``{}``.
        Legacy and Theano-only keys and helper variables are reported once as
        ``ConfigWarning``.

        Raises:
            ConfigError: missing required keys, wrong types or values, missing files, or
                unknown names that look like typos of known keys.
        """
        errors: list[str] = []
        for key, example in REQUIRED_KEYS.items():
            if getattr(self, key) is None:
                errors.append(f"missing required key '{key}': add e.g. `{example}`")
        if self.create_model is None and self.model_load_path is None:
            errors.append(
                "neither 'create_model' nor 'model_load_path' is set: define "
                "`def create_model(): ...` returning a torch.nn.Module, or set "
                "`model_load_path = '<snapshot>.pt'`"
            )

        for key in ("preview_kwargs", "data_init_kwargs", "data_batch_args", "schedules"):
            if getattr(self, key) is None:
                setattr(self, key, {})
        if type(self.device).__name__ == "device":  # a torch.device: keep its JSON-able text form
            self.device = str(self.device)
        for key, checker in CHECKERS.items():
            value = getattr(self, key, None)
            if (key in REQUIRED_KEYS and value is None) or not hasattr(self, key):
                continue
            expected = checker(value)
            if expected is not None and checker(plain := _plain_value(value)) is None:
                setattr(self, key, plain)  # n_steps = 1e6, class_weights = np.array([...])
                expected = None
            if expected is not None:
                errors.append(f"'{key}': expected {expected}, got {_describe(value)}")

        errors += self._check_optimiser()
        errors += self._check_loss_and_best()
        errors += self._check_files()
        errors += self._check_unknown_names()
        if errors:
            lines = "\n".join(f"  - {e}" for e in errors)
            n = len(errors)
            raise ConfigError(
                f"{self.exp_file}: invalid config ({n} problem{'s' if n > 1 else ''}):\n{lines}"
            )

    def _check_optimiser(self) -> list[str]:
        if self.optimiser is None:
            return []
        name = canonical_optimiser(self.optimiser)
        if name is None:
            return [
                f"'optimiser': expected one of {', '.join(OPTIMISERS)} (case-insensitive), "
                f"got {_describe(self.optimiser)}"
            ]
        self.optimiser = name
        if not isinstance(self.optimiser_params, Mapping):
            return []
        return [
            f"'optimiser_params': {e}" for e in check_optimiser_params(name, self.optimiser_params)
        ]

    def _check_loss_and_best(self) -> list[str]:
        from trainer.losses import check_loss

        errors = check_loss(self.loss, self.loss_params)
        if self.best_mode not in (None, "min", "max"):
            errors.append(
                f"'best_mode': expected None, 'min' or 'max', got {_describe(self.best_mode)}"
            )
        problem = check_best_metric(self.best_metric)
        return errors + ([f"'best_metric': {problem}"] if problem else [])

    def _check_files(self) -> list[str]:
        errors = []
        if _is_pathlike(self.model_load_path):
            self.model_load_path = _expand(self.model_load_path)
            if not os.path.isfile(self.model_load_path):
                errors.append(
                    f"'model_load_path': file '{self.model_load_path}' does not exist "
                    f"(relative paths are taken from {os.getcwd()})"
                )
        ppath = self.preview_data_path
        if ppath is not None and _check_preview_path(ppath) is None:
            # a (path, key) pair is checked by its path: ELEKTRONN2 checked str(tuple)
            if isinstance(ppath, list | tuple):
                ppath = self.preview_data_path = (_expand(ppath[0]), ppath[1])
                file = ppath[0]
            else:
                file = self.preview_data_path = _expand(ppath)
            if not os.path.isfile(file):
                errors.append(
                    f"'preview_data_path': file '{file}' does not exist; fix the path or set "
                    "preview_data_path = None to train without previews"
                )
        dc = self.data_class
        if isinstance(dc, list | tuple) and _check_data_class(dc) is None:
            self.data_class = (_expand(dc[0]), dc[1])
            if not os.path.isfile(self.data_class[0]):
                errors.append(f"'data_class': file '{self.data_class[0]}' does not exist")
        return errors

    def _check_unknown_names(self) -> list[str]:
        errors, helpers = [], []
        for name, path in self._unknown.items():
            guess = suggest(name, KNOWN_KEYS)
            if guess in LEGACY_SCHEDULE_KEYS:
                guess = "schedules"  # the legacy keys are ignored: point to the one that works
            if guess is not None:
                errors.append(f"unknown config key '{name}' in {path}: did you mean '{guess}'?")
            else:
                helpers.append(name)
        self.helper_variables = helpers
        if not self._warned:
            self._warned = True
            self._warn_accepted_but_unused(helpers)
        return errors

    def _warn_accepted_but_unused(self, helpers: list[str]) -> None:
        if helpers:
            warnings.warn(
                f"{self.exp_file}: names that are not config keys, treated as helper "
                f"variables: {', '.join(helpers)}",
                ConfigWarning,
                stacklevel=5,
            )
        legacy = [k for k in LEGACY_SCHEDULE_KEYS if getattr(self, k, None) is not None]
        if legacy:
            warnings.warn(
                f"{self.exp_file}: {', '.join(legacy)} ignored: only 'schedules' is used, "
                "e.g. schedules = {'lr': {'dec': 0.95}}",
                ConfigWarning,
                stacklevel=5,
            )
        ignored = [k for k in IGNORED_KEYS if hasattr(self, k)]
        if ignored:
            warnings.warn(
                f"{self.exp_file}: {', '.join(ignored)} ignored (meaningful only in ELEKTRONN2)",
                ConfigWarning,
                stacklevel=5,
            )
        if getattr(self, OVERWRITE_KEY, None) is True:
            warnings.warn(
                f"{self.exp_file}: overwrite=True is ignored: an existing run directory is "
                "never deleted; choose another save_name or resume it",
                ConfigWarning,
                stacklevel=5,
            )

    # -- overrides ------------------------------------------------------------------------

    def apply_overrides(self, **overrides: Any) -> None:
        """Apply command-line or dashboard overrides; ``None`` values are skipped.

        Accepted: ``n_steps``, ``batch_size``, ``lr`` (sets ``optimiser_params['lr']``),
        ``max_runtime``, ``save_name``, ``save_path``, ``device``. Numbers given as strings
        (form fields) are parsed.

        Raises:
            ConfigError: an unknown override, a bad value, or a save location changed after
                ``make_dir()``.
        """
        errors = []
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in OVERRIDE_KEYS:
                guess = suggest(key, OVERRIDE_KEYS, min_len=2)
                hint = f"did you mean '{guess}'? " if guess else ""
                errors.append(
                    f"unknown override '{key}': {hint}accepted: {', '.join(OVERRIDE_KEYS)}"
                )
                continue
            if key in ("save_name", "save_path") and self.run_dir is not None:
                errors.append(f"override '{key}': the run directory {self.run_dir} is already made")
                continue
            value = _parse_number(key, value)
            checker = _check_number(0, strict=True) if key == "lr" else CHECKERS[key]
            expected = checker(value)
            if expected is not None:
                errors.append(f"override '{key}': expected {expected}, got {_describe(value)}")
            elif key == "lr":
                self.optimiser_params = {**(self.optimiser_params or {}), "lr": value}
            else:
                setattr(self, key, value)
        if errors:
            raise ConfigError(
                f"{self.exp_file}: invalid override:\n" + "\n".join(f"  - {e}" for e in errors)
            )

    # -- the run directory ----------------------------------------------------------------

    def planned_run_dir(self) -> Path:
        """Where ``make_dir()`` puts the run: ``<save_path>/<save_name>``, absolute.

        ``~`` is expanded and a relative ``save_path`` is taken from the current working
        directory now.
        """
        return Path(os.path.expanduser(os.fspath(self.save_path))).absolute() / self.save_name

    def make_dir(self) -> Path:
        """Create the run directory and record the config in it; return its path.

        Creates ``<save_path>/<save_name>/`` with ``snapshots/``, ``previews/`` and ``eval/``,
        copies the config file in as ``0-<name>`` and writes the resolved config to
        ``config.json``. Nothing is ever deleted and the working directory is unchanged.
        With ``use_existing_dir`` an existing directory is reused: a config copy already there
        is kept, ``config.json`` is replaced.

        Raises:
            ConfigError: the directory exists and ``use_existing_dir`` is False.
        """
        run_dir = self.planned_run_dir()
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_dir.mkdir(exist_ok=self.use_existing_dir)
        except FileExistsError:
            raise ConfigError(
                f"{self.exp_file}: run directory {run_dir} already exists; choose another "
                "save_name or pass use_existing_dir=True / --resume"
            ) from None
        for sub in (SNAPSHOT_DIR, PREVIEW_DIR, EVAL_DIR):
            (run_dir / sub).mkdir(exist_ok=True)
        copy_path = config_copy_path(run_dir, self.exp_file)
        if not copy_path.exists():
            atomic_write_bytes(copy_path, self.exp_file.read_bytes())
        self.run_dir = run_dir
        atomic_write_json(run_dir / RESOLVED_CONFIG_FILE, self.to_dict())
        return run_dir

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as a JSON-safe dict (what ``config.json`` holds)."""
        keys = [*EXPERIMENT_DEFAULTS, *DEFAULTS]
        keys += [
            k for k in (*LEGACY_SCHEDULE_KEYS, OVERWRITE_KEY) if getattr(self, k, None) is not None
        ]
        d = {key: getattr(self, key) for key in keys}
        d.update(
            exp_file=self.exp_file,
            host_script_file=self.host_script_file,
            defaults_file=self.defaults_file,
            use_existing_dir=self.use_existing_dir,
            run_dir=self.run_dir,
        )
        return to_jsonable(d)


def check_best_metric(name: Any, columns: tuple[str, ...] | None = None) -> str | None:
    """What is wrong with a ``best_metric`` value, or ``None``.

    Args:
        name: the value.
        columns: the history columns of the run, when known (the trainer knows them once the
            model is built); else the standard columns and the per-class metric columns.
    """
    from trainer.class_metrics import CLASS_METRIC_PATTERNS, CLASS_METRIC_RE
    from trainer.history import HISTORY_COLUMNS

    if columns is not None:
        if name in columns:
            return None
        listed = columns
    else:
        if name in HISTORY_COLUMNS or (isinstance(name, str) and CLASS_METRIC_RE.match(name)):
            return None
        listed = (*HISTORY_COLUMNS, *CLASS_METRIC_PATTERNS)
    guess = suggest(str(name), listed, min_len=2) if isinstance(name, str) else None
    hint = f"did you mean '{guess}'? " if guess else ""
    return f"{name!r} is no history column of this run: {hint}use one of {', '.join(listed)}"


def _parse_number(key: str, value: Any) -> Any:
    """Numbers typed into a form or a command line arrive as strings."""
    if not isinstance(value, str) or key in ("save_name", "save_path", "device"):
        if key == "device" and isinstance(value, str) and value.isdigit():
            return int(value)
        return value
    text = value.strip()
    try:
        return int(text) if key in ("n_steps", "batch_size") else float(text)
    except ValueError:
        return value

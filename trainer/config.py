"""Experiment configuration: read, check and record a config file.

A config file is a plain Python file; every top-level name it defines is a candidate config
key (see docs/config.md for the full list; ``trainer.config_keys`` holds every key's default
and value check). Reading it is pure apart from executing the file: the run directory is
created only when ``make_dir()`` is called (by the trainer or the CLI).

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
import sys
import traceback
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer import pysource
from trainer.callbacks.base import check_callbacks
from trainer.config_keys import (
    CHECKERS,
    DEFAULTS,
    EXPERIMENT_DEFAULTS,
    IGNORED_KEYS,
    KNOWN_KEYS,
    LEGACY_SCHEDULE_KEYS,
    OVERRIDE_KEYS,
    OVERWRITE_KEY,
    REQUIRED_KEYS,
    check_data_class,
    check_number,
    check_preview_path,
    describe,
    expand_path,
    is_pathlike,
    plain_value,
)
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

# the key tables live in trainer.config_keys; these names are read from here as well
__all__ = [
    "CHECKERS", "DEFAULTS", "DEFAULTS_ENV_VAR", "DEFAULTS_FILE", "EXPERIMENT_DEFAULTS",
    "IGNORED_KEYS", "KNOWN_KEYS", "LEGACY_SCHEDULE_KEYS", "OVERRIDE_KEYS", "OVERWRITE_KEY",
    "REQUIRED_KEYS", "ConfigError", "ConfigWarning", "ExperimentConfig", "check_best_metric",
    "execute_config_file", "to_jsonable", "user_defaults_file",
]  # fmt: skip

#: Environment variable naming a user defaults file (a Python file like a config file).
DEFAULTS_ENV_VAR = "VOXELBOARD_DEFAULTS"
#: Used when ``VOXELBOARD_DEFAULTS`` is not set and the file exists (``~`` expanded at call time).
DEFAULTS_FILE = "~/.config/voxelboard/defaults.py"


def _is_ignored_name(name: str, value: Any) -> bool:
    """Names a config file defines that are never config keys: imports, functions, classes."""
    if name.startswith("_"):
        return True
    return isinstance(value, types.ModuleType | type) or inspect.isroutine(value)


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
        code = pysource.compile_module(source, str(path))
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
            if expected is not None and checker(plain := plain_value(value)) is None:
                setattr(self, key, plain)  # n_steps = 1e6, class_weights = np.array([...])
                expected = None
            if expected is not None:
                errors.append(f"'{key}': expected {expected}, got {describe(value)}")

        errors += self._check_optimiser()
        errors += check_callbacks(self.callbacks)
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
                f"got {describe(self.optimiser)}"
            ]
        self.optimiser = name
        if not isinstance(self.optimiser_params, Mapping):
            return []
        return [
            f"'optimiser_params': {e}" for e in check_optimiser_params(name, self.optimiser_params)
        ]

    def _check_loss_and_best(self) -> list[str]:
        from trainer.loss_names import check_loss

        errors = check_loss(self.loss, self.loss_params)
        if self.best_mode not in (None, "min", "max"):
            errors.append(
                f"'best_mode': expected None, 'min' or 'max', got {describe(self.best_mode)}"
            )
        problem = check_best_metric(self.best_metric)
        return errors + ([f"'best_metric': {problem}"] if problem else [])

    def _check_files(self) -> list[str]:
        errors = []
        if is_pathlike(self.model_load_path):
            self.model_load_path = expand_path(self.model_load_path)
            if not os.path.isfile(self.model_load_path):
                errors.append(
                    f"'model_load_path': file '{self.model_load_path}' does not exist "
                    f"(relative paths are taken from {os.getcwd()})"
                )
        ppath = self.preview_data_path
        if ppath is not None and check_preview_path(ppath) is None:
            # a (path, key) pair is checked by its path: ELEKTRONN2 checked str(tuple)
            if isinstance(ppath, list | tuple):
                ppath = self.preview_data_path = (expand_path(ppath[0]), ppath[1])
                file = ppath[0]
            else:
                file = self.preview_data_path = expand_path(ppath)
            if not os.path.isfile(file):
                errors.append(
                    f"'preview_data_path': file '{file}' does not exist; fix the path or set "
                    "preview_data_path = None to train without previews"
                )
        dc = self.data_class
        if isinstance(dc, list | tuple) and check_data_class(dc) is None:
            self.data_class = (expand_path(dc[0]), dc[1])
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
            checker = check_number(0, strict=True) if key == "lr" else CHECKERS[key]
            expected = checker(value)
            if expected is not None:
                errors.append(f"override '{key}': expected {expected}, got {describe(value)}")
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

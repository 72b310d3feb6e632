"""Hyperparameter sweeps: the ``sweep`` section of a config, its search and its pruner.

A config with a ``sweep`` section trains as usual with ``run.py train``; ``run.py sweep``
(or the dashboard's launch form) runs it as a sweep: one ordinary run per trial, each with
the values its trial drew applied to the config (docs/sweeps.md)::

    sweep = dict(
        method='tpe',                 # 'grid', 'random' or 'tpe'
        n_runs=16,
        metric='valid_loss', goal='min',
        parameters=dict(
            lr=dict(low=1e-4, high=1e-2, log=True),    # a range
            batch_size=[1, 2],                         # a list of values
            **{'optimiser_params.beta2': [0.99, 0.999]},  # a key inside a dict-valued key
        ),
        prune=True, pruner='median', warmup_steps=100,
    )

The search comes from Optuna (its samplers and pruners are well tested and known to users;
its journal storage is a plain file, so no database server is needed and trials on compute
nodes report to the same file). Grid and random use Optuna too: one code path for every
method, and a grid sweep can prune as well.

Everything here but ``open_study`` and ``TrialReporter`` is pure.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import logging
import math
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer import pysource
from trainer.errors import ConfigError, suggest

logger = logging.getLogger("voxelboard")

METHODS = ("grid", "random", "tpe")
GOALS = ("min", "max")
PRUNERS = ("median", "halving")
#: keys of the ``sweep`` section and their defaults (``n_runs``: the grid's size for grids)
SWEEP_DEFAULTS: dict[str, Any] = {
    "method": "grid",
    "n_runs": None,
    "metric": "valid_loss",
    "goal": None,  # from the metric's name, as best_mode
    "parameters": None,
    "prune": False,
    "pruner": "median",
    "warmup_steps": 0,  # history steps before a trial may be pruned
    "startup_runs": 2,  # trials that complete before the pruner judges others
    "max_failures": 3,  # the sweep stops launching after this many failed trials
    "max_parallel": 1,  # trials at once (run.py sweep --max-parallel overrides it)
    "seed": 0,
}
#: parameter names that stand for a key inside a dict, as the launch form's fields do
ALIASES = {"lr": "optimiser_params.lr"}
#: trials running at once: at most as many as a launcher queues
MAX_PARALLEL = 20
#: the largest sweep
MAX_RUNS = 10_000


@dataclasses.dataclass(frozen=True)
class Choice:
    """A parameter drawn from a list of values."""

    values: tuple

    @property
    def encoded(self) -> list:
        """What Optuna sees: the values themselves, or their indices when one of them is not
        a number, string, bool or None (a tuple shape, a dict)."""
        plain = all(v is None or isinstance(v, bool | int | float | str) for v in self.values)
        return list(self.values) if plain else list(range(len(self.values)))

    def decode(self, drawn: Any) -> Any:
        if self.encoded == list(self.values):
            return drawn
        return self.values[int(drawn)]


@dataclasses.dataclass(frozen=True)
class Range:
    """A parameter drawn from ``[low, high]`` (integers if both bounds are integers)."""

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def decode(self, drawn: Any) -> Any:
        return int(drawn) if self.integer else float(drawn)


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """A checked ``sweep`` section (see the module docstring for the keys)."""

    method: str
    n_runs: int
    metric: str
    goal: str
    parameters: dict[str, Choice | Range]
    prune: bool
    pruner: str
    warmup_steps: int
    startup_runs: int
    max_failures: int
    max_parallel: int
    seed: int

    def decode(self, drawn: Mapping[str, Any]) -> dict[str, Any]:
        """The config values of a trial's Optuna parameters."""
        return {name: p.decode(drawn[name]) for name, p in self.parameters.items()}

    def to_json(self) -> dict[str, Any]:
        """A JSON description (what ``sweep.json`` and the sweep page show)."""
        from trainer.config import to_jsonable

        params = {}
        for name, p in self.parameters.items():
            if isinstance(p, Choice):
                params[name] = {"values": to_jsonable(list(p.values))}
            else:
                params[name] = {"low": p.low, "high": p.high, "log": p.log, "int": p.integer}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        # JSON files are written with sorted keys: the section's order is kept beside them
        return {**fields, "parameters": params, "parameter_order": list(self.parameters)}


def grid_size(parameters: Mapping[str, Choice | Range]) -> int | None:
    """Number of grid points of the parameters, or ``None`` when one of them is a range."""
    if any(isinstance(p, Range) for p in parameters.values()):
        return None
    return math.prod(len(p.values) for p in parameters.values())


def spec_from_json(d: Mapping[str, Any]) -> SweepSpec:
    """The ``SweepSpec`` that ``SweepSpec.to_json`` wrote (lists stand for tuples: a choice
    among them is drawn by index, as when it was written)."""
    params: dict[str, Choice | Range] = {}
    order = [n for n in d.get("parameter_order") or () if n in d["parameters"]]
    for name in order + [n for n in d["parameters"] if n not in order]:
        p = d["parameters"][name]
        if "values" in p:
            params[name] = Choice(tuple(p["values"]))
        else:
            params[name] = Range(float(p["low"]), float(p["high"]), bool(p["log"]), bool(p["int"]))
    fields = {f.name for f in dataclasses.fields(SweepSpec)} - {"parameters"}
    return SweepSpec(parameters=params, **{k: d[k] for k in fields})


def parse_sweep(cfg: Any, section: Any = None) -> SweepSpec:
    """Check a config's ``sweep`` section (or ``section``) against the config it sweeps.

    Every problem is collected: unknown keys of the section (with a did-you-mean), a
    parameter naming no config key, a value the key cannot take (the config's own checks,
    as for the launch form), an empty grid, ``n_runs`` < 1, a metric that is no history
    column.

    Raises:
        ConfigError: naming the config file, the key or parameter and the value.
    """
    section = cfg.sweep if section is None else section
    where = f"{cfg.exp_file}: 'sweep'"
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"{where}: expected a dict such as sweep = dict(method='grid', "
            f"parameters=dict(lr=[1e-3, 3e-3])), got {section!r}"
        )
    errors: list[str] = []
    for key in section:
        if key not in SWEEP_DEFAULTS:
            guess = suggest(str(key), SWEEP_DEFAULTS, min_len=2)
            hint = f"did you mean '{guess}'? " if guess else ""
            errors.append(f"unknown key '{key}': {hint}known: {', '.join(SWEEP_DEFAULTS)}")
    s = {**SWEEP_DEFAULTS, **{k: v for k, v in section.items() if k in SWEEP_DEFAULTS}}

    if s["method"] not in METHODS:
        errors.append(f"'method': expected one of {', '.join(METHODS)}, got {s['method']!r}")
    parameters = _parse_parameters(cfg, s["parameters"], errors)
    if s["method"] == "grid":
        ranges = [n for n, p in parameters.items() if isinstance(p, Range)]
        if ranges:
            errors.append(
                f"parameter '{ranges[0]}' is a range, and method 'grid' needs a list of values "
                "for every parameter: give values, or use method='random' or 'tpe'"
            )
    metric = s["metric"]
    problem = _check_metric(cfg, metric)
    if problem:
        errors.append(f"'metric': {problem}")
    goal = s["goal"]
    if goal is not None and goal not in GOALS:
        errors.append(f"'goal': expected 'min' or 'max', got {goal!r}")
    for key, low, high in (
        ("warmup_steps", 0, None),
        ("startup_runs", 0, None),
        ("max_failures", 1, None),
        ("max_parallel", 1, MAX_PARALLEL),
        ("seed", 0, None),
    ):
        _check_int(key, s[key], low, high, errors)
    if not isinstance(s["prune"], bool):
        errors.append(f"'prune': expected True or False, got {s['prune']!r}")
    if s["pruner"] not in PRUNERS:
        errors.append(f"'pruner': expected one of {', '.join(PRUNERS)}, got {s['pruner']!r}")

    n_runs = s["n_runs"]
    grid = grid_size(parameters)  # None with a range: an error above already says so
    if n_runs is None and s["method"] == "grid":
        n_runs = grid
    elif n_runs is None:
        errors.append(f"'n_runs': method {s['method']!r} needs the number of runs, e.g. n_runs=16")
    else:
        _check_int("n_runs", n_runs, 1, MAX_RUNS, errors)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"{where}: invalid sweep ({len(errors)} problem(s)):\n{lines}")
    if s["method"] == "grid" and grid is not None and int(n_runs) > grid:
        n_runs = grid  # a grid has no more points than that
    from trainer.best import mode_for

    return SweepSpec(
        method=s["method"], n_runs=int(n_runs), metric=metric, goal=mode_for(metric, goal),
        parameters=parameters, prune=s["prune"], pruner=s["pruner"],
        warmup_steps=int(s["warmup_steps"]), startup_runs=int(s["startup_runs"]),
        max_failures=int(s["max_failures"]), max_parallel=int(s["max_parallel"]),
        seed=int(s["seed"]),
    )  # fmt: skip


def _parse_parameters(cfg: Any, given: Any, errors: list[str]) -> dict[str, Choice | Range]:
    if not isinstance(given, Mapping) or not given:
        errors.append(
            "'parameters': expected a dict of config keys to sweep, e.g. "
            f"parameters=dict(lr=[1e-3, 3e-3]), got {given!r}"
        )
        return {}
    parameters: dict[str, Choice | Range] = {}
    for name, spec in given.items():
        key = ALIASES.get(name, name)
        problem = _check_key(cfg, key)
        if problem:
            errors.append(f"parameter '{name}': {problem}")
            continue
        if isinstance(spec, Mapping):
            p = _parse_range(name, spec, errors)
        elif isinstance(spec, Sequence) and not isinstance(spec, str | bytes):
            if not spec:
                errors.append(f"parameter '{name}': empty list of values: give at least one")
                continue
            p = Choice(tuple(_python_scalar(v) for v in spec))
        else:
            errors.append(
                f"parameter '{name}': expected a list of values or dict(low=..., high=...), "
                f"got {spec!r}"
            )
            continue
        if p is None:
            continue
        probe = p.values if isinstance(p, Choice) else (p.decode(p.low), p.decode(p.high))
        for value in probe:
            problem = _check_value(cfg, key, value)
            if problem:
                errors.append(f"parameter '{name}' value {value!r}: {problem}")
        parameters[name] = p
    return parameters


def _python_scalar(v: Any) -> Any:
    """A numpy scalar as the Python number it holds (so the driver, which reads the values
    back from JSON, and the trainer encode the choice alike); anything else unchanged."""
    return v.item() if type(v).__module__ == "numpy" and getattr(v, "ndim", None) == 0 else v


def _parse_range(name: str, spec: Mapping, errors: list[str]) -> Range | None:
    unknown = set(spec) - {"low", "high", "log"}
    if unknown:
        errors.append(
            f"parameter '{name}': unknown range key(s) {', '.join(map(str, sorted(unknown)))}: "
            "a range is dict(low=..., high=..., log=False)"
        )
        return None
    low, high, log = spec.get("low"), spec.get("high"), spec.get("log", False)
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (low, high))
    if not numeric or not low < high:
        errors.append(
            f"parameter '{name}': a range needs numbers low < high, got low={low!r}, high={high!r}"
        )
        return None
    if not isinstance(log, bool) or (log and low <= 0):
        errors.append(f"parameter '{name}': log=True needs low > 0 (got low={low!r}, log={log!r})")
        return None
    integer = isinstance(low, numbers.Integral) and isinstance(high, numbers.Integral)
    return Range(float(low), float(high), log, integer)


def _check_key(cfg: Any, key: str) -> str | None:
    from trainer.config import KNOWN_KEYS

    top, *rest = key.split(".")
    if top not in KNOWN_KEYS or top == "sweep":
        guess = suggest(top, [k for k in (*KNOWN_KEYS, *ALIASES) if k != "sweep"], min_len=2)
        hint = f"did you mean '{guess}'? " if guess else ""
        return f"'{top}' is no config key: {hint}see docs/config.md for the keys"
    value = getattr(cfg, top, None)
    for i, part in enumerate(rest):
        if value is not None and not isinstance(value, Mapping):
            inside = ".".join([top, *rest[:i]])
            return f"'{inside}' is {type(value).__name__}, not a dict: it has no key '{part}'"
        value = (value or {}).get(part)
    return None


def _check_value(cfg: Any, key: str, value: Any) -> str | None:
    """The config's own complaint about ``key = value``, or ``None``."""
    trial = copy.copy(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            apply_params(trial, {key: value})
            trial.check_config()
        except ConfigError as e:
            lines = [ln.strip(" -") for ln in str(e).splitlines()[1:] if ln.strip()]
            return "; ".join(lines) or str(e)
    return None


def _check_metric(cfg: Any, metric: Any) -> str | None:
    from trainer.config import check_best_metric

    if metric == "valid_are":
        if cfg.history_are_threshold is None:
            return "'valid_are' is written only when 'history_are_threshold' is set"
        return None
    return check_best_metric(metric)


def _check_int(key: str, v: Any, low: int, high: int | None, errors: list[str]) -> None:
    ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
    ok = ok or (isinstance(v, float) and v.is_integer())
    if not ok or v < low or (high is not None and v > high):
        bound = f">= {low}" if high is None else f"from {low} to {high}"
        errors.append(f"'{key}': expected an integer {bound}, got {v!r}")


#: what ``run.py sweep`` and the launch form may change for every trial of a sweep
TRIAL_OVERRIDES = ("n_steps", "batch_size", "lr")


def shorten(spec: SweepSpec, n_runs: Any = None, **overrides: Any) -> tuple[SweepSpec, dict]:
    """A sweep made shorter: ``n_runs`` trials, and ``n_steps`` / ``batch_size`` / ``lr`` for
    every trial (``TRIAL_OVERRIDES``; ``None`` leaves a value as the config has it).

    A key the sweep draws cannot be set for every trial. A grid keeps its first ``n_runs``
    points (never more than it has).

    Returns:
        The spec with its ``n_runs``, and the trials' overrides (the ones given).

    Raises:
        ConfigError: a value out of range, or an override of a swept parameter, naming it.

    Example:
        >>> spec, given = shorten(spec, n_runs=2, n_steps=50)  # doctest: +SKIP
    """
    errors = []
    unknown = sorted(set(overrides) - set(TRIAL_OVERRIDES))
    if unknown:
        errors.append(f"{unknown[0]}: not a trial override; known: {', '.join(TRIAL_OVERRIDES)}")
    given = {k: v for k, v in overrides.items() if v is not None and k in TRIAL_OVERRIDES}
    swept = {ALIASES.get(name, name) for name in spec.parameters}
    for key in given:
        if ALIASES.get(key, key) in swept:
            errors.append(
                f"--{key.replace('_', '-')} {given[key]!r}: the sweep draws '{key}' for each "
                f"trial, so it cannot be set for all; drop --{key.replace('_', '-')}, or take "
                f"'{key}' out of the sweep's parameters"
            )
    for key in ("n_steps", "batch_size"):
        if key in given:
            _check_int(f"--{key.replace('_', '-')}", given[key], 1, None, errors)
    lr = given.get("lr")
    if lr is not None and not (isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0):
        errors.append(f"--lr {lr!r}: expected a learning rate > 0")
    if n_runs is not None:
        _check_int("--n-runs", n_runs, 1, MAX_RUNS, errors)
    if errors:
        raise ConfigError("cannot shorten the sweep:\n" + "\n".join(f"  - {e}" for e in errors))
    if n_runs is not None:
        grid = grid_size(spec.parameters) if spec.method == "grid" else None
        spec = dataclasses.replace(spec, n_runs=min(int(n_runs), grid or int(n_runs)))
    return spec, given


def apply_params(cfg: Any, params: Mapping[str, Any]) -> None:
    """Set each parameter on the config; ``a.b`` sets key ``b`` of the dict ``cfg.a`` (copied,
    so the config file's dict is never changed in place)."""
    for name, value in params.items():
        top, *rest = ALIASES.get(name, name).split(".")
        if not rest:
            setattr(cfg, top, value)
            continue
        root = dict(getattr(cfg, top, None) or {})
        node = root
        for part in rest[:-1]:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[rest[-1]] = value
        setattr(cfg, top, root)


# ------------------------------------------------------------- the section, unexecuted


@dataclasses.dataclass(frozen=True)
class SweepSection:
    """What is known of a config's ``sweep`` section without running the config.

    Attributes:
        n_runs: runs the sweep makes, or ``None`` when that is known only once the config
            runs (the section is no literal, or does not say).
        max_parallel: the section's ``max_parallel`` (its default when it does not say).
    """

    n_runs: int | None
    max_parallel: int = SWEEP_DEFAULTS["max_parallel"]


def read_sweep_section(config_file: str | os.PathLike) -> SweepSection | None:
    """The ``sweep`` section of a config, read with ``ast`` (the config is not executed).

    Returns ``None`` when the config has no top-level ``sweep = ...`` (or sets it to
    ``None``). A section built from literals (``dict(...)``, ``{...}``, lists, numbers,
    strings, ``**{...}`` inside a ``dict(...)``) gives its number of runs: ``n_runs`` for
    ``random`` and ``tpe``, the grid's size for ``grid`` (at most ``n_runs``, as
    ``parse_sweep`` counts); any other expression gives a section of unknown size. An
    unreadable file or one with a syntax error has no section here: making the sweep
    reports the problem.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.py"
    >>> _ = f.write_text("sweep = dict(parameters=dict(lr=[1e-3, 3e-3], batch_size=[1, 2, 4]))")
    >>> read_sweep_section(f)
    SweepSection(n_runs=6, max_parallel=1)
    """
    try:
        tree = pysource.parse(Path(config_file).read_text(encoding="utf-8"), str(config_file))
    except (OSError, SyntaxError, ValueError):
        return None
    node = None
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "sweep" for t in stmt.targets)
        ) or (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "sweep"
            and stmt.value is not None
        ):
            node = stmt.value
    if node is None:
        return None
    try:
        section = _literal(node)
    except ValueError:
        return SweepSection(None)
    if section is None:  # `sweep = None`: the config's default, no sweep
        return None
    if not isinstance(section, dict):
        return SweepSection(None)
    parallel = section.get("max_parallel", SWEEP_DEFAULTS["max_parallel"])
    ok = isinstance(parallel, int) and not isinstance(parallel, bool)
    if not (ok and 1 <= parallel <= MAX_PARALLEL):
        parallel = SWEEP_DEFAULTS["max_parallel"]
    return SweepSection(_section_size(section), parallel)


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval`` that also takes ``dict(key=..., **{...})`` calls, nested."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args:
            raise ValueError("dict() with positional arguments")
        out: dict[Any, Any] = {}
        for k in node.keywords:
            value = _literal(k.value)
            if k.arg is None:
                if not isinstance(value, dict):
                    raise ValueError("** of no dict")
                out.update(value)
            else:
                out[k.arg] = value
        return out
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("** inside {...}")
        return {ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)


def _section_size(section: Mapping[str, Any]) -> int | None:
    """Runs of a literal section, as ``parse_sweep`` would count them, or ``None``."""
    n_runs = section.get("n_runs", SWEEP_DEFAULTS["n_runs"])
    n_runs = n_runs if isinstance(n_runs, int) and not isinstance(n_runs, bool) else None
    if section.get("method", SWEEP_DEFAULTS["method"]) != "grid":
        return n_runs
    params = section.get("parameters")
    if not isinstance(params, dict) or not params:
        return None
    if not all(isinstance(v, list | tuple) for v in params.values()):
        return None  # a range on a grid: the sweep's own checks say what is wrong
    grid = grid_size({name: Choice(tuple(v)) for name, v in params.items()})
    return grid if n_runs is None else min(n_runs, grid)


# ------------------------------------------------------------------------------- Optuna


def make_sampler(spec: SweepSpec, drawn_before: int = 0) -> Any:
    """The sweep's sampler. A driver makes a new one for each batch of trials it queues
    (it may be another process each time), so the seed moves on with the trials drawn
    before: a fresh sampler with the same seed would draw the same values again."""
    import optuna

    seed = spec.seed + drawn_before
    if spec.method == "grid":
        space = {n: p.encoded for n, p in spec.parameters.items()}
        # the grid sampler shuffles its grid with the seed and gives trial n grid point n:
        # every driver must shuffle alike, so its seed never moves on
        return optuna.samplers.GridSampler(space, seed=spec.seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(spec: SweepSpec) -> Any:
    import optuna

    if not spec.prune:
        return optuna.pruners.NopPruner()
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=max(1, spec.warmup_steps) if spec.warmup_steps else "auto"
        )
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.startup_runs, n_warmup_steps=spec.warmup_steps
    )


def open_study(
    study_file: str | Path, name: str, spec: SweepSpec, create: bool = False, drawn_before: int = 0
) -> Any:
    """The sweep's Optuna study in its journal file (created with ``create``); its sampler is
    ``make_sampler(spec, drawn_before)``."""
    import optuna

    sampler = make_sampler(spec, drawn_before)
    kwargs = dict(storage=_storage(study_file), sampler=sampler, pruner=make_pruner(spec))
    if create:
        direction = "minimize" if spec.goal == "min" else "maximize"
        return optuna.create_study(study_name=name, direction=direction, **kwargs)
    return optuna.load_study(study_name=name, **kwargs)


def _storage(study_file: str | Path) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return JournalStorage(JournalFileBackend(str(study_file)))


def suggest_params(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """Draw a trial's values; returns what Optuna drew (decode with ``spec.decode``)."""
    drawn = {}
    for name, p in spec.parameters.items():
        if isinstance(p, Choice):
            drawn[name] = trial.suggest_categorical(name, p.encoded)
        elif p.integer:
            drawn[name] = trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
        else:
            drawn[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
    return drawn


def best_value(values: Sequence[float], goal: str) -> float | None:
    """The best finite value of a metric's history (``None`` if there is none)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    return min(finite) if goal == "min" else max(finite)


class TrialReporter:
    """Reports a trial's history rows to its study and asks the pruner (the trainer's side).

    Args:
        study_file: the sweep's ``study.journal``.
        study_name: the sweep id.
        number: the trial number.
        spec: the sweep.

    A failure to report (the journal unreadable, the trial already ended) is logged once and
    never stops training.
    """

    def __init__(self, study_file: str | Path, study_name: str, number: int, spec: SweepSpec):
        self.study_file, self.study_name, self.number, self.spec = (
            Path(study_file), study_name, int(number), spec,
        )  # fmt: skip
        self._trial: Any = None
        self._broken = False

    def report(self, step: int, row: Mapping[str, float]) -> str | None:
        """Report ``row[metric]`` at ``step``; the reason to stop if the pruner says so."""
        value = row.get(self.spec.metric)
        if self._broken or value is None or not math.isfinite(float(value)):
            return None
        try:
            trial = self._open()
            trial.report(float(value), int(step))
            if self.spec.prune and trial.should_prune():
                return (
                    f"pruned by the sweep's {self.spec.pruner} pruner at step {step}: "
                    f"{self.spec.metric} {float(value):.4g} is worse than the other trials'"
                )
        except Exception as e:  # noqa: BLE001 - reporting must not stop training
            self._broken = True
            logger.warning("sweep trial %d: could not report to %s: %s", self.number,
                           self.study_file, e)  # fmt: skip
        return None

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            storage = _storage(self.study_file)
            study = optuna.load_study(
                study_name=self.study_name, storage=storage, pruner=make_pruner(self.spec)
            )
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

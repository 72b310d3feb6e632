"""The ``sweep`` section (trainer/sweeps.py): checks, values, the Optuna search and pruning."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import textwrap

import optuna
import pytest

from trainer.config import ConfigError, ExperimentConfig
from trainer.sweeps import (
    Choice,
    Range,
    SweepSection,
    TrialReporter,
    apply_params,
    best_value,
    grid_size,
    open_study,
    parse_sweep,
    read_sweep_section,
    spec_from_json,
    suggest_params,
)

BASE = """
def create_model():
    import torch
    return torch.nn.Conv3d(1, 2, 3)

data_class = "BatchCreatorImage"
n_steps = 10
history_freq = 2
monitor_batch_size = 1
batch_size = 1
optimiser = "Adam"
optimiser_params = dict(lr=1e-3, beta2=0.999)
data_batch_args = dict(patch_shape=(8, 16, 16))
"""


def config(tmp_path, sweep: str, extra: str = "") -> ExperimentConfig:
    path = tmp_path / "cfg.py"
    path.write_text(BASE + extra + "\nsweep = " + textwrap.dedent(sweep))
    return ExperimentConfig(path)


def test_a_grid_with_aliases_nested_keys_and_tuples(tmp_path):
    cfg = config(
        tmp_path,
        """dict(method='grid', parameters={'lr': [1e-3, 3e-3], 'optimiser_params.beta2':
        [0.99], 'data_batch_args.patch_shape': [(8, 16, 16), (4, 32, 32)],
        'loss': ['CrossEntropy', 'Dice']})""",
    )
    spec = parse_sweep(cfg)
    assert spec.method == "grid" and spec.n_runs == 8 and grid_size(spec.parameters) == 8
    assert grid_size({**spec.parameters, "momentum": Range(0.5, 0.9)}) is None
    assert spec.goal == "min" and spec.metric == "valid_loss"
    assert spec.parameters["data_batch_args.patch_shape"].encoded == [0, 1]  # tuples by index
    assert spec.parameters["loss"].encoded == ["CrossEntropy", "Dice"]
    apply_params(cfg, {"lr": 3e-3, "data_batch_args.patch_shape": (4, 32, 32), "loss": "Dice"})
    assert cfg.optimiser_params == {"lr": 3e-3, "beta2": 0.999}
    assert cfg.data_batch_args == {"patch_shape": (4, 32, 32)} and cfg.loss == "Dice"
    cfg.check_config()


def test_apply_params_never_changes_the_config_files_dicts(tmp_path):
    cfg = config(tmp_path, "dict(parameters=dict(lr=[1e-2]))")
    before = cfg.optimiser_params
    apply_params(cfg, {"optimiser_params.lr": 1e-2})
    assert before == {"lr": 1e-3, "beta2": 0.999} and cfg.optimiser_params["lr"] == 1e-2


@pytest.mark.parametrize(
    "sweep, message",
    [
        ("dict(parameters=dict(histroy_freq=[1, 2]))", "'histroy_freq' is no config key: did you mean 'history_freq'"),
        ("dict(parameters={'optimiser_params.lr': [1e-3], 'n_steps.x': [1]})", "'n_steps' is int, not a dict"),
        ("dict(parameters=dict(lr=[1e-3, -1.0]))", r"parameter 'lr' value -1\.0: .*lr"),
        ("dict(parameters=dict(batch_size=[1, 0]))", r"parameter 'batch_size' value 0: 'batch_size': expected int > 0, got int 0"),
        ("dict(parameters=dict(optimiser=['Adam', 'Adma']))", r"parameter 'optimiser' value 'Adma'"),
        ("dict(parameters=dict(lr=[]))", "parameter 'lr': empty list of values"),
        ("dict(parameters=dict())", "'parameters': expected a dict of config keys"),
        ("dict(method='random', n_runs=0, parameters=dict(lr=[1e-3]))", r"'n_runs': expected an integer from 1"),
        ("dict(method='tpe', parameters=dict(lr=[1e-3]))", "'n_runs': method 'tpe' needs the number of runs"),
        ("dict(metric='valid_los', parameters=dict(lr=[1e-3]))", "'valid_los' is no history column of this run: did you mean 'valid_loss'"),
        ("dict(metric='valid_are', parameters=dict(lr=[1e-3]))", "'valid_are' is written only when 'history_are_threshold' is set"),
        ("dict(method='grid', parameters=dict(lr=dict(low=1e-4, high=1e-2)))", "method 'grid' needs a list of values"),
        ("dict(method='random', n_runs=3, parameters=dict(lr=dict(low=1e-2, high=1e-4)))", "low < high"),
        ("dict(method='random', n_runs=3, parameters=dict(lr=dict(low=0, high=1, log=True)))", "log=True needs low > 0"),
        ("dict(methd='grid', parameters=dict(lr=[1e-3]))", "unknown key 'methd': did you mean 'method'"),
        ("dict(method='bayes', parameters=dict(lr=[1e-3]))", "'method': expected one of grid, random, tpe"),
        ("dict(max_parallel=0, parameters=dict(lr=[1e-3]))", "'max_parallel': expected an integer from 1 to 20"),
        ("dict(parameters=dict(sweep=[1]))", "'sweep' is no config key"),
    ],
)  # fmt: skip
def test_bad_sweeps_name_the_parameter_and_the_value(tmp_path, sweep, message):
    cfg = config(tmp_path, sweep)
    with pytest.raises(ConfigError, match=message) as got:
        parse_sweep(cfg)
    assert str(tmp_path / "cfg.py") in str(got.value)


def test_every_problem_is_listed_at_once(tmp_path):
    cfg = config(tmp_path, "dict(method='grid', n_runs=0, parameters=dict(lr=[], bach_size=[1]))")
    with pytest.raises(ConfigError) as got:
        parse_sweep(cfg)
    text = str(got.value)
    assert "empty list" in text and "did you mean 'batch_size'" in text
    assert "'n_runs': expected an integer from 1" in text and "(3 problem(s))" in text


def test_a_sweep_that_is_no_dict_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'sweep': expected None or a dict .*got list"):
        config(tmp_path, "[1, 2]")


def test_the_config_itself_stays_valid_with_a_sweep_section(tmp_path):
    cfg = config(tmp_path, "dict(parameters=dict(lr=[1e-3]))")
    assert cfg.sweep["parameters"] == {"lr": [1e-3]}


def test_a_grid_sweep_draws_every_point_once(tmp_path):
    cfg = config(
        tmp_path,
        "dict(method='grid', parameters={'lr': [1e-3, 3e-3, 1e-2], "
        "'data_batch_args.patch_shape': [(8, 16, 16), (4, 32, 32)]})",
    )
    spec = spec_from_json(parse_sweep(cfg).to_json())  # what the driver works from
    open_study(tmp_path / "study.journal", "s", spec, create=True)
    drawn = []
    for n in range(spec.n_runs):
        # a new sampler per trial, as drivers in turn (or in other processes) make them
        study = open_study(tmp_path / "study.journal", "s", spec, drawn_before=n)
        trial = study.ask()
        values = spec.decode(suggest_params(trial, spec))
        drawn.append((values["lr"], tuple(values["data_batch_args.patch_shape"])))
        with contextlib.suppress(RuntimeError):  # the grid sampler's stop() after the last
            study.tell(trial.number, 1.0)
    expected = itertools.product([1e-3, 3e-3, 1e-2], [(8, 16, 16), (4, 32, 32)])
    assert sorted(drawn) == sorted(expected)


def test_a_tpe_sweep_stays_inside_its_ranges(tmp_path):
    cfg = config(
        tmp_path,
        "dict(method='tpe', n_runs=12, seed=3, parameters=dict(lr=dict(low=1e-4, high=1e-2, "
        "log=True), batch_size=dict(low=1, high=4)))",
    )
    spec = parse_sweep(cfg)
    assert spec.parameters["batch_size"] == Range(1.0, 4.0, False, True)
    study = open_study(tmp_path / "study.journal", "s", spec, create=True)
    for _ in range(12):
        trial = study.ask()
        values = spec.decode(suggest_params(trial, spec))
        assert 1e-4 <= values["lr"] <= 1e-2 and values["batch_size"] in (1, 2, 3, 4)
        assert isinstance(values["batch_size"], int)
        study.tell(trial.number, values["lr"])  # smaller lr is better: TPE learns that
        study = open_study(tmp_path / "study.journal", "s", spec, drawn_before=len(study.trials))
    lrs = [t.params["lr"] for t in study.trials]
    assert min(lrs[6:]) < max(lrs[:6])
    assert len(set(lrs)) == 12  # fresh samplers do not draw the same values again


def test_spec_round_trips_through_json(tmp_path):
    cfg = config(
        tmp_path,
        "dict(method='random', n_runs=5, prune=True, pruner='halving', warmup_steps=4, "
        "parameters=dict(lr=dict(low=1e-4, high=1e-2, log=True), loss=['Dice']))",
    )
    spec = parse_sweep(cfg)
    again = spec_from_json(json.loads(json.dumps(spec.to_json(), sort_keys=True)))
    assert again == spec
    assert list(again.parameters) == ["lr", "loss"]  # the section's order, not the file's
    assert again.parameters["loss"] == Choice(("Dice",))


def test_best_value_ignores_nan_and_follows_the_goal():
    assert best_value([0.5, math.nan, 0.2, 0.3], "min") == 0.2
    assert best_value([0.5, math.nan, 0.2, 0.3], "max") == 0.5
    assert best_value([math.nan], "min") is None and best_value([], "max") is None


def test_the_reporter_prunes_a_trial_worse_than_the_median(tmp_path):
    cfg = config(
        tmp_path,
        "dict(method='random', n_runs=3, prune=True, startup_runs=1, warmup_steps=2, "
        "parameters=dict(lr=[1e-3, 2e-3]))",
    )
    spec = parse_sweep(cfg)
    journal = tmp_path / "study.journal"
    study = open_study(journal, "s", spec, create=True)
    good = study.ask()
    suggest_params(good, spec)
    for step, loss in ((0, 0.7), (2, 0.5), (4, 0.3)):
        good.report(loss, step)
    study.tell(good.number, 0.3)

    bad = study.ask()
    suggest_params(bad, spec)
    reporter = TrialReporter(journal, "s", bad.number, spec)  # as a trainer process does
    assert reporter.report(0, {"valid_loss": 0.9}) is None  # within the warm-up
    reason = reporter.report(2, {"valid_loss": 0.8})
    assert reason is not None and "median pruner at step 2" in reason
    assert reporter.report(4, {"valid_loss": math.nan}) is None  # NaN rows are not reported
    stored = open_study(journal, "s", spec).trials[bad.number]
    assert stored.intermediate_values == {0: 0.9, 2: 0.8}


def test_the_reporter_never_stops_training_when_the_study_is_gone(tmp_path, caplog):
    cfg = config(tmp_path, "dict(parameters=dict(lr=[1e-3]), prune=True)")
    spec = parse_sweep(cfg)
    reporter = TrialReporter(tmp_path / "missing.journal", "s", 0, spec)
    assert reporter.report(0, {"valid_loss": 0.5}) is None
    assert reporter.report(2, {"valid_loss": 0.5}) is None
    assert "could not report" in caplog.text


def test_without_prune_the_values_are_reported_but_nothing_is_pruned(tmp_path):
    cfg = config(tmp_path, "dict(method='random', n_runs=2, parameters=dict(lr=[1e-3]))")
    spec = parse_sweep(cfg)
    journal = tmp_path / "study.journal"
    study = open_study(journal, "s", spec, create=True)
    first = study.ask()
    suggest_params(first, spec)
    first.report(0.1, 2)
    study.tell(first.number, 0.1)
    second = study.ask()
    suggest_params(second, spec)
    reporter = TrialReporter(journal, "s", second.number, spec)
    assert reporter.report(2, {"valid_loss": 5.0}) is None
    assert open_study(journal, "s", spec).trials[1].intermediate_values == {2: 5.0}
    assert isinstance(optuna.__version__, str)


# -- the section read without running the config (the launch form's view) ---------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n_steps = 5\n", None),
        ("sweep = dict(parameters=dict(lr=[1e-3, 3e-3]))", SweepSection(2)),
        ("sweep = {'method': 'grid', 'parameters': {'lr': [1, 2], 'batch_size': (1, 2, 4)}}",
         SweepSection(6)),
        ("sweep = dict(n_runs=4, parameters=dict(lr=[1, 2], batch_size=[1, 2, 4]))",
         SweepSection(4)),
        ("sweep = dict(n_runs=40, parameters=dict(lr=[1, 2]))", SweepSection(2)),
        ("sweep = dict(parameters=dict(lr=[1, 2], **{'optimiser_params.beta2': [0.9, 0.99]}))",
         SweepSection(4)),
        ("sweep = dict(method='tpe', n_runs=16, max_parallel=3, "
         "parameters=dict(lr=dict(low=1e-4, high=1e-2, log=True)))", SweepSection(16, 3)),
        ("sweep = dict(method='random', parameters=dict(lr=[1, 2]))", SweepSection(None)),
        ("LRS = [1, 2]\nsweep = dict(parameters=dict(lr=LRS))", SweepSection(None)),
        ("sweep = make_sweep()", SweepSection(None)),
        ("sweep = dict(parameters=dict(lr=[1, 2]), max_parallel=99)", SweepSection(2, 1)),
        ("sweep = dict(parameters=dict(lr=[1, 2]))\nsweep = None", None),
        ("sweep = dict(parameters=dict(lr=[1, 2]))\nsweep = [1]", SweepSection(None)),
        ("sweep = dict(parameters=dict(lr=dict(low=1, high=2)))", SweepSection(None)),
        ("sweep = dict(parameters=dict(lr=[1, 2])\n", None),  # a syntax error: launch says so
    ],
)  # fmt: skip
def test_read_sweep_section_reads_the_size_without_running_the_config(tmp_path, text, expected):
    config = tmp_path / "c.py"
    # a config that would fail if it were run: the form must never execute it
    config.write_text("raise SystemExit('executed')\n" + text)
    assert read_sweep_section(config) == expected


def test_read_sweep_section_of_a_missing_file_is_none(tmp_path):
    assert read_sweep_section(tmp_path / "gone.py") is None

"""Tests for trainer.config: reading, checking and recording experiment configs."""

from __future__ import annotations

import json
import os
import textwrap
import warnings
from pathlib import Path

import pytest

from trainer import runs
from trainer.config import (
    DEFAULTS,
    KNOWN_KEYS,
    ConfigError,
    ConfigWarning,
    ExperimentConfig,
    to_jsonable,
)
from trainer.errors import levenshtein, suggest

VALID = """
data_class = 'BatchCreatorImage'
batch_size = 2
n_steps = 100
history_freq = 10
monitor_batch_size = 4
optimiser = 'Adam'
optimiser_params = dict(lr=1e-3, mom=0.9, wd=0.0)

def create_model():
    return batch_size
"""


@pytest.fixture(autouse=True)
def _no_user_defaults(monkeypatch, tmp_path):
    # a developer's own ~/.config/voxelboard/defaults.py must not leak into the tests
    monkeypatch.delenv("VOXELBOARD_DEFAULTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str, name: str = "exp.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, extra: str = "", base: str = VALID, **kw) -> ExperimentConfig:
    return ExperimentConfig(write(tmp_path, base + textwrap.dedent(extra)), **kw)


def without(key: str) -> str:
    return "".join(
        line for line in VALID.splitlines(keepends=True) if not line.startswith(f"{key} =")
    )


# --- levenshtein and suggestions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "d"),
    [
        ("kitten", "sitting", 3),
        ("", "", 0),
        ("", "abc", 3),
        ("abc", "", 3),
        ("abc", "abc", 0),
        ("flaw", "lawn", 2),
        ("histroy_freq", "history_freq", 2),
        ("n_step", "n_steps", 1),
        ("intention", "execution", 5),
        ("a", "b", 1),
    ],
)
def test_levenshtein_table(a, b, d):
    assert levenshtein(a, b) == d
    assert levenshtein(b, a) == d
    assert ExperimentConfig.levenshtein(a, b) == d


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("histroy_freq", "history_freq"),
        ("n_step", "n_steps"),
        ("batchsize", "batch_size"),
        ("N_STEPS", "n_steps"),
        ("optimizer", "optimiser"),
        ("optimiser_param", "optimiser_params"),
        ("plot_onn", "plot_on"),
        ("my_helper", None),
        ("lr", None),  # too short to be a typo
        ("patch", None),
        ("patch_size", None),  # a helper variable, one edit from batch_size but not a typo
        ("Batch_Size", "batch_size"),
    ],
)
def test_suggest(name, expected):
    assert suggest(name, KNOWN_KEYS) == expected
    assert ExperimentConfig.suggest(name) == expected


def test_no_known_key_is_a_typo_of_another_known_key_it_would_shadow():
    # every known key suggests itself, never a neighbour
    for key in KNOWN_KEYS:
        assert suggest(key, KNOWN_KEYS) in (key, None)


# --- valid configs ------------------------------------------------------------------------


def test_valid_config_resolves_keys_and_defaults(tmp_path):
    cfg = load(tmp_path)
    assert (cfg.n_steps, cfg.batch_size, cfg.history_freq) == (100, 2, 10)
    assert cfg.optimiser == "Adam"
    assert cfg.max_runtime is None  # unlimited unless set
    for key, value in DEFAULTS.items():
        assert getattr(cfg, key) == value
    assert cfg.save_name.startswith("exp__")
    assert cfg.data_init_kwargs == {} and cfg.schedules == {}
    # create_model sees the file's other names (single namespace)
    assert cfg.create_model() == 2


def test_defaults_are_not_shared_between_configs(tmp_path):
    a = load(tmp_path)
    a.data_init_kwargs["x"] = 1
    b = load(tmp_path)
    assert b.data_init_kwargs == {}


def test_experiment_file_overrides_global_defaults(tmp_path):
    cfg = load(tmp_path, "param_save_it = 5\nplot_on = False\nmax_runtime = 3600\n")
    assert (cfg.param_save_it, cfg.plot_on, cfg.max_runtime) == (5, False, 3600)


def test_optimiser_name_is_case_insensitive(tmp_path):
    cfg = load(tmp_path, "optimiser = 'adamw'\n")
    assert cfg.optimiser == "AdamW"


def test_model_load_path_without_create_model(tmp_path):
    snapshot = tmp_path / "model.pt"
    snapshot.write_bytes(b"")
    base = VALID.replace("def create_model():\n    return batch_size", "")
    cfg = load(tmp_path, f"model_load_path = {str(snapshot)!r}\n", base=base)
    assert cfg.create_model is None and cfg.model_load_path == str(snapshot)


def test_preview_tuple_checks_the_file_not_the_tuple(tmp_path):
    h5 = tmp_path / "preview.h5"
    h5.write_bytes(b"")
    cfg = load(tmp_path, f"preview_data_path = ({str(h5)!r}, 'raw')\n")
    assert tuple(cfg.preview_data_path) == (str(h5), "raw")
    with pytest.raises(
        ConfigError, match=r"'preview_data_path': file '.*missing.h5' does not exist"
    ):
        load(tmp_path, f"preview_data_path = ({str(tmp_path / 'missing.h5')!r}, 'raw')\n")


def test_tilde_is_expanded_in_file_paths(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "p.h5").write_bytes(b"")
    cfg = load(tmp_path, "preview_data_path = '~/p.h5'\n")
    assert cfg.preview_data_path == str(home / "p.h5")


def test_imports_functions_classes_and_underscore_names_are_ignored(tmp_path):
    extra = """
    import os
    import math as _m
    from pathlib import Path
    class Histroy_freq:
        pass
    def n_step():
        return 1
    _histroy_freq = 3
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not even a helper-variable warning
        load(tmp_path, extra)


def test_helper_variables_are_warned_once(tmp_path):
    with pytest.warns(ConfigWarning, match="helper variables: patch_size, n_classes") as rec:
        cfg = load(tmp_path, "patch_size = (8, 64, 64)\nn_classes = 2\n")
    assert len([w for w in rec if "helper" in str(w.message)]) == 1
    assert cfg.helper_variables == ["patch_size", "n_classes"]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("lr_schedule = {'dec': 0.9}\n", "lr_schedule ignored: only 'schedules' is used"),
        ("use_manual_cudnn_conv = True\n", "use_manual_cudnn_conv ignored"),
        ("overwrite = True\n", "never deleted"),
    ],
)
def test_legacy_keys_are_accepted_with_a_warning(tmp_path, extra, match):
    with pytest.warns(ConfigWarning, match=match):
        load(tmp_path, extra)


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "data_class",
        "batch_size",
        "n_steps",
        "history_freq",
        "monitor_batch_size",
        "optimiser",
        "optimiser_params",
    ],
)
def test_missing_required_key_is_named_with_what_to_add(tmp_path, key):
    with pytest.raises(ConfigError, match=rf"missing required key '{key}': add e.g. `{key} ="):
        load(tmp_path, base=without(key))


def test_missing_model_says_both_alternatives(tmp_path):
    base = VALID.replace("def create_model():\n    return batch_size", "")
    with pytest.raises(ConfigError, match="neither 'create_model' nor 'model_load_path'"):
        load(tmp_path, base=base)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("n_steps = '100'", r"'n_steps': expected int > 0, got str '100'"),
        ("n_steps = 0", r"'n_steps': expected int > 0, got int 0"),
        ("n_steps = True", r"'n_steps': expected int > 0, got bool True"),
        ("batch_size = 1.5", r"'batch_size': expected int > 0, got float 1.5"),
        ("n_steps = 1e-3", r"'n_steps': expected int > 0, got float 0.001"),
        (
            "class_weights = __import__('numpy').array(['a'])",
            r"'class_weights': expected None or a non-empty list of numbers",
        ),
        ("history_freq = -1", r"'history_freq': expected int > 0, got int -1"),
        ("max_runtime = 0", r"'max_runtime': expected number > 0 or None, got int 0"),
        ("max_runtime = '1h'", r"'max_runtime': expected number > 0 or None, got str '1h'"),
        (
            "optimiser = 'adamax'",
            r"'optimiser': expected one of SGD, Adam, AdamW, RMSprop, AdaGrad, AdaDelta",
        ),
        ("optimiser_params = 0.1", r"'optimiser_params': expected dict, got float 0.1"),
        (
            "optimiser_params = dict(lr=0.1, mon=0.9)",
            r"unknown key 'mon' for Adam: did you mean 'mom'\?",
        ),
        ("schedules = {'lr': 0.9}", r"'schedules': expected dict mapping a variable name"),
        ("schedules = [1]", r"'schedules': expected dict mapping"),
        ("data_init_kwargs = None or 3", r"'data_init_kwargs': expected dict, got int 3"),
        ("data_batch_args = []", r"'data_batch_args': expected dict, got list \[\]"),
        (
            "data_class = 3",
            r"'data_class': expected a class name \(str\) or a \(file path, class name\) pair",
        ),
        ("data_class = ('x.py',)", r"'data_class': expected"),
        (
            "data_class = ('nowhere.py', 'MyData')",
            r"'data_class': file 'nowhere.py' does not exist",
        ),
        (
            "class_weights = [1, 'a']",
            r"'class_weights': expected None or a non-empty list of numbers",
        ),
        ("preview_data_path = 3", r"'preview_data_path': expected None, an h5 file path"),
        (
            "preview_data_path = 'nowhere.h5'",
            r"'preview_data_path': file 'nowhere.h5' does not exist",
        ),
        (
            "create_model = 3",
            r"'create_model': expected a function returning a torch.nn.Module, got int 3",
        ),
        ("device = 'gpu'", r"'device': expected None, a GPU index"),
        ("plot_on = 1", r"'plot_on': expected bool \(True or False\), got int 1"),
        ("inspection = 5", r"'inspection': expected int from 0 to 3"),
        ("save_name = 'a/b'", r"'save_name': expected None or a folder name"),
        ("model_load_path = 'nowhere.pt'", r"'model_load_path': file 'nowhere.pt' does not exist"),
        (
            "instance_ignore_labels = 999",
            r"'instance_ignore_labels': expected a list of true neuron ids .*got int 999",
        ),
        ("instance_ignore_labels = [-1]", r"'instance_ignore_labels': expected a list of true"),
        ("instance_ignore_labels = [2**64]", r"'instance_ignore_labels': expected a list of true"),
    ],
)
def test_wrong_values_name_key_expected_and_got(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match) as info:
        load(tmp_path, extra + "\n")
    assert str(info.value).startswith(str(tmp_path / "exp.py"))


@pytest.mark.parametrize(
    ("typo", "right"),
    [
        ("histroy_freq", "history_freq"),
        ("n_step", "n_steps"),
        ("batch_siez", "batch_size"),
        ("param_save_iter", "param_save_it"),
        ("schedule", "schedules"),
        ("lr_schedules", "schedules"),  # not the ignored legacy 'lr_schedule'
        ("wd_schedules", "schedules"),
    ],
)
def test_typo_is_an_error_with_suggestion(tmp_path, typo, right):
    path = tmp_path / "exp.py"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"{typo} = 5\n")
    assert f"unknown config key '{typo}' in {path}: did you mean '{right}'?" in str(info.value)


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        ("n_steps = 1e6", "n_steps", 1_000_000),
        ("history_freq = 2e2", "history_freq", 200),
        ("param_save_it = 5e3", "param_save_it", 5000),
        ("class_weights = np.array([0.2653, 0.7347])", "class_weights", [0.2653, 0.7347]),
        ("class_weights = np.array([1, 3])", "class_weights", [1, 3]),
        ("instance_ignore_labels = [999, 2**64 - 1]", "instance_ignore_labels", [999, 2**64 - 1]),
    ],
)
def test_values_elektronn2_configs_contain_are_converted(tmp_path, extra, key, expected):
    cfg = load(tmp_path, f"import numpy as np\n{extra}\n")
    value = getattr(cfg, key)
    assert value == expected and type(value) is type(expected)
    if isinstance(value, list):
        assert all(type(v) in (int, float) for v in value)


def test_all_errors_are_collected_each_on_its_own_line(tmp_path):
    base = without("n_steps")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "histroy_freq = 3\nbatch_size = 'x'\n", base=base)
    lines = str(info.value).splitlines()
    assert lines[0] == f"{tmp_path / 'exp.py'}: invalid config (3 problems):"
    assert any("missing required key 'n_steps'" in line for line in lines[1:])
    assert any("'batch_size': expected int > 0" in line for line in lines[1:])
    assert any("did you mean 'history_freq'" in line for line in lines[1:])
    assert len(lines) == 4


def test_execution_error_names_file_and_line(tmp_path):
    text = VALID + "x = 1\ny = undefined_name + 1\n"
    with pytest.raises(
        ConfigError,
        match=r"exp\.py:\d+: error while executing config file: NameError: name 'undefined_name'",
    ):
        ExperimentConfig(write(tmp_path, text))
    line = text.splitlines().index("y = undefined_name + 1") + 1
    with pytest.raises(ConfigError, match=rf"exp\.py:{line}:"):
        ExperimentConfig(write(tmp_path, text))


def test_syntax_error_names_file_and_line(tmp_path):
    with pytest.raises(ConfigError, match=r"exp\.py:2: syntax error in config file"):
        ExperimentConfig(write(tmp_path, "n_steps = 1\nbatch_size = (\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.py: config file does not exist"):
        ExperimentConfig(tmp_path / "nope.py")


# --- user defaults ---------------------------------------------------------------------------


def test_user_defaults_from_env_var_are_under_the_experiment(tmp_path, monkeypatch):
    defaults = write(
        tmp_path, "param_save_it = 7\nplot_on = False\nmixed_precision = True\n", "d.py"
    )
    monkeypatch.setenv("VOXELBOARD_DEFAULTS", str(defaults))
    cfg = load(tmp_path, "plot_on = True\n")
    assert cfg.param_save_it == 7 and cfg.mixed_precision is True
    assert cfg.plot_on is True  # the experiment file wins
    assert cfg.defaults_file == defaults


def test_user_defaults_file_in_home_is_read_at_call_time(tmp_path):
    cfg = load(tmp_path)
    assert cfg.param_save_it == DEFAULTS["param_save_it"]
    folder = Path(os.environ["HOME"]) / ".config" / "voxelboard"
    folder.mkdir(parents=True)
    (folder / "defaults.py").write_text("param_save_it = 3\n")
    assert load(tmp_path).param_save_it == 3


def test_user_defaults_errors_name_the_defaults_file(tmp_path, monkeypatch):
    defaults = write(tmp_path, "plot_on = True\n\n1 / 0\n", "d.py")
    monkeypatch.setenv("VOXELBOARD_DEFAULTS", str(defaults))
    with pytest.raises(
        ConfigError, match=r"d\.py:3: error while executing config file: ZeroDivisionError"
    ):
        load(tmp_path)
    write(tmp_path, "plot_onn = True\n", "d.py")
    with pytest.raises(
        ConfigError, match=rf"unknown config key 'plot_onn' in {defaults}: did you mean 'plot_on'"
    ):
        load(tmp_path)


def test_missing_defaults_file_named_by_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXELBOARD_DEFAULTS", str(tmp_path / "gone.py"))
    with pytest.raises(ConfigError, match="gone.py: the user defaults file named by"):
        load(tmp_path)


# --- run directory ---------------------------------------------------------------------------


def test_make_dir_layout_and_config_json(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(tmp_path, "save_path = 'out'\nsave_name = 'run1'\n")
    assert not (tmp_path / "out").exists()  # nothing made before make_dir
    run_dir = cfg.make_dir()
    assert run_dir == tmp_path / "out" / "run1" == cfg.run_dir
    assert Path.cwd() == tmp_path  # no chdir
    for sub in ("snapshots", "previews", "eval"):
        assert (run_dir / sub).is_dir()
    assert (run_dir / "0-exp.py").read_text() == (tmp_path / "exp.py").read_text()
    saved = runs.read_resolved_config(run_dir)
    assert saved["n_steps"] == 100 and saved["optimiser_params"]["mom"] == 0.9
    assert saved["create_model"] == "<function create_model>"
    assert saved["save_name"] == "run1" and saved["run_dir"] == str(run_dir)
    assert saved["param_save_it"] == DEFAULTS["param_save_it"]


def test_save_path_is_resolved_against_cwd_at_call_time(tmp_path, monkeypatch):
    cfg = load(tmp_path, "save_name = 'r'\n")
    monkeypatch.chdir(tmp_path)
    assert cfg.make_dir() == tmp_path / "runs" / "r"


def test_make_dir_never_deletes(tmp_path):
    cfg = load(tmp_path, f"save_path = {str(tmp_path / 'runs')!r}\nsave_name = 'r'\n")
    run_dir = cfg.make_dir()
    keep = run_dir / "snapshots" / "LAST.pt"
    keep.write_bytes(b"weights")
    again = load(tmp_path, f"save_path = {str(tmp_path / 'runs')!r}\nsave_name = 'r'\n")
    with pytest.raises(
        ConfigError,
        match=r"run directory .*r already exists; choose another save_name or pass use_existing_dir=True",
    ):
        again.make_dir()
    assert keep.read_bytes() == b"weights"


def test_use_existing_dir_reuses_and_keeps_files(tmp_path):
    extra = f"save_path = {str(tmp_path / 'runs')!r}\nsave_name = 'r'\n"
    run_dir = load(tmp_path, extra).make_dir()
    (run_dir / "status.json").write_text("{}")
    (run_dir / "0-exp.py").write_text("# original copy\n")
    cfg = load(tmp_path, extra + "n_steps = 200\n", use_existing_dir=True)
    assert cfg.make_dir() == run_dir
    assert (run_dir / "status.json").read_text() == "{}"
    assert (run_dir / "0-exp.py").read_text() == "# original copy\n"
    assert runs.read_resolved_config(run_dir)["n_steps"] == 200


def test_tilde_in_save_path(tmp_path):
    cfg = load(tmp_path, "save_path = '~/somewhere'\nsave_name = 'r'\n")
    assert cfg.make_dir() == Path(os.environ["HOME"]) / "somewhere" / "r"


def test_to_dict_is_json_serialisable_whatever_the_config_holds(tmp_path):
    np = pytest.importorskip("numpy")
    extra = """
    import numpy as np
    import math
    data_init_kwargs = dict(
        arr=np.arange(3), scalar=np.float32(0.5), module=math, cls=ValueError,
        fn=len, obj=object(), s={3, 1}, p=__import__('pathlib').Path('/x'),
        nan=float('nan'), inf=float('inf'), key_tuple={(1, 2): 'v'}, b=b'raw',
    )
    """
    cfg = load(tmp_path, extra)
    d = json.loads(json.dumps(cfg.to_dict(), allow_nan=False))
    kw = d["data_init_kwargs"]
    assert kw["arr"] == [0, 1, 2] and kw["scalar"] == 0.5
    assert kw["module"] == "<module math>" and kw["cls"] == "<class builtins.ValueError>"
    assert kw["nan"] is None and kw["inf"] == "inf" and kw["p"] == "/x" and kw["s"] == [1, 3]
    assert np is not None


def test_to_jsonable_fallback_is_repr():
    class Thing:
        def __repr__(self):
            return "Thing()"

    assert to_jsonable({"t": Thing()}) == {"t": "Thing()"}


# --- overrides -------------------------------------------------------------------------------


def test_apply_overrides(tmp_path):
    cfg = load(tmp_path)
    cfg.apply_overrides(
        n_steps=500, batch_size="4", lr=0.01, max_runtime=60.0, device="cpu", save_name=None
    )
    assert (cfg.n_steps, cfg.batch_size, cfg.max_runtime, cfg.device) == (500, 4, 60.0, "cpu")
    assert cfg.optimiser_params == {"lr": 0.01, "mom": 0.9, "wd": 0.0}
    cfg.apply_overrides(device="0")
    assert cfg.device == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_steps": 0}, r"override 'n_steps': expected int > 0, got int 0"),
        ({"n_steps": "lots"}, r"override 'n_steps': expected int > 0, got str 'lots'"),
        ({"lr": -1.0}, r"override 'lr': expected number > 0, got float -1.0"),
        ({"max_runtime": "0"}, r"override 'max_runtime': expected number > 0 or None"),
        ({"device": "tpu"}, r"override 'device': expected None, a GPU index"),
        ({"save_name": "a/b"}, r"override 'save_name': expected None or a folder name"),
        ({"nsteps": 3}, r"unknown override 'nsteps': did you mean 'n_steps'\?"),
    ],
)
def test_bad_overrides_name_the_override(tmp_path, kw, match):
    cfg = load(tmp_path)
    with pytest.raises(ConfigError, match=match):
        cfg.apply_overrides(**kw)


def test_save_location_override_after_make_dir_is_refused(tmp_path):
    cfg = load(tmp_path, f"save_path = {str(tmp_path)!r}\nsave_name = 'r'\n")
    cfg.make_dir()
    with pytest.raises(
        ConfigError, match="override 'save_name': the run directory .* is already made"
    ):
        cfg.apply_overrides(save_name="other")


def test_a_config_without_lr_is_refused_with_elektronn2s_default_named(tmp_path):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, "optimiser_params = dict(mom=0.9)\n")
    text = str(err.value)
    assert "'optimiser_params': 'lr' is missing" in text and "ELEKTRONN2's default was 1" in text


def test_decay_batchnorm_scales_is_a_checked_bool_off_by_default(tmp_path):
    assert load(tmp_path).decay_batchnorm_scales is False
    assert load(tmp_path, "decay_batchnorm_scales = True\n").decay_batchnorm_scales is True
    with pytest.raises(
        ConfigError, match=r"'decay_batchnorm_scales': expected bool .*got str 'yes'"
    ):
        load(tmp_path, "decay_batchnorm_scales = 'yes'\n")


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ("n_steps = 1500.5", r"'n_steps': expected int > 0, got float 1500.5"),
        ("history_freq = 200.5", r"'history_freq': expected int > 0, got float 200.5"),
        ("histroy_freq = 200", r"unknown config key 'histroy_freq'.*did you mean 'history_freq'\?"),
    ],
)
def test_what_porting_md_says_is_refused_is_refused(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        load(tmp_path, extra + "\n")

"""Launch requests with hostile values, through the real launcher and its child process.

Save names starting with ``-`` must not become run directories named like options, and the
child's command line must read every name as a value. Config names that no file can have
are refused with a message naming the field, not an ``OSError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from app.launcher import Launcher
from app.security import LaunchError, resolve_config, validate_overrides
from trainer.runs import read_launcher_record, read_run_state, read_status

FAKE_RUN = Path(__file__).with_name("fake_run.py")


def wait_for(predicate, timeout=20.0, what="condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def fake_info(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "fake_argv.json").read_text())
    except (OSError, ValueError):
        return None


@pytest.fixture
def launcher(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("# ordinary run\n")
    made = Launcher(
        tmp_path / "runs",
        configs,
        tmp_path / "data",
        run_py=FAKE_RUN,
        python=sys.executable,
        gpus=[],
        grace_s=3.0,
        max_cpu_runs=4,
    )
    yield made
    made.close()
    runs = tmp_path / "runs"
    for run_dir in runs.iterdir() if runs.is_dir() else []:
        pid = getattr(read_launcher_record(run_dir), "pid", None)
        if pid:  # every child leads its own process group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for child in list(made.backends["local"].children.values()):
        child.proc.wait(timeout=10)


@pytest.mark.parametrize(("save_name", "expected"), [("--help", "help"), ("-rf", "rf")])
def test_save_name_starting_with_a_dash_trains_under_a_plain_name(
    launcher, tmp_path, save_name, expected
):
    runs = tmp_path / "runs"
    name = launcher.launch("train.py", "cpu", {"n_steps": 5, "save_name": save_name})
    assert name == expected
    assert [p.name for p in runs.iterdir() if p.is_dir()] == [expected]
    run_dir = runs / name
    info = wait_for(lambda: fake_info(run_dir), what="child start")
    assert f"--save-name={expected}" in info["argv"]
    assert f"--save-path={runs}" in info["argv"]
    wait_for(lambda: read_run_state(run_dir).state == "finished", what="run finished")
    assert read_status(run_dir).step == 5


@pytest.mark.parametrize("value", [["a"], {"a": 1}, 12, True])
def test_save_name_that_is_not_text_is_refused(value):
    with pytest.raises(LaunchError, match="save_name: expected text") as e:
        validate_overrides({"save_name": value})
    assert e.value.field == "save_name"


def test_override_beyond_the_float_range_is_refused_with_a_message():
    with pytest.raises(LaunchError, match="n_steps: expected an integer") as e:
        validate_overrides({"n_steps": 10**400})
    assert e.value.field == "n_steps"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("x" * 300 + ".py", "longer than 255 bytes"),
        ("é" * 200 + ".py", "longer than 255 bytes"),
        ("sub/" + "y" * 256 + "/train.py", "longer than 255 bytes"),
        ("\ud800.py", "not a valid file name"),
    ],
)
def test_config_name_no_file_can_have_is_refused(launcher, tmp_path, name, match):
    with pytest.raises(LaunchError, match=match) as e:
        resolve_config(tmp_path / "configs", name)
    assert e.value.field == "config"
    with pytest.raises(LaunchError, match=match):
        launcher.launch(name, "cpu", {})
    assert not (tmp_path / "runs").exists()


def test_config_path_the_system_cannot_look_at_is_refused(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "loop.py").symlink_to("loop.py")  # a symlink to itself: ELOOP
    with pytest.raises(LaunchError, match="config: cannot open 'loop.py'") as e:
        resolve_config(configs, "loop.py")
    assert e.value.field == "config"

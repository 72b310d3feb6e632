"""Several configs folders (``run.py dashboard --configs-dir A --configs-dir B``): the launch
form's options grouped by folder, and a launch that runs the chosen folder's file (issue 28,
point 6). The child is the stand-in trainer tests/app/fake_run.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from app import app_context, create_app
from app.launcher import Launcher
from app.security import LaunchError, config_options, resolve_config
from trainer.runs import read_launch, read_launcher_record

FAKE_RUN = Path(__file__).with_name("fake_run.py")


@pytest.fixture
def folders(tmp_path):
    """``lab/`` (a.py, b.py, a private _x.py) and ``shared/`` (a.py of its own, c.py)."""
    lab, shared = tmp_path / "lab", tmp_path / "shared"
    for folder, names in ((lab, ("a.py", "b.py", "_x.py")), (shared, ("a.py", "c.py"))):
        folder.mkdir()
        for name in names:
            (folder / name).write_text(f"# {folder.name}/{name}\n")
    return lab, shared


def test_one_folder_lists_its_names(folders):
    lab, _ = folders
    assert config_options([lab]) == [{"label": n, "value": n} for n in ("a.py", "b.py")]
    assert config_options(lab) == config_options([lab])


def test_several_folders_are_listed_by_folder(folders, tmp_path):
    lab, shared = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    assert config_options([lab, empty, shared]) == [
        {"label": str(lab), "value": f"folder:{lab}", "disabled": True},
        {"label": "lab/a.py", "value": str(lab / "a.py")},
        {"label": "lab/b.py", "value": str(lab / "b.py")},
        {"label": str(shared), "value": f"folder:{shared}", "disabled": True},
        {"label": "shared/a.py", "value": str(shared / "a.py")},
        {"label": "shared/c.py", "value": str(shared / "c.py")},
    ]


def test_folders_with_the_same_name_are_labelled_by_path(tmp_path):
    one, two = tmp_path / "x" / "configs", tmp_path / "y" / "configs"
    for d in (one, two):
        d.mkdir(parents=True)
        (d / "a.py").write_text("")
    labels = [o["label"] for o in config_options([one, two]) if not o.get("disabled")]
    assert labels == [f"{one}/a.py", f"{two}/a.py"]


def test_resolve_config_over_several_folders(folders, tmp_path):
    lab, shared = folders
    assert resolve_config([lab, shared], "a.py") == (lab / "a.py").resolve()  # the first wins
    assert resolve_config([lab, shared], "c.py") == (shared / "c.py").resolve()
    assert resolve_config([lab, shared], str(shared / "a.py")) == (shared / "a.py").resolve()
    with pytest.raises(LaunchError, match=r"in none of the configs folders \(.*lab, .*shared\)"):
        resolve_config([lab, shared], "missing.py")
    (tmp_path / "outside.py").write_text("")
    with pytest.raises(LaunchError, match="in none of the configs folders"):
        resolve_config([lab, shared], "../outside.py")
    with pytest.raises(LaunchError, match="is not a .py file"):
        (shared / "notes.txt").write_text("")
        resolve_config([lab, shared], str(shared / "notes.txt"))


def test_dashboard_takes_configs_dir_more_than_once(folders, tmp_path):
    import run

    args = run.build_parser().parse_args(
        ["dashboard", "--configs-dir", "lab", "--configs-dir", "shared"]
    )
    assert args.configs_dir == ["lab", "shared"]
    assert run.build_parser().parse_args(["dashboard"]).configs_dir is None  # examples
    lab, shared = folders
    app = create_app(tmp_path / "runs", [lab, shared], tmp_path / "data", start_launcher=False,
                     gpus=[])  # fmt: skip
    try:
        assert app_context(app).configs_dirs == (lab, shared)
        assert app_context(app).launcher.configs_dirs == (lab, shared)
    finally:
        app_context(app).close()


def test_a_launch_runs_the_chosen_folders_file(folders, tmp_path):
    lab, shared = folders
    runs = tmp_path / "runs"
    launcher = Launcher(runs, [lab, shared], tmp_path / "data", run_py=FAKE_RUN,
                        python=sys.executable, gpus=[], grace_s=3.0)  # fmt: skip
    chosen = next(o["value"] for o in config_options([lab, shared]) if o["label"] == "shared/a.py")
    try:
        name = launcher.launch(chosen, "cpu", {})
        run_dir = runs / name
        assert read_launch(run_dir)["config_path"] == str((shared / "a.py").resolve())
        deadline = time.monotonic() + 15
        while not (run_dir / "fake_argv.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        argv = json.loads((run_dir / "fake_argv.json").read_text())["argv"]
        assert argv[:2] == ["train", str((shared / "a.py").resolve())]
    finally:
        launcher.close()
        pid = getattr(read_launcher_record(runs / name), "pid", None)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


def test_the_config_dropdown_starts_on_the_demo_config_where_it_is_listed():
    from app.pages.experiments import default_config

    def option(label: str, disabled: bool = False) -> dict:
        return {"label": label, "value": f"/c/{label}", "disabled": disabled}

    assert default_config([option("a.py"), option("examples/demo_cnn3d.py")]) == (
        "/c/examples/demo_cnn3d.py"
    )
    assert default_config([option("a.py", disabled=True), option("b.py")]) == "/c/b.py"
    assert default_config([option("demo_cnn3d.py", disabled=True), option("b.py")]) == "/c/b.py"
    assert default_config([]) is None

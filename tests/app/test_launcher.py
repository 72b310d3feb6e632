"""Launcher with real child processes (the stand-in trainer tests/app/fake_run.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from app.launcher import Launcher
from app.security import LaunchError
from trainer.runs import read_launch, read_launcher_record, read_run_state, read_status

FAKE_RUN = Path(__file__).with_name("fake_run.py")

# a child that never gets to training: a config error written at once, or nothing at all
TINY_CHILD = """
import json, os, sys, time
from pathlib import Path

args = sys.argv[1:]
opts = dict(a.split("=", 1) for a in args if a.startswith("--") and "=" in a)
run_dir = Path(opts["--save-path"]) / opts["--save-name"]
if "CONFIG_ERROR" in Path(args[1]).read_text():
    tmp = run_dir / ".status.json.child"
    tmp.write_text(json.dumps({"state": "failed", "pid": os.getpid(), "heartbeat": time.time(),
                               "error": "config: lr: expected a number, got 'fast'"}))
    os.replace(tmp, run_dir / "status.json")
    sys.exit(1)
time.sleep(60)
"""


def wait_for(predicate, timeout=15.0, what="condition"):
    """Poll ``predicate`` until it is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def fake_info(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "fake_argv.json").read_text())
    except (OSError, ValueError):
        return None


def step(run_dir: Path) -> int:
    """The trainer's last step; 0 before its first status write."""
    status = read_status(run_dir)
    return status.step if status else 0


def state(run_dir: Path) -> str:
    return read_run_state(run_dir).state


@pytest.fixture
def dirs(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("# ordinary run\n")
    (configs / "stubborn.py").write_text("IGNORE_SIGTERM = True\n")
    (configs / "crash.py").write_text("CRASH = True\n")
    return tmp_path / "runs", configs, tmp_path / "data"


@pytest.fixture
def make_launcher(dirs):
    """Launcher factory; every process any of them started is killed at the end."""
    made: list[Launcher] = []

    def make(**kwargs) -> Launcher:
        kwargs = {
            "run_py": FAKE_RUN,
            "python": sys.executable,
            "gpus": [],
            "grace_s": 3.0,
            **kwargs,
        }
        launcher = Launcher(*dirs, **kwargs)
        made.append(launcher)
        return launcher

    yield make
    runs = dirs[0]
    for launcher in made:
        launcher.close()
    # every child leads its own process group; launcher.json names it from the moment it starts
    for run_dir in runs.glob("*") if runs.is_dir() else []:
        pid = getattr(read_launcher_record(run_dir), "pid", None)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    for launcher in made:
        for child in list(
            launcher.backends["local"].children.values()
        ):  # a stop thread may still reap
            child.proc.wait(timeout=10)


def test_launch_writes_everything_before_starting(make_launcher, dirs):
    runs, configs, _ = dirs
    launcher = make_launcher(max_cpu_runs=0)  # no slot: the run must stay queued
    name = launcher.launch("train.py", "cpu", {"n_steps": "50", "lr": "0.5", "save_name": "a b"})
    assert name == "a_b"
    run_dir = runs / name
    assert read_status(run_dir) is None  # only the trainer writes status.json
    assert (read_run_state(run_dir).state, read_run_state(run_dir).pid) == ("queued", None)
    launch = read_launch(run_dir)
    assert read_launcher_record(run_dir).queued == launch["created"]
    assert launch["config_path"] == str((configs / "train.py").resolve())
    assert (launch["device"], launch["overrides"]) == ("cpu", {"n_steps": 50, "lr": 0.5})
    assert launch["created"] > 0
    assert not (run_dir / "console.log").exists()
    assert launcher.queued_runs() == ["a_b"]


@pytest.mark.parametrize(
    "config, overrides, match",
    [
        ("../outside.py", {}, "outside the configs folder"),
        ("train.py", {"n_steps": -5}, "n_steps: -5 is out of range"),
        ("train.py", {"batch_size": "big"}, "batch_size: expected an integer"),
        ("train.py", {"save_name": "..."}, "save_name: .* no usable characters"),
    ],
)
def test_refused_launch_creates_nothing(make_launcher, dirs, config, overrides, match):
    launcher = make_launcher()
    with pytest.raises(LaunchError, match=match):
        launcher.launch(config, "cpu", overrides)
    assert not dirs[0].exists() or not any(p.is_dir() for p in dirs[0].iterdir())


def test_names_are_unique(make_launcher):
    launcher = make_launcher(max_cpu_runs=0)
    names = [launcher.launch("train.py", "cpu", {"save_name": "exp"}) for _ in range(3)]
    assert names == ["exp", "exp-2", "exp-3"]
    assert launcher.launch("train.py", "cpu") == "train"


def test_start_and_stop(make_launcher, dirs):
    runs, configs, _ = dirs
    launcher = make_launcher()
    name = launcher.launch("train.py", "cpu", {"n_steps": 1000, "batch_size": 4, "lr": 0.01})
    run_dir = runs / name
    info = wait_for(lambda: fake_info(run_dir), what="child start")
    assert info["argv"] == [
        "train",
        str((configs / "train.py").resolve()),
        f"--save-path={runs}",
        f"--save-name={name}",
        "--use-existing-dir",
        "--device",
        "cpu",
        "--n-steps",
        "1000",
        "--batch-size",
        "4",
        "--lr",
        "0.01",
    ]
    assert info["env"] == {"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    pid = read_launcher_record(run_dir).pid
    assert info["pgid"] == pid != os.getpgrp()  # its own process group
    wait_for(lambda: step(run_dir) >= 1, what="first step")
    assert state(run_dir) == "running"
    assert launcher.active_runs() == {name: "cpu"}

    assert launcher.stop(name) == "stopping"
    wait_for(lambda: state(run_dir) == "stopped", what="state stopped")
    wait_for(lambda: not group_alive(pid), what="process group gone")
    assert (run_dir / "console.log").read_text().startswith("$ ")
    with pytest.raises(LaunchError, match="is stopped; only queued or running runs stop"):
        launcher.stop(name)


def test_stop_escalates_to_sigkill(make_launcher, dirs):
    launcher = make_launcher(grace_s=0.5)
    name = launcher.launch("stubborn.py", "cpu")
    run_dir = dirs[0] / name
    wait_for(lambda: step(run_dir) >= 1, what="first step")
    pid = read_launcher_record(run_dir).pid
    launcher.stop(name)
    wait_for(lambda: not group_alive(pid), what="SIGKILL")
    wait_for(lambda: state(run_dir) == "stopped", what="state stopped")


def test_child_dying_without_final_state_is_failed(make_launcher, dirs):
    launcher = make_launcher()
    name = launcher.launch("crash.py", "cpu")
    run_dir = dirs[0] / name
    wait_for(lambda: launcher.tick() is not None and state(run_dir) == "failed", what="failed")
    error = read_run_state(run_dir).error
    assert read_run_state(run_dir).exit_code == 3
    assert "exited with code 3 without writing a final state: crashing on purpose" in error
    assert str(run_dir / "console.log") in error
    assert "crashing on purpose" in (run_dir / "console.log").read_text()


def test_stop_queued_run(make_launcher, dirs):
    launcher = make_launcher(max_cpu_runs=0)
    name = launcher.launch("train.py", "cpu")
    assert launcher.stop(name) == "stopped"
    assert state(dirs[0] / name) == "stopped"
    assert launcher.queued_runs() == []


def test_queue_waits_for_a_free_slot(make_launcher, dirs):
    runs = dirs[0]
    launcher = make_launcher(max_cpu_runs=1)
    first = launcher.launch("train.py", "cpu", {"save_name": "first"})
    second = launcher.launch("train.py", "auto", {"save_name": "second"})
    wait_for(lambda: state(runs / first) == "running" and fake_info(runs / first), what="first")
    launcher.tick()
    assert state(runs / second) == "queued"
    assert fake_info(runs / second) is None
    assert launcher.queued_runs() == [second]

    launcher.start()  # the scheduler thread starts the second once the first is gone
    launcher.stop(first)
    wait_for(lambda: fake_info(runs / second), what="second start")
    wait_for(lambda: state(runs / second) == "running", what="second running")
    assert state(runs / first) == "stopped"
    launcher.stop(second)
    wait_for(lambda: state(runs / second) == "stopped", what="second stopped")


def test_gpu_slots_and_device_mapping(make_launcher, dirs):
    runs = dirs[0]
    launcher = make_launcher(gpus=[0, 1])
    names = [launcher.launch("train.py", "auto") for _ in range(3)]
    pinned = launcher.launch("train.py", "cuda:1")
    wait_for(lambda: fake_info(runs / names[0]) and fake_info(runs / names[1]), what="two starts")
    envs = [fake_info(runs / n)["env"]["CUDA_VISIBLE_DEVICES"] for n in names[:2]]
    assert envs == ["0", "1"]
    assert all(fake_info(runs / n)["argv"][-1] == "cuda:0" for n in names[:2])
    assert launcher.active_runs() == {names[0]: "cuda:0", names[1]: "cuda:1"}
    assert launcher.queued_runs() == [names[2], pinned]
    with pytest.raises(LaunchError, match="device: 'cuda:2' is not available"):
        launcher.launch("train.py", "cuda:2")

    launcher.stop(names[1])  # frees GPU 1: the oldest waiting run takes it
    wait_for(lambda: launcher.tick() is not None and fake_info(runs / names[2]), what="third")
    assert fake_info(runs / names[2])["env"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert state(runs / pinned) == "queued"


def test_reattach_after_restart(make_launcher, dirs):
    runs = dirs[0]
    old = make_launcher()
    running = old.launch("train.py", "cpu", {"save_name": "running"})
    wait_for(lambda: step(runs / running) >= 1, what="running")
    old_full = make_launcher(max_cpu_runs=0)
    waiting = old_full.launch("train.py", "cpu", {"save_name": "waiting"})
    old.close()
    pid = read_launcher_record(runs / running).pid
    # the old dashboard is gone; its orphaned child is reaped by init, not by the new one
    orphan = old.backends["local"].children.pop(running).proc
    threading.Thread(target=orphan.wait, daemon=True).start()

    new = make_launcher(max_cpu_runs=1)  # a restarted dashboard
    assert new.tick() == []  # the one CPU slot is taken by the re-attached run
    assert new.active_runs() == {"running": "cpu"}
    assert new.queued_runs() == [waiting]
    assert read_launcher_record(runs / running).pid == pid  # not started twice

    new.stop(running)
    wait_for(lambda: not group_alive(pid), what="re-attached run stopped")
    wait_for(lambda: state(runs / running) == "stopped", what="state stopped")
    wait_for(lambda: new.tick() == [waiting] or fake_info(runs / waiting), what="queued start")
    wait_for(lambda: state(runs / waiting) == "running", what="waiting running")


def test_delete_rules(make_launcher, dirs, tmp_path):
    runs = dirs[0]
    launcher = make_launcher()
    name = launcher.launch("train.py", "cpu")
    wait_for(lambda: state(runs / name) == "running", what="running")
    with pytest.raises(LaunchError, match="is running; only .* runs delete"):
        launcher.delete(name)
    launcher.stop(name)
    wait_for(
        lambda: state(runs / name) == "stopped" and not launcher.backends["local"].children,
        what="stopped",
    )
    launcher.tick()
    launcher.delete(name)
    assert not (runs / name).exists()

    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "status.json").write_text('{"state": "finished"}')
    (runs / "link").symlink_to(outside)
    for bad, match in [
        ("../precious", "run name '../precious' is refused"),
        ("link", "'link' is not a run directory"),
        ("missing", "'missing' is not a run directory"),
    ]:
        with pytest.raises(LaunchError, match=match):
            launcher.delete(bad)
    assert (outside / "status.json").exists()

    queued = make_launcher(max_cpu_runs=0).launch("train.py", "cpu")
    with pytest.raises(LaunchError, match="is queued"):
        launcher.delete(queued)


def test_resume(make_launcher, dirs):
    runs = dirs[0]
    launcher = make_launcher()
    name = launcher.launch("train.py", "cpu", {"n_steps": 500, "batch_size": 2})
    run_dir = runs / name
    wait_for(lambda: step(run_dir) >= 1, what="first step")
    with pytest.raises(LaunchError, match="is running; only .* runs resume"):
        launcher.resume(name)
    launcher.stop(name)
    wait_for(
        lambda: state(run_dir) == "stopped" and not launcher.backends["local"].children,
        what="stopped",
    )
    with pytest.raises(LaunchError, match="no snapshot"):
        launcher.resume(name)

    (run_dir / "snapshots").mkdir()
    (run_dir / "snapshots" / "LAST.pt").write_bytes(b"snapshot")
    with pytest.raises(LaunchError, match="no config copy"):
        launcher.resume(name)
    (run_dir / "0-train.py").write_text("# copy\n")
    step_before = read_status(run_dir).step
    (run_dir / "fake_argv.json").unlink(missing_ok=True)
    assert launcher.resume(name) == name
    info = wait_for(lambda: fake_info(run_dir), what="resumed start")
    assert info["argv"] == [
        "train",
        str(run_dir / "0-train.py"),
        f"--resume={run_dir}",
        "--device",
        "cpu",
        "--n-steps",
        "500",
        "--batch-size",
        "2",
    ]
    assert read_launch(run_dir)["mode"] == "resume"
    wait_for(lambda: step(run_dir) > step_before, what="steps continue")
    launcher.stop(name)
    wait_for(lambda: state(run_dir) == "stopped", what="stopped again")


def test_demo_mode_launches_the_demo_once(dirs):
    from app import app_context, create_app

    runs, configs, data = dirs
    (configs / "demo_cnn3d.py").write_text("# demo stand-in\n")
    apps = []
    try:
        for _ in range(2):  # a second start finds the first demo run active
            apps.append(create_app(runs, configs, data, demo=True, run_py=FAKE_RUN, gpus=[],
                                   max_cpu_runs=0, start_launcher=False))  # fmt: skip
        assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == ["demo_cnn3d"]
        assert state(runs / "demo_cnn3d") == "queued"
    finally:
        for app in apps:
            app_context(app).close()


def test_config_swapped_for_a_symlink_while_queued_is_refused(make_launcher, dirs, tmp_path):
    runs, configs, _ = dirs
    (tmp_path / "evil.py").write_text("# outside\n")
    (configs / "later.py").write_text("# fine when queued\n")
    launcher = make_launcher(max_cpu_runs=0)
    name = launcher.launch("later.py", "cpu")
    (configs / "later.py").unlink()
    (configs / "later.py").symlink_to(tmp_path / "evil.py")
    launcher.max_cpu_runs = 1
    assert launcher.tick() == []
    shown = read_run_state(runs / name)
    assert shown.state == "failed"
    assert (
        "could not start: config: " in shown.error and "outside the configs folder" in shown.error
    )
    assert not (runs / name / "console.log").exists()


def test_early_child_error_is_kept(make_launcher, dirs):
    runs, configs, _ = dirs
    (configs / "bad.py").write_text("CONFIG_ERROR = True\n")
    child = runs.parent / "tiny_child.py"
    child.write_text(TINY_CHILD)
    launcher = make_launcher(run_py=child, max_cpu_runs=4)
    names = [launcher.launch("bad.py", "cpu") for _ in range(4)]
    wait_for(
        lambda: launcher.tick() is not None and not launcher.backends["local"].children,
        what="reaped",
    )
    for name in names:
        status = read_status(runs / name)
        assert (status.state, status.error) == (
            "failed",
            "config: lr: expected a number, got 'fast'",
        )
        assert sorted(p.name for p in (runs / name).iterdir()) == [
            "console.log",
            "launch.json",
            "launcher.json",
            "status.json",
        ]


def test_launcher_names_the_pid_until_the_child_writes(make_launcher, dirs):
    runs, configs, _ = dirs
    (configs / "quiet.py").write_text("# writes no status\n")
    child = runs.parent / "tiny_child.py"
    child.write_text(TINY_CHILD)
    launcher = make_launcher(run_py=child)
    name = launcher.launch("quiet.py", "cpu")
    shown = read_run_state(runs / name)
    assert (shown.state, shown.pid) == ("running", read_launcher_record(runs / name).pid)
    assert shown.device == "cpu" and read_status(runs / name) is None
    assert launcher.active_runs() == {name: "cpu"}
    launcher.stop(name)
    wait_for(lambda: state(runs / name) == "stopped", what="state stopped")


def test_one_tick_fills_every_free_slot_once(make_launcher, dirs):
    runs = dirs[0]
    launcher = make_launcher(max_cpu_runs=0)
    names = [launcher.launch("train.py", "cpu") for _ in range(3)]
    launcher.max_cpu_runs = 2
    assert launcher.tick() == names[:2]
    assert launcher.tick() == []
    assert launcher.queued_runs() == names[2:]
    assert [state(runs / n) for n in names] == ["running", "running", "queued"]


def test_overview_is_the_queries_in_one(make_launcher, dirs):
    runs = dirs[0]
    launcher = make_launcher(max_cpu_runs=1)
    running = launcher.launch("train.py", "cpu")
    waiting = launcher.launch("train.py", "cpu")
    cli = runs / "from_the_shell"  # started without the launcher: no launch.json
    cli.mkdir()
    (cli / "status.json").write_text(
        json.dumps({"state": "running", "pid": os.getpid(), "heartbeat": time.time()})
    )
    (runs / "finished").mkdir()
    (runs / "finished" / "status.json").write_text('{"state": "finished", "pid": 1}')
    overview = launcher.overview()
    assert overview.active == launcher.active_runs() == {running: "cpu"}
    assert overview.queued == launcher.queued_runs() == [waiting]
    assert overview.pids == {
        read_launcher_record(runs / running).pid: running,
        os.getpid(): cli.name,
    }

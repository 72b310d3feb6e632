"""Slurm backend: parsers, resources and batch scripts, then a real cluster (its one-node default partition).

The first half needs no Slurm. The second half starts a throw-away cluster on localhost
with tests/slurm/start_cluster.sh (which installs Debian's slurm-wlm and munge if missing)
once per session, runs the real trainer (``run.py train`` on the demo config) and the
stand-in child (fake_run.py) through it, and stops the cluster at the end. Where the
packages cannot be installed or the daemons cannot start here, those tests skip, saying
what failed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.launcher import Launcher
from app.security import LaunchError
from app.slurm import (
    Job,
    Resources,
    Slurm,
    SlurmError,
    batch_script,
    config_section,
    parse_sacct,
    parse_sbatch,
    parse_squeue,
    resources_from,
    run_state,
    time_limit_s,
)
from trainer.runs import (
    BATCH_SCRIPT_FILE,
    FINAL_STATES,
    read_launch,
    read_launcher_record,
    read_run_state,
    read_status,
)

REPO = Path(__file__).resolve().parents[2]
FAKE_RUN = Path(__file__).with_name("fake_run.py")


# ---- states and parsers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "slurm_state, expected",
    [
        ("PENDING", "queued"),
        ("REQUEUE_HOLD", "queued"),
        ("CONFIGURING", "queued"),
        ("RUNNING", "running"),
        ("COMPLETING", "running"),
        ("SUSPENDED", "running"),
        ("COMPLETED", "finished"),
        ("CANCELLED", "stopped"),
        ("CANCELLED by 1000", "stopped"),
        ("FAILED", "failed"),
        ("TIMEOUT", "failed"),
        ("OUT_OF_MEMORY", "failed"),
        ("NODE_FAIL", "failed"),
        ("running", "running"),
        ("RUNNING+", "running"),
        ("SOMETHING_NEW", None),
        ("", None),
    ],
)
def test_run_state(slurm_state, expected):
    assert run_state(slurm_state) == expected


@pytest.mark.parametrize(
    "stdout, job_id",
    [("123\n", "123"), ("4567;cluster_a\n", "4567"), ("warning: x\n89\n", "89"), ("12_3", "12_3")],
)
def test_parse_sbatch(stdout, job_id):
    assert parse_sbatch(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "Submitted batch job\n", "sbatch: error: x\n"])
def test_parse_sbatch_without_job_id(stdout):
    with pytest.raises(SlurmError, match="sbatch printed no job id"):
        parse_sbatch(stdout)


def test_parse_squeue_keeps_good_lines_and_reason_with_separators():
    out = (
        "17|PENDING|Resources\n"
        "18|RUNNING|None\n"
        "garbage line\n"
        "19|PENDING|(ReqNodeNotAvail, UnavailableNodes:n[1-2]|odd)\n"
        "x|RUNNING|None\n"
        "20||None\n"
        "21_4|completed|\n"
    )
    assert parse_squeue(out) == {
        "17": Job("17", "PENDING", "Resources"),
        "18": Job("18", "RUNNING", None),
        "19": Job("19", "PENDING", "ReqNodeNotAvail, UnavailableNodes:n[1-2]|odd"),
        "21_4": Job("21_4", "COMPLETED", None),
    }


def test_parse_sacct_skips_steps_and_keeps_last_attempt():
    out = (
        "30|CANCELLED by 0|None|0:15\n"
        "30.batch|CANCELLED|None|0:15\n"
        "31|NODE_FAIL|None|1:0\n"
        "31|COMPLETED|None|0:0\n"
        "32|FAILED|NonZeroExitCode|3:0\n"
        "bad\n"
    )
    assert parse_sacct(out) == {
        "30": Job("30", "CANCELLED", None, "0:15", "sacct"),
        "31": Job("31", "COMPLETED", None, "0:0", "sacct"),
        "32": Job("32", "FAILED", "NonZeroExitCode", "3:0", "sacct"),
    }


# ---- resources -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("90", 5400),
        ("5:30", 330),
        ("4:00:00", 14400),
        ("1-12", 129600),
        ("2-0:30", 174600),
        ("1-00:00:10", 86410),
        ("0", None),
        ("4h", None),
        ("1:2:3:4", None),
        ("-5", None),
        ("", None),
    ],
)
def test_time_limit_s(text, seconds):
    assert time_limit_s(text) == seconds


def test_resources_precedence_form_config_defaults():
    r = resources_from(
        form={"gpus": "2", "time": "", "partition": None},
        config={"partition": "gpu", "time": "1:00:00", "mem": "64g"},
        defaults={"partition": "cpu", "account": "lab", "cpus": 4, "time": "30"},
    )
    assert r == Resources(partition="gpu", account="lab", gpus=2, cpus=4, mem="64G", time="1:00:00")


@pytest.mark.parametrize(
    "form, match",
    [
        ({"partition": "gpu\n#SBATCH --uid=0"}, "partition: .* is not a Slurm name"),
        ({"partition": "a b"}, "partition: 'a b' is not a Slurm name"),
        ({"account": "$(id)"}, "account: .* is not a Slurm name"),
        ({"gpus": "-1"}, "gpus: expected a whole number 0 to 64"),
        ({"gpus": 65}, "gpus: 65 is out of range"),
        ({"gpus": True}, "gpus: expected a whole number"),
        ({"cpus": "0"}, "cpus: 0 is out of range; expected 1 to 1024"),
        ({"cpus": "2.5"}, "cpus: expected a whole number"),
        ({"mem": "lots"}, "mem: 'lots'; expected megabytes or e.g. 16G"),
        ({"mem": "0G"}, "mem: '0G'"),
        ({"time": "forever"}, "time: 'forever'; expected minutes, H:MM:SS"),
        ({"qos": "high"}, "qos: unknown Slurm resource; allowed: partition, account"),
    ],
)
def test_bad_resources_are_refused_with_the_field(form, match):
    with pytest.raises(LaunchError, match=match) as info:
        resources_from(form)
    assert info.value.field == next(iter(form))


@pytest.mark.parametrize(
    "text, section",
    [
        ("n_steps = 10\n", {}),
        (
            "slurm = dict(partition='gpu', gpus=1, time='4:00:00')\n",
            {"partition": "gpu", "gpus": 1, "time": "4:00:00"},
        ),  # fmt: skip
        ("import os\nslurm = {'mem': '32G'}\nx = os.getcwd()\n", {"mem": "32G"}),
        ("if True:\n    slurm = {'gpus': 9}\n", {}),  # only top-level assignments count
    ],
)
def test_config_section_is_read_without_running_the_config(tmp_path, text, section):
    config = tmp_path / "c.py"
    config.write_text("raise SystemExit('must not run')\n" + text)
    assert config_section(config) == section


@pytest.mark.parametrize(
    "text",
    ["slurm = dict(partition=os.environ['P'])\n", "slurm = ['gpu']\n", "slurm = dict(**x)\n"],
)
def test_config_section_must_be_literal(tmp_path, text):
    config = tmp_path / "c.py"
    config.write_text(text)
    with pytest.raises(LaunchError, match=r"'slurm' must be a dict of plain values"):
        config_section(config)


# ---- batch script --------------------------------------------------------------------------


def test_batch_script_lists_resources_and_signals_before_the_limit():
    text = batch_script(
        ["python", "run.py", "train", "c.py"],
        Resources(partition="gpu", account="lab", gpus=2, cpus=8, mem="32G", time="2:00:00"),
        env={"VOXELBOARD_DATA_DIR": "/data dir"},
        comment="run x",
    )
    lines = text.splitlines()
    assert lines[:2] == ["#!/bin/bash", "# run x"]
    sbatch = [x for x in lines if x.startswith("#SBATCH")]
    assert sbatch == [
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --gpus=2",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH --time=2:00:00",
        "#SBATCH --signal=B:TERM@120",
    ]
    assert "export VOXELBOARD_DATA_DIR='/data dir'" in lines
    assert lines[-1] == "exec python run.py train c.py"


def test_batch_script_leaves_unset_resources_to_the_cluster():
    text = batch_script(["true"], Resources(time="5"))
    assert [x for x in text.splitlines() if x.startswith("#SBATCH")] == ["#SBATCH --time=5"]


def test_batch_script_passes_odd_arguments_through_bash_unchanged(tmp_path):
    odd = ["a b", "$(touch pwned)", "it's", "semi;colon", "`x`", "new\nline", ""]
    argv = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", *odd]
    script = tmp_path / "job.sh"
    script.write_text(batch_script(argv, Resources(), env={"X": "$(touch pwned2)"}))
    out = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.splitlines()
    import json

    assert json.loads(out[-1]) == odd
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


# ---- launcher without a cluster ------------------------------------------------------------


@pytest.fixture
def dirs(tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("STEP_S = 0.2\n")
    (configs / "crash.py").write_text("CRASH = True\n")
    (configs / "stubborn.py").write_text("IGNORE_SIGTERM = True\n")
    (configs / "sectioned.py").write_text("slurm = dict(partition='nope', time='oops')\n")
    return tmp_path / "runs", configs, tmp_path / "data"


def test_local_backend_refuses_slurm_resources(dirs):
    launcher = Launcher(*dirs, run_py=FAKE_RUN, gpus=[], max_cpu_runs=0)
    with pytest.raises(LaunchError, match="partition: Slurm resources need .*--backend slurm"):
        launcher.launch("train.py", "cpu", {}, resources={"partition": "gpu", "gpus": ""})
    assert not dirs[0].exists() or not any(dirs[0].iterdir())


@pytest.mark.parametrize(
    "config, device, resources, match",
    [
        ("sectioned.py", "auto", {}, "time: 'oops'"),
        ("train.py", "cuda:0", {}, "device: 'cuda:0'; with Slurm choose auto or cpu"),
        ("train.py", "cpu", {"gpus": 1}, "device: cpu, but the job asks for 1 GPU"),
        ("train.py", "auto", {"mem": "x"}, "mem: 'x'"),
    ],
)
def test_refused_slurm_launch_writes_nothing(dirs, config, device, resources, match):
    launcher = Launcher(*dirs, backend="slurm", run_py=FAKE_RUN)
    with pytest.raises(LaunchError, match=match):
        launcher.launch(config, device, {}, resources=resources)
    assert not dirs[0].exists() or not any(p for p in dirs[0].iterdir() if p.is_dir())


def test_slurm_launch_without_slurm_commands_says_so(dirs):
    slurm = Slurm(env={"PATH": str(dirs[1])})
    launcher = Launcher(*dirs, backend="slurm", run_py=FAKE_RUN, slurm=slurm)
    with pytest.raises(LaunchError, match="backend: Slurm commands not found: sbatch"):
        launcher.launch("train.py")


def test_bad_dashboard_defaults_and_backend_are_refused(dirs):
    with pytest.raises(LaunchError, match="cpus: expected a whole number"):
        Launcher(*dirs, backend="slurm", slurm_defaults={"cpus": "many"})
    with pytest.raises(ValueError, match="backend: 'k8s' is not one of local, slurm"):
        Launcher(*dirs, backend="k8s")


# ---- a real cluster ------------------------------------------------------------------------


@pytest.fixture
def make_launcher(tmp_path, cluster, demo_data_dir):
    made: list[Launcher] = []

    def make(configs_dir: Path = REPO / "examples", **kwargs) -> Launcher:
        kwargs = {
            "backend": "slurm",
            "slurm": cluster.slurm,
            "slurm_poll_s": 0.3,
            "grace_s": 20.0,
            "slurm_defaults": {"partition": "debug", "time": "15"},
            **kwargs,
        }
        launcher = Launcher(tmp_path / "runs", configs_dir, demo_data_dir, **kwargs)
        made.append(launcher)
        return launcher

    yield make
    for launcher in made:
        for info in launcher.jobs().values():
            try:
                cluster.slurm.cancel(info["job_id"])
            except SlurmError:
                pass  # already ended


#: the deadlines below are what a quiet machine needs; two test workers on two cores (and
#: Slurm's own scheduling passes) can make a job start several times later: these only bound
#: how long a broken cluster hangs the test, they time nothing
SLACK = 3


def poll(launcher: Launcher, predicate, timeout: float, what: str):
    """Run the launcher's scheduler until ``predicate()`` is truthy (fail after ``SLACK``
    times ``timeout``)."""
    timeout *= SLACK
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launcher.tick()
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ended_job(launcher: Launcher, cluster, job_id: str) -> Job:
    """The job once Slurm says it ended (its process may outlive the final status write)."""

    def ended() -> Job | None:
        job = cluster.squeue(job_id)
        return job if job is not None and job.run_state not in ("queued", "running") else None

    return poll(launcher, ended, 40, f"Slurm job {job_id} to end")


def state_of(run_dir: Path) -> str:
    return read_run_state(run_dir).state


def slurm_entry(run_dir: Path) -> dict:
    """The job as the launcher last recorded it in launcher.json."""
    record = read_launcher_record(run_dir)
    if record is None:
        return {}
    return {"job_id": record.job_id, "state": record.slurm_state, "reason": record.slurm_reason}


def step_of(run_dir: Path) -> int:
    status = read_status(run_dir)
    return status.step if status else 0


@pytest.mark.slow
def test_demo_run_queued_running_finished_and_a_second_run_stopped(make_launcher, cluster):
    from trainer.synthetic import ensure_demo_data

    launcher = make_launcher()
    ensure_demo_data(launcher.data_dir)  # not inside the job: it would count as training time
    runs = launcher.runs_dir

    first = launcher.launch("demo_cnn3d.py", overrides={"n_steps": 30}, resources={"cpus": 2})
    job = read_launcher_record(runs / first).job_id
    seen = [state_of(runs / first)]
    assert seen == ["queued"] and slurm_entry(runs / first)["job_id"] == job
    script = (runs / first / BATCH_SCRIPT_FILE).read_text()
    assert "#SBATCH --partition=debug" in script and "#SBATCH --cpus-per-task=2" in script
    assert "--n-steps 30" in script and "--use-existing-dir" in script

    def track() -> str:
        state = state_of(runs / first)
        if state != seen[-1]:
            seen.append(state)
        return state

    poll(launcher, lambda: track() != "queued", 60, "the demo run to start")

    # the first job holds both CPUs, so the second waits in Slurm's queue and says why
    second = launcher.launch("demo_cnn3d.py", "auto", {"n_steps": 100000}, {"cpus": "2"})
    second_job = read_launcher_record(runs / second).job_id
    pending = poll(
        launcher,
        lambda: (
            slurm_entry(runs / second).get("state") == "PENDING"
            and slurm_entry(runs / second).get("reason")
        ),
        30,
        "the second job to be pending with a reason",
    )
    assert pending in ("Resources", "Priority")
    assert state_of(runs / second) == "queued"
    assert launcher.queued_runs() == [second]
    assert launcher.jobs()[second] == {
        "job_id": second_job,
        "state": "PENDING",
        "reason": pending,
    }

    poll(launcher, lambda: track() in FINAL_STATES, 150, "the demo run to finish")
    assert seen == ["queued", "running", "finished"]
    status = read_status(runs / first)
    assert (status.step, status.n_steps, status.error) == (30, 30, None)
    assert read_launcher_record(runs / first).job_id == job
    assert "slurm" not in status.extra  # status.json is the trainer's alone
    assert (runs / first / "history").is_dir()
    assert f"Slurm job {job} on" in (runs / first / "console.log").read_text()
    assert ended_job(launcher, cluster, job).state == "COMPLETED"

    # the second job starts once the first is done; the trainer takes over status.json
    poll(
        launcher,
        lambda: step_of(runs / second) >= 1,
        90,
        "the second run to train",
    )
    assert state_of(runs / second) == "running"
    assert cluster.squeue(second_job).state == "RUNNING"

    # a third run, pending behind the second, is cancelled while it waits
    third = launcher.launch("demo_cnn3d.py", overrides={"n_steps": 50}, resources={"cpus": 2})
    third_job = read_launcher_record(runs / third).job_id
    poll(launcher, lambda: slurm_entry(runs / third).get("state") == "PENDING", 30, "pending")
    assert launcher.stop(third) == "stopped"
    assert state_of(runs / third) == "stopped"
    assert ended_job(launcher, cluster, third_job).state == "CANCELLED"

    # the running one gets SIGTERM through scancel: the trainer saves, writes stopped, exits
    assert launcher.stop(second) == "stopping"
    poll(launcher, lambda: state_of(runs / second) in FINAL_STATES, 60, "the stop")
    status = read_status(runs / second)
    assert status.state == "stopped", status.error
    assert 1 <= status.step < 100000
    assert ended_job(launcher, cluster, second_job).state in ("COMPLETED", "CANCELLED")

    # resuming goes through Slurm too: a new job, a new script, the same run directory
    assert launcher.resume(first) == first
    launch = read_launch(runs / first)
    assert (launch["mode"], launch["backend"]) == ("resume", "slurm")
    new_job = read_launcher_record(runs / first).job_id
    assert new_job != job
    assert f"--resume={runs / first}" in (runs / first / BATCH_SCRIPT_FILE).read_text()
    poll(launcher, lambda: state_of(runs / first) == "finished", 90, "the resumed run to end")
    assert read_launcher_record(runs / first).job_id == new_job


@pytest.mark.slow
def test_a_job_that_dies_without_a_final_state_gets_slurms(make_launcher, cluster, dirs):
    _, configs, _ = dirs
    launcher = make_launcher(configs, run_py=FAKE_RUN, slurm_defaults={"cpus": 1})
    name = launcher.launch("crash.py", overrides={"n_steps": 5})
    job = read_launcher_record(launcher.runs_dir / name).job_id
    poll(launcher, lambda: state_of(launcher.runs_dir / name) == "failed", 60, "the failure")
    error = read_run_state(launcher.runs_dir / name).error
    assert f"Slurm job {job} ended FAILED" in error
    assert "exit" in error or "NonZeroExitCode" in error
    assert "crashing on purpose" in error  # the last line of console.log


@pytest.mark.slow
def test_a_job_cancelled_outside_the_dashboard_is_marked_stopped(make_launcher, cluster, dirs):
    _, configs, _ = dirs
    launcher = make_launcher(configs, run_py=FAKE_RUN, slurm_defaults={"cpus": 1})
    name = launcher.launch("stubborn.py", overrides={"n_steps": 10000})
    run_dir = launcher.runs_dir / name
    job = read_launcher_record(run_dir).job_id
    poll(launcher, lambda: step_of(run_dir) >= 2, 60, "the stand-in to step")
    # plain scancel: SIGTERM (ignored by this child), SIGKILL after KillWait; the child never
    # writes a final state, so the launcher writes the job's
    cluster.slurm.cancel(job)
    poll(launcher, lambda: state_of(run_dir) in FINAL_STATES, 60, "the job's end")
    shown = read_run_state(run_dir)
    assert (shown.state, shown.error) == ("stopped", None)
    assert slurm_entry(run_dir) == {"job_id": job, "state": "CANCELLED", "reason": None}
    assert shown.ended > shown.started


# ---- the experiments page ------------------------------------------------------------------


def _find(component, id_: str):
    """The component with this id in a Dash layout tree, or ``None``."""
    if getattr(component, "id", None) == id_:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list | tuple) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            found = _find(child, id_)
            if found is not None:
                return found
    return None


@pytest.mark.parametrize("backend, shown", [("slurm", True), ("local", False)])
def test_launch_form_shows_the_backends_resource_fields(dirs, backend, shown):
    from app import app_context, create_app

    app = create_app(
        *dirs, backend=backend, slurm_defaults={"partition": "debug"}, start_launcher=False
    )
    try:
        with app.server.test_request_context("/"):
            layout = sys.modules["app.pages.experiments"].layout()
    finally:
        app_context(app).close()
    assert _find(layout, "exp-resource-fields").hidden is not shown
    partition = _find(layout, {"type": "exp-resource", "index": "partition"})
    if shown:
        assert partition.placeholder == "default debug"
        account = _find(layout, {"type": "exp-resource", "index": "account"})
        assert account.placeholder == "config / cluster default"
    else:  # the local backend takes no resources: the form has no such field
        assert partition is None


def test_the_backends_check_the_forms_resources(dirs):
    slurm = Launcher(*dirs, backend="slurm", run_py=FAKE_RUN).runner
    form = {"partition": " gpu ", "gpus": "2", "mem": "", "time": None, "other": "x"}
    assert slurm.resources_from_form(form) == {"partition": "gpu", "gpus": 2}
    with pytest.raises(LaunchError, match="cpus: expected a whole number") as e:
        slurm.resources_from_form({"cpus": "many"})
    assert e.value.field == "cpus"
    local = Launcher(*dirs, run_py=FAKE_RUN, gpus=[]).runner
    assert local.form_fields() == {} and local.resources_from_form(form) is None


def test_table_shows_job_id_reason_and_trusts_slurm_over_a_foreign_pid(dirs):
    from app import app_context, create_app

    app = create_app(*dirs, backend="slurm", start_launcher=False)
    app_context(app).close()
    from app.runs_table import table_rows

    base = dict(config="c.py", step=0, n_steps=10, progress=0.0, eta_s=None, it_per_s=None,
                train_loss=None, valid_loss=None, train_err=None, valid_err=None, device=None,
                started=None, duration_s=None, badge=None, error=None)  # fmt: skip
    runs = [
        {**base, "name": "a", "state": "queued"},
        {**base, "name": "b", "state": "lost"},
        {**base, "name": "c", "state": "lost"},
        {**base, "name": "d", "state": "finished"},
    ]
    jobs = {
        "a": {"job_id": "11", "state": "PENDING", "reason": "Priority"},
        "b": {"job_id": "12", "state": "RUNNING", "reason": None},
        "c": {"job_id": "13", "state": None, "reason": None},
    }
    rows = {r["name"]: r for r in table_rows(runs, jobs)}
    assert [(rows[n]["job"], rows[n]["state"]) for n in "abcd"] == [
        ("11", "queued"),
        ("12", "running"),
        ("13", "lost"),
        ("", "finished"),
    ]
    assert rows["a"]["issue"] == "Slurm: PENDING (Priority)"
    assert rows["b"]["issue"] == ""


SWEEP_CONFIG = """
import os
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ["VOXELBOARD_DATA_DIR"])

def create_model():
    return CNN3D(n_classes=2, in_channels=1)

data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
n_steps = 6
history_freq = 3
monitor_batch_size = 1
batch_size = 1
optimiser = "Adam"
optimiser_params = dict(lr=2e-3)
plot_on = False
sweep = dict(method="grid", max_parallel=2, prune=True, startup_runs=5,
             parameters=dict(lr=[1e-3, 3e-3]))
"""


@pytest.mark.slow
def test_a_sweep_runs_its_trials_as_slurm_jobs(make_launcher, cluster, tmp_path, monkeypatch):
    from app import sweeper
    from trainer.runs.sweeps import read_trials
    from trainer.synthetic import ensure_demo_data

    launcher = make_launcher()
    ensure_demo_data(launcher.data_dir)
    config = tmp_path / "tiny_sweep.py"
    config.write_text(SWEEP_CONFIG)
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(launcher.data_dir))
    sweep_id = sweeper.create_sweep(
        launcher.runs_dir, config, backend="slurm", resources={"cpus": 1}
    )
    folder = sweeper.sweep_folder(launcher.runs_dir, sweep_id)
    local = Launcher(launcher.runs_dir, tmp_path, launcher.data_dir, gpus=[])
    local.drive_sweeps()
    assert read_trials(folder).trials == []  # a local launcher leaves a Slurm sweep alone

    poll(launcher, lambda: read_trials(folder).state != "running", 240, "the Slurm sweep to end")
    trials = read_trials(folder)
    assert trials.state == "finished" and len(trials.trials) == 2
    for entry in trials.trials:
        record = read_launcher_record(launcher.runs_dir / entry.run)
        assert record.backend == "slurm" and record.job_id is not None
        assert entry.state == "finished" and entry.told == "complete" and entry.value is not None
    assert {t.params["lr"] for t in trials.trials} == {1e-3, 3e-3}
    # the trainers in the jobs reported each history row to the sweep's pruner
    from trainer.runs.sweeps import read_sweep, study_path
    from trainer.sweeps import open_study

    study = open_study(study_path(folder), sweep_id, sweeper.spec_of(read_sweep(folder)))
    assert [sorted(t.intermediate_values) for t in study.trials] == [[0, 3, 5], [0, 3, 5]]

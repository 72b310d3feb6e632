"""Slurm jobs across nodes: the batch script a ``nodes`` > 1 launch writes, and what it runs.

The script is run by bash with stand-ins for ``srun`` (one task per node, in turn, with
``SLURM_NODEID`` set as srun sets it) and ``scontrol``; and a real job trains across the test
cluster's two-node partition (tests/slurm/start_cluster.sh: three slurmd on this host).
tests/trainer/test_nodes.py trains across two rendezvousing "nodes" by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.launcher import Launcher
from app.security import LaunchError
from app.slurm import Resources, Slurm, batch_script, resources_from
from trainer.runs import BATCH_SCRIPT_FILE

sys.path.insert(0, str(Path(__file__).parent))
from tiny_config import TINY  # noqa: E402

FAKE_RUN = Path(__file__).with_name("fake_run.py")


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fake_bin(tmp_path) -> Path:
    """sbatch, squeue, scancel, scontrol and a two-node srun that only pretend."""
    folder = tmp_path / "bin"
    folder.mkdir()
    _tool(folder, "sbatch", "echo 4242\n")
    _tool(folder, "squeue", "exit 0\n")
    _tool(folder, "scancel", "exit 0\n")
    _tool(folder, "scontrol", '[ "$1 $2" = "show hostnames" ] && tr , "\\n" <<< "$3"\n')
    _tool(folder, "srun", 'while [[ "$1" == --* ]]; do shift; done\n'
          'for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i "$@" || exit; done\n')  # fmt: skip
    return folder


def test_multi_node_script_asks_per_node_and_starts_one_task_each():
    text = batch_script(
        ["python", "run.py", "train", "c.py", "--nproc", "4"],
        Resources(partition="gpu", nodes=3, gpus=4, cpus=16, mem="64G", time="2:00:00"),
    )
    lines = text.splitlines()
    assert [x for x in lines if x.startswith("#SBATCH")] == [
        "#SBATCH --partition=gpu",
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=16",
        "#SBATCH --mem=64G",
        "#SBATCH --time=2:00:00",
        "#SBATCH --signal=B:TERM@120",
    ]
    assert lines[-1].startswith("exec srun ") and "--kill-on-bad-exit=1" in lines[-1]
    assert lines[-1].endswith(" vb-node python run.py train c.py --nproc 4")
    one = batch_script(["python", "run.py"], Resources(nodes=1, gpus=2))
    assert "#SBATCH --gpus=2" in one and "srun" not in one


def test_each_node_runs_the_command_with_its_rank_and_the_first_nodes_endpoint(tmp_path, fake_bin):
    argv = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))", "it's"]
    script = tmp_path / "job.sh"
    script.write_text(batch_script(argv, Resources(nodes=2)))
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "gpu-a,gpu-b", "SLURM_JOB_ID": "7"}  # fmt: skip
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, check=True, timeout=30).stdout.splitlines()  # fmt: skip
    nodes = [json.loads(line) for line in out if line.startswith('["')]
    assert len(nodes) == 2
    endpoint = nodes[0][-1]
    host, port = endpoint.rsplit(":", 1)
    assert host == "gpu-a" and 0 < int(port) < 65536
    for rank, got in enumerate(nodes):
        assert got == ["it's", "--nnodes", "2", "--node-rank", str(rank),
                       "--rdzv-endpoint", endpoint]  # fmt: skip


def test_a_two_node_launch_trains_one_process_per_gpu_on_each(tmp_path, fake_bin):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("STEP_S = 0.2\n")
    slurm = Slurm(env={**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"})
    launcher = Launcher(tmp_path / "runs", configs, tmp_path / "data", backend="slurm",
                        run_py=FAKE_RUN, slurm=slurm, slurm_defaults={"nodes": 2})  # fmt: skip
    try:
        name = launcher.launch("train.py", "auto", {}, resources={"gpus": "4"})
        launcher.tick(sweeps=False)
    finally:
        launcher.close()
    text = (tmp_path / "runs" / name / BATCH_SCRIPT_FILE).read_text()
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=4" in text
    srun = text.splitlines()[-1]
    assert "--use-existing-dir" in srun and "--device cuda --nproc 4" in srun


@pytest.mark.parametrize("nodes, match", [("0", "nodes: 0 is out of range; expected 1 to"),
                                          ("two", "nodes: expected a whole number")])  # fmt: skip
def test_bad_node_counts_are_refused(nodes, match):
    with pytest.raises(LaunchError, match=match):
        resources_from({"nodes": nodes})


@pytest.mark.slow
def test_a_two_node_job_on_the_test_cluster_trains_one_run_across_both(
    tmp_path, cluster, demo_data_dir
):
    """The test cluster's partition "nodes" is two slurmd on this host: the job's srun starts
    ``run.py train`` on each, they meet at the first node's address (its NodeAddr, as the
    node names do not resolve here) and train one run, written by rank 0 alone."""
    import time

    from trainer.runs import FINAL_STATES, read_run_state, read_status

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.py").write_text(TINY.format(n_steps=4, sweep="None"))
    launcher = Launcher(tmp_path / "runs", configs, demo_data_dir, backend="slurm",
                        slurm=cluster.slurm, slurm_poll_s=0.3,
                        slurm_defaults={"partition": "nodes", "time": "15"})  # fmt: skip
    try:
        name = launcher.launch("tiny.py", "cpu", {}, resources={"nodes": "2", "cpus": "1"})
        run_dir = tmp_path / "runs" / name
        deadline = time.monotonic() + 300
        while read_run_state(run_dir).state not in FINAL_STATES:
            assert time.monotonic() < deadline, (run_dir / "console.log").read_text()[-3000:]
            launcher.tick(sweeps=False)
            time.sleep(0.3)
    finally:
        for info in launcher.jobs().values():
            cluster.slurm.cancel(info["job_id"])
        launcher.close()
    console = (run_dir / "console.log").read_text()
    status = read_status(run_dir)
    assert status.state == "finished" and status.step == 4, console[-3000:]
    assert status.extra["world_size"] == 2 and status.extra["backend"] == "gloo"
    assert status.extra["rank_param_max_diff"] == 0.0
    assert "rendezvous of 2 nodes at 127.0.0.1:" in console
    runs = [p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
    assert runs == [name], "one run, rank 0's"

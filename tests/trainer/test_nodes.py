"""Training across nodes for real: two ``run.py train --nnodes 2`` processes on this machine
meet through c10d rendezvous on 127.0.0.1 and train one run with gloo (one rank each)."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from trainer import runs
from trainer.distributed import parse_endpoint, torchrun_argv
from trainer.history import loadhistorytracker
from trainer.runs.snapshots import latest_snapshot

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_cnn3d.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def _start_nodes(tmp: Path, data_dir: Path, name: str) -> list[subprocess.Popen]:
    """Node 0 and node 1, each ``run.py train --nproc 1``; only node 0 is told the run's name."""
    endpoint = f"127.0.0.1:{_free_port()}"
    procs = []
    for node in (0, 1):
        cmd = [sys.executable, str(REPO / "run.py"), "train", str(DEMO), "--nnodes", "2",
               "--node-rank", str(node), "--rdzv-endpoint", endpoint, "--nproc", "1",
               "--device", "cpu", "--n-steps", "100000", "--batch-size", "1"]  # fmt: skip
        if node == 0:
            cmd += ["--save-path", str(tmp / "runs"), "--save-name", name]
        # stderr to a file, not a pipe nobody reads while the nodes run: a full pipe would
        # block a node (torchrun's agent logs its rendezvous) and it would never exit
        with open(tmp / f"node{node}-{name}.log", "w") as log:
            procs.append(subprocess.Popen(cmd, cwd=tmp, env=_env(data_dir),
                                          stdout=subprocess.DEVNULL, stderr=log,
                                          start_new_session=True))  # fmt: skip
        procs[-1].log = log.name
    return procs


def _log(p: subprocess.Popen, n: int = 4000) -> str:
    return Path(p.log).read_text(errors="replace")[-n:]


def _wait_for_step(run_dir: Path, procs: list[subprocess.Popen], step: int) -> runs.Status:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = runs.read_status(run_dir)
        if status is not None and status.state == "running" and status.step >= step:
            return status
        for p in procs:
            assert p.poll() is None, _log(p)
        time.sleep(0.2)
    pytest.fail(f"the two-node run did not reach step {step}")


def _end(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, demo_data_dir) -> Path:
    """A two-node run stopped by SIGTERM to node 0's run.py, after step 3."""
    tmp = tmp_path_factory.mktemp("nodes")
    procs = _start_nodes(tmp, demo_data_dir, "two-nodes")
    run_dir = tmp / "runs" / "two-nodes"
    try:
        _wait_for_step(run_dir, procs, 3)
        procs[0].send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        _end(procs)
    assert codes == [0, 0], [_log(p, 3000) for p in procs]
    return run_dir


@pytest.mark.slow
def test_two_nodes_train_one_run_in_sync_and_stop_together(stopped_run: Path):
    assert [p.name for p in stopped_run.parent.iterdir()] == ["two-nodes"], "node 1 made nothing"
    status = runs.read_status(stopped_run)
    assert status.state == "stopped"
    assert status.extra["world_size"] == 2 and status.extra["backend"] == "gloo"
    assert status.extra["rank_param_max_diff"] == 0.0
    steps = list(loadhistorytracker(stopped_run).timeline.index)
    assert steps == list(range(status.step)), "one history, each step once"
    assert latest_snapshot(stopped_run) is not None, "stopping saved a snapshot"
    # torchrun ends with 1 when signalled; node 0's run.py knows the stop was asked for
    supervisor = runs.read_launcher_record(stopped_run, runs.SUPERVISOR_FILE)
    assert supervisor.ended is not None and supervisor.error is None
    assert runs.read_run_state(stopped_run).state == "stopped"


@pytest.mark.slow
def test_a_two_node_run_resumes_on_one_node(stopped_run: Path, demo_data_dir: Path):
    before = runs.read_status(stopped_run).step
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "train", "--resume", str(stopped_run), "--nproc",
         "1", "--device", "cpu", "--n-steps", str(before + 3)],
        cwd=stopped_run.parent, env=_env(demo_data_dir), capture_output=True, text=True,
        timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    status = runs.read_status(stopped_run)
    assert status.state == "finished" and status.step == before + 3
    assert status.extra.get("world_size", 1) == 1
    assert list(loadhistorytracker(stopped_run).timeline.index) == list(range(before + 3))


@pytest.mark.slow
def test_a_killed_rank_on_node_1_fails_the_run_in_bounded_time(tmp_path: Path, demo_data_dir):
    procs = _start_nodes(tmp_path, demo_data_dir, "kill")
    run_dir = tmp_path / "runs" / "kill"
    try:
        status = _wait_for_step(run_dir, procs, 2)
        node1 = {c.pid for c in psutil.Process(procs[1].pid).children(recursive=True)}
        (victim,) = node1 & set(status.extra["rank_pids"])  # node 1's one rank
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        codes = [p.wait(timeout=150) for p in procs]
        elapsed = time.monotonic() - t_kill
    finally:
        _end(procs)
    assert codes[0] != 0 and codes[1] != 0
    shown = runs.read_run_state(run_dir)  # status.json merged with node 0's supervisor record
    assert shown.state == "failed" and shown.error, shown
    print(f"two-node run failed {elapsed:.1f} s after node 1's rank was killed")


def test_torchrun_command_per_node():
    one = torchrun_argv("py", ["run.py", "train"], 2)
    assert one == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                   "--monitor_interval=0.5", "run.py", "train"]  # fmt: skip
    two = torchrun_argv("py", ["run.py"], 4, nnodes=3, node_rank=2, rdzv_endpoint="gpu7:29400")
    assert "--standalone" not in two
    for flag in ("--nnodes=3", "--node_rank=2", "--rdzv_backend=c10d",
                 "--rdzv_endpoint=gpu7:29400", "--nproc_per_node=4", "--max_restarts=0"):  # fmt: skip
        assert flag in two
    with pytest.raises(ValueError, match="--rdzv-endpoint"):
        torchrun_argv("py", ["run.py"], 1, nnodes=2)


@pytest.mark.parametrize(
    "text, expected",
    [("127.0.0.1:29400", ("127.0.0.1", 29400)), ("node-01.cluster:1", ("node-01.cluster", 1)),
     ("node1", None), (":29400", None), ("node1:0", None), ("node1:65536", None),
     ("node1:port", None)],
)  # fmt: skip
def test_rendezvous_endpoint_is_checked(text, expected):
    if expected is None:
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_endpoint(text)
    else:
        assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "flags, says",
    [(["--nnodes", "2"], "needs --rdzv-endpoint"),
     (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1"], "--node-rank 2: expected 0 to 1"),
     (["--nnodes", "0"], "--nnodes 0"),
     (["--nnodes", "2", "--rdzv-endpoint", "h"], "HOST:PORT")],
)  # fmt: skip
def test_bad_node_flags_are_refused_before_anything_starts(capsys, flags, says):
    spec = importlib.util.spec_from_file_location("run_cli", REPO / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    args = run.build_parser().parse_args(["train", str(DEMO), *flags])
    assert run.cmd_train(args) == run.EXIT_USAGE
    assert says in capsys.readouterr().err


def test_a_node_whose_ranks_ended_cleanly_ends_its_agent_and_counts_as_clean(tmp_path):
    """A node's torchrun agent that loses the rendezvous store after its ranks ended (the host
    node finished first) hangs or exits 1: the ranks' marks decide, not the agent's code."""
    import run

    (tmp_path / "0").touch()
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    rc, clean = run._wait_for_torchrun(hanging, tmp_path, nproc=1, grace=0.5)
    assert clean and rc != 0 and hanging.poll() is not None
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    assert run._wait_for_torchrun(failing, tmp_path / "none", nproc=1) == (1, False)
    two = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    assert run._wait_for_torchrun(two, tmp_path, nproc=2) == (1, False), "rank 1 left no mark"


def test_a_node_ends_its_agent_once_the_rendezvous_store_is_gone(tmp_path):
    """Its ranks ended cleanly and the host's store refuses connections: the agent is ended at
    once, not after the grace (600 s here; the child would exit 0 by itself after 30 s)."""
    import run

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        alive = listening.getsockname()
        assert not run._store_gone(alive)
    closed = ("127.0.0.1", _free_port())
    assert run._store_gone(closed)
    (tmp_path / "0").touch()
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rc, clean = run._wait_for_torchrun(hanging, tmp_path, nproc=1, grace=600, store=closed)
    finally:
        hanging.kill()
        hanging.wait()
    assert clean and rc == -signal.SIGTERM


def test_a_node_whose_ranks_met_every_rank_at_the_end_ends_its_agent_at_once(tmp_path):
    """Its ranks passed the closing barrier with every other rank (the marks say so): the
    whole run's work is done, so the agent's exit barrier is not waited for (grace 600 s).
    A rank that ended alone leaves its agent the grace."""
    import threading

    import run

    (tmp_path / "0").write_text(run.ALL_RANKS_ENDED)
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rc, clean = run._wait_for_torchrun(hanging, tmp_path, nproc=1, grace=600)
    finally:
        hanging.kill()
        hanging.wait()
    assert clean and rc == -signal.SIGTERM

    (tmp_path / "1").write_text("this rank ended")
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    got = []
    waiter = threading.Thread(
        target=lambda: got.append(run._wait_for_torchrun(hanging, tmp_path, nproc=2, grace=600))
    )
    waiter.start()
    try:
        time.sleep(4)  # the quick end terminates within 2.5 s
        assert hanging.poll() is None, "an agent whose rank 1 ended alone was not given its grace"
    finally:
        hanging.kill()
        waiter.join(timeout=30)
    assert got == [(-signal.SIGKILL, True)]

"""A read-only dashboard writes nothing under the runs folder and starts no process.

A real ``python run.py --read-only`` server gets the forged requests a visitor could send
(every callback that writes or starts something, with values that would work on a
dashboard that may write), and its runs folder, its children and its queue are checked.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest

from app.launcher import Launcher
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, read_run_state, write_result, write_status

REPO = Path(__file__).resolve().parents[2]


def make_evaluated_run(runs: Path, name: str) -> Path:
    """A finished run with one evaluation result, ``eval/FINAL.h5``."""
    d = runs / name
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    rng = np.random.default_rng(0)
    label = (rng.random((4, 16, 16)) < 0.4).astype(np.int8)
    prob = np.clip(rng.normal(0.3 + 0.4 * label, 0.2), 0, 1).astype(np.float32)
    write_result(d / "eval" / "FINAL.h5", {"valid": evaluate_arrays(label, prob)}, {"step": 10})
    return d


def outputs_of(dep: dict) -> set[str]:
    """``id.prop`` of each output of a listed callback (without Dash's duplicate suffix)."""
    return {p.split("@")[0] for p in dep["output"].strip(".").split("...")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


class Server:
    """``python run.py`` in a subprocess on a free loopback port; stopped by ``close``."""

    def __init__(self, runs: Path, data: Path, *flags: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, str(REPO / "run.py"), "--port", str(self.port),
               "--runs-dir", str(runs), "--data-dir", str(data),
               "--configs-dir", str(REPO / "examples"), *flags]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=runs.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        end = time.time() + 120
        while time.time() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited: {self.proc.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(self.base + "/_dash-layout", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise AssertionError("dashboard did not answer within 120 s")

    def get(self, path: str) -> object:
        return json.loads(urllib.request.urlopen(self.base + path, timeout=10).read())

    def post(self, body: dict) -> tuple[int, str]:
        request = urllib.request.Request(
            self.base + "/_dash-update-component",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def forged(dep: dict, values: dict[str, object]) -> dict:
    """The body a browser would send for callback ``dep`` with ``values`` by ``id.prop``."""

    def entries(specs: list[dict]) -> list[dict]:
        out = []
        for spec in specs:
            key = f"{spec['id']}.{spec['property']}"
            out.append({**spec, "value": values.get(key)})
        return out

    outputs = [
        dict(zip(("id", "property"), part.rsplit(".", 1)))
        for part in dep["output"].strip(".").split("...")
    ]
    changed = [f"{s['id']}.{s['property']}" for s in dep["inputs"]][:1]
    return {
        "output": dep["output"],
        "outputs": outputs if len(outputs) > 1 else outputs[0],
        "inputs": entries(dep["inputs"]),
        "state": entries(dep.get("state", [])),
        "changedPropIds": changed,
    }


#: the callbacks that write under the runs folder or start a process, by an output they
#: have, and values that make them act on a dashboard that may write
CHANGING = {
    "eval-done.data": {  # Evaluate
        "eval-run-button.n_clicks": 1, "eval-run.data": "evald", "eval-snapshot.value": "FINAL",
        "eval-mode.value": "binned", "eval-result.value": "FINAL",
    },
    "eval-save-msg.children": {  # Save threshold
        "eval-save.n_clicks": 1, "eval-run.data": "evald", "eval-result.value": "FINAL",
        "eval-split.value": "valid", "eval-t.data": 0.5, "eval-beta.value": 1,
    },
    "exp-launch-msg.children": {  # Launch
        "exp-launch.n_clicks": 1, "exp-config.value": "demo_cnn3d.py", "exp-device.value": "cpu",
        "exp-n-steps.value": 5,
    },
    "jobs-msg.children": {  # the jobs page's Stop and Resume
        "jobs-stop.n_clicks": 1,
    },
    "exp-action-msg.children": {  # Stop, Resume, Delete
        "exp-resume.n_clicks": 1, "exp-selected.data": "evald",
        "exp-delete-confirm.submit_n_clicks": 1,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def read_only_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("read-only")
    runs = root / "runs"
    make_evaluated_run(runs, "evald")
    # a queued run in the shared folder, as another dashboard would leave it
    configs = root / "configs"
    configs.mkdir()
    (configs / "wait.py").write_text("n_steps = 5\n")
    launcher = Launcher(runs, configs, root / "data", gpus=[], max_cpu_runs=0)
    queued = launcher.launch("wait.py", device="cpu")
    assert read_run_state(runs / queued).state == "queued"
    server = Server(runs, root / "data", "--read-only")
    try:
        yield server, runs, queued
    finally:
        server.close()


def test_forged_requests_are_refused_and_nothing_is_written_or_started(read_only_server):
    server, runs, queued = read_only_server
    before = tree(runs)
    deps = server.get("/_dash-dependencies")
    found = set()
    for dep in deps:
        for output in CHANGING.keys() & outputs_of(dep):
            found.add(output)
            values = CHANGING[output]
            for _ in range(3):  # several at once would have started several processes
                status, text = server.post(forged(dep, values))
                assert status == 403, (dep["output"], status, text[:300])
                assert "read-only" in text
    assert found == set(CHANGING), f"callbacks not found: {set(CHANGING) - found}"
    time.sleep(2.5)  # five ticks of a scheduler, had one been started
    assert psutil.Process(server.proc.pid).children(recursive=True) == []
    assert tree(runs) == before
    assert read_run_state(runs / queued).state == "queued"


def test_reading_still_works_on_a_read_only_dashboard(read_only_server):
    server, runs, _queued = read_only_server
    deps = server.get("/_dash-dependencies")
    (dep,) = [d for d in deps if "eval-download-csv.data" in outputs_of(d)]
    values = {"eval-csv.n_clicks": 1, "eval-run.data": "evald", "eval-result.value": "FINAL",
              "eval-split.value": "valid", "eval-t.data": 0.5, "eval-beta.value": 1}  # fmt: skip
    status, text = server.post(forged(dep, values))
    assert status == 200, text[:300]
    assert "tp," in json.loads(text)["response"]["eval-download-csv"]["data"]["content"]


def test_unknown_and_malformed_callback_requests_are_400(read_only_server):
    server, _runs, _queued = read_only_server
    assert server.post({"output": "nope.children", "inputs": []})[0] == 400
    assert server.post({"inputs": []})[0] == 400
    assert server.post({"output": "eval-save-msg.children", "inputs": "x"})[0] == 400


def test_client_names_cannot_read_outside_the_runs_folder(read_only_server, tmp_path):
    """A result or cube name from the client never opens a file outside the run's eval/."""
    server, runs, _queued = read_only_server
    secret = tmp_path / "x" / "secret"
    secret.parent.mkdir()
    with h5py.File(f"{secret}_valid_prob.h5", "w") as f:  # a probability cache's layout
        for key in ("raw", "prob", "label"):
            f[f"cube0/{key}"] = np.ones((2, 8, 8), np.float16 if key != "label" else np.int8)
    relative = os.path.relpath(secret, runs / "evald" / "eval")
    deps = server.get("/_dash-dependencies")

    def dep(output: str) -> dict:
        (found,) = [d for d in deps if output in outputs_of(d)]
        return found

    for result in (str(secret), relative, "cube0/../" + relative):
        values = {"eval-run.data": "evald", "eval-result.value": result, "eval-t.data": 0.5,
                  "eval-t-server.data": 0.5,
                  "eval-seg-cube.value": "cube0", "eval-seg-z.value": 0, "eval-html.n_clicks": 1,
                  "eval-html-which.value": "segmentation", "eval-split.value": "valid"}  # fmt: skip
        for output in ("eval-seg.figure", "eval-seg-cube.options", "eval-download-html.data"):
            status, text = server.post(forged(dep(output), values))
            assert status in (200, 204), (output, result, status, text[:300])
            assert "data:image" not in text and '"cube0"' not in text, (output, result)
            assert "content" not in text, (output, result)

"""The cap on unfinished sweeps (``app.limits.MAX_SWEEPS``) holds against concurrent launches.

A dashboard served by waitress on a loopback port (the server ``serve`` runs, in a thread
here so the test can wait for the sweep starts it made) gets ten forged launch requests of
a sweep config at once; each start is a real ``run.py sweep --detach`` child. Counting and
making happen under the runs folder's sweeps lock, in the dashboard and again in the child,
so exactly ``MAX_SWEEPS`` sweeps are made and the other requests are refused with the
form's message. A ``run.py sweep --detach --max-sweeps`` from another process (what a
second dashboard starts) is refused as well. The launcher is not started: no trial runs,
so every sweep made stays unfinished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import waitress
from dash.testing.wait import until

from app import app_context, create_app, limits
from trainer.runs.sweeps import iter_sweep_dirs, read_trials

REPO = Path(__file__).resolve().parents[2]
#: a tiny config on the demo data with a sweep of two runs; it is executed, never trained.
#: Its model is imported in ``create_model`` and the data is the session's (complete): a
#: ``run.py sweep --detach`` child neither imports torch nor writes demo data
SWEEP_CONFIG = """
import os
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ["VOXELBOARD_DATA_DIR"])

def create_model():
    from trainer.models import CNN3D

    return CNN3D(n_classes=2, in_channels=1)

data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
n_steps = 6
history_freq = 3
monitor_batch_size = 1
batch_size = 1
optimiser = "Adam"
optimiser_params = dict(lr=2e-3)
sweep = dict(method='grid', parameters=dict(lr=[1e-3, 3e-3]))
"""
LAUNCHES = 10
#: bound for the ``run.py sweep --detach`` children (a bound, not an expectation)
WAIT_S = 400


@pytest.fixture
def served(tmp_path, demo_data_dir):
    """``(base url, app, runs folder)`` of a dashboard served by waitress on a free port,
    with the session's demo data (read only) as its data folder."""
    configs, runs = tmp_path / "configs", tmp_path / "runs"
    configs.mkdir()
    (configs / "sweep.py").write_text(SWEEP_CONFIG)
    app = create_app(runs, configs, demo_data_dir, start_launcher=False, gpus=[])
    # ten children execute the config at once on a busy test machine
    app_context(app).launcher.sweep_starts.timeout_s = WAIT_S
    server = waitress.create_server(app.server, host="127.0.0.1", port=0, threads=LAUNCHES)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.effective_port}", app, runs
    finally:
        server.close()
        app_context(app).close()


def _launch_body(host: str) -> bytes:
    """The launch form's request for a sweep of ``sweep.py``, built from the app's own
    dependency list (as the page's renderer does)."""
    import http.client

    conn = http.client.HTTPConnection(host, timeout=60)
    conn.request("GET", "/_dash-dependencies")
    deps = json.loads(conn.getresponse().read())
    conn.close()
    (dep,) = [d for d in deps if "exp-launch-msg.children" in d["output"]]
    outputs = [
        {"id": spec.rsplit(".", 1)[0], "property": spec.rsplit(".", 1)[1]}
        for spec in dep["output"][2:-2].split("...")
    ]
    values = {"exp-launch": 1, "exp-config": "sweep.py", "exp-device": "cpu"}
    state = [
        [] if s["id"].startswith("{") else {**s, "value": values.get(s["id"])} for s in dep["state"]
    ]
    body = {
        "output": dep["output"],
        "outputs": outputs,
        "inputs": [{**i, "value": values.get(i["id"])} for i in dep["inputs"]],
        "state": state,
        "changedPropIds": ["exp-launch.n_clicks"],
    }
    return json.dumps(body).encode()


def _post(host: str, body: bytes) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(host, timeout=120)
    try:
        conn.request("POST", "/_dash-update-component", body,
                     {"Content-Type": "application/json", "Origin": f"http://{host}"})  # fmt: skip
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


@pytest.mark.slow
def test_concurrent_launches_make_at_most_max_sweeps(served, demo_data_dir):
    host, app, runs = served
    starts = app_context(app).launcher.sweep_starts
    body = _launch_body(host)
    barrier = threading.Barrier(LAUNCHES)

    def launch(_: int) -> tuple[int, str]:
        barrier.wait()  # all ten requests in flight together
        return _post(host, body)

    with ThreadPoolExecutor(LAUNCHES) as pool:
        answers = list(pool.map(launch, range(LAUNCHES)))
    assert all(status == 200 for status, _ in answers), answers
    responses = [json.loads(text)["response"] for _, text in answers]
    tokens = [r["exp-sweep-start"]["data"] for r in responses if "exp-sweep-start" in r]
    refused = [r for r in responses if "unfinished" in json.dumps(r.get("exp-launch-msg"))]
    assert len(tokens) + len(refused) == LAUNCHES, answers
    until(lambda: starts.pending() == 0, timeout=WAIT_S)

    made = [start.sweep_id for t in tokens if (start := starts.get(t)).sweep_id]
    unfinished = [f.name for f in iter_sweep_dirs(runs) if read_trials(f).state == "running"]
    print(f"{len(tokens)} started, {len(refused)} refused at once, {len(made)} made")
    assert sorted(made) == sorted(unfinished)
    assert len(unfinished) == limits.MAX_SWEEPS, unfinished
    for t in tokens:  # a start that made nothing was refused by the child, for the cap
        start = starts.get(t)
        assert start.sweep_id or "unfinished" in " ".join(start.problems or []), start

    # another process (a second dashboard's child) is held to the cap too
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "sweep", str(runs.parent / "configs" / "sweep.py"),
         "--detach", f"--runs-dir={runs}", f"--max-sweeps={limits.MAX_SWEEPS}"],
        capture_output=True, text=True, timeout=WAIT_S, check=False, cwd=runs.parent,
        env={**os.environ, "VOXELBOARD_DATA_DIR": str(demo_data_dir)},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"{limits.MAX_SWEEPS} sweeps are unfinished" in done.stderr
    assert len(list(iter_sweep_dirs(runs))) == limits.MAX_SWEEPS

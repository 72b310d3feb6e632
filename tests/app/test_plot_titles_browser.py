"""Plot titles in a real Chromium: on the run page (per-class IoU/Dice, planned schedules) and the
evaluation page (confusion, segmentation, neurons) no figure's title box overlaps its legend's
or its modebar's, nor a legend the modebar (issue 28: titles collided with legends and the
toolbar)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from app import create_app
from app import evaluation_view as ev
from trainer import runs
from trainer.class_metrics import metric_columns
from trainer.evaluation.neurons import evaluate_neurons
from trainer.history import HistoryTracker
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, atomic_write_json, write_result, write_status
from trainer.synthetic import generate_cube_neurons

GRID = {"thresh": [20], "grow_it": [(0, 0, 0)], "hi_thresh": [240], "lo_thresh": [30]}

#: every plot on the page with a title: [graph id, title box, legend box, modebar box]
BOXES = """
const box = e => { if (!e) return null; const r = e.getBoundingClientRect();
  return r.width && r.height ? [r.left, r.top, r.right, r.bottom] : null; };
return [...document.querySelectorAll('.js-plotly-plot')]
  .filter(g => g.offsetParent !== null && g.querySelector('.gtitle'))
  .map(g => [(g.closest('[id]') || {}).id, box(g.querySelector('.gtitle')),
             box(g.querySelector('.legend')), box(g.querySelector('.modebar'))]);
"""


def _overlap(a, b) -> bool:
    return bool(a and b) and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def make_class_run(runs_dir: Path) -> HistoryTracker:
    """A running segmentation run with per-class columns, one history row and an lr schedule."""
    run_dir = runs_dir / "seg-run"
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="running", step=10, n_steps=1500, pid=os.getpid(),
                                 heartbeat=time.time() + 3600, started=time.time()))  # fmt: skip
    atomic_write_json(run_dir / "config.json", {
        "n_steps": 1500, "optimiser_params": {"lr": 0.002, "mom": 0.9},
        "schedules": {"lr": {"dec": 0.8, "period": 500}}})  # fmt: skip
    tracker = HistoryTracker(run_dir / "history", extra_history_columns=metric_columns(4))
    tracker.update_timeline([0.0, 0.7, 0.0])
    scores = {f"valid_{m}_{c}": 0.5 for m in ("iou", "dice") for c in (0, 1, 2, 3, "mean")}
    tracker.update_history(dict(steps=0, time=0.5, train_loss=0.7, valid_loss=0.7, loss_gain=0.0,
                                train_err=0.3, valid_err=0.35, lr=0.002, mom=0.9, gradnetrate=0.0,
                                **scores))  # fmt: skip
    return tracker


def make_eval_run(runs_dir: Path) -> None:
    """A finished run with an evaluation result, its probability cache and neuron scores."""
    d = runs_dir / "neurons"
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    raw, lab, ids = generate_cube_neurons((12, 48, 48), np.random.default_rng(2))
    prob = np.clip(0.7 * lab + 0.45 * np.random.default_rng(0).random(lab.shape), 0, 1)
    prob = prob.astype(np.float16).astype(np.float32)
    res = evaluate_arrays(lab.astype(np.int8), prob, mode="exact")
    neurons = [evaluate_neurons(ids, prob, grid=GRID, n_proc=1)]
    write_result(d / "eval" / "FINAL.h5", {"valid": res}, {"snapshot": "", "step": 10}, neurons)
    runs.write_prob_cache(
        ev.prob_cache_path(d, "FINAL"), [(raw / 255.0, prob, lab.astype(np.int8))]
    )


def _boxes(dash_duo, want: set[str], timeout: float = 30.0) -> list:
    """The boxes once every graph in ``want`` has a drawn title."""
    end = time.time() + timeout
    while True:
        boxes = dash_duo.driver.execute_script(BOXES)
        if want <= {b[0] for b in boxes} or time.time() > end:
            return boxes
        time.sleep(0.2)


@pytest.mark.browser
def test_titles_meet_neither_legend_nor_modebar(dash_duo, tmp_path):
    tracker = make_class_run(tmp_path / "runs")
    make_eval_run(tmp_path / "runs")
    app = create_app(tmp_path / "runs", tmp_path / "configs", tmp_path / "data",
                     start_launcher=False, gpus=[])  # fmt: skip
    try:
        dash_duo.start_server(app)
        dash_duo.driver.set_window_size(1280, 1000)
        seen = {}
        for page, want in (
            ("/run/seg-run", {"run-graph-classes", "run-graph-schedule"}),
            ("/run/neurons/evaluation", {"eval-confusion", "eval-seg", "eval-neurons"}),
        ):
            dash_duo.wait_for_page(url=dash_duo.server_url + page)
            for graph, title, legend, modebar in _boxes(dash_duo, want):
                seen[graph] = (title, legend, modebar)
        missing = {"run-graph-classes", "run-graph-schedule", "eval-confusion", "eval-seg",
                   "eval-neurons"} - set(seen)  # fmt: skip
        assert not missing, f"no titled plot drawn in {sorted(missing)}; drawn: {sorted(seen)}"
        assert seen["eval-neurons"][1] and seen["run-graph-classes"][1]  # legends drawn
        clashes = [
            (graph, what)
            for graph, (title, legend, modebar) in seen.items()
            for what, other in (("legend", legend), ("modebar", modebar))
            if _overlap(title, other)
        ]
        clashes += [(graph, "legend-modebar") for graph, (_t, legend, modebar) in seen.items()
                    if _overlap(legend, modebar)]  # fmt: skip
        assert not clashes, f"titles overlap: {clashes} in {seen}"
    finally:
        tracker.close()

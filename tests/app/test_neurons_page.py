"""The evaluation page's neurons (issue 26, point 5): its Evaluate scores neurons where the
config names them and never replaces a result with neuron scores; the Neurons panel names both
segmentations, the threshold's components and the optimised seeded watershed with its setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import adapted_rand_error

from app import neurons_view as nv
from trainer import runs
from trainer.evaluation.neurons import evaluate_neurons
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, write_result, write_status
from trainer.segmentation import segmentation_scores
from trainer.synthetic import generate_cube_neurons

GRID = {"thresh": [20, 60], "grow_it": [(0, 0, 0)], "hi_thresh": [240], "lo_thresh": [30]}


def make_run(root: Path, neurons: bool, instance_files: list | None) -> tuple[Path, dict | None]:
    d = root / "run"
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    (d / runs.RESOLVED_CONFIG_FILE).write_text(json.dumps({"instance_files": instance_files}))
    raw, lab, ids = generate_cube_neurons((6, 32, 32), np.random.default_rng(2))
    prob = np.clip(0.7 * lab + 0.45 * np.random.default_rng(0).random(lab.shape), 0, 1)
    record = (
        evaluate_neurons(ids, prob.astype(np.float32), grid=GRID, n_proc=1) if neurons else None
    )
    res = {"valid": evaluate_arrays(lab.astype(np.int8), prob, mode="exact")}
    found = [record] if record is not None else None
    write_result(runs.result_path(d, "FINAL"), res, {"snapshot": "", "step": 10}, found)
    cache = runs.prob_cache_path(d, "FINAL")
    runs.write_prob_cache(cache, [(raw / 255.0, prob, lab.astype(np.int8))])
    return d, record


@pytest.mark.parametrize(
    ("neurons", "instance_files", "plan"),
    [
        (False, None, ("FINAL", False)),  # as `run.py evaluate`
        (False, [["neurons_0.h5", "ids"]], ("FINAL", True)),  # as `evaluate --instances`
        # a result with neuron scores is kept: the page writes its own
        (True, None, ("FINAL-dashboard", False)),
        (True, [["neurons_0.h5", "ids"]], ("FINAL-dashboard", True)),
    ],
)
def test_evaluate_scores_neurons_where_named_and_never_replaces_them(
    tmp_path, neurons, instance_files, plan
):
    run_dir, _record = make_run(tmp_path, neurons, instance_files)
    assert nv.evaluation_plan(run_dir, "FINAL") == plan
    assert nv.evaluation_plan(run_dir, "LAST") == ("LAST", plan[1])  # no result of that name


def test_the_panel_names_the_optimised_seeded_watershed_and_its_setting(tmp_path):
    run_dir, record = make_run(tmp_path, True, None)
    head, *cells = nv.watershed_outputs(run_dir, "FINAL", "cube0")
    thresh = f"{float(record['seg_thresh']):g}"
    assert head.startswith("optimised seeded watershed (") and f"thresh {thresh}" in head
    assert "grow_it (0, 0, 0)" in head
    got = dict(zip([k for k, _ in nv.SCORE_ROWS], cells))
    # its scores are those of its segmentation (scikit-image's), not the threshold's components
    gt, seg = record["instances"], record["segmentation"]
    assert float(got["adapted_rand_error"]) == pytest.approx(
        adapted_rand_error(gt, seg, ignore_labels=[0])[0], abs=1e-4
    )
    want = segmentation_scores(gt, seg, convention=str(record["rand_convention"]))
    for key, _label in nv.SCORE_ROWS:
        value = getattr(want, key)
        assert got[key] == (f"{value:,}" if key.startswith("n_") else f"{value:.4f}"), key
    # and not those of the threshold's components (the other column)
    components = nv.segment_cube(run_dir, "FINAL", "cube0", 0.5)[-1]
    assert got["adapted_rand_error"] != f"{components.adapted_rand_error:.4f}"
    # no neuron scores, a cube beyond them, no run: a blank column
    blank = ["", *([""] * len(nv.SCORE_ROWS))]
    assert nv.watershed_outputs(run_dir, "FINAL", "cube3") == blank
    assert nv.watershed_outputs(None, "FINAL", "cube0") == blank
    plain, _ = make_run(tmp_path / "plain", False, None)
    assert nv.watershed_outputs(plain, "FINAL", "cube0") == blank

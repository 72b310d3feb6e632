"""Neuron scores of validation cubes: curves, best thresholds, the grid search record, the
result file (format 2, format 1 still read) and the report's ri* columns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer.evaluation.neurons import (
    THRESHOLDS,
    evaluate_neurons,
    load_instances,
    report_columns,
)
from trainer.evaluation.reference import format_report
from trainer.metrics import evaluate_arrays
from trainer.runs import read_result, write_result, write_split
from trainer.runs.results import read_neurons
from trainer.segmentation import DEFAULT_GRID, Quantile, segmentation_scores, threshold_components
from trainer.synthetic import ensure_demo_zarr, generate_cube_neurons, make_demo_data
from trainer.volumes import detect_format

REPO = Path(__file__).resolve().parents[2]

GRID = {"thresh": [20, 37], "grow_it": [(0, 0, 0)], "hi_thresh": [240], "lo_thresh": [30]}


@pytest.fixture(scope="module")
def cube():
    _, lab, ids = generate_cube_neurons((16, 48, 48), np.random.default_rng(4))
    rng = np.random.default_rng(0)
    prob = np.clip(0.7 * lab + 0.5 * rng.random(lab.shape), 0, 1).astype(np.float32)
    return lab, ids, prob


@pytest.fixture(scope="module")
def record(cube):
    _, ids, prob = cube
    return evaluate_neurons(ids, prob, grid=GRID, n_proc=1)


def test_curves_are_the_scores_at_each_threshold(cube, record):
    _, ids, prob = cube
    np.testing.assert_array_equal(record["curve/thresholds"], THRESHOLDS)
    assert len(THRESHOLDS) == 49
    for i in (0, 20, 48):
        s = segmentation_scores(ids, threshold_components(prob, THRESHOLDS[i]))
        assert record["curve/voi_split"][i] == s.voi_split
        assert record["curve/adapted_rand_error"][i] == s.adapted_rand_error
        assert record["curve/n_merges"][i] == s.n_merges
    voi = record["curve/voi_split"] + record["curve/voi_merge"]
    assert record["best_voi_threshold"] == THRESHOLDS[np.argmin(voi)]
    are = record["curve/adapted_rand_error"]
    assert record["best_are_threshold"] == THRESHOLDS[np.argmin(are)]
    # high thresholds join neurons, low ones cut them: VOI merge falls, VOI split rises
    assert record["curve/voi_merge"][0] < record["curve/voi_merge"][-1]


def test_search_record_holds_table_best_setting_and_segmentation(cube, record):
    _, ids, _ = cube
    assert len(record["search/thresh"]) == 2
    best = int(np.argmin(record["search/adapted_rand_error"]))
    assert record["seg_thresh"] == record["search/thresh"][best]
    assert record["seg_adapted_rand_error"] == record["search/adapted_rand_error"][best]
    assert np.isnan(record["seg_lo_quantile"]) and np.isnan(record["seg_hi_quantile"])
    assert record["segmentation"].shape == ids.shape
    s = segmentation_scores(ids, record["segmentation"])
    assert s.rand_index == pytest.approx(record["seg_rand_index"])


def test_ignored_neurons_and_cremis_convention_reach_the_record(cube, record):
    _, ids, prob = cube
    glia = int(np.bincount(ids.ravel())[1:].argmax()) + 1  # the largest neuron: "not scored"
    # CREMI's volumes: uint64 ids, background 2**64 - 1
    gt = ids.astype(np.uint64)
    gt[ids == 0] = np.uint64(2**64 - 1)
    rec = evaluate_neurons(gt, prob, grid=GRID, n_proc=1, ignore_labels=[2**64 - 1, glia],
                           convention="cremi")  # fmt: skip
    np.testing.assert_array_equal(rec["instances"], np.where(ids == glia, 0, ids))
    np.testing.assert_array_equal(rec["ignore_labels"], np.array([2**64 - 1, glia], np.uint64))
    assert rec["rand_convention"] == "cremi" and record["rand_convention"] == "skimage"
    for i in (10, 30):
        seg = threshold_components(prob, THRESHOLDS[i])
        s = segmentation_scores(ids, seg, ignore_labels=[glia], convention="cremi")
        assert rec["curve/adapted_rand_error"][i] == s.adapted_rand_error
        assert rec["curve/voi_merge"][i] == s.voi_merge
        assert rec["curve/adapted_rand_error"][i] != record["curve/adapted_rand_error"][i]
    best = segmentation_scores(ids, rec["segmentation"], ignore_labels=[glia], convention="cremi")
    assert rec["seg_adapted_rand_error"] == best.adapted_rand_error
    with pytest.raises(ValueError, match="convention 'snemi'"):
        evaluate_neurons(ids, prob, grid=GRID, n_proc=1, convention="snemi")


def test_instance_shape_must_match_prediction(cube):
    _, ids, prob = cube
    with pytest.raises(ValueError, match=r"\(16, 48, 48\).*\(16, 48, 40\)"):
        evaluate_neurons(ids, prob[..., :40], grid=GRID, n_proc=1)


def test_result_file_round_trip_and_older_files(tmp_path, cube, record):
    lab, _, prob = cube
    res = evaluate_arrays(lab, prob)
    path = tmp_path / "r.h5"
    write_result(path, {"valid": res}, neurons=[record])
    assert set(read_result(path)) == {"valid"}  # the neurons group is no split
    (back,) = read_neurons(path)
    for k, v in record.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(back[k], v)
        else:
            np.testing.assert_equal(back[k], v)  # NaN for a fixed grid's quantiles
    # replacing a split keeps the neuron scores
    write_split(path, "train", res)
    assert set(read_result(path)) == {"valid", "train"} and len(read_neurons(path)) == 1
    # a format-1 file (before neurons) still reads, with no neuron scores
    write_result(tmp_path / "old.h5", {"valid": res})
    with h5py.File(tmp_path / "old.h5", "a") as f:
        f.attrs["format_version"] = 1
    assert set(read_result(tmp_path / "old.h5")) == {"valid"}
    assert read_neurons(tmp_path / "old.h5") == []


def test_report_has_elektronn2s_ri_columns(cube, record):
    lab, _, prob = cube
    cols, vals = report_columns([record, record])
    assert cols == ["ri0", "ri1", "ri2", "ri3", "rim"]
    assert vals[:2] == [record["seg_rand_index"]] * 2 and np.isnan(vals[2])
    assert vals[4] == pytest.approx(record["seg_rand_index"])
    report = format_report({"valid": evaluate_arrays(lab, prob)}, [record])
    header, values = report.splitlines()[:2]
    assert header.endswith("ri0, ri1, ri2, ri3, rim")
    assert len(values.split(",\t")) == len(header.split(", "))
    assert "valid cube 0 neurons: best VOI at threshold" in report
    assert "ri0" not in format_report({"valid": evaluate_arrays(lab, prob)})


def test_load_instances_reads_the_demo_neurons(tmp_path):
    demo = make_demo_data(tmp_path, seed=1, shape=(8, 24, 24), n_cubes=2, preview_shape=(4, 8, 8))
    (ids,) = load_instances(demo.instance_files_kwarg(), str(tmp_path), [1])
    with h5py.File(demo.instance_files[1]) as f:
        np.testing.assert_array_equal(ids, f["ids"][()])
    with pytest.raises(ValueError, match="instance_files has 2 entries but cube"):
        load_instances(demo.instance_files_kwarg(), str(tmp_path), [2])


def test_default_grid_record_names_its_quantiles(cube):
    _, ids, prob = cube
    rec = evaluate_neurons(ids, prob, n_proc=1)
    n = np.prod([len(v) for v in DEFAULT_GRID.values()])
    assert len(rec["search/lo_quantile"]) == n
    pred = (prob * 255).astype(np.uint8)
    lo, hi = Quantile(rec["seg_lo_quantile"]), Quantile(rec["seg_hi_quantile"])
    assert lo in DEFAULT_GRID["lo_thresh"] and hi in DEFAULT_GRID["hi_thresh"]
    assert rec["seg_lo_thresh"] == lo.of(pred) and rec["seg_hi_thresh"] == hi.of(pred, above=True)
    assert rec["seg_adapted_rand_error"] == rec["search/adapted_rand_error"].min()


def test_zarr_demo_copy_holds_the_neurons(tmp_path):
    demo = make_demo_data(tmp_path, seed=1, shape=(8, 24, 24), n_cubes=2, preview_shape=(4, 8, 8))
    path = ensure_demo_zarr(demo)
    assert detect_format(path, "ids_1") == "zarr3"
    assert demo.zarr_instance_files_kwarg() == [(str(path), "ids_0"), (str(path), "ids_1")]
    # names are paths (l_path None, as in zarr_data_init_kwargs); read through trainer.volumes
    (ids,) = load_instances(demo.zarr_instance_files_kwarg(), None, [1])
    with h5py.File(demo.instance_files[1]) as f:
        np.testing.assert_array_equal(ids, f["ids"][()])
    # a copy made before it held the neurons is made again
    meta = json.loads((path / "zarr.json").read_text())
    del meta["attributes"]["keys"]
    (path / "zarr.json").write_text(json.dumps(meta))
    for key in ("ids_0", "ids_1"):
        os.rename(path / key, tmp_path / key)
    ensure_demo_zarr(demo)
    (ids,) = load_instances(demo.zarr_instance_files_kwarg(), None, [1])
    with h5py.File(demo.instance_files[1]) as f:
        np.testing.assert_array_equal(ids, f["ids"][()])


@pytest.mark.slow
def test_zarr_demo_config_reads_the_neurons_of_its_validation_cube(tmp_path, demo_data_dir):
    code = (
        "import numpy as np\n"
        "from trainer.config import ExperimentConfig\n"
        "from trainer.evaluation.neurons import load_instances\n"
        "cfg = ExperimentConfig('examples/demo_cnn3d_zarr.py')\n"
        "kw = cfg.data_init_kwargs\n"
        "print(cfg.instance_files[kw['valid_cubes'][0]])\n"
        "(ids,) = load_instances(cfg.instance_files, kw['l_path'], kw['valid_cubes'])\n"
        f"np.save({str(tmp_path / 'ids.npy')!r}, ids)\n"
    )
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(demo_data_dir)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str((str(demo_data_dir / "demo.zarr"), "ids_2"))
    with h5py.File(demo_data_dir / "neurons_2.h5") as f:
        np.testing.assert_array_equal(np.load(tmp_path / "ids.npy"), f["ids"][()])


def test_lazy_zarr_demo_cubes_evaluate_with_their_neurons(tmp_path):
    from trainer.data import BatchCreatorImage
    from trainer.evaluation.reference import evaluate_model_binary
    from trainer.models import CNN3D
    from trainer.runs import result_path

    demo = make_demo_data(tmp_path, seed=2, shape=(12, 40, 40), n_cubes=2, preview_shape=(4, 8, 8))
    ensure_demo_zarr(demo)
    model = CNN3D(n_classes=2, in_channels=1, patch_size=(9, 32, 32))
    data = BatchCreatorImage(model, seed=0, **demo.zarr_data_init_kwargs())
    assert all(data.lazy)
    # a lazy cube reads whole where a cube is evaluated whole
    with h5py.File(demo.label_files[1]) as f:
        np.testing.assert_array_equal(np.asarray(data.valid_l[0])[0], f["lab"][()])
    instances = load_instances(demo.zarr_instance_files_kwarg(), None, data.valid_cubes)
    evaluate_model_binary(model, "Z", data, run_dir=tmp_path / "run", splits=("valid",),
                          mode="binned", device="cpu", instances=instances,
                          neuron_kwargs={"n_proc": 1})  # fmt: skip
    (rec,) = read_neurons(result_path(tmp_path / "run", "Z"))
    with h5py.File(demo.instance_files[1]) as f:
        ids = f["ids"][()]
    z, y, x = rec["instances"].shape
    oz, oy, ox = ((a - b) // 2 for a, b in zip(ids.shape, (z, y, x)))
    np.testing.assert_array_equal(rec["instances"], ids[oz : oz + z, oy : oy + y, ox : ox + x])
    assert len(rec["search/thresh"]) == 12

"""Neuroglancer layers (``app.viewer``, ``run.py view``, the dashboard's buttons), read back from
the viewer's Python state: names, kinds, voxel grids, and alignment by voxel coordinates.

The browser side (the client loads and draws the layers) is tests/app/test_viewer_browser.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from skimage.measure import label as skimage_label

from app import app_context, create_app
from app import evaluation_view as ev
from app import viewer as vw
from trainer import runs
from trainer.metrics import evaluate_arrays
from trainer.predictions import predict_to_disk, voxel_grid
from trainer.runs import Status, write_result, write_status
from trainer.volumes import open_volume

REPO = Path(__file__).resolve().parents[2]
VOXEL = (40.0, 8.0, 4.0)  # nm, (z, y, x)


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A raw zarr without voxel-size metadata, the tiny CNN's cropped prediction of it (zarr
    and HDF5) and its padded one (covering the raw voxel for voxel)."""
    import torch

    from trainer.models import CNN3D

    d = tmp_path_factory.mktemp("predicted")
    raw = np.random.default_rng(0).integers(0, 256, (10, 40, 37), dtype=np.uint8)
    zarr.create_array(str(d / "in.zarr"), name="raw", data=raw, chunks=(8, 32, 32))
    vol = open_volume(d / "in.zarr", "raw")
    torch.manual_seed(0)
    cnn = CNN3D(n_classes=2, in_channels=1, base_filters=4, patch_size=(7, 24, 24)).eval()
    grid = voxel_grid(vol, VOXEL)
    for out in ("crop.zarr", "crop.h5"):
        predict_to_disk(cnn, vol, d / out, padding=None, grid=grid)
    predict_to_disk(cnn, vol, d / "pad.zarr", grid=grid)
    return d, raw


@pytest.mark.parametrize("output", ["crop.zarr", "crop.h5:prob"])
def test_a_cropped_prediction_lies_over_its_raw_by_voxel_coordinates(predicted, output):
    d, raw = predicted
    layers = vw.open_layers([f"{d / 'in.zarr'}:raw", str(d / output), str(d / "pad.zarr")])
    viewer = vw.show(layers)
    names = [layer.name for layer in viewer.state.layers]
    assert names == ["raw", "prob[0]", "prob[1]", "prob[0] (2)", "prob[1] (2)"]
    grids = {name: vw.layer_grid(viewer, name) for name in names}
    # the raw declares no voxel size: it takes the prediction's, made on its grid
    metres = tuple(v * 1e-9 for v in VOXEL)
    for g in grids.values():
        np.testing.assert_allclose(g["voxel_size"], metres)
        assert g["unit"] == "m"
    assert grids["raw"]["offset"] == (0, 0, 0) and grids["raw"]["shape"] == raw.shape
    # CNN3D's offsets (2, 7, 7): the cropped output's translation (80, 56, 28) nm in voxels
    assert grids["prob[1]"]["offset"] == (2, 7, 7)
    assert grids["prob[1]"]["shape"] == (10 - 4, 40 - 14, 37 - 14)
    assert grids["prob[1] (2)"]["offset"] == (0, 0, 0)
    assert grids["prob[1] (2)"]["shape"] == raw.shape
    # the voxel of the viewer's space p: the cropped layer's voxel p - offset holds the padded
    # prediction's voxel p, the raw layer's voxel p the raw's
    by_name = {layer.name: layer for layer in layers}
    crop, pad = by_name["prob[1]"], by_name["prob[1] (2)"]
    for p in [(2, 7, 7), (5, 20, 20), (7, 32, 29)]:
        q = tuple(a - o for a, o in zip(p, grids["prob[1]"]["offset"]))
        box = tuple(slice(a, a + 1) for a in q)
        want = pad.data[tuple(slice(a, a + 1) for a in p)]
        np.testing.assert_allclose(crop.data[box], want, atol=2e-3)
        assert by_name["raw"].data[tuple(slice(a, a + 1) for a in p)].item() == raw[p]
    # two channels: class 1 shown, class 0 hidden; probabilities as float32 overlays
    visible = {layer.name: layer.visible for layer in viewer.state.layers}
    assert visible["prob[1]"] and not visible["prob[0]"] and visible["raw"]
    assert crop.probability and crop.data.dtype == np.float32


def test_kinds_names_and_an_hdf5_voxel_size_and_translation(tmp_path):
    ids = np.arange(4 * 8 * 8, dtype=np.uint64).reshape(4, 8, 8) // 7
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["em/raw"] = np.zeros((4, 8, 8), np.uint8)
        f["em/raw"].attrs.update(voxel_size=[30.0, 6.0, 6.0], translation=[60.0, 0.0, 12.0])
        f["neurons"] = ids
        f["mask"] = np.ones((4, 8, 8), np.uint8)  # one byte: an image unless named
        f["signed"] = np.full((4, 8, 8), -1, np.int16)  # signed ids: served unsigned
    layers = vw.open_layers(
        [f"{tmp_path / 'v.h5'}:{key}" for key in ("em/raw", "neurons", "signed")],
        segmentations=[f"{tmp_path / 'v.h5'}:mask"],
    )
    viewer = vw.show(layers)
    kinds = {layer.name: type(layer.layer).__name__ for layer in viewer.state.layers}
    assert kinds == {
        "raw": "ImageLayer",
        "neurons": "SegmentationLayer",
        "signed": "SegmentationLayer",
        "mask": "SegmentationLayer",
    }
    raw = vw.layer_grid(viewer, "raw")
    assert raw["offset"] == (2, 0, 2)
    np.testing.assert_allclose(raw["voxel_size"], (30e-9, 6e-9, 6e-9))
    # declared by none: the others take the raw's voxel size, at the origin
    assert vw.layer_grid(viewer, "neurons")["offset"] == (0, 0, 0)
    np.testing.assert_allclose(vw.layer_grid(viewer, "neurons")["voxel_size"], raw["voxel_size"])
    # the viewer starts at the first layer's centre, in its voxels
    np.testing.assert_allclose(viewer.state.position, [2 + 2, 0 + 4, 2 + 4])
    seg = next(layer for layer in layers if layer.name == "neurons")
    np.testing.assert_array_equal(seg.data[(slice(None),) * 3], ids)
    signed = next(layer for layer in layers if layer.name == "signed").data[(slice(None),) * 3]
    assert signed.dtype == np.uint16 and (signed == 65535).all()


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("data/raw.h5:volumes/raw", ("data/raw.h5", "volumes/raw")),
        ("out/prob.zarr", ("out/prob.zarr", "")),
        ("a:b:c", ("a:b", "c")),
    ],
)
def test_parse_spec(spec, want):
    assert vw.parse_spec(spec) == want


def test_a_volume_that_cannot_be_shown_is_named(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["flat"] = np.zeros((8, 8), np.float32)
    with pytest.raises(vw.ViewerError, match=r"flat.*\(8, 8\).*\(z, y, x\)"):
        vw.open_layers([f"{tmp_path / 'v.h5'}:flat"])
    with pytest.raises(vw.ViewerError, match="nowhere.zarr"):
        vw.open_layers([str(tmp_path / "nowhere.zarr")])
    with h5py.File(tmp_path / "v.h5", "a") as f:
        f["prob"] = np.zeros((2, 8, 8), np.float32)
    with pytest.raises(vw.ViewerError, match=r"prob.*float32.*integer ids"):
        vw.open_layers([], segmentations=[f"{tmp_path / 'v.h5'}:prob"])


def test_run_py_view_refuses_a_public_address_and_serves_loopback(predicted, capsys):
    import run

    d, _raw = predicted
    assert run.main(["view", "--host", "0.0.0.0", str(d / "crop.zarr")]) == 2
    assert "no login" in capsys.readouterr().err  # and it says how: ssh -L
    proc = subprocess.Popen(
        [sys.executable, "run.py", "view", f"{d / 'in.zarr'}:raw", str(d / "crop.zarr")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while not (lines and lines[-1].startswith("neuroglancer: ")):
            lines.append(proc.stdout.readline())
            assert lines[-1], "run.py view ended before printing its URL"
        url = lines[-1].split()[1]
        assert url.startswith("http://127.0.0.1:") and "/v/" in url
        assert "prob[1]: image, (6, 26, 23) voxels of (40.0, 8.0, 4.0) nm, offset (2, 7, 7)" in (
            "".join(lines)
        )
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as page:  # the bundled client's page
            assert page.status == 200 and b"<html" in page.read().lower()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


# ---------------------------------------------------------------------------------------------
# the dashboard


def make_evaluated_run(runs_dir: Path, neurons: bool) -> tuple[Path, np.ndarray]:
    """A finished run whose ``FINAL`` result has a probability cache of one cube."""
    from trainer.evaluation.neurons import evaluate_neurons
    from trainer.synthetic import generate_cube_neurons

    d = runs_dir / "ev"
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    raw, lab, ids = generate_cube_neurons((6, 32, 32), np.random.default_rng(2))
    prob = np.clip(0.7 * lab + 0.45 * np.random.default_rng(0).random(lab.shape), 0, 1)
    prob = prob.astype(np.float16).astype(np.float32)
    lab = lab.astype(np.int8)
    lab[0, :4, :4] = -1  # ignored voxels
    grid = {"thresh": [20], "grow_it": [(0, 0, 0)], "hi_thresh": [240], "lo_thresh": [30]}
    found = [evaluate_neurons(ids, prob, grid=grid, n_proc=1)] if neurons else None
    res = {"valid": evaluate_arrays(lab, prob, mode="exact")}
    write_result(runs.result_path(d, "FINAL"), res, {"snapshot": "", "step": 10}, found)
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(raw / 255.0, prob, lab)])
    return d, ids


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to relabelling: each id of ``a`` maps to one of ``b`` and back."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("neurons", [True, False])
def test_the_evaluation_viewer_shows_the_cube_and_its_segmentation_at_the_threshold(
    tmp_path, neurons
):
    run_dir, ids = make_evaluated_run(tmp_path / "runs", neurons)
    url = vw.open_evaluation(run_dir, "FINAL", "cube0", 0.45, "127.0.0.1")
    viewer = vw.viewer_for(url)
    names = [layer.name for layer in viewer.state.layers]
    want = ["raw", "probability", "true labels", "true neurons", "segmentation at 0.4500"]
    assert names == (want if neurons else [n for n in want if n != "true neurons"])
    layers = {n: vw.layer_source(viewer, n) for n in names}
    raw, prob, label = runs.read_prob_cube(ev.prob_cache_path(run_dir, "FINAL"), "cube0")
    whole = (slice(None),) * 3
    seg = np.asarray(layers["segmentation at 0.4500"].data[whole])
    # the segmentation: 6-connected components of prob < threshold (scikit-image's labelling)
    reference = skimage_label(prob < 0.45, connectivity=1)
    assert same_partition(seg, reference)
    truth = np.asarray(layers["true labels"].data[whole])
    assert set(np.unique(truth[label == 1])) == {1} and set(np.unique(truth[label < 0])) == {2}
    assert set(np.unique(truth[label == 0])) == {0}
    if neurons:
        np.testing.assert_array_equal(layers["true neurons"].data[whole], ids)
    for n in names:  # one grid: every layer at the origin, the same shape
        g = vw.layer_grid(viewer, n)
        assert g["offset"] == (0, 0, 0) and g["shape"] == prob.shape
    # the same click again reuses the viewer; another threshold gets its own
    assert vw.open_evaluation(run_dir, "FINAL", "cube0", 0.45, "127.0.0.1") == url
    assert vw.open_evaluation(run_dir, "FINAL", "cube0", 0.6, "127.0.0.1") != url


def test_the_page_outputs_name_what_cannot_be_opened(tmp_path):
    run_dir, _ids = make_evaluated_run(tmp_path / "runs", neurons=False)
    href, _text, hidden, message = vw.evaluation_outputs(run_dir, "../x", "cube0", 0.5, "::1")
    assert href is None and hidden and "result" in message
    href, _text, hidden, message = vw.evaluation_outputs(run_dir, "FINAL", "cube9", 0.5, "::1")
    assert href is None and hidden and "cube9" in message
    assert vw.evaluation_outputs(run_dir, "FINAL", "cube0", 0.5, None) == vw.NOT_OFFERED
    assert vw.preview_outputs([], 0, "block0", "127.0.0.1")[3] == "no preview cube to open yet"


@pytest.mark.parametrize(
    ("kwargs", "offered"),
    [({}, True), ({"read_only": True}, False), ({"auth": {"ann": "secret"}}, False)],
)
def test_the_button_is_offered_only_without_a_login_and_not_read_only(tmp_path, kwargs, offered):
    from app.pages import evaluation, preview

    run_dir, _ids = make_evaluated_run(tmp_path / "runs", neurons=False)
    runs.write_preview(run_dir, 10, [(0, np.zeros((2, 8, 8)), np.zeros((2, 2, 8, 8)))], hours=0.1)
    app = create_app(
        tmp_path / "runs", tmp_path / "c", tmp_path / "d", start_launcher=False, gpus=[], **kwargs
    )
    try:
        assert (app_context(app).viewer_host == "127.0.0.1") is offered
        with app.server.test_request_context("/"):
            assert ("eval-ng-open" in str(evaluation.layout(name="ev"))) is offered
            assert ("prev-ng-open" in str(preview.layout(name="ev"))) is offered
    finally:
        app_context(app).close()


def test_the_preview_viewer_shows_raw_and_classes_at_the_cubes_plane(tmp_path):
    rng = np.random.default_rng(0)
    raw, prob = rng.random((3, 8, 8)), rng.random((2, 3, 8, 8))
    path = runs.write_preview(tmp_path, 10, [(0, raw, prob)], hours=0.1, z0=5)
    url = vw.open_preview([path], 0, "block0", "127.0.0.1")
    viewer = vw.viewer_for(url)
    names = [layer.name for layer in viewer.state.layers]
    assert names == ["raw", "probability class 0", "probability class 1"]
    assert [layer.visible for layer in viewer.state.layers] == [True, False, True]
    assert vw.layer_grid(viewer, "probability class 1")["offset"] == (5, 0, 0)


def test_an_ome_zarr_label_image_is_a_segmentation_named_by_its_group(tmp_path):
    """NGFF 0.4 labels (``image-label``, as ``run.py segment`` writes them) inside an image."""
    import json

    from trainer.omezarr import image_metadata

    root = zarr.open_group(str(tmp_path / "prob.zarr"), mode="w", zarr_format=2)
    ids = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6) % 5  # one byte: not guessed
    root.create_array("labels/neurons/0", data=ids, chunks=(4, 6, 6))
    meta = image_metadata("neurons", "0", (40.0, 8.0, 8.0), (80.0, 0.0, 16.0), "nanometer")
    ms = meta["multiscales"][0]
    ms["axes"] = ms["axes"][1:]  # (z, y, x): a label image has no channel axis
    for t in ms["datasets"][0]["coordinateTransformations"]:
        t[t["type"]] = t[t["type"]][1:]
    attrs = {**meta, "image-label": {"version": "0.4", "source": {"image": "../../"}}}
    (tmp_path / "prob.zarr" / "labels" / "neurons" / ".zattrs").write_text(json.dumps(attrs))
    (layer,) = vw.open_layers([f"{tmp_path / 'prob.zarr'}:labels/neurons"])
    assert (layer.name, layer.kind, layer.offset) == ("neurons", "segmentation", (2, 0, 2))
    assert layer.voxel_size == (40.0, 8.0, 8.0) and layer.unit == "nm"

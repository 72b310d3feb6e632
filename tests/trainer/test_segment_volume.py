"""``run.py segment``: blockwise neuron labels equal the in-memory segmentation up to ids."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cc3d
import numpy as np
import pytest
import zarr
from scipy import ndimage

from trainer import runs
from trainer.blockwise import block_shape_for, local_components, merge_faces, plan_blocks
from trainer.omezarr import image_metadata
from trainer.prediction_store import PredictionError, PredictionOutput, read_record
from trainer.predictions import read_prediction
from trainer.segment_volume import (
    SegmentSetting,
    label_location,
    membrane_map,
    register_label,
    resolve_quantiles,
    segment_in_memory,
    segment_to_disk,
    setting_from_run,
)
from trainer.segmentation import Quantile

ROOT = Path(__file__).resolve().parents[2]
GRID = {"voxel_size": [20.0, 9.0, 9.0], "translation": [40.0, 18.0, 9.0], "unit": "nanometer"}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label volumes are one relabelling of the other (0 kept as 0)."""
    a, b = a.ravel().astype(np.int64), b.ravel().astype(np.int64)
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def membrane(shape, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    m = ndimage.gaussian_filter(rng.random(shape), sigma)
    return (m - m.min()) / (m.max() - m.min())


def write_prediction(path: Path, mem: np.ndarray, dtype="float16") -> Path:
    """A finished prediction written with the store's writer (no model needed)."""
    prob = np.stack([1 - mem, mem])
    prob = np.rint(prob * 255).astype(np.uint8) if dtype == "uint8" else prob.astype(dtype)
    record = {"shape": list(prob.shape), "dtype": dtype, "tile": list(mem.shape),
              "padding": "symmetric", "offsets": [0, 0, 0], "input": {"path": "em.zarr"},
              "model": {"weights": "sha256:0"}, **GRID, "done": [], "complete": False}  # fmt: skip
    attrs = {"zarr": image_metadata("prob", "prob", GRID["voxel_size"], GRID["translation"],
                                    GRID["unit"]), "hdf5": {}}  # fmt: skip
    out = PredictionOutput.open(path, "prob", record, attrs)
    out.write(tuple(slice(0, n) for n in mem.shape), prob)
    out.mark_done(0)
    out.finish()
    return path


def read_labels(path: Path) -> np.ndarray:
    return zarr.open_array(str(path), path="0", mode="r")[:][0]


# -- the pure core ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", [(5, 7, 6), (16, 3, 20), (1, 1, 1), (32, 32, 32)])
def test_merged_blocks_equal_whole_volume_components(block):
    mask = membrane((16, 20, 18), seed=1, sigma=1.2) < 0.45
    blocks, grid = plan_blocks(mask.shape, block)
    parts = [local_components(mask[b]) for b in blocks]
    table = merge_faces(grid, [p.count for p in parts], [p.faces for p in parts])
    out = np.zeros(mask.shape, np.uint64)
    base = 0
    for b, p in zip(blocks, parts):
        lut = table[base : base + p.count + 1].copy()
        lut[0] = 0
        out[b] = lut[p.labels]
        base += p.count
    whole = cc3d.connected_components(mask, connectivity=6)
    assert same_partition(out, whole)
    assert int(out.max()) == int(whole.max())  # numbered 1..n, no gaps


def test_block_shape_fits_the_budget_and_refuses_a_tiny_one():
    b = block_shape_for((1000, 1000, 1000), 2**30, 40.0)
    assert all(e % 64 == 0 for e in b) and np.prod(b) * 40 <= 2**30
    assert block_shape_for((10, 500, 500), 2**30, 40.0)[0] == 10
    with pytest.raises(ValueError, match="--memory-gb"):
        block_shape_for((100, 100, 100), 1000, 40.0)


@pytest.mark.parametrize("q", [0.0, 0.2, 0.3, 0.75, 0.85, 1.0])
def test_quantiles_from_a_histogram_equal_quantile_of(q):
    a = np.rint(membrane((8, 16, 16), seed=2) * 200).astype(np.uint8)
    hist = np.bincount(a.ravel(), minlength=256)
    for above in (False, True):
        assert resolve_quantiles(hist, Quantile(q), above) == Quantile(q).of(a, above)


# -- on disk ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "uint8"])
def test_components_on_disk_equal_in_memory_and_align_with_the_prediction(tmp_path, dtype):
    prob_path = write_prediction(tmp_path / "prob.zarr", membrane((24, 40, 36)), dtype)
    vol, record = read_prediction(prob_path, "prob")
    out_path = prob_path / "labels" / "neurons"
    name = label_location(prob_path, out_path)
    setting = SegmentSetting("components", threshold=0.35)
    segment_to_disk(vol, record, out_path, setting, block=(10, 16, 16), label_name=name)
    register_label(prob_path, name)
    got = read_labels(out_path)
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, False), setting)
    assert got.dtype == np.uint64 and ref.max() > 3
    assert same_partition(got, ref)
    attrs = json.loads((out_path / ".zattrs").read_text())
    assert attrs["image-label"]["source"]["image"] == "../../"
    prob_ms = json.loads((prob_path / ".zattrs").read_text())["multiscales"][0]
    ms = attrs["multiscales"][0]
    assert ms["axes"] == prob_ms["axes"]
    assert (ms["datasets"][0]["coordinateTransformations"]
            == prob_ms["datasets"][0]["coordinateTransformations"])  # fmt: skip
    assert json.loads((prob_path / "labels" / ".zattrs").read_text())["labels"] == ["neurons"]
    assert not (out_path / ".segment-work").exists()


def test_seeded_watershed_on_disk_equals_in_memory(tmp_path):
    prob_path = write_prediction(tmp_path / "prob.zarr", membrane((24, 48, 48), seed=3))
    vol, record = read_prediction(prob_path, "prob")
    setting = SegmentSetting("seeded", thresh=9, hi_thresh=Quantile(0.75),
                             lo_thresh=Quantile(0.3), grow_it=(1, 2, 2))  # fmt: skip
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, True), setting)
    one = segment_to_disk(vol, record, tmp_path / "one.zarr", setting, block=(24, 48, 48))
    assert same_partition(read_labels(one), ref) and ref.max() > 3
    many = read_labels(segment_to_disk(vol, record, tmp_path / "many.zarr", setting,
                                       block=(12, 24, 24), halo=24))  # fmt: skip
    # same seeds, same ids per seed; the flood's ties on plateaus may go another way
    overlap = np.unique(np.stack([many.ravel(), ref.ravel()]), axis=1, return_counts=True)
    agree = sum(np.max(overlap[1][overlap[0][0] == g]) for g in np.unique(many))
    assert len(np.unique(many)) == len(np.unique(ref))
    assert agree / ref.size > 0.999


@pytest.mark.parametrize(("sync_seconds", "recorded"), [(0.0, 5), (60.0, 8)])
def test_a_killed_segmentation_resumes_and_refuses_another_setting(
    tmp_path, monkeypatch, sync_seconds, recorded
):
    """Progress reports blocks once recorded; blocks finished within ``SYNC_SECONDS`` are
    recorded together (at the latest when their pass ends): a kill at the fifth report leaves
    five blocks recorded when each is synced alone, the whole first pass (8 blocks) when they
    share one sync."""
    import trainer.segment_volume as sv

    monkeypatch.setattr(sv, "SYNC_SECONDS", sync_seconds)
    prob_path = write_prediction(tmp_path / "prob.zarr", membrane((20, 32, 32), seed=4))
    vol, record = read_prediction(prob_path, "prob")
    setting = SegmentSetting("components", threshold=0.35)
    calls = []

    def stop_after_five(name, done, total, seconds):
        calls.append((name, done, total))
        if len(calls) == 5:
            raise KeyboardInterrupt

    out = tmp_path / "seg.zarr"
    with pytest.raises(KeyboardInterrupt):
        segment_to_disk(vol, record, out, setting, block=(10, 16, 16), progress=stop_after_five)
    assert len(read_record(out, "0")["done"]) == recorded
    with pytest.raises(PredictionError, match="--memory-gb 0.01 holds no block"):
        segment_to_disk(vol, record, tmp_path / "other.zarr", setting, memory_gb=0.01)
    with pytest.raises(PredictionError, match="threshold: recorded 0.35, now 0.5"):
        segment_to_disk(vol, record, out, SegmentSetting("components", threshold=0.5))
    calls.clear()
    segment_to_disk(vol, record, out, setting, block=(10, 16, 16),
                    progress=lambda *a: calls.append(a))  # fmt: skip
    assert len(calls) == 16 - recorded  # 8 blocks, 2 passes
    assert calls[0][1] == recorded + 1
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, False), setting)
    assert same_partition(read_labels(out), ref) and ref.max() > 3
    calls.clear()  # a rerun of a complete output does nothing and changes nothing
    segment_to_disk(vol, record, out, setting, block=(10, 16, 16),
                    progress=lambda *a: calls.append(a))  # fmt: skip
    assert calls == [] and same_partition(read_labels(out), ref)


SEEDED = SegmentSetting("seeded", thresh=9, hi_thresh=Quantile(0.75), lo_thresh=Quantile(0.3),
                        grow_it=(1, 1, 1))  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "sync_seconds"),
    [(SegmentSetting("components", threshold=0.35), 0.0), (SEEDED, 60.0)],
    ids=["components-each-block", "seeded-batched"],
)
def test_a_block_is_recorded_only_after_its_files_are_fsynced(
    tmp_path, monkeypatch, setting, sync_seconds
):
    """Blocks are synced alone or in batches (``_sync``): the work files (faces, seeds) and
    label chunks they wrote are fsynced before the record save that names them."""
    import trainer.segment_volume as sv

    sys.path.insert(0, str(Path(__file__).parent))
    from durability import SyncOrder

    prob_path = write_prediction(tmp_path / "prob.zarr", membrane((20, 32, 32), seed=4))
    vol, record = read_prediction(prob_path, "prob")
    out = tmp_path / "seg.zarr"
    monkeypatch.setattr(sv, "SYNC_SECONDS", sync_seconds)
    order = SyncOrder(monkeypatch, out)
    order.watch(monkeypatch, sv, "atomic_write_bytes")  # the faces files
    segment_to_disk(vol, record, out, setting, block=(10, 16, 16), halo=4)
    monkeypatch.undo()
    named, synced = order.check(out)
    passes = 3 if setting.method == "seeded" else 2
    assert named == len(read_record(out, "0")["done"]) == passes * 8
    # 8 faces files, then one chunk (labels; seeds) synced per block alone, or per pass
    assert synced == 8 + (passes - 1) * (8 if sync_seconds == 0 else 1)


def test_labels_inside_the_prediction_only_under_labels(tmp_path):
    prob = write_prediction(tmp_path / "prob.zarr", membrane((8, 8, 8)))
    assert label_location(prob, tmp_path / "elsewhere.zarr") is None
    with pytest.raises(PredictionError, match="labels"):
        label_location(prob, prob / "neurons")


def test_the_setting_comes_from_the_saved_threshold_or_says_what_to_do(tmp_path):
    with pytest.raises(PredictionError, match="threshold.json: no threshold saved"):
        setting_from_run(tmp_path)
    with pytest.raises(PredictionError, match="--instances"):
        setting_from_run(tmp_path, seeded=True)
    runs.write_threshold(tmp_path, {"threshold": 0.37, "method": "f1", "beta": 1, "run": "r",
                                    "result": "FINAL", "split": "valid", "saved": 0,
                                    "metrics": {}})  # fmt: skip
    s = setting_from_run(tmp_path)
    assert (s.method, s.threshold) == ("components", 0.37)
    assert setting_from_run(tmp_path, threshold=0.6).threshold == 0.6


def test_cli_segments_at_the_saved_threshold_and_names_bad_input(tmp_path):
    prob = write_prediction(tmp_path / "prob.zarr", membrane((16, 24, 24), seed=5))
    run_dir = tmp_path / "run"
    runs.write_threshold(run_dir, {"threshold": 0.4, "method": "f1", "beta": 1, "run": "r",
                                   "result": "FINAL", "split": "valid", "saved": 0,
                                   "metrics": {}})  # fmt: skip
    cmd = [sys.executable, str(ROOT / "run.py"), "segment", str(run_dir)]
    ok = subprocess.run([*cmd, str(prob), str(prob / "labels" / "neurons"), "--block", "8",
                         "12", "12"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "ETA" in ok.stderr and "block 16/16" in ok.stderr
    vol, _ = read_prediction(prob, "prob")
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, False),
                            SegmentSetting("components", threshold=0.4))  # fmt: skip
    assert same_partition(read_labels(prob / "labels" / "neurons"), ref)
    bad = subprocess.run([*cmd, str(prob), str(tmp_path / "x.zarr"), "--key", "nope"],
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "nope" in bad.stderr


@pytest.mark.parametrize(("size_kb", "when"), [(16, "while creating"), (48, "writing")])
def test_cli_segment_on_a_full_disk_says_so_in_one_line_and_resumes(tmp_path, cli, size_kb, when):
    # full while the output is created (no room for its record: nothing may be left that the
    # rerun would refuse), or while the blocks are written (resumed after those recorded)
    sys.path.insert(0, str(Path(__file__).parent))
    from test_disk_full import SmallDisk  # its tmpfs: zarr writes below Python's os layer

    prob = write_prediction(tmp_path / "prob.zarr", membrane((16, 64, 64), seed=5))
    run_dir = tmp_path / "run"
    runs.write_threshold(run_dir, {"threshold": 0.4, "method": "f1", "beta": 1, "run": "r",
                                   "result": "FINAL", "split": "valid", "saved": 0,
                                   "metrics": {}})  # fmt: skip
    with SmallDisk(tmp_path / "small", tmp_path) as disk:
        if disk.kind != "tmpfs":
            pytest.skip("needs a tmpfs mount (root)")
        subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(disk.root)], check=True)
        out = disk.root / "neurons.zarr"
        argv = ["segment", run_dir, prob, out, "--block", "8", "32", "32"]
        code, _, err = cli(argv, cwd=ROOT)
        assert code == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith(f"run.py segment: no space left on device {when} {out}")
        assert "run the same command again" in last and "Traceback" not in err
        assert re.search(r"\d+ kB free", last), last  # a few kB left: said in kB, not "0.0 MB"
        disk.free()
        code, _, err = cli(argv, cwd=ROOT)
        assert code == 0, err[-3000:]
        got = read_labels(out)
    vol, _ = read_prediction(prob, "prob")
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, False),
                            SegmentSetting("components", threshold=0.4))  # fmt: skip
    assert same_partition(got, ref) and ref.max() > 3


def evaluated_run(run_dir: Path) -> list[dict]:
    """A run folder with what ``evaluate --instances`` stores: a FINAL result whose neuron
    records (two validation cubes) hold the seeded-watershed grid search; the records."""
    from trainer.evaluation.neurons import evaluate_neurons
    from trainer.metrics import evaluate_arrays
    from trainer.synthetic import generate_cube_neurons

    grid = {"thresh": [0, 9], "grow_it": [(0, 0, 0), (1, 1, 1)], "hi_thresh": [Quantile(0.8)],
            "lo_thresh": [Quantile(0.3), 20]}  # fmt: skip
    records = []
    for seed in (4, 5):
        _, lab, ids = generate_cube_neurons((12, 40, 40), np.random.default_rng(seed))
        noise = np.random.default_rng(seed).random(lab.shape)
        prob = np.clip(0.7 * lab + 0.5 * noise, 0, 1).astype(np.float32)
        records.append(evaluate_neurons(ids, prob, thresholds=[0.5], grid=grid, n_proc=1))
    runs.eval_dir(run_dir).mkdir(parents=True)
    runs.write_result(runs.result_path(run_dir, "FINAL"), {"valid": evaluate_arrays(lab, prob)},
                      neurons=records)  # fmt: skip
    return records


def test_seeded_takes_the_grid_row_best_on_average_over_the_validation_cubes(tmp_path):
    records = evaluated_run(tmp_path)
    are = np.mean([r["search/adapted_rand_error"] for r in records], axis=0)
    row = int(np.argmin(are))
    s = setting_from_run(tmp_path, seeded=True)
    assert s.method == "seeded" and "FINAL.h5" in s.source
    assert s.thresh == records[0]["search/thresh"][row]
    assert s.grow_it == tuple(int(records[0][f"search/grow_{a}"][row]) for a in "zyx")
    assert s.hi_thresh == Quantile(0.8)
    lo_q = records[0]["search/lo_quantile"][row]
    assert s.lo_thresh == (Quantile(0.3) if np.isfinite(lo_q) else 20.0)
    with pytest.raises(PredictionError, match="no readable evaluation result"):
        setting_from_run(tmp_path, seeded=True, result="NOPE")


def test_cli_segment_seeded_uses_the_setting_stored_by_evaluate_instances(tmp_path, cli):
    run_dir = tmp_path / "run"  # no threshold.json: only --seeded can segment with it
    evaluated_run(run_dir)
    setting = setting_from_run(run_dir, seeded=True)
    prob = write_prediction(tmp_path / "prob.zarr", membrane((12, 32, 32), seed=7))
    out = tmp_path / "neurons.zarr"
    code, _, err = cli(["segment", run_dir, prob, out, "--seeded", "--block", "12", "32", "32"],
                       cwd=ROOT)  # fmt: skip
    assert code == 0, err[-3000:]
    assert f"(seeded, from {setting.source})" in err
    vol, _ = read_prediction(prob, "prob")
    ref = segment_in_memory(membrane_map(vol.read()[1], vol.dtype, True), setting)
    assert same_partition(read_labels(out), ref) and ref.max() > 3
    code, _, err = cli(["segment", run_dir, prob, tmp_path / "other.zarr"], cwd=ROOT)
    assert code == 2 and "no threshold saved" in err


def test_an_hdf5_prediction_gets_standalone_labels_on_its_grid(tmp_path):
    mem = membrane((12, 20, 20), seed=6)
    prob = np.stack([1 - mem, mem]).astype(np.float16)
    record = {"shape": list(prob.shape), "dtype": "float16", "tile": [12, 20, 20],
              "padding": "crop", "offsets": [1, 2, 2], "input": {"path": "em.h5"},
              "model": {"weights": "sha256:0"}, **GRID, "done": [], "complete": False}  # fmt: skip
    hdf5 = {"axes": "c,z,y,x", "voxel_size": GRID["voxel_size"], "unit": "nanometer",
            "translation": GRID["translation"]}  # fmt: skip
    out = PredictionOutput.open(tmp_path / "prob.h5", "prob", record, {"zarr": {}, "hdf5": hdf5})
    out.write((slice(0, 12), slice(0, 20), slice(0, 20)), prob)
    out.mark_done(0)
    out.finish()
    vol, rec = read_prediction(tmp_path / "prob.h5", "prob")
    assert label_location(tmp_path / "prob.h5", tmp_path / "neurons.zarr") is None
    setting = SegmentSetting("components", threshold=0.4)
    path = segment_to_disk(vol, rec, tmp_path / "neurons.zarr", setting, block=(5, 8, 8))
    ref = segment_in_memory(membrane_map(prob[1], np.float16, False), setting)
    assert same_partition(read_labels(path), ref) and ref.max() > 1
    ms = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    transforms = ms["datasets"][0]["coordinateTransformations"]
    assert transforms == [{"type": "scale", "scale": [1.0, 20.0, 9.0, 9.0]},
                          {"type": "translation", "translation": [0.0, 40.0, 18.0, 9.0]}]  # fmt: skip
    with pytest.raises(PredictionError, match="OME-Zarr label image, a folder"):
        segment_to_disk(vol, rec, tmp_path / "neurons.h5", setting)


def test_the_viewer_opens_the_labels_as_one_segmentation_on_the_predictions_grid(tmp_path):
    from app import viewer

    prob_path = write_prediction(tmp_path / "prob.zarr", membrane((12, 20, 18)))
    vol, record = read_prediction(prob_path, "prob")
    out_path = prob_path / "labels" / "neurons"
    name = label_location(prob_path, out_path)
    segment_to_disk(vol, record, out_path, SegmentSetting("components", threshold=0.35),
                    block=(12, 20, 18), label_name=name)  # fmt: skip
    register_label(prob_path, name)
    layers = {layer.name: layer for layer in viewer.open_layers([str(prob_path), str(out_path)])}
    assert {n: layer.kind for n, layer in layers.items()} == {
        "prob[0]": "image", "prob[1]": "image", "neurons": "segmentation"}  # fmt: skip
    seg, prob = layers["neurons"], layers["prob[1]"]
    assert (seg.voxel_size, seg.offset) == (prob.voxel_size, prob.offset) != ((1, 1, 1), (0, 0, 0))
    np.testing.assert_array_equal(seg.data[:, :, :], read_labels(out_path))

"""End to end: `python run.py train` on the demo data in a real subprocess, then resume and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from trainer import runs
from trainer.history import loadhistorytracker
from trainer.metrics import evaluate_arrays

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo_cnn3d.py"

pytestmark = pytest.mark.slow


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "VOXELBOARD_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


def _train(
    tmp: Path, data_dir: Path, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "run.py"), "train", *args]
    return subprocess.run(cmd, cwd=tmp, env=_env(data_dir), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, demo_data_dir) -> Path:
    tmp = tmp_path_factory.mktemp("e2e")
    proc = _train(tmp, demo_data_dir, str(DEMO), "--save-path", str(tmp / "runs"), "--save-name", "demo",
                  "--n-steps", "50", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "runs" / "demo"


def test_run_directory_is_complete_and_consistent(finished_run: Path):
    status = runs.read_status(finished_run)
    assert status.state == "finished" and status.step == 50 and status.n_steps == 50
    assert status.extra["device"] == "cpu" and status.extra["torch_version"] == torch.__version__

    tracker = loadhistorytracker(finished_run)
    assert len(tracker.timeline) == 50
    assert list(tracker.timeline.index) == list(range(50))
    assert np.isfinite(tracker.timeline["loss"]).all()
    hist = tracker.history
    # history_freq is 20 in the demo config: steps 0, 20, 40 and the last step
    assert list(hist["steps"]) == [0, 20, 40, 49]
    assert hist[["train_loss", "valid_loss", "train_err", "valid_err"]].notna().all().all()
    assert (np.diff(hist["time"]) > 0).all()

    for which in ("LAST", "FINAL"):
        snap = torch.load(runs.snapshot_path(finished_run, which), weights_only=False)
        assert snap["step"] == 50
        assert set(snap) >= {"model", "optimizer", "schedules", "step"}

    previews = runs.preview_files(finished_run)
    assert previews, "preview_every=100 includes step 0"
    with h5py.File(previews[0]) as f:
        assert f.attrs["step"] == 0 and f.attrs["n_classes"] == 2
        raw, prob = f["block0/raw"][()], f["block0/prob"][()]
    assert prob.shape[0] == 2 and raw.shape == prob.shape[1:]
    np.testing.assert_allclose(prob.astype(np.float32).sum(0), 1.0, atol=1e-2)

    resolved = json.loads((finished_run / "config.json").read_text())
    assert resolved["n_steps"] == 50
    assert (finished_run / "0-demo_cnn3d.py").exists()
    log = (finished_run / "train.log").read_text()
    assert "it/s" in log and "End of training (finished)" in log


def test_resume_continues_the_step_count(finished_run: Path, demo_data_dir: Path):
    proc = _train(
        finished_run.parent.parent, demo_data_dir, "--resume", str(finished_run), "--n-steps", "52"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = runs.read_status(finished_run)
    assert status.state == "finished" and status.step == 52
    tracker = loadhistorytracker(finished_run)
    assert list(tracker.timeline.index) == list(range(52)), "no gap and no duplicate step"
    steps = list(tracker.history["steps"])
    assert steps == sorted(set(steps)) and steps[-2:] == [49, 51]
    assert (np.diff(tracker.timeline["time"]) >= 0).all(), "training time continues"


def test_sigterm_stops_with_a_loadable_snapshot(tmp_path: Path, demo_data_dir: Path):
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(DEMO), "--save-path",
           str(tmp_path / "runs"), "--save-name", "term", "--n-steps", "100000", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(demo_data_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    run_dir = tmp_path / "runs" / "term"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = runs.read_status(run_dir)
            if status is not None and status.state == "running" and status.step >= 3:
                break
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail("the run did not reach step 3")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    status = runs.read_status(run_dir)
    assert status.state == "stopped"
    snap = torch.load(runs.snapshot_path(run_dir, "FINAL"), weights_only=False)
    assert snap["step"] == status.step >= 3
    assert len(loadhistorytracker(run_dir).timeline) == status.step


def test_bad_config_exits_2_with_a_short_message(tmp_path: Path, demo_data_dir: Path, cli):
    cfg = tmp_path / "bad.py"
    cfg.write_text(DEMO.read_text().replace("history_freq = 20", "histroy_freq = 20"))
    code, _, err = cli(["train", cfg, "--save-path", tmp_path / "runs"], cwd=tmp_path,
                       env={"VOXELBOARD_DATA_DIR": str(demo_data_dir)})  # fmt: skip
    assert code == 2
    assert "did you mean 'history_freq'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_evaluate_cli_writes_a_result_the_dashboard_reads(
    finished_run: Path, demo_data_dir: Path, cli
):
    from trainer.runs import read_result

    code, out, err = cli(["evaluate", finished_run, "--split", "both", "--mode", "exact",
                          "--store-exact", "--device", "cpu"], cwd=finished_run.parent.parent,
                         env={"VOXELBOARD_DATA_DIR": str(demo_data_dir)})  # fmt: skip
    assert code == 0, err[-3000:]
    assert "roc_auc=" in out and "valid:" in out and "train:" in out
    results = read_result(finished_run / "eval" / "FINAL.h5")
    assert set(results) == {"train", "valid"}
    valid = results["valid"]
    assert valid.n_pos > 0 and valid.n_neg > 0
    assert 0.5 < valid.roc_auc <= 1.0, "50 steps of the demo already separate membranes"
    for suffix in ("_valid.performance.html", "_valid.error_histogram.html", "-REPORT.txt"):
        assert (finished_run / "eval" / f"FINAL{suffix}").exists()
    # --store-exact: every distinct score is read back; the dashboard's thinned copy keeps the
    # areas and every preset of it
    assert runs.stores_exact(finished_run / "eval" / "FINAL.h5")
    thin = read_result(finished_run / "eval" / "FINAL.h5", coarse=True)["valid"]
    assert thin.thresholds.size <= 4096 < valid.thresholds.size
    assert (thin.roc_auc, thin.average_precision) == (valid.roc_auc, valid.average_precision)
    for method in ("max_f1", "max_accuracy", "max_youden", "eer"):
        assert thin.choose(method) == valid.choose(method)
    # one pass: the probability cache of the validation cubes is written with the result, from
    # the same predictions (the segmentation view only reads it)
    cache = runs.prob_cache_path(finished_run, "FINAL")
    meta = runs.read_prob_cache(cache)
    assert meta["snapshot"].endswith("FINAL.pt")
    with h5py.File(cache) as f:
        label = np.concatenate([f[c]["label"][()].ravel() for c in meta["cubes"]])
        prob = np.concatenate([f[c]["prob"][()].astype(np.float32).ravel() for c in meta["cubes"]])
    again = evaluate_arrays(label, prob, mode="exact")
    assert (again.n_pos, again.n_neg, again.n_ignored) == (
        valid.n_pos,
        valid.n_neg,
        valid.n_ignored,
    )
    assert again.roc_auc == pytest.approx(valid.roc_auc, abs=2e-3)  # float16 in the cache


def test_evaluate_instances_scores_the_demo_neurons(finished_run: Path, demo_data_dir: Path, cli):
    from trainer.evaluation.neurons import THRESHOLDS
    from trainer.inference import centre_crop
    from trainer.segmentation import segmentation_scores, threshold_components

    with h5py.File(demo_data_dir / "neurons_2.h5") as f:
        all_ids = f["ids"][()]
    glia = int(np.bincount(all_ids.ravel())[1:].argmax()) + 1  # the largest neuron: not scored
    code, out, err = cli(["evaluate", finished_run, "--instances", "--device", "cpu", "--name",
                          "NEURONS", "--ignore-labels", glia, "--rand-convention", "cremi"],
                         cwd=finished_run.parent.parent,
                         env={"VOXELBOARD_DATA_DIR": str(demo_data_dir)})  # fmt: skip
    assert code == 0, err[-3000:]
    report = (finished_run / "eval" / "NEURONS-REPORT.txt").read_text()
    assert report.splitlines()[0].endswith("ri0, ri1, ri2, ri3, rim")
    assert "valid cube 0 neurons: best VOI at threshold" in out
    (cube,) = runs.read_neurons(runs.result_path(finished_run, "NEURONS"))
    np.testing.assert_array_equal(cube["curve/thresholds"], THRESHOLDS)
    assert len(cube["search/thresh"]) == 12 and 0 < cube["seg_rand_index"] <= 1
    # the curve at the best adapted-Rand threshold is the score of the cached prediction there
    cache = runs.prob_cache_path(finished_run, "NEURONS")
    with h5py.File(cache) as f:
        prob = f["cube0/prob"][()].astype(np.float32)
    ids = centre_crop(all_ids, prob.shape)
    assert cube["segmentation"].shape == prob.shape
    assert cube["rand_convention"] == "cremi" and list(cube["ignore_labels"]) == [glia]
    np.testing.assert_array_equal(cube["instances"], np.where(ids == glia, 0, ids))
    i = int(np.argmin(cube["curve/adapted_rand_error"]))
    assert cube["best_are_threshold"] == THRESHOLDS[i]
    seg = threshold_components(prob, THRESHOLDS[i])
    s = segmentation_scores(ids, seg, ignore_labels=[glia], convention="cremi")
    # float16 in the cache moves a few voxels across the threshold
    assert s.adapted_rand_error == pytest.approx(cube["curve/adapted_rand_error"][i], abs=0.02)
    assert cube["curve/adapted_rand_error"][i] < 1.0


@pytest.fixture(scope="module")
def zarr_run(tmp_path_factory, demo_data_dir) -> tuple[Path, int]:
    """examples/demo_cnn3d_zarr.py trained 3 steps from its zarr cubes and evaluated with
    ``run.py evaluate --instances --name NEURONS``, the config's ``instance_ignore_labels``
    naming the validation cube's largest neuron; the run directory and that neuron."""
    tmp = tmp_path_factory.mktemp("zarr")
    with h5py.File(demo_data_dir / "neurons_2.h5") as f:
        glia = int(np.bincount(f["ids"][()].ravel())[1:].argmax()) + 1  # the largest neuron
    config = tmp / "demo_cnn3d_zarr.py"
    example = (REPO / "examples" / "demo_cnn3d_zarr.py").read_text()
    config.write_text(example + f"\ninstance_ignore_labels = [{glia}]\n")
    proc = _train(tmp, demo_data_dir, str(config), "--save-path", str(tmp / "runs"),
                  "--save-name", "zarr", "--n-steps", "3", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp / "runs" / "zarr"
    cmd = [sys.executable, str(REPO / "run.py"), "evaluate", str(run), "--instances",
           "--device", "cpu", "--name", "NEURONS"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True,
                          env=_env(demo_data_dir), timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "valid cube 0 neurons: best VOI at threshold" in proc.stdout
    return run, glia


def test_the_zarr_demo_trains_from_zarr_and_scores_its_neurons(zarr_run):
    """examples/demo_cnn3d_zarr.py end to end: trained from lazily read zarr cubes, then
    ``run.py evaluate --instances`` scores the neurons kept in the same zarr group, leaving out
    the neuron the config's ``instance_ignore_labels`` names."""
    run, glia = zarr_run
    assert "demo.zarr" in json.dumps(json.loads((run / "config.json").read_text()))
    (cube,) = runs.read_neurons(runs.result_path(run, "NEURONS"))
    with h5py.File(runs.prob_cache_path(run, "NEURONS")) as f:
        shape = f["cube0/prob"].shape
    assert cube["segmentation"].shape == shape
    assert 0 < cube["seg_rand_index"] <= 1 and len(cube["search/thresh"]) == 12
    # no --ignore-labels: the config's key reached the scores
    assert list(cube["ignore_labels"]) == [glia] and cube["rand_convention"] == "skimage"
    assert glia not in np.unique(cube["instances"])


def test_evaluate_again_writes_the_cache_of_an_old_result(finished_run, tmp_path, monkeypatch,
                                                          demo_data_dir):  # fmt: skip
    import shutil

    from trainer.evaluation import evaluate_again, evaluate_run

    run_dir = tmp_path / "demo"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("eval"))
    data_dir = demo_data_dir
    monkeypatch.delenv("VOXELBOARD_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # a config that missed data_dir would make ./data here
    evaluate_run(run_dir, split="valid", device="cpu", name="OLD", data_dir=data_dir)
    cache = runs.prob_cache_path(run_dir, "OLD")
    cache.unlink()  # as a result written before caches existed
    results = evaluate_again(run_dir, "OLD", device="cpu", data_dir=data_dir)
    # as it was made: the valid split alone (the demo's one validation cube), binned counts
    assert set(results) == {"valid"} and results["valid"].mode == "binned"
    assert runs.read_prob_cache(cache)["cubes"]
    assert "VOXELBOARD_DATA_DIR" not in os.environ and not (tmp_path / "data").exists()
    # a training-split evaluation under that name drops the cache that no longer belongs to it
    evaluate_run(run_dir, split="train", device="cpu", name="OLD", data_dir=data_dir)
    assert not cache.exists() and set(runs.read_result(runs.result_path(run_dir, "OLD"))) == {
        "train"
    }


def test_evaluate_cli_on_a_folder_without_a_run_exits_2(tmp_path: Path, cli):
    code, _, err = cli(["evaluate", tmp_path])
    assert code == 2
    assert "no config copy" in err and "Traceback" not in err


@pytest.mark.parametrize("damage", ["truncated", "random bytes"])
def test_evaluate_names_a_corrupt_snapshot_and_what_to_do(finished_run, tmp_path, monkeypatch,
                                                          damage, demo_data_dir, cli):  # fmt: skip
    import random
    import shutil

    from trainer.evaluation import load_run
    from trainer.modelio import SnapshotError

    run_dir = tmp_path / "demo"
    shutil.copytree(finished_run, run_dir)
    snap = run_dir / runs.SNAPSHOT_DIR / "FINAL.pt"
    data = snap.read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else random.Random(0).randbytes(4096)
    snap.write_bytes(bad)
    data_dir = demo_data_dir
    code, _, err = cli(["evaluate", run_dir, "--device", "cpu"], cwd=tmp_path,
                       env={"VOXELBOARD_DATA_DIR": str(data_dir)})  # fmt: skip
    assert code == 2, err[-3000:]
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert message.startswith("run.py evaluate: demo/snapshots/FINAL.pt is corrupt or truncated (")
    assert message.endswith("pick another snapshot with --snapshot, or re-train / --resume the run")

    # the evaluation page loads snapshots through the same function
    with pytest.raises(SnapshotError, match=r"^demo/snapshots/FINAL\.pt is corrupt or truncated"):
        load_run(run_dir, device="cpu")


def test_the_pages_evaluate_scores_the_demo_neurons_as_the_cli_does(
    finished_run, tmp_path, monkeypatch, demo_data_dir
):
    """Issue 26 point 5: the evaluation page's Evaluate (its background job's function, run
    here in this process) scores the neurons when the config has instance_files, with
    `run.py evaluate --instances`' defaults, and a second press keeps that result."""
    import shutil

    from app import neurons_view as nv
    from app.pages import evaluation

    run_dir = tmp_path / "demo"
    shutil.copytree(finished_run, run_dir, ignore=shutil.ignore_patterns("eval"))
    monkeypatch.chdir(tmp_path)
    progress: list = []
    done, _rewritten, message = evaluation._evaluate(
        run_dir, "FINAL", "binned", demo_data_dir, progress.append
    )
    assert message == "" and done["result"] == "FINAL", message
    (cube,) = runs.read_neurons(runs.result_path(run_dir, "FINAL"))
    assert len(cube["search/thresh"]) == 12 and cube["rand_convention"] == "skimage"
    assert 0 < cube["seg_rand_index"] <= 1
    head, *_cells = nv.watershed_outputs(run_dir, "FINAL", "cube0")
    assert head.startswith("optimised seeded watershed (thresh ")
    assert nv.evaluation_plan(run_dir, "FINAL") == ("FINAL-dashboard", True)


def _served_layers(base: str, viewer_token: str) -> dict[str, dict]:
    """What neuroglancer's client is told by a running viewer's server: the state's layers
    (the event stream the client reads first), each with its source's info (grid, voxel
    offset, data type), as ``{name: {"state": ..., "info": ..., "token": ...}}``."""
    import urllib.request

    url = f"{base}/events/{viewer_token}?c=test&gc=&gs="
    with urllib.request.urlopen(url, timeout=20) as stream:
        for line in stream:  # config state, then the shared state with the layers
            msg = json.loads(line[5:]) if line.startswith(b"data:") else {}
            if msg.get("k") == "s":
                break
    layers = {}
    for layer in msg["s"]["layers"]:
        token = layer["source"][0]["url"].rpartition("/")[2]  # python://volume/<token>
        with urllib.request.urlopen(f"{base}/neuroglancer/info/{token}", timeout=20) as r:
            layers[layer["name"]] = {"state": layer, "info": json.loads(r.read()), "token": token}
    return layers


def _served_voxels(base: str, layer: dict) -> np.ndarray:
    """A layer's whole volume as the server sends it to the client (full resolution, npz)."""
    import io
    import urllib.request
    import zlib

    end = ",".join(str(n) for n in layer["info"]["shape"])
    url = f"{base}/neuroglancer/npz/{layer['token']}/1,1,1/0,0,0/{end}"
    with urllib.request.urlopen(url, timeout=20) as r:
        return np.load(io.BytesIO(zlib.decompress(r.read())))


def test_train_predict_segment_and_view_the_zarr_demo_aligned(
    zarr_run, demo_data_dir, tmp_path, monkeypatch
):
    """Issue 26, done when: the zarr demo trained, a threshold saved as the evaluation page
    saves it, ``run.py predict`` of the whole demo volume, ``run.py segment`` at the saved
    threshold, ``run.py view`` of raw + prediction + segmentation (a real server on loopback),
    and the layers it serves aligned by voxel coordinates."""
    import urllib.parse

    import zarr
    from skimage.measure import label as skimage_label

    import run as run_py
    from app import evaluation_view as ev
    from trainer.evaluation import load_run
    from trainer.inference import predict_dense

    run, _glia = zarr_run
    monkeypatch.setenv("VOXELBOARD_DATA_DIR", str(demo_data_dir))
    # the page's Save: its metrics at the slider's threshold, written where segment reads them.
    # The slider at the median of the validation prediction: a model of 3 unseeded steps can
    # predict more than a fixed threshold everywhere, and then no voxel would be a neuron
    with h5py.File(runs.prob_cache_path(run, "NEURONS")) as f:
        slider = round(float(np.median(f["cube0/prob"][()].astype(np.float32))), 4)
    m = ev.current_metrics(run, "NEURONS", "valid", slider, 1.0)
    record = ev.threshold_record(m, run=run.name, result="NEURONS", split="valid")
    saved = record["threshold"]
    assert saved == pytest.approx(slider, abs=0.01)
    assert ev.save_threshold(run, record).startswith(f"saved threshold {saved:.4f}")

    raw_spec = f"{demo_data_dir / 'demo.zarr'}:raw_2"
    prob, neurons = tmp_path / "prob.zarr", tmp_path / "prob.zarr" / "labels" / "neurons"
    # the demo's zarr declares no voxel size: give one, so alignment is in nm, not voxels
    assert run_py.main(["predict", str(run), str(demo_data_dir / "demo.zarr"), str(prob),
                        "--key", "raw_2", "--device", "cpu", "--voxel-size", "20", "9", "9"]) == 0  # fmt: skip
    assert run_py.main(["segment", str(run), str(prob), str(neurons)]) == 0

    view = subprocess.Popen(
        [sys.executable, "run.py", "view", raw_spec, str(prob), str(neurons)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env=_env(demo_data_dir),
    )  # fmt: skip
    try:
        lines: list[str] = []
        while not (lines and lines[-1].startswith("neuroglancer: ")):
            lines.append(view.stdout.readline())
            assert lines[-1], "run.py view ended before printing its URL"
        url = urllib.parse.urlsplit(lines[-1].split()[1])
        assert url.hostname == "127.0.0.1"
        base = f"{url.scheme}://{url.netloc}"
        layers = _served_layers(base, url.path.split("/")[2])
        assert list(layers) == ["raw_2", "prob[0]", "prob[1]", "neurons"]
        assert layers["neurons"]["state"]["type"] == "segmentation"
        served = {
            name: _served_voxels(base, layers[name]) for name in ("raw_2", "prob[1]", "neurons")
        }
    finally:
        view.terminate()
    assert view.wait(timeout=20) == 0

    raw = zarr.open_array(str(demo_data_dir / "demo.zarr"), path="raw_2", mode="r")[:]
    # one world: voxel v of every layer lies at (offset + v) * voxel size, in metres; none of
    # the layers moves its source by a transform of its own
    for name in ("raw_2", "prob[1]", "neurons"):
        info, state = layers[name]["info"], layers[name]["state"]
        assert "transform" not in state["source"][0]
        space = info["coordinateSpace"]
        assert list(space) == ["z", "y", "x"] and {u for _s, u in space.values()} == {"m"}
        assert [s for s, _u in space.values()] == pytest.approx([20e-9, 9e-9, 9e-9])
        assert [int(o) for o in info["voxelOffset"]] == [0, 0, 0]
        assert list(served[name].shape) == info["shape"] == list(raw.shape)
    np.testing.assert_array_equal(served["raw_2"], raw)
    # the prediction at voxel p is the model's answer for the raw centred on p: predicted here
    # from a raw window of the model's input size whose first output voxel is p
    model = load_run(run, device="cpu").model
    oz, oy, ox = (int(o) for o in model.offsets)
    size = tuple(int(n) for n in model.patch_size)
    for p in [(oz, oy, ox), (30, 70, 41), (64 - size[0] + oz, 128 - size[1] + oy, 60)]:
        window = raw[tuple(slice(c - o, c - o + n) for c, o, n in zip(p, (oz, oy, ox), size))]
        want = predict_dense(model, window)[1, 0, 0, 0]
        assert served["prob[1]"][p] == pytest.approx(want, abs=2e-3)  # float16 on disk
    # the segmentation at voxel p is a neuron exactly where the prediction at p is below the
    # saved threshold, and its neurons are scikit-image's 6-connected components there
    below = served["prob[1]"] < np.float32(saved)
    assert 0 < below.mean() < 1
    np.testing.assert_array_equal(served["neurons"] != 0, below)
    reference = skimage_label(below, connectivity=1)
    pairs = np.unique(np.stack([served["neurons"].ravel(), reference.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]

"""Bad data stops before training with one line that says what to fix.

A missing file or a label cube that does not fit: ``run.py train`` exits 2 with one line
and leaves no run directory. Labels smaller than the raw cube are accepted when smaller by
the model's offsets, or explicitly with ``label_crop='centre'``. Chunk files missing from a
zarr copy are refused unless ``allow_missing_chunks`` accepts them with a warning.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from trainer.data import BatchCreatorImage, DataError
from trainer.synthetic import ensure_demo_zarr, make_demo_data

REPO = Path(__file__).resolve().parents[2]


def model(patch_size=(8, 24, 24), offsets=(2, 4, 4), strides=(1, 1, 1)):
    return SimpleNamespace(patch_size=patch_size, offsets=offsets, strides=strides, in_channels=1)


def write_pair(folder: Path, raw_shape, lab_shape, classes: bool = False) -> dict:
    """A raw cube holding each voxel's flat index and a centred label cube of the same values
    (``classes``: their parity, two classes a model can train on)."""
    raw = np.arange(np.prod(raw_shape), dtype=np.float32).reshape(raw_shape)
    lo = [(r - s) // 2 for r, s in zip(raw_shape, lab_shape)]
    lab = raw[tuple(slice(a, a + n) for a, n in zip(lo, lab_shape))].astype(np.int64)
    if classes:
        lab %= 2
    with h5py.File(folder / "raw.h5", "w") as f:
        f.create_dataset("raw", data=raw)
    with h5py.File(folder / "lab.h5", "w") as f:
        f.create_dataset("lab", data=lab)
    return dict(d_path=str(folder), l_path=str(folder), d_files=[("raw.h5", "raw")],
                l_files=[("lab.h5", "lab")])  # fmt: skip


# -- label shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("lab_shape", [(16, 48, 48), (12, 40, 40)], ids=["same", "by-offsets"])
def test_labels_as_large_as_the_raw_cube_or_smaller_by_the_offsets_align(tmp_path, lab_shape):
    data = BatchCreatorImage(model(), seed=0, **write_pair(tmp_path, (16, 48, 48), lab_shape))
    x, y = data.getbatch(4, flip=False)
    # the output voxels are the centre of the input patch: the same flat index
    np.testing.assert_array_equal(y, x[:, :, 2:-2, 4:-4, 4:-4].astype(np.int64))


def test_labels_smaller_by_anything_else_are_refused_naming_shapes_file_and_offsets(tmp_path):
    kwargs = write_pair(tmp_path, (16, 48, 48), (16, 40, 48))
    with pytest.raises(DataError) as err:
        BatchCreatorImage(model(), **kwargs)
    message = str(err.value)
    for part in ("lab.h5", "raw.h5", "(16, 40, 48)", "(16, 48, 48)", "offsets (2, 4, 4)",
                 "(12, 40, 40)", "label_crop='centre'"):  # fmt: skip
        assert part in message, message


def test_label_crop_centre_accepts_a_centred_label_of_another_size(tmp_path):
    kwargs = write_pair(tmp_path, (16, 48, 48), (16, 40, 48))
    data = BatchCreatorImage(model(), seed=0, label_crop="centre", **kwargs)
    x, y = data.getbatch(4, flip=False)
    np.testing.assert_array_equal(y, x[:, :, 2:-2, 4:-4, 4:-4].astype(np.int64))


def test_label_crop_centre_still_refuses_an_odd_difference_and_bad_values(tmp_path):
    kwargs = write_pair(tmp_path, (16, 48, 48), (16, 41, 48))
    with pytest.raises(DataError, match=r"\(16, 41, 48\).*label_crop='centre'.*even"):
        BatchCreatorImage(model(), label_crop="centre", **kwargs)
    with pytest.raises(DataError, match=r"label_crop='middle'.*'centre'"):
        BatchCreatorImage(model(), label_crop="middle", **kwargs)


# -- missing chunks ----------------------------------------------------------------------------


@pytest.fixture()
def zarr_demo(tmp_path):
    """The demo's zarr copy in chunks of (8, 16, 16): 18 chunk files per cube."""
    demo = make_demo_data(tmp_path, seed=0, shape=(16, 48, 48), preview_shape=(8, 48, 48))
    path = ensure_demo_zarr(demo, chunks=(8, 16, 16))
    for name in ("0/0/0", "1/2/1"):
        (path / "raw_0" / "c" / name).unlink()
    return demo


@pytest.fixture()
def voxelboard_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log = logging.getLogger("voxelboard")
    log.addHandler(handler)
    yield stream
    log.removeHandler(handler)


def test_missing_chunks_are_refused_naming_the_array_and_the_chunks(zarr_demo):
    m = model((8, 32, 32), (0, 0, 0))
    with pytest.raises(DataError) as err:
        BatchCreatorImage(m, **zarr_demo.zarr_data_init_kwargs())
    message = str(err.value)
    assert "demo.zarr['raw_0'] (training raw, cube 0): 2 chunk(s) missing" in message, message
    assert "(0, 0, 0) (" in message and "(1, 2, 1) (" in message
    assert str(Path("raw_0", "c", "1", "2", "1")) in message
    assert "allow_missing_chunks = True" in message
    assert "lab_0" not in message  # the labels are complete


def test_allow_missing_chunks_trains_with_a_warning_that_counts_them(
    tmp_path, zarr_demo, voxelboard_log
):
    from trainer import ExperimentConfig, Trainer, runs

    cfg_file = tmp_path / "sparse.py"
    cfg_file.write_text(
        textwrap.dedent(f"""
        from trainer.models import CNN3D
        from trainer.synthetic import ensure_demo_data
        _demo = ensure_demo_data({str(zarr_demo.out_dir)!r}, shape=(16, 48, 48),
                                 preview_shape=(8, 48, 48))
        def create_model():
            return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
        data_class = "BatchCreatorImage"
        data_init_kwargs = _demo.zarr_data_init_kwargs()
        n_steps = 2
        history_freq = 2
        monitor_batch_size = 2
        batch_size = 2
        optimiser = "SGD"
        optimiser_params = dict(lr=0.01, mom=0.9)
        plot_on = False
        allow_missing_chunks = True
        save_path = {str(tmp_path / "runs")!r}
        save_name = "sparse"
    """)
    )
    trainer = Trainer(ExperimentConfig(str(cfg_file)), device="cpu")
    assert trainer.data.n_missing_chunks == 2
    assert trainer.run() == "finished"
    assert runs.read_status(trainer.run_dir).state == "finished"
    log = voxelboard_log.getvalue()
    assert "allow_missing_chunks: 2 missing chunk(s)" in log and "raw_0" in log, log


# -- run.py train: one line, no run directory --------------------------------------------------

CONFIG = """
from trainer.models import CNN3D
def create_model():
    return CNN3D(n_classes=2, base_filters=4, patch_size=(7, 24, 24))
data_class = "BatchCreatorImage"
data_init_kwargs = dict(d_path={folder!r}, l_path={folder!r}, d_files=[({raw!r}, "raw")],
                        l_files=[("lab.h5", "lab")])
n_steps = 2
history_freq = 2
monitor_batch_size = 2
batch_size = 2
optimiser = "SGD"
optimiser_params = dict(lr=0.01, mom=0.9)
save_path = {runs!r}
"""


@pytest.mark.parametrize(
    ("raw_file", "lab_shape", "expected"),
    [
        ("no_such_raw.h5", (16, 48, 48), "no_such_raw.h5"),
        ("raw.h5", (16, 47, 48), "lab.h5"),
    ],
    ids=["missing-path", "label-does-not-fit"],
)
def test_bad_data_prints_one_line_and_leaves_no_run_directory(
    tmp_path, raw_file, lab_shape, expected
):
    write_pair(tmp_path, (16, 48, 48), lab_shape, classes=True)
    runs_dir = tmp_path / "runs"
    config = tmp_path / "bad.py"
    config.write_text(CONFIG.format(folder=str(tmp_path), raw=raw_file, runs=str(runs_dir)))
    proc = subprocess.run([sys.executable, "run.py", "train", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith("run.py train: ") and expected in lines[0]
    assert not runs_dir.exists() or not any(runs_dir.iterdir())


@pytest.mark.parametrize("debug", [False, True])
def test_a_logged_failure_has_its_traceback_in_train_log_and_on_stderr_only_with_debug(
    tmp_path, capsys, debug
):
    sys.path.insert(0, str(REPO))
    try:
        import run
    finally:
        sys.path.remove(str(REPO))
    log = logging.getLogger("voxelboard")
    before = list(log.handlers)
    run.setup_logging(tmp_path / "train.log", debug=debug)
    try:
        try:
            raise OSError("disk on fire")
        except OSError as e:
            log.error("Training failed at step 3: %s", e, exc_info=True)
    finally:
        for handler in set(log.handlers) - set(before):
            log.removeHandler(handler)
            handler.close()
    err = capsys.readouterr().err
    assert "Training failed at step 3: disk on fire" in err
    assert ("Traceback" in err) == debug
    assert "Traceback" in (tmp_path / "train.log").read_text()

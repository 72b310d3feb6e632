"""Preview files (trainer/runs/previews.py): what the writer puts on disk is what the reader and
the documented format say."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from trainer import runs


def _blocks(n_classes: int = 3, shape=(2, 5, 7)):
    rng = np.random.default_rng(0)
    raw = rng.random(shape, dtype=np.float32)
    prob = rng.random((n_classes, *shape)).astype(np.float32)
    return [(0, raw, prob), (1, raw * 2, prob / 2)]


def test_written_preview_reads_back_in_the_documented_layout(tmp_path):
    blocks = _blocks()
    path = runs.write_preview(
        tmp_path, 1200, blocks, hours=0.25, n_classes=4, save_name="r", z0=3, source="p.h5"
    )
    assert path == tmp_path / "previews" / "preview-00001200.h5"
    assert runs.preview_files(tmp_path) == [path] and runs.preview_step(path) == 1200
    # the layout docs/run-directory.md documents, read with h5py alone
    with h5py.File(path, "r") as f:
        assert dict(f.attrs) == {"step": 1200, "hours": 0.25, "n_classes": 4, "save_name": "r"}
        assert sorted(f) == ["block0", "block1"]
        assert f["block1/prob"].dtype == np.float16 and f["block1/raw"].shape == (2, 5, 7)
        assert dict(f["block0"].attrs) == {"z0": 3, "source": "p.h5"}
    meta = runs.read_preview_meta(path)
    assert (meta.step, meta.hours, meta.n_classes) == (1200, 0.25, 4)
    assert meta.blocks == {"block0": (2, 5, 7), "block1": (2, 5, 7)}
    assert meta.z0 == {"block0": 3, "block1": 3}
    raw, prob = runs.read_preview_block(path, "block1")
    np.testing.assert_array_equal(raw, blocks[1][1])
    np.testing.assert_allclose(prob, blocks[1][2], atol=1e-3)  # stored as float16


def test_preview_files_come_oldest_step_first(tmp_path):
    for step in (30, 4, 1000):
        runs.write_preview(tmp_path, step, _blocks(), hours=0.0)
    assert [runs.preview_step(p) for p in runs.preview_files(tmp_path)] == [4, 30, 1000]
    assert runs.preview_files(tmp_path / "missing") == []


def test_writer_refuses_raw_and_prob_of_different_regions(tmp_path):
    raw = np.zeros((2, 5, 7), np.float32)
    with pytest.raises(ValueError, match=r"block 0: raw \(2, 5, 7\) and prob \(2, 2, 5, 6\)"):
        runs.write_preview(tmp_path, 1, [(0, raw, np.zeros((2, 2, 5, 6)))], hours=0.0)
    assert not runs.preview_path(tmp_path, 1).exists()


def test_an_unwritable_previews_folder_is_a_run_write_error_naming_the_file(tmp_path):
    (tmp_path / "previews").write_text("a file where the folder belongs")
    with pytest.raises(runs.RunWriteError, match=r"while writing previews/preview-00000007\.h5"):
        runs.write_preview(tmp_path, 7, _blocks(), hours=0.0)


def test_a_file_without_a_step_attribute_takes_the_step_from_its_name(tmp_path):
    path = runs.write_preview(tmp_path, 40, _blocks(), hours=0.0)
    with h5py.File(path, "a") as f:
        del f.attrs["step"]
    assert runs.read_preview_meta(path).step == 40


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda f: f["block0"].__delitem__("prob"), "group 'block0' lacks 'raw' or 'prob'"),
        (lambda f: f["block0"].__delitem__("raw") or f["block0"].create_dataset("raw", (2, 5), "f4"),
         r"block0/raw \(2, 5\) and block0/prob"),
    ],
)  # fmt: skip
def test_files_off_the_format_raise_a_preview_error_naming_the_file(tmp_path, damage, match):
    path = runs.write_preview(tmp_path, 9, _blocks(), hours=0.0)
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(runs.PreviewError, match=match) as info:
        runs.read_preview_meta(path)
    assert str(path) in str(info.value)
    with pytest.raises(runs.PreviewError, match="cannot read block7 of preview file"):
        runs.read_preview_block(path, "block7")

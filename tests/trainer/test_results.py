"""trainer.runs.results: the evaluation files' names, the probability cache writer, threshold.json."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from trainer import runs


def cube(seed: int, shape=(3, 5, 4)):
    rng = np.random.default_rng(seed)
    return (
        rng.random(shape).astype(np.float32),
        rng.random(shape).astype(np.float32),
        (rng.random(shape) < 0.4).astype(np.int8),
    )


def test_cache_writer_adds_cubes_in_order_and_replaces_the_old_cache(tmp_path):
    path = runs.prob_cache_path(tmp_path, "FINAL")
    assert path == tmp_path / "eval" / "FINAL_valid_prob.h5"
    runs.write_prob_cache(path, [cube(0)], {"snapshot": "old.pt"})
    cubes = [cube(1), cube(2, (2, 6, 6))]
    with runs.ProbCacheWriter(path, {"snapshot": "new.pt", "step": 7}) as w:
        for raw, prob, label in cubes:
            w.add(raw, prob, label)
        # nothing replaced until the block ends: a reader still sees the old cache
        assert runs.read_prob_cache(path)["snapshot"] == "old.pt"
    meta = runs.read_prob_cache(path)
    assert meta == {"cubes": {"cube0": (3, 5, 4), "cube1": (2, 6, 6)}, "snapshot": "new.pt"}
    raw, prob, label = runs.read_prob_slice(path, "cube1", 99)  # z clipped to the last plane
    assert np.allclose(prob, cubes[1][1][-1], atol=1e-3) and np.array_equal(label, cubes[1][2][-1])
    with h5py.File(path) as f:
        assert f.attrs["format"] == runs.results.PROB_CACHE_FORMAT and f.attrs["step"] == 7


def test_a_failed_evaluation_leaves_the_old_cache_and_no_temporary_file(tmp_path):
    path = runs.prob_cache_path(tmp_path, "FINAL")
    runs.write_prob_cache(path, [cube(0)], {"snapshot": "old.pt"})
    with pytest.raises(RuntimeError, match="model failed"):
        with runs.ProbCacheWriter(path, {"snapshot": "new.pt"}) as w:
            w.add(*cube(1))
            raise RuntimeError("model failed")
    assert runs.read_prob_cache(path)["snapshot"] == "old.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["FINAL_valid_prob.h5"]


def test_cache_writer_refuses_cubes_of_different_shapes(tmp_path):
    raw, prob, label = cube(0)
    path = runs.prob_cache_path(tmp_path, "FINAL")
    with pytest.raises(ValueError, match=r"cube 0 of FINAL_valid_prob.h5: .*one shape"):
        with runs.ProbCacheWriter(path) as w:
            w.add(raw, prob[:1], label)
    assert not path.exists()


def test_caches_written_before_the_format_attribute_still_read(tmp_path):
    path = runs.prob_cache_path(tmp_path, "FINAL")
    path.parent.mkdir()
    raw, prob, label = cube(0)
    with h5py.File(path, "w") as f:
        g = f.create_group("cube0")
        g["raw"], g["prob"], g["label"] = raw.astype(np.float16), prob.astype(np.float16), label
    assert runs.read_prob_cache(path) == {"cubes": {"cube0": (3, 5, 4)}, "snapshot": ""}


def test_threshold_json_needs_every_key_and_reads_back(tmp_path):
    record = {"threshold": 0.4, "method": "manual", "beta": 1.0, "run": "r", "result": "FINAL",
              "split": "valid", "saved": 1.0, "metrics": {"tp": 3}}  # fmt: skip
    with pytest.raises(ValueError, match="threshold.json record lacks metrics"):
        runs.write_threshold(tmp_path, {k: v for k, v in record.items() if k != "metrics"})
    assert runs.read_threshold(tmp_path) is None
    assert runs.write_threshold(tmp_path, record) == tmp_path / "eval" / "threshold.json"
    assert runs.read_threshold(tmp_path) == record


@pytest.mark.parametrize("split", ["test", "", "valid/../x"])
def test_unknown_splits_have_no_cache_name(split):
    with pytest.raises(ValueError, match="is not one of valid, train"):
        runs.prob_cache_suffix(split)


def test_evaluation_file_names(tmp_path):
    assert runs.result_path(tmp_path, "FINAL") == tmp_path / "eval" / "FINAL.h5"
    assert runs.report_path(tmp_path, "FINAL") == tmp_path / "eval" / "FINAL-REPORT.txt"
    assert runs.figure_path(tmp_path, "FINAL", "valid", "performance").name == (
        "FINAL_valid.performance.html"
    )
    with pytest.raises(ValueError, match="figure kind 'roc'"):
        runs.figure_path(tmp_path, "FINAL", "valid", "roc")

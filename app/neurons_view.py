"""The evaluation page's "Neurons" panel: reads a result's neuron scores, scores a threshold.

A result evaluated with ``--instances`` holds per validation cube the neuron curves, the grid
search and the true neurons cropped to the prediction (``trainer.runs.read_neurons``). At the
page's threshold the exact scores of the chosen cube are computed here, on the server, from the
probability cache and those neurons (``trainer.segmentation``: about 25 ms for 64x128x128).
Beside them the panel shows the optimised seeded watershed the evaluation found (its scores
and setting, from the record). Reads are cached by file, modification time and cube; nothing
is written. ``evaluation_plan`` says what the page's Evaluate writes: neurons scored where the
config has ``instance_files``, and never over a result that has neuron scores.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np

from app import paths
from trainer import runs
from trainer.segmentation import SegmentationScores, segmentation_scores, threshold_components

__all__ = [
    "NeuronViewError",
    "cube_index",
    "evaluation_plan",
    "has_instances",
    "neuron_records",
    "segment_cube",
    "watershed_outputs",
]

#: the scores the panel's table shows, in order, with their labels
SCORE_ROWS = (
    ("voi_split", "VOI split (bits)"),
    ("voi_merge", "VOI merge (bits)"),
    ("adapted_rand_error", "adapted Rand error"),
    ("rand_precision", "Rand precision"),
    ("rand_recall", "Rand recall"),
    ("rand_index", "Rand index (ELEKTRONN2)"),
    ("n_neurons", "true neurons"),
    ("n_segments", "segments"),
    ("n_splits", "split neurons"),
    ("n_merges", "merged segments"),
)
NO_NEURONS = (
    "This result has no neuron scores: name the validation cubes' true neurons in the config "
    "(instance_files), then press Evaluate (or run `python run.py evaluate RUN_DIR --instances`)."
)


class NeuronViewError(ValueError):
    """A result or cube the panel cannot show; the message says why and what to do."""


def _stamp(path: Path) -> tuple[str, int]:
    try:
        return str(path), os.stat(path).st_mtime_ns
    except OSError:
        raise NeuronViewError(f"{path} does not exist; evaluate the snapshot first") from None


@functools.lru_cache(maxsize=4)
def _records(path: str, _mtime: int) -> tuple[dict[str, Any], ...]:
    try:
        return tuple(runs.read_neurons(path))
    except runs.ResultFileError as e:
        raise NeuronViewError(str(e)) from None


def _file(run_dir: Path, result: Any, suffix: str) -> Path:
    """A file of result ``result`` (a name a client sent, checked by ``app.paths``)."""
    try:
        return paths.run_file(run_dir, runs.EVAL_DIR, "result", result, suffix)
    except paths.ClientPathError as e:
        raise NeuronViewError(str(e)) from None


def neuron_records(run_dir: Path, result: Any) -> tuple[dict[str, Any], ...]:
    """The neuron records of result ``result`` (``()`` if evaluated without ``--instances``).

    Raises:
        NeuronViewError: a refused name, a missing or unreadable file.
    """
    return _records(*_stamp(_file(run_dir, result, runs.RESULT_SUFFIX)))


def cube_index(cube: Any) -> int:
    """``'cube3'`` -> 3 (the probability cache's and the neuron records' cube order)."""
    text = str(cube or "")
    if not (text.startswith("cube") and text[4:].isdigit()):
        raise NeuronViewError(f"cube {text!r}: expected a name like 'cube0'")
    return int(text[4:])


@functools.lru_cache(maxsize=2)
def _prob(path: str, _mtime: int, cube: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f[cube]["prob"][()].astype(np.float32)
    except (OSError, KeyError) as e:
        raise NeuronViewError(
            f"cannot read {cube} of {path} ({e}); evaluate the snapshot again"
        ) from None


def _cube(run_dir: Path, result: str, cube: str) -> tuple[np.ndarray, np.ndarray, dict]:
    records = neuron_records(run_dir, result)
    if not records:
        raise NeuronViewError(NO_NEURONS)
    i = cube_index(cube)
    if i >= len(records):
        raise NeuronViewError(f"{result} has neuron scores for {len(records)} cube(s), not {cube}")
    prob = _prob(*_stamp(_file(run_dir, result, runs.prob_cache_suffix("valid"))), cube)
    gt = records[i]["instances"]
    if gt.shape != prob.shape:
        raise NeuronViewError(
            f"{result}: the neurons of {cube} have shape {gt.shape}, its probabilities "
            f"{prob.shape}; evaluate with --instances again"
        )
    return gt, prob, records[i]


def segment_cube(
    run_dir: Path, result: str, cube: str, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict, SegmentationScores]:
    """``(segments, true neurons, probabilities, record, scores)`` of ``cube`` at ``threshold``
    (threshold -> components with the connectivity the curves used)."""
    gt, prob, record = _cube(run_dir, result, cube)
    conn = record.get("connectivity", "6")
    seg = threshold_components(prob, threshold, int(conn) if str(conn).isdigit() else conn)
    convention = str(record.get("rand_convention", "skimage"))  # the curves' convention
    return seg, gt, prob, record, segmentation_scores(gt, seg, check=False, convention=convention)


# ---------------------------------------------------------------------------------------------
# the page's Evaluate, and the optimised seeded watershed beside the threshold's components

#: the seeded watershed's setting in a neuron record (``seg_<key>``), in the order shown
SETTING_KEYS = ("thresh", "grow_it", "hi_thresh", "lo_thresh")
#: the name the page gives its own result where a result with neuron scores is there already
PAGE_SUFFIX = "-dashboard"


def has_instances(run_dir: Path) -> bool:
    """Whether the run's config names the validation cubes' true neurons (``instance_files``),
    read from its resolved config: then the page's Evaluate scores neurons too."""
    return bool((runs.read_resolved_config(run_dir) or {}).get("instance_files"))


def _has_neurons(run_dir: Path, name: str) -> bool:
    path = runs.result_path(run_dir, name)
    try:
        return path.is_file() and bool(runs.read_neurons(path))
    except runs.ResultFileError:
        return False


def evaluation_plan(run_dir: Path, snapshot_stem: str) -> tuple[str, bool]:
    """``(result name, instances)`` of the page's Evaluate of a snapshot: what ``run.py
    evaluate --instances`` does when the config has ``instance_files`` (the same defaults),
    else what ``run.py evaluate`` does. A result of that name holding neuron scores (written
    by ``evaluate --instances``, perhaps with another grid or convention) is never replaced:
    the page then writes ``<snapshot><PAGE_SUFFIX>``."""
    name = snapshot_stem
    if _has_neurons(run_dir, name):
        name = f"{snapshot_stem}{PAGE_SUFFIX}"
    return name, has_instances(run_dir)


def _setting_text(record: dict[str, Any]) -> str:
    parts = []
    for key in SETTING_KEYS:
        value = record.get(f"seg_{key}")
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            value = tuple(int(v) for v in value.ravel())
        elif isinstance(value, float | np.floating):
            value = f"{float(value):g}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def watershed_outputs(run_dir: Path | None, result: Any, cube: Any) -> list:
    """The Neurons panel's second column: ``[header, *cells]`` of the optimised seeded
    watershed of ``cube`` (the best setting of ``evaluate --instances``' grid search, its
    setting named in the header), blank where the result has no neuron scores."""
    blank = ["", *([""] * len(SCORE_ROWS))]
    if run_dir is None:
        return blank
    try:
        records = neuron_records(run_dir, result)
        record = records[cube_index(cube)] if records else None
    except (NeuronViewError, IndexError):
        return blank
    if record is None:
        return blank
    cells = []
    for key, _label in SCORE_ROWS:
        value = record.get(f"seg_{key}")
        if value is None:
            cells.append("")
        elif key.startswith("n_"):
            cells.append(f"{int(value):,}")
        else:
            cells.append(f"{float(value):.4f}")
    return [f"optimised seeded watershed ({_setting_text(record)})", *cells]

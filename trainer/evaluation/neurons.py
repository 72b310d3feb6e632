"""Neuron scores of a validation cube: ``python run.py evaluate RUN_DIR --instances``.

For each validation cube with ground-truth neurons, ``evaluate_neurons`` records

* the VOI split/merge and adapted Rand curves of threshold -> connected components over
  ``THRESHOLDS`` (49 thresholds, 0.02 ... 0.98), with the best threshold for each;
* ELEKTRONN2's ``optimise_segmentation`` (seeded watershed grid search; by default over
  thresholds relative to the map, ``DEFAULT_GRID``) with its table, best setting and best
  segmentation.

The result file holds one record per cube (``trainer.runs.write_result(neurons=...)``); the
report gets ELEKTRONN2's ``ri*`` columns (``report_columns``). Metrics: ``trainer.segmentation``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from trainer.neuron_scores import check_ignore_labels, ignored_mask
from trainer.segmentation import (
    CONVENTIONS,
    check_labels,
    optimise_segmentation,
    segmentation_scores,
    threshold_components,
)

__all__ = ["CURVE_COLUMNS", "THRESHOLDS", "evaluate_neurons", "load_instances", "report_columns"]

#: the thresholds of the neuron curves
THRESHOLDS = np.round(np.linspace(0.02, 0.98, 49), 6)
#: the per-threshold columns of a curve (``curve/<column>`` in the result file)
CURVE_COLUMNS = (
    "voi_split",
    "voi_merge",
    "adapted_rand_error",
    "rand_precision",
    "rand_recall",
    "rand_index",
    "n_segments",
    "n_splits",
    "n_merges",
)
#: ELEKTRONN2's report had the Rand index of 4 validation cubes and their mean
N_REPORT_CUBES = 4


def neuron_curves(
    gt: np.ndarray,
    prob: np.ndarray,
    thresholds: Iterable[float] = THRESHOLDS,
    connectivity: int | str = 6,
    convention: str = "skimage",
) -> dict[str, np.ndarray]:
    """Scores of ``threshold_components(prob, t)`` against ``gt`` for every threshold ``t``."""
    thresholds = np.asarray(list(thresholds), np.float64)
    cols: dict[str, list[float]] = {c: [] for c in CURVE_COLUMNS}
    for t in thresholds:
        seg = threshold_components(prob, t, connectivity)
        s = segmentation_scores(gt, seg, check=False, convention=convention)
        for c in CURVE_COLUMNS:
            cols[c].append(getattr(s, c))
    return {"thresholds": thresholds, **{c: np.asarray(v) for c, v in cols.items()}}


def evaluate_neurons(
    gt: np.ndarray,
    prob: np.ndarray,
    thresholds: Iterable[float] = THRESHOLDS,
    connectivity: int | str = 6,
    grid: dict[str, Iterable[Any]] | None = None,
    n_proc: int | None = None,
    ignore_labels: Iterable[int] = (),
    convention: str = "skimage",
) -> dict[str, Any]:
    """One validation cube's neuron record for the result file.

    Args:
        gt: true neuron ids (0 = membrane), the shape of ``prob``.
        prob: membrane probability in [0, 1].
        thresholds: of the curves.
        connectivity: of the threshold segmentations (see ``threshold_components``).
        grid: ``optimise_segmentation``'s grid (default ``DEFAULT_GRID``, 12 settings relative
            to the map; ``ELEKTRONN2_GRID``, ELEKTRONN2's 144 fixed ones).
        n_proc: its worker processes (default all cores).
        ignore_labels: true ids not scored, as 0 (config ``instance_ignore_labels``): their
            voxels are 0 in the record's ``instances`` too.
        convention: the adapted Rand convention, ``"skimage"`` or ``"cremi"``
            (``segmentation_scores``).

    Returns:
        ``curve/<column>`` arrays, ``search/<column>`` arrays (one row per setting),
        ``segmentation`` (the best seeded segmentation), ``instances`` (``gt`` as int32, the
        ignored ids 0; ids beyond int32 renumbered 1..n), ``ignore_labels`` (uint64) and
        attributes ``best_voi_threshold``, ``best_are_threshold``, ``connectivity``,
        ``rand_convention``, ``seg_<param>``
        (``seg_hi_thresh`` and ``seg_lo_thresh`` as applied, ``seg_hi_quantile`` and
        ``seg_lo_quantile`` the grid's quantiles, NaN for fixed thresholds) and
        ``seg_<score>`` of the best setting.
    """
    gt, prob = np.asarray(gt), np.asarray(prob)
    if gt.shape != prob.shape:
        raise ValueError(
            f"instance labels have shape {gt.shape} but the prediction has shape {prob.shape}: "
            "give instance labels of the membrane labels' shape"
        )
    if convention not in CONVENTIONS:
        raise ValueError(f"convention {convention!r}: expected one of {CONVENTIONS}")
    ignore = check_ignore_labels(ignore_labels)
    if ignore:
        gt = np.where(ignored_mask(gt, ignore), gt.dtype.type(0), gt)
    check_labels(gt, gt, ("instance labels", "instance labels"))
    curve = neuron_curves(gt, prob, thresholds, connectivity, convention)
    voi = curve["voi_split"] + curve["voi_merge"]
    search = optimise_segmentation(gt, _as_uint8(prob), grid, n_proc, convention=convention)
    table = search.table()
    out: dict[str, Any] = {f"curve/{k}": v for k, v in curve.items()}
    out.update({f"search/{k}": v for k, v in table.items()})
    out["segmentation"] = search.segmentation.astype(np.int32)
    out["instances"] = _as_int32_ids(gt)  # as cropped to the prediction: the page scores them
    out["ignore_labels"] = np.asarray(ignore, np.uint64)
    out["best_voi_threshold"] = _best(curve["thresholds"], voi)
    out["best_are_threshold"] = _best(curve["thresholds"], curve["adapted_rand_error"])
    out["connectivity"] = str(connectivity)
    out["rand_convention"] = convention
    best = search.best_setting
    out.update({f"seg_{k}": v for k, v in best.items() if k != "grow_it"})
    out["seg_grow_it"] = np.asarray(best["grow_it"], np.int64)
    for k in ("hi_quantile", "lo_quantile"):
        out[f"seg_{k}"] = float(table[k][search.best])
    for k, v in search.best_scores.as_dict().items():
        out[f"seg_{k}"] = v
    return out


def _best(thresholds: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    return float(thresholds[ok][np.argmin(values[ok])]) if ok.any() else float("nan")


def _as_int32_ids(gt: np.ndarray) -> np.ndarray:
    """``gt`` as int32; ids beyond int32 (uint64 volumes) renumbered 1..n, 0 kept (the
    partition, and so every score, is the same)."""
    if gt.size == 0 or int(gt.max()) <= np.iinfo(np.int32).max:
        return gt.astype(np.int32)
    import fastremap

    return fastremap.renumber(gt, preserve_zero=True, in_place=False)[0].astype(np.int32)


def _as_uint8(prob: np.ndarray) -> np.ndarray:
    """ELEKTRONN2's ``uint8(p * 255)`` of a probability in [0, 1]."""
    return (np.clip(np.asarray(prob, np.float32), 0.0, 1.0) * 255).astype(np.uint8)


def report_columns(neurons: Sequence[dict[str, Any]]) -> tuple[list[str], list[float]]:
    """ELEKTRONN2's ``ri0 .. ri3, rim``: the best setting's Rand index per validation cube (NaN
    for cubes beyond the evaluated ones) and their mean."""
    ri = [float(n.get("seg_rand_index", np.nan)) for n in neurons]
    cols = [f"ri{i}" for i in range(N_REPORT_CUBES)] + ["rim"]
    vals = [ri[i] if i < len(ri) else float("nan") for i in range(N_REPORT_CUBES)]
    return cols, [*vals, float(np.mean(ri)) if ri else float("nan")]


def load_instances(
    instance_files: Sequence[Sequence[str]],
    l_path: str | os.PathLike | None,
    cubes: Sequence[int],
) -> list[np.ndarray]:
    """Read the instance label cubes ``cubes`` (indices into ``instance_files``).

    Args:
        instance_files: a config's ``instance_files``: ``(file, key)`` per cube, names taken
            from ``l_path`` as ``l_files`` are.
        l_path: the labels' folder (``data_init_kwargs['l_path']``); ``None``: names are paths.
        cubes: which cubes to read (the validation cubes).

    Raises:
        ValueError: a cube index beyond ``instance_files`` (names both counts).
    """
    from trainer.volumes import open_volume

    missing = [k for k in cubes if k >= len(instance_files)]
    if missing:
        raise ValueError(
            f"instance_files has {len(instance_files)} entries but cube(s) {missing} are "
            "evaluated: give one (file, key) per cube, in the order of l_files"
        )
    out = []
    for k in cubes:
        name, key = instance_files[k]
        path = os.path.join(os.path.expanduser(os.fspath(l_path)), name) if l_path else name
        out.append(np.asarray(open_volume(path, key).read()))
    return out

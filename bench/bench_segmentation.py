"""Neuron segmentation speed: VoxelBoard's scores against scikit-image's, and the grid search.

Run: ``python bench/bench_segmentation.py [--voxels 10000000] [--grid elektronn2|fast|none]``.
All timings in one run, on the same volumes; each timing is the best of ``--repeat`` runs.

``python bench/bench_segmentation.py --run RUN_DIR [--name FINAL]`` compares instead, on each
validation cube of a result written by ``run.py evaluate RUN_DIR --instances``: threshold ->
components at its best threshold, the default grid (thresholds relative to the map) and
ELEKTRONN2's 144 fixed settings: best adapted Rand error, setting and time of each.

Goals (issue 15):

* VOI + adapted Rand on 10^7 voxels >= 3x faster than scikit-image's
  ``variation_of_information`` + ``adapted_rand_error`` on the same volumes, equal values;
* threshold -> connected components -> all scores on a 64x128x128 cube < 100 ms;
* ``optimise_segmentation`` with ELEKTRONN2's 144 settings on a demo cube: time printed, all cores;
* on a demo net's map (``--run``), the default grid's best adapted Rand error <= that of
  components at their best threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import runs  # noqa: E402
from trainer.segmentation import (  # noqa: E402
    DEFAULT_GRID,
    ELEKTRONN2_GRID,
    optimise_segmentation,
    segmentation_scores,
    threshold_components,
)
from trainer.synthetic import generate_cube_neurons  # noqa: E402


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def demo_prob(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Neurons of a demo cube and a membrane probability like a half-trained net's."""
    _, lab, ids = generate_cube_neurons(shape, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    prob = ndimage.gaussian_filter(lab.astype(np.float32), (0.5, 0.8, 0.8))
    prob = np.clip(0.9 * prob / prob.max() + 0.25 * rng.random(shape, np.float32), 0, 1)
    return ids, prob


def bench_scores(n_voxels: int, repeat: int) -> None:
    side = round((n_voxels / 4) ** (1 / 3))
    shape = (side, 2 * side, 2 * side)
    ids, prob = demo_prob((min(side, 64), 128, 128))
    # a 10^7-voxel volume of demo-sized neurons: tile the demo cube
    reps = [-(-s // t) for s, t in zip(shape, ids.shape)]
    gt = np.tile(ids, reps)[: shape[0], : shape[1], : shape[2]]
    seg = threshold_components(np.tile(prob, reps)[: shape[0], : shape[1], : shape[2]], 0.5)
    n = gt.size
    t_ours, s = best_of(lambda: segmentation_scores(gt, seg, check=False), repeat)

    def skimage_both():
        return variation_of_information(gt, seg, ignore_labels=(0,)), adapted_rand_error(gt, seg)

    t_sk, (vi, are) = best_of(skimage_both, repeat)
    same = (
        abs(s.voi_split - vi[0]) < 1e-9
        and abs(s.voi_merge - vi[1]) < 1e-9
        and abs(s.adapted_rand_error - are[0]) < 1e-9
    )
    print(f"VOI + adapted Rand on {n:.2e} voxels ({gt.max()} neurons, {seg.max()} segments):")
    print(f"  voxelboard {t_ours * 1e3:8.1f} ms   (all scores, one bincount contingency pass)")
    print(f"  skimage    {t_sk * 1e3:8.1f} ms   (variation_of_information + adapted_rand_error)")
    print(f"  speed-up   {t_sk / t_ours:8.1f} x   (goal >= 3x)   equal values: {same}")


def bench_threshold(repeat: int) -> None:
    ids, prob = demo_prob((64, 128, 128))

    def once():
        return segmentation_scores(ids, threshold_components(prob, 0.5), check=False)

    t, s = best_of(once, repeat)
    t_cc, _ = best_of(lambda: threshold_components(prob, 0.5), repeat)
    print("threshold -> components -> scores on 64x128x128:")
    print(f"  {t * 1e3:.1f} ms (components {t_cc * 1e3:.1f} ms; goal < 100 ms); "
          f"adapted Rand error {s.adapted_rand_error:.3f}")  # fmt: skip


def bench_search(grid_name: str) -> None:
    if grid_name == "none":
        return
    grid = ELEKTRONN2_GRID if grid_name == "elektronn2" else DEFAULT_GRID
    ids, prob = demo_prob((64, 128, 128))
    pred = (prob * 255).astype(np.uint8)
    n = int(np.prod([len(v) for v in grid.values()]))
    cores = os.cpu_count()
    t = time.perf_counter()
    search = optimise_segmentation(ids, pred, grid)
    t = time.perf_counter() - t
    t1 = time.perf_counter()
    optimise_segmentation(ids, pred, {k: v[:1] for k, v in grid.items()}, n_proc=1)
    t1 = time.perf_counter() - t1
    print(f"optimise_segmentation, {grid_name} grid ({n} settings) on a 64x128x128 demo cube:")
    print(f"  {t:.1f} s on {cores} cores ({t1:.2f} s for one setting in one process); best "
          f"{search.best_setting}, adapted Rand error {search.best_scores.adapted_rand_error:.3f}")  # fmt: skip


def _cube_prob(cache: Path, cube: str, n_z: int) -> np.ndarray:
    return np.stack([runs.read_prob_slice(cache, cube, z)[1] for z in range(n_z)])


def bench_run(run_dir: str, name: str) -> None:
    """Components, the default grid and ELEKTRONN2's on each validation cube of a result."""
    neurons = runs.read_neurons(runs.result_path(run_dir, name))
    if not neurons:
        raise SystemExit(
            f"{runs.result_path(run_dir, name)} holds no neuron scores: run "
            f"`python run.py evaluate {run_dir} --instances` first"
        )
    cache = runs.prob_cache_path(run_dir, name)
    shapes = runs.read_prob_cache(cache)["cubes"]
    for i, (cube, rec) in enumerate(zip(shapes, neurons)):
        ids, prob = rec["instances"], _cube_prob(cache, cube, shapes[cube][0])
        pred = (np.clip(prob, 0, 1) * 255).astype(np.uint8)
        are = rec["curve/adapted_rand_error"]
        k = int(np.nanargmin(are))
        print(f"{run_dir} {name}, validation cube {i} {prob.shape}: adapted Rand error")
        print(f"  components at the best threshold {rec['curve/thresholds'][k]:.2f}: {are[k]:.3f}")
        for label, grid in (("default grid", DEFAULT_GRID), ("elektronn2 grid", ELEKTRONN2_GRID)):
            t = time.perf_counter()
            search = optimise_segmentation(ids, pred, grid)
            t = time.perf_counter() - t
            n = len(search.settings)
            row = search.table()
            q = f"(quantiles hi {row['hi_quantile'][search.best]:g}, lo {row['lo_quantile'][search.best]:g})"
            print(f"  {label} ({n} settings, {t:.1f} s on {os.cpu_count()} cores): "
                  f"{search.best_scores.adapted_rand_error:.3f} at {search.best_setting} "
                  f"{q if grid is DEFAULT_GRID else ''}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--grid", choices=("elektronn2", "fast", "none"), default="elektronn2")
    ap.add_argument("--run", help="a run directory evaluated with --instances: compare grids")
    ap.add_argument("--name", default="FINAL", help="its result name (default FINAL)")
    args = ap.parse_args()
    if args.run:
        bench_run(args.run, args.name)
        return
    bench_scores(args.voxels, args.repeat)
    bench_threshold(args.repeat)
    bench_search(args.grid)


if __name__ == "__main__":
    main()

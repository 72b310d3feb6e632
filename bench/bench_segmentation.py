"""Neuron segmentation speed: components, seeded watershed, scores and the grid search, each
against the library a user would pick instead and against VoxelBoard before (``git main``).

Run: ``python bench/bench_segmentation.py [--side 256] [--ws-side 128] [--grid elektronn2|none]
[--before 31dad80]``. All timings in one process, interleaved, each the best of ``--repeat`` runs,
on the same volumes; the load average is printed before and after. "before" is
``trainer/segmentation.py`` as of the git revision ``--before`` (default ``31dad80``, the last
one without cc3d, edt and fastremap), imported from ``git show`` into a temporary module;
``--before ''`` skips it.

Rows (issue 29; the evaluation rows are in bench_evaluation.py):

* threshold -> components, ``--side``**3: ``threshold_components`` against
  ``cc3d.connected_components`` called directly on the same threshold (goal >= 1x), same
  partition as ``scipy.ndimage.label``;
* seeded watershed (the default setting), ``--ws-side``**3: ``seeded_watershed`` against
  scikit-image's ``watershed`` alone on the same seeds and ELEKTRONN2's float landscape, and on
  the squared landscape ``seeded_watershed`` floods (goal: cost <= 1.25x the flood's), the
  result equal to before's;
* VOI + adapted Rand, ``--side``**3, input checks on and off: against scikit-image's
  ``variation_of_information`` + ``adapted_rand_error`` (goal >= 5x with checks on), values
  within 1e-9;
* threshold -> components -> all scores on a 64x128x128 demo cube (issue 15: < 100 ms);
* ``optimise_segmentation`` with ELEKTRONN2's 144 settings on a 64x128x128 demo cube on all
  cores: the grid's total and the time per setting, before and after, equal tables.

``python bench/bench_segmentation.py --run RUN_DIR [--name FINAL]`` compares instead, on each
validation cube of a result written by ``run.py evaluate RUN_DIR --instances``: threshold ->
components at its best threshold, the default grid (thresholds relative to the map) and
ELEKTRONN2's 144 fixed settings: best adapted Rand error, setting and time of each.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cc3d
import numpy as np
from scipy import ndimage
from skimage.metrics import adapted_rand_error, variation_of_information
from skimage.segmentation import watershed

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer import runs  # noqa: E402
from trainer import segmentation as seg_now  # noqa: E402
from trainer.segmentation import (  # noqa: E402
    DEFAULT_GRID,
    ELEKTRONN2_GRID,
    ELEKTRONN2_SCALE,
    optimise_segmentation,
)
from trainer.synthetic import generate_cube_neurons  # noqa: E402


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def interleaved(fns: dict[str, object], repeat: int) -> tuple[dict[str, float], dict[str, object]]:
    """Best time and last result of each function, the functions taking turns."""
    best = dict.fromkeys(fns, float("inf"))
    out: dict[str, object] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best, out


def load_before(rev: str):
    """``trainer/segmentation.py`` at git revision ``rev`` as a module (None if unavailable)."""
    if not rev:
        return None
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:trainer/segmentation.py"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"(no 'before' column: git show {rev}:trainer/segmentation.py failed: {e})")
        return None
    path = Path(tempfile.mkdtemp()) / "segmentation_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("segmentation_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["segmentation_before"] = mod  # its pool's workers find it (fork)
    spec.loader.exec_module(mod)
    return mod


def demo_prob(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Neurons of a demo cube and a membrane probability like a half-trained net's."""
    _, lab, ids = generate_cube_neurons(shape, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    prob = ndimage.gaussian_filter(lab.astype(np.float32), (0.5, 0.8, 0.8))
    prob = np.clip(0.9 * prob / prob.max() + 0.25 * rng.random(shape, np.float32), 0, 1)
    return ids, prob


def sure_pred(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Neurons and the uint8 map of a sure net (interiors near 0): ELEKTRONN2's fixed
    thresholds find seeds in it, as in its own data."""
    _, lab, ids = generate_cube_neurons(shape, np.random.default_rng(seed))
    m = ndimage.gaussian_filter(lab.astype(np.float32), (0.3, 0.5, 0.5))
    noise = 0.012 * np.random.default_rng(seed + 1).random(shape, np.float32)
    return ids, (np.clip(1.5 * m / m.max() + noise, 0, 1) * 255).astype(np.uint8)


def tiled(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    reps = [-(-s // t) for s, t in zip(shape, a.shape)]
    return np.ascontiguousarray(np.tile(a, reps)[tuple(slice(s) for s in shape)])


def row(name: str, t: dict[str, float], ref: str, goal: str, agree: str, before) -> None:
    """One table row: after, before, reference, the ratios (reference time / ours)."""
    ratio = lambda k: f"{t[ref] / t[k]:6.2f}x" if k in t else "     -"  # noqa: E731
    b = f"{t['before'] * 1e3:9.1f}" if before is not None and "before" in t else "        -"
    print(f"| {name} | {t['after'] * 1e3:9.1f} | {b} | {t[ref] * 1e3:9.1f} ({ref}) | "
          f"{ratio('before')} | {ratio('after')} | {goal} | {agree} |")  # fmt: skip


def bench_components(side: int, repeat: int, before) -> None:
    ids, prob = demo_prob((64, 128, 128))
    prob = tiled(prob, (side,) * 3)
    fns = {"after": lambda: seg_now.threshold_components(prob, 0.5),
           "cc3d": lambda: cc3d.connected_components(prob < 0.5, connectivity=6)}  # fmt: skip
    if before is not None:
        fns["before"] = lambda: before.threshold_components(prob, 0.5)
    t, out = interleaved(fns, repeat)
    ref, _ = ndimage.label(prob < 0.5)
    same = np.array_equal(out["after"], ref) and np.array_equal(out["cc3d"], ref)
    row(f"threshold -> components, {side}^3", t, "cc3d", ">= 1x", f"same ids as scipy: {same}",
        before)  # fmt: skip


def bench_watershed(side: int, repeat: int, before) -> None:
    _, pred = sure_pred((side,) * 3)
    setting = {"thresh": 10.0, "hi_thresh": 140, "lo_thresh": 18, "grow_it": 4}
    # skimage's flood alone on the inputs of the setting: ELEKTRONN2's float landscape (as
    # before), and the squared landscape VoxelBoard floods now (the same order and ties)
    hard = pred > setting["hi_thresh"]
    landscape = -ndimage.distance_transform_edt(~hard, sampling=ELEKTRONN2_SCALE)
    landscape -= ndimage.distance_transform_edt(hard, sampling=ELEKTRONN2_SCALE)
    depth = ndimage.distance_transform_edt(pred <= setting["lo_thresh"], sampling=ELEKTRONN2_SCALE)
    seeds, n = ndimage.label(depth > setting["thresh"])
    seeds[seg_now.slack_mask(pred)] = n + 1
    squared = seg_now.flood_landscape(pred, setting["hi_thresh"], ELEKTRONN2_SCALE)
    fns = {
        "after": lambda: seg_now.seeded_watershed(pred, **setting),
        "flood": lambda: watershed(landscape, seeds),
        "flood sq": lambda: watershed(squared, seeds),
    }
    if before is not None:
        fns["before"] = lambda: before.seeded_watershed(pred, **setting)
    t, out = interleaved(fns, repeat)
    same = (
        "-" if before is None else f"equal to before: {np.array_equal(out['after'], out['before'])}"
    )
    b = f"{t['before'] * 1e3:9.1f}" if "before" in t else "        -"
    for ref, what in (("flood", "ELEKTRONN2's float landscape"), ("flood sq", "squared landscape")):
        rb = f"{t['before'] / t[ref]:5.2f}x" if "before" in t else "    -"
        print(f"| seeded watershed (default setting), {side}^3 | {t['after'] * 1e3:9.1f} | {b} | "
              f"{t[ref] * 1e3:9.1f} (skimage flood, {what}) | cost {rb} | cost "
              f"{t['after'] / t[ref]:5.2f}x | <= 1.25x cost | {same}; "
              f"{int(out['after'].max())} segments |")  # fmt: skip


def bench_scores(side: int, repeat: int, before) -> None:
    ids, prob = demo_prob((64, 128, 128))
    gt = tiled(ids, (side,) * 3)
    seg = seg_now.threshold_components(tiled(prob, (side,) * 3), 0.5)

    def skimage_both():
        return variation_of_information(gt, seg, ignore_labels=(0,)), adapted_rand_error(gt, seg)

    for check in (True, False):
        fns = {"after": lambda c=check: seg_now.segmentation_scores(gt, seg, check=c),
               "skimage": skimage_both}  # fmt: skip
        if before is not None:
            fns["before"] = lambda c=check: before.segmentation_scores(gt, seg, check=c)
        t, out = interleaved(fns, repeat if check else max(repeat - 1, 1))
        s, ((split, merge), (are, _, _)) = out["after"], out["skimage"]
        delta = max(abs(s.voi_split - split), abs(s.voi_merge - merge),
                    abs(s.adapted_rand_error - are))  # fmt: skip
        row(f"VOI + adapted Rand, {side}^3, check {'on' if check else 'off'} "
            f"({int(gt.max())} neurons, {int(seg.max())} segments)", t, "skimage",
            ">= 5x" if check else "", f"max delta {delta:.1e}", before)  # fmt: skip


def bench_threshold(repeat: int, before) -> None:
    """Issue 15's goal: threshold -> components -> all scores on a 64x128x128 cube < 100 ms."""
    ids, prob = demo_prob((64, 128, 128))
    fns = {"after": lambda: seg_now.segmentation_scores(
        ids, seg_now.threshold_components(prob, 0.5), check=False)}  # fmt: skip
    if before is not None:
        fns["before"] = lambda: before.segmentation_scores(
            ids, before.threshold_components(prob, 0.5), check=False)  # fmt: skip
    t, out = interleaved(fns, repeat)
    b = f", before {t['before'] * 1e3:.1f} ms" if "before" in t else ""
    print(f"\nthreshold -> components -> all scores, 64x128x128: {t['after'] * 1e3:.1f} ms{b} "
          f"(goal < 100 ms); adapted Rand error {out['after'].adapted_rand_error:.3f}")  # fmt: skip


def bench_grid(grid_name: str, before) -> None:
    if grid_name == "none":
        return
    grid = ELEKTRONN2_GRID if grid_name == "elektronn2" else DEFAULT_GRID
    ids, pred = sure_pred((64, 128, 128))
    n = int(np.prod([len(v) for v in grid.values()]))
    cores = os.cpu_count()
    runs_ = {"after": lambda: optimise_segmentation(ids, pred, grid)}
    if before is not None:
        old_grid = grid if grid is ELEKTRONN2_GRID else before.DEFAULT_GRID
        runs_["before"] = lambda: before.optimise_segmentation(ids, pred, old_grid)
    t, out = interleaved(runs_, 1)
    print(f"\noptimise_segmentation, {grid_name} grid ({n} settings), 64x128x128 sure-net map, "
          f"{cores} cores:")  # fmt: skip
    for k in ("before", "after"):
        if k in t:
            s = out[k]
            print(f"  {k:6s} total {t[k]:7.2f} s   per setting {t[k] / n * 1e3:7.1f} ms   best "
                  f"{s.best_setting}, adapted Rand error {s.best_scores.adapted_rand_error:.3f}")  # fmt: skip
    if "before" in t:
        a, b = out["after"].table(), out["before"].table()
        same = all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
        print(f"  speed-up {t['before'] / t['after']:.2f}x   equal tables: {same}")


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
    ap.add_argument("--side", type=int, default=256, help="components and scores: side**3 voxels")
    ap.add_argument("--ws-side", type=int, default=128, help="watershed: side**3 voxels")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--grid", choices=("elektronn2", "fast", "none"), default="elektronn2")
    ap.add_argument("--before", default="31dad80", help="git revision of 'before' ('' to skip)")
    ap.add_argument("--run", help="a run directory evaluated with --instances: compare grids")
    ap.add_argument("--name", default="FINAL", help="its result name (default FINAL)")
    args = ap.parse_args()
    if args.run:
        bench_run(args.run, args.name)
        return
    before = load_before(args.before)
    print(
        f"load average {os.getloadavg()} on {os.cpu_count()} cores; times in ms, best of "
        f"{args.repeat}; ratio = reference time / ours (watershed: our cost / the flood's)"
    )
    print(
        "| measurement | after | before | reference | ratio before | ratio after | goal | values |"
    )
    print("|---|---|---|---|---|---|---|---|")
    bench_components(args.side, args.repeat, before)
    bench_watershed(args.ws_side, args.repeat, before)
    bench_scores(args.side, args.repeat, before)
    bench_threshold(args.repeat, before)
    bench_grid(args.grid, before)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""``run.py segment`` blockwise against the in-memory segmentation, and its peak memory.

    python bench/bench_segment.py [--shape 128 256 256] [--repeats 3] [--budget-gb 0.125]
        [--skip-seeded] [--as-run-py] [--speed-only | --memory-only] [--memory-seeded]

1. **Speed, on a volume that fits.** A synthetic prediction (float16, 2 classes, written
   with the predict store's writer) is segmented

   * ``in-memory``: what a user would write without ``segment``: read the membrane channel
     whole, ``threshold_components`` (or ``seeded_watershed``), write the uint64 labels to
     zarr with the same chunks and codec;
   * ``blockwise``: ``segment_to_disk`` with ``--memory-gb 2`` (its default) and with
     ``--block 64 64 64`` (many blocks: the merge and the halos at work).

   and once more with ``--memory-gb 2`` and ``os.fsync`` made a no-op, to show what the
   durability (a block's chunk files, faces file and record fsynced before it counts as
   done, the blocks of a second sharing one flush) costs. Each run starts from no output;
   the ways take turns, ``--repeats`` rounds, best of each; printed: seconds, voxels per
   second, blockwise / in-memory (goal >= 0.7x), and whether the labels are the same
   partition. ``--as-run-py`` first sets glibc as ``run.py segment`` does
   (``release_freed_memory``), for all ways alike.
2. **Memory, on a volume 4x the budget.** A prediction whose uint64 labels alone take 4x
   ``--budget-gb`` is segmented (each setting) with ``--memory-gb`` = the budget in a fresh
   process that sets glibc as ``run.py segment`` does; its peak resident memory
   (``VmHWM``) is printed with the process's resident memory after its imports, before it
   starts. ``--memory-seeded`` adds the seeded watershed (many small halos: minutes).

The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def membrane_slab(z0: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Membrane probability of a cell-like pattern: walls of a warped grid plus noise."""
    rng = np.random.default_rng(seed + z0)
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    z += z0
    wall = np.abs(np.sin(x / 7.0 + np.sin(z / 11.0))) * np.abs(np.sin(y / 6.0 + np.cos(x / 13.0)))
    wall *= np.abs(np.sin(z / 5.0 + np.sin(y / 9.0)))
    m = 1.0 - np.clip(wall * 3.0, 0.0, 1.0)
    return np.clip(m + rng.normal(0, 0.05, shape).astype(np.float32), 0, 1)


def write_prediction(path: Path, shape: tuple[int, int, int]) -> None:
    from trainer.omezarr import image_metadata
    from trainer.prediction_store import PredictionOutput

    record = {"shape": [2, *shape], "dtype": "float16", "tile": list(shape), "padding": "symmetric",
              "offsets": [0, 0, 0], "input": {"path": "synthetic"}, "model": {"weights": "none"},
              "voxel_size": [20.0, 9.0, 9.0], "translation": [0.0, 0.0, 0.0], "unit": "nanometer",
              "done": [], "complete": False}  # fmt: skip
    attrs = {"zarr": image_metadata("prob", "prob", record["voxel_size"]), "hdf5": {}}
    out = PredictionOutput.open(path, "prob", record, attrs, overwrite=True)
    step = 32
    for z0 in range(0, shape[0], step):
        n = min(step, shape[0] - z0)
        m = membrane_slab(z0, (n, *shape[1:]))
        out.write(
            (slice(z0, z0 + n), slice(0, shape[1]), slice(0, shape[2])),
            np.stack([1 - m, m]).astype(np.float16),
        )
    out.mark_done(0)
    out.finish()


def fresh(out: Path) -> None:
    """No output yet, as for a user's first run: deleting an earlier one is neither side's
    work (both would otherwise pay it inside the timing, at different cost)."""
    shutil.rmtree(out, ignore_errors=True)
    os.sync()


def in_memory(prob_path: Path, out: Path, setting) -> float:  # noqa: ANN001
    import zarr
    from numcodecs import Blosc

    from trainer.predictions import read_prediction
    from trainer.segment_volume import membrane_map, segment_in_memory

    fresh(out)
    t = time.perf_counter()
    vol, _ = read_prediction(prob_path, "prob")
    box = (slice(1, 2), *(slice(0, n) for n in vol.shape[1:]))  # the membrane channel only
    m = membrane_map(vol.read(box)[0], vol.dtype, setting.method == "seeded")
    labels = segment_in_memory(m, setting).astype(np.uint64)
    arr = zarr.create_array(
        store=str(out),
        shape=(1, *labels.shape),
        dtype="uint64",
        chunks=(1, 64, 64, 64),
        zarr_format=2,
        overwrite=True,
        chunk_key_encoding={"name": "v2", "separator": "/"},
        compressors=Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE),
    )
    arr[:] = labels[None]
    return time.perf_counter() - t


def blockwise(prob_path: Path, out: Path, setting, **kw) -> float:  # noqa: ANN001
    from trainer.predictions import read_prediction
    from trainer.segment_volume import segment_to_disk

    fresh(out)
    t = time.perf_counter()
    vol, record = read_prediction(prob_path, "prob")
    segment_to_disk(vol, record, out, setting, overwrite=True, **kw)
    return time.perf_counter() - t


def same_partition(a: Path, b: Path) -> bool:
    import zarr

    x = zarr.open_array(str(a), path="0" if (a / "0" / ".zarray").exists() else "", mode="r")[
        :
    ].ravel()
    y = zarr.open_array(str(b), path="0" if (b / "0" / ".zarray").exists() else "", mode="r")[
        :
    ].ravel()
    pairs = np.unique(np.stack([x, y]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def speed_rows(prob: Path, tmp: Path, setting, repeats: int) -> dict[str, float]:  # noqa: ANN001
    """Best seconds of each way to segment, the ways taking turns (a shared machine's load
    then weighs on all alike); each writes ``tmp/<label>.zarr``."""
    ways = {
        "in-memory": lambda out: in_memory(prob, out, setting),
        "blockwise --memory-gb 2": lambda out: blockwise(prob, out, setting, memory_gb=2.0),
        "blockwise --block 64^3": lambda out: blockwise(prob, out, setting, block=(64,) * 3),
    }
    if setting.method == "components":
        ways["same, fsync off"] = lambda out: no_fsync(blockwise, prob, out, setting, memory_gb=2.0)
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(repeats):
        for label, way in ways.items():
            best[label] = min(best[label], way(tmp / f"{label}.zarr"))
    return best


def no_fsync(fn, *args, **kw) -> float:  # noqa: ANN001
    """``fn`` with ``os.fsync`` a no-op: what durability costs (bench only)."""
    real, os.fsync = os.fsync, lambda fd: None
    try:
        return fn(*args, **kw)
    finally:
        os.fsync = real


PEAK = """
import json, sys, psutil
sys.path.insert(0, {repo!r})
from trainer.predictions import read_prediction
from trainer.segment_volume import SegmentSetting, release_freed_memory, segment_to_disk
from trainer.segmentation import Quantile
import zarr, skimage.segmentation, numcodecs, scipy.sparse.csgraph, cc3d, edt  # what segment_to_disk imports when it runs
release_freed_memory()  # as run.py segment does
before = psutil.Process().memory_info().rss
vol, rec = read_prediction({prob!r}, "prob")
out = segment_to_disk(vol, rec, {out!r}, {setting}, memory_gb={budget}, overwrite=True)
# VmHWM: the high-water mark of this program's memory (ru_maxrss would count the parent's
# pages at fork: Linux keeps it across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
peak = int(hwm.split()[1]) * 1024
print(json.dumps({{"before": before, "peak": peak}}))
"""


def main() -> None:
    from trainer.segment_volume import SegmentSetting
    from trainer.segmentation import Quantile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(128, 256, 256))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-gb", type=float, default=0.125)
    ap.add_argument("--skip-seeded", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only part 2")
    ap.add_argument("--speed-only", action="store_true", help="only part 1")
    ap.add_argument("--memory-seeded", action="store_true", help="part 2 for the watershed too")
    ap.add_argument("--as-run-py", action="store_true",
                    help="part 1 with glibc's freed arrays returned to the OS, as run.py segment "
                    "sets it (release_freed_memory; for every row, the in-memory one too)")  # fmt: skip
    args = ap.parse_args()
    if args.as_run_py:
        from trainer.segment_volume import release_freed_memory

        print("release_freed_memory():", release_freed_memory())
    print("load average before:", ", ".join(f"{v:.2f}" for v in os.getloadavg()))
    tmp = Path(tempfile.mkdtemp(prefix="bench_segment_"))
    try:
        shape = tuple(args.shape)
        prob = tmp / "prob.zarr"
        write_prediction(prob, shape)
        voxels = int(np.prod(shape))
        settings = [SegmentSetting("components", threshold=0.5)]
        if not args.skip_seeded:
            settings.append(SegmentSetting("seeded", thresh=0, hi_thresh=Quantile(0.75),
                                           lo_thresh=Quantile(0.3)))  # fmt: skip
        print(f"volume {shape} ({voxels / 1e6:.1f} M voxels), best of {args.repeats}")
        for s in [] if args.memory_only else settings:
            best = speed_rows(prob, tmp, s, args.repeats)
            ref = best.pop("in-memory")
            print(
                f"  {s.method:10s} {'in-memory':24s} {ref:7.2f} s  {voxels / ref / 1e6:6.1f} Mvox/s"
            )
            for label, t in best.items():
                same = same_partition(tmp / "in-memory.zarr", tmp / f"{label}.zarr")
                print(f"  {s.method:10s} {label:24s} {t:7.2f} s  {voxels / t / 1e6:6.1f} Mvox/s"
                      f"  {ref / t:5.2f}x in-memory  same partition: {same}")  # fmt: skip
        if args.speed_only:
            return
        # a volume whose uint64 labels alone are 4x the budget
        edge = int(round((4 * args.budget_gb * 2**30 / 8) ** (1 / 3)))
        big = (edge, edge, edge)
        write_prediction(prob, big)
        budget = args.budget_gb * 2**30
        print(f"memory: volume {big} ({np.prod(big) * 8 / 2**30:.3f} GB of uint64 labels = "
              f"{np.prod(big) * 8 / budget:.1f}x the budget of {args.budget_gb} GB)")  # fmt: skip
        # the watershed at a small budget floods many small halos: minutes (docs/data.md)
        for s in settings if args.memory_seeded else settings[:1]:
            text = ("SegmentSetting('components', threshold=0.5)" if s.method == "components"
                    else "SegmentSetting('seeded', thresh=0, hi_thresh=Quantile(0.75), "
                         "lo_thresh=Quantile(0.3))")  # fmt: skip
            code = PEAK.format(repo=str(REPO), prob=str(prob), out=str(tmp / "big.zarr"),
                               setting=text, budget=args.budget_gb)  # fmt: skip
            t = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            t = time.perf_counter() - t
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            mem = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"  {s.method:10s} {t:6.1f} s  peak RSS {mem['peak'] / 2**20:.0f} MB; after "
                  f"imports {mem['before'] / 2**20:.0f} MB; peak - imports "
                  f"{(mem['peak'] - mem['before']) / 2**20:.0f} MB (budget {budget / 2**20:.0f} MB)")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        print("load average after:", ", ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

"""``run.py predict`` padded (the default: the output covers the input) against today's
cropped output, zarr to zarr, measured in one run.

    python bench/bench_predict.py [--shape 64 128 128] [--repeats 3] [--device cpu]

Three kinds run in turn ``--repeats`` times each, best of each (other load on the machine
only slows a run down, so the best is the least disturbed):

* ``main``: ``predict_to_disk`` as it was before aligned outputs (``git show
  31dad80:trainer/predictions.py``, the valid part only, no fsync, no fingerprint), when the
  repository holds that revision;
* ``crop``: this version with ``padding=None`` (``--crop``);
* ``padded``: this version's default (symmetric padding by the offsets).

Printed: seconds, output voxels per second, and the ratios padded / baseline both per output
voxel (the goal, >= 0.9x: the padded run writes more voxels, ``(z, y, x)`` instead of
``(z, y, x) - 2 * offsets``) and per run. The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _main_predictions(folder: Path):  # noqa: ANN202 - a module or None
    """``trainer/predictions.py`` of revision 31dad80 (valid-only, unpadded outputs) as a
    module, or ``None``."""
    done = subprocess.run(
        ["git", "show", "31dad80:trainer/predictions.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or "padding" in done.stdout:
        return None
    path = folder / "main_predictions.py"
    path.write_text(done.stdout)
    spec = importlib.util.spec_from_file_location("main_predictions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    import torch

    from trainer.models import CNN3D
    from trainer.predictions import predict_to_disk
    from trainer.volumes import open_volume

    folder = Path(tempfile.mkdtemp(prefix="vb-bench-predict-", dir="/tmp"))
    try:
        raw = np.random.default_rng(0).integers(0, 256, args.shape, dtype=np.uint8)
        zarr.create_array(str(folder / "in.zarr"), name="raw", data=raw, chunks=(32, 64, 64))
        vol = open_volume(folder / "in.zarr", "raw")
        torch.manual_seed(0)
        model = CNN3D(n_classes=2, in_channels=1).eval().to(args.device)
        old = _main_predictions(folder)
        kinds = {
            "crop": lambda out: predict_to_disk(model, vol, out, padding=None),
            "padded": lambda out: predict_to_disk(model, vol, out),
        }
        if old is not None:
            kinds = {"main": lambda out: old.predict_to_disk(model, vol, out), **kinds}
        load0 = os.getloadavg()
        best = dict.fromkeys(kinds, np.inf)
        voxels = {}
        for i in range(args.repeats):
            for name, run in kinds.items():
                out = folder / f"{name}{i}.zarr"
                t0 = time.perf_counter()
                run(out)
                best[name] = min(best[name], time.perf_counter() - t0)
                voxels[name] = int(np.prod(open_volume(out, "prob").shape[1:]))
                shutil.rmtree(out)
        load1 = os.getloadavg()
        print(f"input {tuple(args.shape)} uint8 zarr -> float16 zarr, CNN3D offsets "
              f"{tuple(model.offsets)}, {args.device}, best of {args.repeats}")  # fmt: skip
        for name in kinds:
            rate = voxels[name] / best[name]
            print(f"  {name:>6}: {best[name]:6.2f} s, {voxels[name]:>10,} output voxels, "
                  f"{rate:12,.0f} voxels/s")  # fmt: skip
        for base in [k for k in ("main", "crop") if k in kinds]:
            per_voxel = (voxels["padded"] / best["padded"]) / (voxels[base] / best[base])
            print(f"  padded vs {base}: {per_voxel:.2f}x per output voxel (goal >= 0.9x), "
                  f"{best[base] / best['padded']:.2f}x per run")  # fmt: skip
        print(f"  load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, after "
              f"{load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} ({os.cpu_count()} CPUs)")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

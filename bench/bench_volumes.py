"""Volumes on disk against in-memory data, ratios measured in one run.

    python bench/bench_volumes.py [--seconds 10] [--big-gb 2.0] [--skip-big]

1. Patches/s of ``BatchCreatorImage.getbatch`` from in-memory HDF5, lazy HDF5, zarr v3
   (blosc/zstd chunks) and N5 (zstd, written by tensorstore when installed), same patch
   size, through ``BackgroundProc`` with 2 workers (the lazy ones with the default memory
   budget, whose chunk cache holds this small volume, and zarr once more with a budget
   whose per-worker cache holds a quarter of it); and the data wait per step while the
   demo CNN3D trains on CPU from lazy zarr with 2 workers (goal: lazy zarr >= 0.5x
   in-memory; wait < 5% of the step).
2. Peak resident memory of a child process that trains the demo model from a >= 2 GB
   uncompressed zarr volume in /tmp with ``data_memory_budget_mb`` small (deleted after).
3. ``run.py predict``'s ``predict_to_disk`` voxels/s against in-memory ``predict_dense`` on
   the same volume (goal >= 0.9x), the two run in turn ``--repeats`` times, best of each
   (other load on the machine only slows runs down, so the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.data import BatchCreatorImage  # noqa: E402
from trainer.parallel import BackgroundProc  # noqa: E402

SHAPE = (64, 256, 256)
CHUNKS = (32, 64, 64)


def volumes(folder: Path) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    raw = np.clip(rng.normal(128, 40, SHAPE), 0, 255).astype(np.uint8)
    lab = (raw > 128).astype(np.uint8)
    with h5py.File(folder / "v.h5", "w") as f:
        f.create_dataset("raw", data=raw, chunks=CHUNKS)
        f.create_dataset("lab", data=lab, chunks=CHUNKS)
    codecs = zarr.codecs.BloscCodec(cname="zstd", clevel=3)
    g = zarr.open_group(str(folder / "v.zarr"), mode="w")
    g.create_array("raw", data=raw, chunks=CHUNKS, compressors=codecs)
    g.create_array("lab", data=lab, chunks=CHUNKS, compressors=codecs)
    kinds = {
        "in-memory HDF5": dict(path=folder / "v.h5", h5stream=False),
        "lazy HDF5": dict(path=folder / "v.h5", h5stream=True),
        "zarr (blosc/zstd)": dict(path=folder / "v.zarr", h5stream=False),
        # 8 MiB budget: each of the 2 workers caches 2 MiB of the 8 MiB of decoded chunks
        "zarr, 1/4 cached": dict(path=folder / "v.zarr", h5stream=False, budget_mb=8),
    }
    try:
        import tensorstore as ts
    except ImportError:
        print("N5: tensorstore not installed (pip install -r requirements-test.txt); skipped")
        return kinds
    for key, a in (("raw", raw), ("lab", lab)):
        meta = {
            "compression": {"type": "zstd"},
            "dataType": "uint8",
            "dimensions": list(a.shape[::-1]),
            "blockSize": list(CHUNKS[::-1]),
        }
        spec = {"driver": "n5", "kvstore": {"driver": "file", "path": str(folder / "v.n5")}}
        ts.open({**spec, "path": key, "metadata": meta}, create=True).result()[...].write(
            a.T
        ).result()
    kinds["N5 (zstd)"] = dict(path=folder / "v.n5", h5stream=False)
    return kinds


def make_data(kind: dict, model) -> BatchCreatorImage:
    p = str(kind["path"])
    return BatchCreatorImage(
        model,
        d_files=[(p, "raw")],
        l_files=[(p, "lab")],
        h5stream=kind["h5stream"],
        memory_budget_mb=kind.get("budget_mb"),
        seed=0,
    )


def patches_per_s(data, seconds: float, batch: int = 2) -> float:
    with BackgroundProc(data.getbatch, n_proc=2, target_args=(batch,), seed=0) as bg:
        bg.get()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            bg.get()
            n += batch
        return n / (time.perf_counter() - t0)


def data_wait(data, model, steps: int = 30) -> tuple[float, float]:
    import torch

    opt = torch.optim.Adam(model.parameters(), 1e-3)
    wait = step = 0.0
    with BackgroundProc(data.getbatch, n_proc=2, target_args=(2,), seed=0) as bg:
        for i in range(steps + 3):
            t0 = time.perf_counter()
            x, y = bg.get()
            t1 = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(
                model(torch.from_numpy(x)), torch.from_numpy(y)[:, 0]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if i >= 3:
                wait, step = wait + t1 - t0, step + t2 - t1
    return wait / steps, step / steps


# VmHWM is this process's own peak; ru_maxrss would carry over the bench's peak across exec
BIG_CHILD = """
import re, sys, time, numpy as np, torch
from trainer.data import BatchCreatorImage
from trainer.models import CNN3D
torch.manual_seed(0)
model = CNN3D(n_classes=2, in_channels=1)
path = sys.argv[1]
data = BatchCreatorImage(model, d_files=[(path, "raw")], l_files=[(path, "lab")],
                         memory_budget_mb=float(sys.argv[2]), seed=0)
opt = torch.optim.Adam(model.parameters(), 1e-3)
def peak_kib():
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\\s*(\\d+)", f.read()).group(1))
base = peak_kib()
for _ in range(40):
    x, y = data.getbatch(2, warp=0.5)
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y)[:, 0])
    opt.zero_grad(); loss.backward(); opt.step()
print(base, peak_kib(), data.lazy[0], data.chunk_cache.nbytes // 2**20)
"""


def big_volume(gb: float, budget_mb: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="vb-bench-big-", dir="/tmp"))
    try:
        yx = 2048
        z = int(np.ceil(gb * 2**30 / (yx * yx)))
        g = zarr.open_group(str(folder / "big.zarr"), mode="w")
        chunks = (32, 256, 256)
        raw = g.create_array(
            "raw", shape=(z, yx, yx), dtype="uint8", chunks=chunks, compressors=None
        )
        lab = g.create_array("lab", shape=(z, yx, yx), dtype="uint8", chunks=(32, 512, 512))
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        for z0 in range(0, z, 32):
            block = rng.integers(0, 256, (min(32, z - z0), yx, yx), dtype=np.uint8)
            raw[z0 : z0 + len(block)] = block
            lab[z0 : z0 + len(block)] = block > 128
        on_disk = sum(f.stat().st_size for f in (folder / "big.zarr").rglob("*") if f.is_file())
        print(f"big volume: {z}x{yx}x{yx} uint8, {on_disk / 2**30:.2f} GiB on disk "
              f"(written in {time.perf_counter() - t0:.0f} s)")  # fmt: skip
        out = subprocess.run(
            [sys.executable, "-c", BIG_CHILD, str(folder / "big.zarr"), str(budget_mb)],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        base, peak = int(out[0]) / 1024, int(out[1]) / 1024
        print(f"  training 40 steps (CNN3D, batch 2, warp 0.5), data_memory_budget_mb={budget_mb:g}, "
              f"lazy={out[2]}: model+imports {base:.0f} MiB, peak RSS {peak:.0f} MiB, "
              f"chunk cache {out[3]} MiB "
              f"(volume {on_disk / 2**20:.0f} MiB)")  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def predict_ratio(folder: Path, repeats: int) -> None:
    import torch

    from trainer.inference import predict_dense
    from trainer.models import CNN3D
    from trainer.predictions import predict_to_disk
    from trainer.volumes import open_volume

    torch.manual_seed(0)
    model = CNN3D(n_classes=2, in_channels=1).eval()
    vol = open_volume(folder / "v.zarr", "raw")
    raw = vol.read()
    t_mem = t_disk = np.inf
    for i in range(repeats):
        t0 = time.perf_counter()
        predict_dense(model, raw)
        t_mem = min(t_mem, time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict_to_disk(model, vol, folder / f"p{i}.zarr", padding=None)  # as predict_dense
        t_disk = min(t_disk, time.perf_counter() - t0)
    n = raw.size
    print(f"predict, best of {repeats}: in-memory predict_dense {n / t_mem:,.0f} voxels/s, "
          f"predict_to_disk zarr->zarr float16 {n / t_disk:,.0f} voxels/s, "
          f"ratio {t_mem / t_disk:.2f}x (goal >= 0.9x); peak RSS of this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--budget-mb", type=float, default=256.0)
    ap.add_argument("--repeats", type=int, default=3, help="predict runs of each kind")
    ap.add_argument("--skip-big", action="store_true")
    args = ap.parse_args()
    from trainer.models import CNN3D

    folder = Path(tempfile.mkdtemp(prefix="vb-bench-", dir="/tmp"))
    try:
        model = CNN3D(n_classes=2, in_channels=1)
        geo = SimpleNamespace(
            patch_size=model.patch_size, offsets=model.offsets, strides=model.strides, in_channels=1
        )
        kinds = volumes(folder)
        rates = {name: patches_per_s(make_data(k, geo), args.seconds) for name, k in kinds.items()}
        ref = rates["in-memory HDF5"]
        print(
            f"patches/s, patch {tuple(model.patch_size)}, 2 workers, volume {SHAPE} uint8, chunks {CHUNKS}:"
        )
        for name, r in rates.items():
            print(f"  {name:20s} {r:8.1f}  {r / ref:.2f}x in-memory")
        wait, step = data_wait(make_data(kinds["zarr (blosc/zstd)"], model), model)
        print(f"demo CNN3D on CPU from lazy zarr, 2 workers: data wait {wait * 1e3:.2f} ms per step, "
              f"step {step * 1e3:.0f} ms: {100 * wait / step:.2f}% (goal < 5%)")  # fmt: skip
        predict_ratio(folder, args.repeats)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if not args.skip_big:
        big_volume(args.big_gb, args.budget_mb)


if __name__ == "__main__":
    main()

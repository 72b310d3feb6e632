"""``run.py predict --workers N`` (blocks claimed through files, trainer.block_claims) against
one process, measured in one run.

    python bench/bench_distributed_predict.py [--shape 32 128 128] [--block 20 64 64]

A tiny CNN3D run is trained (one step) on a random uint8 volume; then, in turn:

* ``one process``: ``run.py predict`` as it is without ``--workers``;
* ``1 worker`` and ``2 workers``: ``run.py predict --workers 1|2``.

Printed per kind: wall seconds of the whole command (imports and model loading included),
blocks per second over the blocks (done-marker times), and the CPU seconds per block the
workers spent (their done markers: ``time.process_time`` over the block, every thread), so
two workers on two shared cores (~1x wall expected) show they add no work. The outputs must
be equal bit for bit. Then:

* claim overhead: ``BlockWorker.run_step`` over ``--claims`` blocks whose work does
  nothing, per block in ms (lease created with O_EXCL and fsynced, done marker written,
  fsynced and renamed), on the output's file system;
* take-over time: ``--workers 2`` again, one worker SIGKILLed mid-block once both have done
  a block (past their start-up); the time from the kill to that block's done marker
  (written by the other worker), beside one block's time.

The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = """from trainer.models import CNN3D
save_path = {runs!r}
save_name = 'bench'
data_class = 'BatchCreatorImage'
data_init_kwargs = dict(d_files=[({data!r}, 'raw')], l_files=[({data!r}, 'lab')])
batch_size = 1
n_steps = 1
history_freq = 1
monitor_batch_size = 1
optimiser = 'Adam'
optimiser_params = dict(lr=1e-3)
def create_model():
    return CNN3D(n_classes=2, in_channels=1, base_filters=8, patch_size=(7, 24, 24))
"""


def make_run(folder: Path, shape: tuple[int, ...]) -> tuple[Path, Path]:
    import zarr

    raw = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    g = zarr.open_group(str(folder / "data.zarr"), mode="w")
    g.create_array("raw", data=raw, chunks=(16, 64, 64))
    g.create_array("lab", data=(raw > 128).astype(np.uint8), chunks=(16, 64, 64))
    config = folder / "bench_run.py"
    config.write_text(CONFIG.format(runs=str(folder / "runs"), data=str(folder / "data.zarr")))
    subprocess.run([sys.executable, "run.py", "train", str(config), "--device", "cpu"],
                   cwd=REPO, check=True, capture_output=True)  # fmt: skip
    return folder / "runs" / "bench", folder / "data.zarr"


def predict(run_dir: Path, data: Path, out: Path, block, *extra: str) -> float:
    cmd = [sys.executable, "run.py", "predict", str(run_dir), str(data), str(out), "--key",
           "raw", "--device", "cpu", "--block", *map(str, block), *extra]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - t


def markers(out: Path) -> list[dict]:
    done = out / ".voxelboard-job" / "done"
    return [json.loads(p.read_text()) for p in done.glob("predict-*.json")]


def claim_overhead_ms(folder: Path, n: int) -> float:
    from trainer.block_claims import BlockWorker, write_job

    job = folder / "claims.zarr" / ".voxelboard-job"
    write_job(job, {"kind": "predict", "steps": [{"name": "x", "blocks": n}]})
    with BlockWorker(job, "bench") as w:
        t = time.perf_counter()
        w.run_step("x", n, lambda i: None)
        return (time.perf_counter() - t) / n * 1e3


def takeover_s(run_dir: Path, data: Path, out: Path, block) -> tuple[float, float]:
    """Seconds from a worker's SIGKILL to its block's done marker, and the median block."""
    cmd = [sys.executable, "run.py", "predict", str(run_dir), str(data), str(out), "--key",
           "raw", "--device", "cpu", "--block", *map(str, block), "--workers", "2"]  # fmt: skip
    job = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    folder = out / ".voxelboard-job"
    try:
        while len({m["worker"] for m in markers(out)}) < 2:  # both workers past start-up
            time.sleep(0.01)
        while True:
            leases = sorted((folder / "claims").glob("predict-*.0")) if folder.exists() else []
            live = [p for p in leases if not (folder / "done" / f"{p.name[:-2]}.json").exists()]
            if live:
                try:
                    pid = json.loads(live[0].read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                break
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        name = live[0].name[:-2]
        assert job.wait(600) == 0
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    end = json.loads((folder / "done" / f"{name}.json").read_text())["end"]
    blocks = [m["end"] - m["start"] for m in markers(out)]
    return end - killed, float(np.median(blocks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(32, 128, 128))
    ap.add_argument("--block", type=int, nargs=3, default=(20, 64, 64))
    ap.add_argument("--claims", type=int, default=300)
    args = ap.parse_args()
    import zarr

    print(f"load average before: {os.getloadavg()}")
    folder = Path(tempfile.mkdtemp(prefix="vb-bench-dist-", dir="/tmp"))
    run_dir, data = make_run(folder, tuple(args.shape))
    rows = {}
    wall = predict(run_dir, data, folder / "one.zarr", args.block)
    rows["one process"] = (wall, None, None)
    for n in (1, 2):
        out = folder / f"w{n}.zarr"
        wall = predict(run_dir, data, out, args.block, "--workers", str(n))
        m = markers(out)
        span = max(x["end"] for x in m) - min(x["start"] for x in m)
        rows[f"{n} worker(s)"] = (wall, len(m) / span, sum(x["cpu_s"] for x in m) / len(m))
        want = zarr.open_array(str(folder / "one.zarr"), path="prob")[:]
        got = zarr.open_array(str(out), path="prob")[:]
        assert np.array_equal(want.view(np.uint16), got.view(np.uint16)), "not bit-identical"
    n_blocks = len(markers(folder / "w1.zarr"))
    print(f"volume {tuple(args.shape)}, block {tuple(args.block)}: {n_blocks} blocks, "
          f"{os.cpu_count()} cores; outputs bit-identical to one process")  # fmt: skip
    print(f"{'kind':<14}{'wall s':>8}{'blocks/s':>10}{'CPU s/block':>13}")
    for kind, (wall, rate, cpu) in rows.items():
        rate_s = f"{rate:10.2f}" if rate else f"{'-':>10}"
        cpu_s = f"{cpu:13.3f}" if cpu else f"{'-':>13}"
        print(f"{kind:<14}{wall:8.1f}{rate_s}{cpu_s}")
    one, two = rows["1 worker(s)"], rows["2 worker(s)"]
    print(f"2 workers / 1 worker: wall {one[0] / two[0]:.2f}x faster, blocks/s "
          f"{two[1] / one[1]:.2f}x, CPU s per block {two[2] / one[2]:.2f}x")  # fmt: skip
    print(f"claim overhead: {claim_overhead_ms(folder, args.claims):.2f} ms per block "
          f"(lease + done marker, fsynced; {args.claims} empty blocks)")  # fmt: skip
    took, block_s = takeover_s(run_dir, data, folder / "killed.zarr", args.block)
    print(f"take-over: {took:.2f} s from SIGKILL to the killed block's done marker "
          f"(median block {block_s:.2f} s)")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

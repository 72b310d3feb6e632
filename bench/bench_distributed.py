"""Scaling of the demo model's voxels/s from 1 to N training processes (DDP).

On a CPU machine the processes use gloo and share the cores (each gets
``cores // N`` threads); on a GPU machine pass ``--device cuda`` and N up to the GPU count.
Each configuration trains the demo config for ``--steps`` steps in a real `run.py train` and
the rate is read from the history store (training time of rank 0, steps after a warm-up).

    python bench/bench_distributed.py [--steps 40] [--nproc 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trainer.history import loadhistorytracker  # noqa: E402


def voxels_per_s(tmp: Path, nproc: int, steps: int, device: str, warmup: int = 5) -> float:
    name = f"n{nproc}"
    threads = max(1, (os.cpu_count() or 1) // nproc)
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(tmp / "data"), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(REPO / "run.py"), "train", str(REPO / "examples" / "demo_cnn3d.py"),
           "--nproc", str(nproc), "--device", device, "--save-path", str(tmp / "runs"),
           "--save-name", name, "--n-steps", str(steps)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    run_dir = tmp / "runs" / name
    status = json.loads((run_dir / "status.json").read_text())
    t = loadhistorytracker(run_dir).timeline["time"].to_numpy()
    per_step = np.median(np.diff(t)[warmup:])
    # status: voxels_per_s / it_per_s = voxels of one rank's batch; every rank takes each step
    voxels_per_step = status["voxels_per_s"] / status["it_per_s"] * nproc
    return voxels_per_step / per_step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        one = voxels_per_s(tmp, 1, args.steps, args.device)
        many = voxels_per_s(tmp, args.nproc, args.steps, args.device)
    print(f"1 process: {one / 1e6:.3f} MVx/s; {args.nproc} processes: {many / 1e6:.3f} MVx/s; "
          f"scaling {many / one:.2f}x (ideal {args.nproc}x on {args.device})")  # fmt: skip


if __name__ == "__main__":
    main()

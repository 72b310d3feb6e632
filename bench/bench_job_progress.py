"""``trainer.jobs.job_progress`` as the jobs page polls it: the first call against repeats.

    python bench/bench_job_progress.py [--markers 4096] [--repeats 20]

A job folder with ``--markers`` done markers (written as ``trainer.block_claims`` writes
them) is read once (every marker parsed), then ``--repeats`` times more with one new marker
before each call (what a 2 s poll of a running job sees). Printed: the first call's ms, the
median repeat's ms, their ratio, and, as the baseline a repeat replaces, the median ms of a
first read of a fresh copy of the folder (every marker parsed again). Load average before
and after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from trainer.block_claims import job_folder, write_job
    from trainer.jobs import job_progress
    from trainer.runs.atomic import atomic_write_json

    p = argparse.ArgumentParser()
    p.add_argument("--markers", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.zarr"
        folder = job_folder(out)
        n = args.markers + args.repeats
        write_job(folder, {"kind": "predict", "key": "prob", "command": ["x"], "created": 1.0,
                           "backend": "local", "steps": [{"name": "predict", "blocks": n}]})  # fmt: skip

        def mark(i: int) -> None:
            atomic_write_json(folder / "done" / f"predict-{i}.json",
                              {"worker": "w", "start": i, "end": i + 0.5, "cpu_s": 0.1},
                              fsync=False)  # fmt: skip

        for i in range(args.markers):
            mark(i)
        t = time.perf_counter()
        job_progress(out)
        first = time.perf_counter() - t
        repeats, fresh = [], []
        for k in range(args.repeats):
            mark(args.markers + k)
            t = time.perf_counter()
            job_progress(out)
            repeats.append(time.perf_counter() - t)
        for k in range(min(args.repeats, 5)):
            copy = Path(tmp) / f"copy{k}.zarr"
            shutil.copytree(out, copy)
            t = time.perf_counter()
            job_progress(copy)
            fresh.append(time.perf_counter() - t)
    rep, base = statistics.median(repeats), statistics.median(fresh)
    print(
        f"{args.markers} done markers: first call {first * 1e3:.1f} ms, repeat call (one new "
        f"marker) {rep * 1e3:.1f} ms median of {args.repeats}: first/repeat {first / rep:.1f}x"
    )
    print(
        f"baseline (every marker parsed, fresh copy) {base * 1e3:.1f} ms median: "
        f"baseline/repeat {base / rep:.1f}x"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

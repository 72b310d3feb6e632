"""Seconds from the launch form's Launch to the demo's first loss point: the number README quotes.

    python bench/bench_first_curve.py                  # 3 launches with an empty data folder, 3 with data
    python bench/bench_first_curve.py --repeats 1

The Launch button's callback calls ``Launcher.launch``; this bench calls it the same way (the
dashboard's launcher, local backend, CPU, ``examples/demo_cnn3d.py`` as written) and polls the
new run's history store every 50 ms until its first timeline row (the run page's first loss
point) and its first history row (the first validation error) are on disk, then stops the run.
Launches with an empty data folder include writing the synthetic demo data, as the first launch
on a fresh clone does (``python run.py`` also writes it at start-up, so a user's first click
usually finds it made). What the bench leaves out: the callback's round trip and the run page's
poll (one ``--refresh``, ``app/refresh.py``) before the point is drawn. Prints each launch,
the median per case and the load average before and after: on a machine shared with other jobs
the seconds grow with the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def first_rows(launcher, runs: Path, timeout: float = 300.0) -> tuple[float, float]:
    """Launch the demo and return seconds to its first timeline row and first history row."""
    from trainer.runs import HISTORY_DIR, read_status
    from trainer.runs.history_store import table_info

    t0 = time.perf_counter()
    name = launcher.launch("demo_cnn3d.py", "cpu")
    store = runs / name / HISTORY_DIR
    got: dict[str, float] = {}
    try:
        while len(got) < 2:
            if time.perf_counter() - t0 > timeout:
                sys.exit(f"{name}: no history rows after {timeout:.0f} s; see {runs / name}")
            for table in ("timeline", "history"):
                info = table_info(store, table) if table not in got else None
                if info is not None and info.n_rows >= 1:
                    got[table] = time.perf_counter() - t0
            status = read_status(runs / name)
            if status is not None and status.state == "failed":
                sys.exit(f"{name} failed: see {runs / name}")
            time.sleep(0.05)
    finally:
        launcher.stop(name)
        while name in launcher.active_runs():
            time.sleep(0.2)
    return got["timeline"], got["history"]


def main() -> None:
    from app.launcher import Launcher

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="launches per case")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="vb_click_") as tmp:
        runs = Path(tmp) / "runs"
        for case in ("empty data folder", "data written"):
            loss, hist = [], []
            for i in range(args.repeats):
                data = Path(tmp) / (f"data{i}" if case == "empty data folder" else "data0")
                launcher = Launcher(runs, REPO / "examples", data, gpus=[], grace_s=5.0).start()
                try:
                    a, b = first_rows(launcher, runs)
                finally:
                    launcher.close()
                loss.append(a)
                hist.append(b)
                print(f"{case}, launch {i}: first loss point {a:.1f} s, first validation "
                      f"error {b:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
            print(f"{case}: median first loss point {statistics.median(loss):.1f} s, "
                  f"first validation error {statistics.median(hist):.1f} s")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

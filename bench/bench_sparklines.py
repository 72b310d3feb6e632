"""Runs-grid sparklines: one poll of every run's valid-loss sparkline, against a full re-read.

    python bench/bench_sparklines.py                       # 50 runs at 10^3, 10^4, 10^5 rows
    python bench/bench_sparklines.py --runs 200 --sizes 10000

For each size, ``--runs`` synthetic runs with N history rows are written. The experiments
page's refresh asks ``app.runs_table.Sparklines`` for every run's sparkline; after a first
look, the "trainer" appends one row to each run and the poll is timed (median of
``--repeats``). The baseline is what a refresh without the kept position would do: read each
history table whole and downsample it (``sparkline_points``). Prints both and their ratio;
goal: the poll costs the same at every N (it reads one new row per run), so the ratio grows
with N. Check ``uptime`` first: a loaded machine swamps the smaller numbers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.runs_table import Sparklines, sparkline_points  # noqa: E402
from trainer.history import HistoryTracker  # noqa: E402
from trainer.runs.history_store import read_table  # noqa: E402


def row(step: int) -> list[float]:
    """steps, time, train_loss, valid_loss, loss_gain, train_err, valid_err, lr, mom, gradnetrate"""
    return [step, step, 1.0, 1.0 / (step + 1), 0.0, 0.3, 0.3, 0.01, 0.9, 0.0]


def median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench(n_runs: int, n_rows: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        runs = [Path(tmp) / f"run{i}" for i in range(n_runs)]
        trackers = [HistoryTracker(r / "history") for r in runs]
        try:
            for t in trackers:
                for step in range(n_rows):
                    t.update_history(row(step))
                t.sync()
            lines = Sparklines()
            first = median_s(lambda: [lines.points(r) for r in runs], 1)
            took: list[float] = []
            for step in range(n_rows, n_rows + repeats):
                for t in trackers:  # the trainer appends one row to every run
                    t.update_history(row(step))
                    t.sync()
                t0 = time.perf_counter()
                got = [lines.points(r) for r in runs]
                took.append(time.perf_counter() - t0)
            polled = statistics.median(took)

            def reread() -> list:
                return [
                    sparkline_points(read_table(r / "history", "history")["valid_loss"])
                    for r in runs
                ]

            full = median_s(reread, repeats)
            assert got == reread(), "the kept sparklines differ from a full re-read"
        finally:
            for t in trackers:
                t.close()
    print(
        f"{n_runs} runs x {n_rows:>7} rows: first look {first * 1e3:7.1f} ms, "
        f"poll {polled * 1e3:6.1f} ms, full re-read {full * 1e3:7.1f} ms, "
        f"ratio {full / polled:6.1f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for n in args.sizes:
        bench(args.runs, n, args.repeats)


if __name__ == "__main__":
    main()

"""History store: append rate, and the cost of a tail read vs. a full read.

    python bench/bench_history.py [N_ROWS]

1. Appends N_ROWS (default 10^6) timeline rows through ``HistoryTracker(path)``: every row
   goes to disk at once (one ``os.write``), as during training.
2. A dashboard polling a running training reads only the rows added since its last poll.
   Times reading 1 new row from the known offset (``read_table`` / ``read_since`` /
   ``read_array``) against reading the whole store (``read_table`` from 0,
   ``loadhistorytracker``); medians over repeats, and the ratios.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.history import HistoryTracker, loadhistorytracker  # noqa: E402
from trainer.runs.history_store import (  # noqa: E402
    TableTail,
    read_array,
    read_since,
    read_table,
    table_info,
)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm the caches (page cache, header cache, pandas)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "run" / "history"
        tracker = HistoryTracker(store)
        rows = [[i * 0.1, 1.0 / (1 + i), 0.5] for i in range(n)]
        t0 = time.perf_counter()
        for r in rows:
            tracker.update_timeline(r)
        dt = time.perf_counter() - t0
        print(f"append: {n:,} timeline rows in {dt:.2f} s = {n / dt:,.0f} rows/s "
              f"({dt / n * 1e6:.2f} us/row), file {table_info(store, 'timeline').path.stat().st_size / 1e6:.1f} MB")  # fmt: skip
        tracker.update_timeline([0.0, 0.0, 0.0])  # the one new row a poll picks up
        offset = n
        gen = table_info(store, "timeline").generation

        tail_df = median_time(lambda: read_table(store, "timeline", offset), 2000)
        tail_since = median_time(lambda: read_since(store, "timeline", offset, gen), 2000)
        tail_raw = median_time(lambda: read_array(store, "timeline", offset), 2000)
        follower = TableTail(store, "timeline")
        follower.read_new()

        def follow_one_row():
            follower.offset = offset  # as if exactly one row had been appended since
            return follower.read_new()

        tail_follow = median_time(follow_one_row, 2000)
        assert len(follow_one_row()[0]) == 1
        follower.close()
        full_df = median_time(lambda: read_table(store, "timeline"), 15)
        full_load = median_time(lambda: loadhistorytracker(store).timeline, 7)
        full_raw = median_time(lambda: read_array(store, "timeline"), 15)
        assert len(read_table(store, "timeline", offset)) == 1
        tracker.close()

    print(f"tail read of 1 row:  read_table {tail_df * 1e6:8.1f} us | read_since "
          f"{tail_since * 1e6:8.1f} us | read_array {tail_raw * 1e6:8.1f} us | "
          f"TableTail.read_new {tail_follow * 1e6:8.1f} us")  # fmt: skip
    print(f"full read ({n + 1:,} rows): read_table {full_df * 1e3:8.2f} ms | "
          f"loadhistorytracker {full_load * 1e3:8.2f} ms | read_array {full_raw * 1e3:8.2f} ms")  # fmt: skip
    print(f"ratio full/tail: read_table {full_df / tail_df:,.0f}x | "
          f"loadhistorytracker vs read_since {full_load / tail_since:,.0f}x | "
          f"read_array {full_raw / tail_raw:,.0f}x | TableTail vs read_array "
          f"{full_raw / tail_follow:,.0f}x (goal >= 1000x)")  # fmt: skip


if __name__ == "__main__":
    main()

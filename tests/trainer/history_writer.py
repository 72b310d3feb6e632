"""A history writer process for test_history.py: appends a known sequence as fast as it can.

Usage: python history_writer.py STORE COUNTER_FILE [N_STEPS [BURST]]

Step ``i`` writes timeline row ``row(i)`` and, every 10th step, history row ``history_row(i)``.
After each complete step the number of completed steps is written to COUNTER_FILE (8 bytes,
little-endian, with ``pwrite``: a store to a shared memory map by a SIGKILLed process was seen
to get lost on some kernels; a ``pwrite`` is in the page cache once it returns). On start the
store is truncated to the completed steps, as the trainer does when resuming from a snapshot.
Without N_STEPS it runs until killed; with it, it writes N_STEPS steps in bursts of BURST steps
(pausing 2 ms between bursts) and exits.
"""

from __future__ import annotations

import os
import struct
import sys
import time

HISTORY_EVERY = 10


def row(i: int) -> list[float]:
    # every value is exact in float64 and differs between steps, so a garbled row shows
    return [i * 0.5, (i % 1009) / 8 + i, -float(i)]


def history_row(i: int) -> list[float]:
    return [float(i)] + [i + j / 4 for j in range(1, 10)]


def main() -> None:
    from trainer.history import HistoryTracker

    store, counter_file = sys.argv[1], sys.argv[2]
    n_steps = int(sys.argv[3]) if len(sys.argv) > 3 else None
    burst = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
    counter = os.open(counter_file, os.O_RDWR)
    done = struct.unpack("<q", os.pread(counter, 8, 0))[0]
    tracker = HistoryTracker(store)
    tracker.truncate(done - 1)
    i = done
    while n_steps is None or i < n_steps:
        tracker.update_timeline(row(i))
        if i % HISTORY_EVERY == 0:
            tracker.update_history(history_row(i))
        i += 1
        os.pwrite(counter, struct.pack("<q", i), 0)
        if n_steps is not None and i % burst == 0:
            time.sleep(0.002)
    tracker.close()


if __name__ == "__main__":
    main()

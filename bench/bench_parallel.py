"""Batches per second: BackgroundProc vs torch.utils.data.DataLoader, same function, 2 workers.

The batch function stands in for ``BatchCreatorImage.getbatch``: a (1, 1, 16, 64, 64) float32
patch plus an int16 label, with a few milliseconds of numpy work (noise, smoothing, flips,
grey-value augmentation). Both loaders run it in 2 worker processes; the consumer either
takes batches as fast as it can ("idle consumer") or sleeps a few ms per batch as if it
waited for a GPU step ("busy consumer"). Rounds alternate between the two loaders and the
median rate is reported.

Run: ``python bench/bench_parallel.py [--batches 300] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.parallel import BackgroundProc  # noqa: E402

SHAPE = (1, 1, 16, 64, 64)


def make_batch() -> tuple[np.ndarray, np.ndarray]:
    """A getbatch-like function: a few ms of numpy work for one patch and its label."""
    x = np.random.standard_normal(SHAPE).astype(np.float32)
    for _ in range(2):  # box blur so the label has structure
        for axis in (2, 3, 4):
            x = (x + np.roll(x, 1, axis=axis) + np.roll(x, -1, axis=axis)) / 3.0
    if np.random.rand() < 0.5:
        x = x[..., ::-1]
    x = x * np.float32(np.random.uniform(0.8, 1.2)) + np.float32(np.random.uniform(-0.1, 0.1))
    x = np.clip(x, -1.0, 1.0)
    label = (x[0] > 0).astype(np.int16)
    return np.ascontiguousarray(x), label


class Batches(IterableDataset):
    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            yield make_batch()


def seed_worker(worker_id: int) -> None:
    info = get_worker_info()
    np.random.seed((info.seed + worker_id) % 2**32)


def rate(next_batch: Callable[[], object], n: int, consumer_s: float) -> float:
    for _ in range(10):  # warm-up: both loaders prefetch, fill their pipelines first
        next_batch()
    t0 = time.perf_counter()
    for _ in range(n):
        next_batch()
        if consumer_s:
            time.sleep(consumer_s)
    return n / (time.perf_counter() - t0)


def bench_background(n: int, consumer_s: float) -> float:
    with BackgroundProc(make_batch, n_proc=2) as bg:
        return rate(bg.get, n, consumer_s)


def bench_dataloader(n: int, consumer_s: float) -> float:
    loader = DataLoader(Batches(), batch_size=None, num_workers=2, worker_init_fn=seed_worker)
    it = iter(loader)
    try:
        return rate(lambda: next(it), n, consumer_s)
    finally:
        it._shutdown_workers()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--consumer-ms", type=float, default=3.0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    for _ in range(50):
        make_batch()
    one = (time.perf_counter() - t0) / 50
    print(f"make_batch in the main process: {one * 1e3:.2f} ms ({1 / one:.0f} batches/s serial)")
    print(f"torch {torch.__version__}, numpy {np.__version__}, 2 workers, {args.batches} batches")

    for label, consumer_s in [("idle consumer", 0.0), ("busy consumer", args.consumer_ms / 1e3)]:
        bg_rates, dl_rates = [], []
        for _ in range(args.rounds):
            bg_rates.append(bench_background(args.batches, consumer_s))
            dl_rates.append(bench_dataloader(args.batches, consumer_s))
        bg, dl = statistics.median(bg_rates), statistics.median(dl_rates)
        extra = f", consumer sleeps {consumer_s * 1e3:g} ms/batch" if consumer_s else ""
        print(f"\n{label}{extra}")
        print(
            f"  BackgroundProc  {bg:8.1f} batches/s  (rounds: {', '.join(f'{r:.0f}' for r in bg_rates)})"
        )
        print(
            f"  DataLoader      {dl:8.1f} batches/s  (rounds: {', '.join(f'{r:.0f}' for r in dl_rates)})"
        )
        print(f"  ratio BackgroundProc / DataLoader = {bg / dl:.2f}x")


if __name__ == "__main__":
    main()

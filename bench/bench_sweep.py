"""Sweeps: the scheduler's overhead per trial, and what the median pruner saves on the demo.

1. Overhead: seconds from asking for a run to its first training step, for a sweep trial
   (from the moment the sweep's driver queues it: the launcher then starts ``run.py train``
   with the trial's values) against a plain ``run.py train`` started directly, same config,
   alternating, one at a time.
   Goal: ratio <= 1.2.
2. Pruning: a TPE sweep of ``--trials`` demo trials with ``prune=True`` (median pruner):
   how many trials were pruned, and the compute saved = 1 - steps trained / steps a sweep
   without pruning would train.

    python bench/bench_sweep.py                       # both parts, 16 trials of 200 steps
    python bench/bench_sweep.py --part overhead --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIG = """
import os
from trainer.models import CNN3D
from trainer.synthetic import ensure_demo_data

_demo = ensure_demo_data(os.environ["VOXELBOARD_DATA_DIR"])

def create_model():
    return CNN3D(n_classes=2, in_channels=1)

data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
n_steps = {n_steps}
history_freq = {history_freq}
monitor_batch_size = 4
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=2e-3)
plot_on = False
sweep = {sweep}
"""


def first_step_time(run_dir: Path, timeout: float = 600) -> float:
    from trainer.runs import read_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(run_dir) if run_dir.is_dir() else None
        if status is not None and status.step >= 1:
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"{run_dir} did not reach step 1 in {timeout:.0f} s")


def overhead(tmp: Path, data: Path, rounds: int) -> None:
    from trainer.runs import read_launcher_record

    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    config = tmp / "overhead.py"
    config.write_text(CONFIG.format(n_steps=5, history_freq=5,
                                    sweep="dict(method='grid', parameters=dict(lr=[2e-3]))"))  # fmt: skip
    plain, trial = [], []
    for r in range(rounds):
        runs = tmp / f"plain{r}"
        t0 = time.time()
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), "train", str(config), "--save-path", str(runs),
             "--save-name", "run", "--device", "cpu"], env=env, cwd=tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        plain.append(first_step_time(runs / "run") - t0)
        proc.wait()

        runs = tmp / f"sweep{r}"
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "run.py"), "sweep", str(config), "--runs-dir", str(runs),
             "--data-dir", str(data), "--device", "cpu", "--poll", "0.2"], env=env, cwd=tmp,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        run_dir = runs / "overhead-sweep-1-000"
        reached = first_step_time(run_dir)
        trial.append(reached - read_launcher_record(run_dir).queued)  # the driver queued it
        proc.wait()
        print(f"  round {r + 1}: run.py train {plain[-1]:.2f} s, sweep trial {trial[-1]:.2f} s")
    a, b = statistics.median(plain), statistics.median(trial)
    print(f"launch -> first step, median of {rounds}: run.py train {a:.2f} s, "
          f"sweep trial {b:.2f} s, ratio {b / a:.2f}x (goal <= 1.2x)")  # fmt: skip


def pruning(tmp: Path, data: Path, trials: int, steps: int, parallel: int) -> None:
    from trainer.runs import read_status
    from trainer.runs.sweeps import read_trials

    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    sweep = (f"dict(method='tpe', n_runs={trials}, prune=True, pruner='median', "
             f"warmup_steps={steps // 4}, startup_runs=2, seed=0, "
             "parameters=dict(lr=dict(low=1e-5, high=3e-2, log=True), batch_size=[1, 2]))")  # fmt: skip
    config = tmp / "pruning.py"
    config.write_text(CONFIG.format(n_steps=steps, history_freq=max(1, steps // 10), sweep=sweep))
    runs = tmp / "pruning"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / "run.py"), "sweep", str(config), "--runs-dir", str(runs),
         "--data-dir", str(data), "--device", "cpu", "--max-parallel", str(parallel)],
        env=env, cwd=tmp, check=False, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    record = read_trials(runs / ".sweeps" / "pruning-sweep-1")
    pruned = [t for t in record.trials if t.state == "pruned"]
    trained = sum((read_status(runs / t.run).step if read_status(runs / t.run) else 0)
                  for t in record.trials)  # fmt: skip
    full = steps * len(record.trials)
    print(f"pruning: {len(pruned)} of {len(record.trials)} trials pruned early by the median "
          f"pruner ({trials} asked, {steps} steps each, {parallel} at once, {wall:.0f} s); "
          f"steps trained {trained} of {full}: compute saved {1 - trained / full:.0%}")  # fmt: skip
    for t in record.trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        print(f"  trial {t.number:2d} {t.state:9s} value {value}  {t.params}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("overhead", "pruning", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--max-parallel", type=int, default=2)
    args = parser.parse_args()
    from trainer.synthetic import ensure_demo_data

    with tempfile.TemporaryDirectory(prefix="vb-bench-sweep-") as tmp:
        tmp = Path(tmp)
        ensure_demo_data(tmp / "data")
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        if args.part in ("overhead", "both"):
            overhead(tmp, tmp / "data", args.rounds)
        if args.part in ("pruning", "both"):
            pruning(tmp, tmp / "data", args.trials, args.steps, args.max_parallel)


if __name__ == "__main__":
    main()

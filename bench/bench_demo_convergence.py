"""The demo's validation error at fixed steps, over several seeds: the numbers README quotes.

    python bench/bench_demo_convergence.py                       # 5 seeds, error at 0/100/200/300
    python bench/bench_demo_convergence.py --seeds 2 --at 200    # a busy machine
    python bench/bench_demo_convergence.py --lr 4e-3             # another learning rate

Trains ``examples/demo_cnn3d.py`` (``run.py train --n-steps <last of --at> --device cpu``,
without the demo's 15-minute ``max_runtime``) once per seed, one run after the other, into a
temporary folder, and prints each run's validation error at each step of ``--at`` (the history
row at that step; ``history_freq`` is 20, and a run of N steps ends at step N - 1), the first
history row below 10%, the training seconds to each step (the history's ``time``) and the run's
wall time; then the mean, min and max over the seeds at each step, and the load average before
and after. Judge the demo by its steps: its seconds depend on the machine and on its load.

A seed is set by a two-line config beside the demo (``torch.manual_seed`` / ``np.random.seed``
before the model is built): the demo config has no seed key, and the batch creator still draws
its patches from its own generator, so the seed fixes the model's initial weights and the
workers' seeds, not every patch.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_SEEDED_CONFIG = """\
import numpy as _np
import torch as _torch

_np.random.seed({seed})
_torch.manual_seed({seed})
exec(compile(open({demo!r}).read(), {demo!r}, "exec"))
"""


def train_seed(
    root: Path, seed: int, steps: int, lr: float | None = None
) -> tuple[pd.DataFrame, float]:
    """One demo run of ``steps`` steps with ``seed`` (and learning rate ``lr`` instead of the
    config's when given): (its history rows, wall seconds)."""
    from trainer.history import loadhistorytracker
    from trainer.runs import HISTORY_DIR

    demo = str(REPO / "examples" / "demo_cnn3d.py")
    config = root / f"demo_seed{seed}.py"
    config.write_text(_SEEDED_CONFIG.format(seed=seed, demo=demo))
    env = dict(os.environ, VOXELBOARD_DATA_DIR=str(REPO / "data"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, str(REPO / "run.py"), "train", str(config), "--n-steps", str(steps),
        "--save-path", str(root / "runs"), "--save-name", f"seed{seed}", "--device", "cpu",
        "--max-runtime", "86400",  # the demo's 15 minutes end a run on a busy machine early
    ]  # fmt: skip
    if lr is not None:
        cmd += ["--lr", str(lr)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=1800)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    hist = loadhistorytracker(root / "runs" / f"seed{seed}" / HISTORY_DIR).history
    return hist.dropna(subset=["valid_err"]), seconds


def at_step(hist: pd.DataFrame, step: int) -> pd.Series:
    """The history row at ``step`` (the run's last, step - 1, for its last step)."""
    rows = hist[hist["steps"] <= step]
    if rows.empty or rows["steps"].iloc[-1] < step - 1:
        sys.exit(f"no history row at step {step}: rows at {hist['steps'].tolist()}")
    return rows.iloc[-1]


def first_below(hist: pd.DataFrame, percent: float) -> str:
    """The first step whose validation error is below ``percent``, or 'never'."""
    below = hist[hist["valid_err"] < percent]
    return str(int(below["steps"].iloc[0])) if len(below) else "never"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds are FIRST..FIRST+N-1")
    ap.add_argument("--at", type=int, nargs="+", default=[0, 100, 200, 300],
                    help="steps to report the validation error at; the runs train to the last")  # fmt: skip
    ap.add_argument("--lr", type=float, help="train with this learning rate (run.py train --lr)")
    args = ap.parse_args()
    at = sorted(args.at)
    print(f"load average before: {os.getloadavg()}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    errs = np.zeros((args.seeds, len(at)))
    times = []
    with tempfile.TemporaryDirectory(prefix="vb_conv_") as tmp:
        for i, seed in enumerate(seeds):
            hist, seconds = train_seed(Path(tmp), seed, at[-1], args.lr)
            rows = [at_step(hist, step) for step in at]
            errs[i] = [r["valid_err"] for r in rows]
            times.append(seconds)
            cells = ", ".join(
                f"{int(r['steps'])}: {r['valid_err']:.1f}% ({r['time']:.0f} s)" for r in rows
            )
            print(f"seed {seed}: valid_err {cells}; first below 10% at step "
                  f"{first_below(hist, 10.0)}; wall {seconds:.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    for j, step in enumerate(at):  # the history's valid_err is in percent already
        e = errs[:, j]
        print(f"validation error at step {step} over {args.seeds} seeds: mean {e.mean():.1f}%, "
              f"min {e.min():.1f}%, max {e.max():.1f}%, below 10% in {(e < 10).sum()} of {args.seeds}")  # fmt: skip
    print(f"wall time per run of {at[-1]} steps: mean {np.mean(times):.0f} s, "
          f"range {min(times):.0f}-{max(times):.0f} s")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

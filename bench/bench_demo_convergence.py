"""The demo's validation error at step 200, over several seeds: the number README quotes.

    python bench/bench_demo_convergence.py               # 5 seeds, 200 steps, CPU
    python bench/bench_demo_convergence.py --seeds 2     # a busy machine

Trains ``examples/demo_cnn3d.py`` (``run.py train --n-steps 200 --device cpu``) once per seed,
one run after the other, into a temporary folder, and prints each run's validation error at its
last history row (step 200), the mean and range over the seeds, each run's wall time, and the
load average before and after. A seed is set by a two-line config beside the demo
(``torch.manual_seed`` / ``np.random.seed`` before the model is built): the demo config has no
seed key, and the batch creator still draws its patches from its own generator, so the seed fixes
the model's initial weights and the workers' seeds, not every patch.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_SEEDED_CONFIG = """\
import numpy as _np
import torch as _torch

_np.random.seed({seed})
_torch.manual_seed({seed})
exec(compile(open({demo!r}).read(), {demo!r}, "exec"))
"""


def train_seed(root: Path, seed: int, steps: int) -> tuple[float, int, float]:
    """One demo run with ``seed``: (validation error (%) at the last history row, its step,
    seconds)."""
    from trainer.history import loadhistorytracker
    from trainer.runs import HISTORY_DIR

    demo = str(REPO / "examples" / "demo_cnn3d.py")
    config = root / f"demo_seed{seed}.py"
    config.write_text(_SEEDED_CONFIG.format(seed=seed, demo=demo))
    env = dict(os.environ, VOXELBOARD_DATA_DIR=str(REPO / "data"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, str(REPO / "run.py"), "train", str(config), "--n-steps", str(steps),
        "--save-path", str(root / "runs"), "--save-name", f"seed{seed}", "--device", "cpu",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO, timeout=1800)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: training failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    hist = loadhistorytracker(root / "runs" / f"seed{seed}" / HISTORY_DIR).history
    last = hist.dropna(subset=["valid_err"]).iloc[-1]
    return float(last["valid_err"]), int(last["steps"]), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()}")
    errs, times = [], []
    with tempfile.TemporaryDirectory(prefix="vb_conv_") as tmp:
        for seed in range(args.seeds):
            err, step, seconds = train_seed(Path(tmp), seed, args.steps)
            errs.append(err)
            times.append(seconds)
            print(f"seed {seed}: valid_err {err:.1f}% at step {step}, {seconds:.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
    e = np.array(errs)  # the history's valid_err is in percent already
    print(f"validation error at step {args.steps} over {args.seeds} seeds: mean {e.mean():.1f}%, "
          f"range {e.min():.1f}-{e.max():.1f}%; wall time per run: mean {np.mean(times):.0f} s, "
          f"range {min(times):.0f}-{max(times):.0f} s")  # fmt: skip
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

"""Evaluate on the demo run: one prediction pass against the two passes it replaces.

    python bench/bench_evaluate_run.py              # 3 training steps, 2 rounds
    python bench/bench_evaluate_run.py --rounds 3 --mode exact

Trains the demo config (examples/demo_cnn3d.py) for a few steps into a temporary folder, then
evaluates its FINAL snapshot on the validation cubes, as the evaluation page's Evaluate does,
both ways in this one process, alternating (baseline, one pass, baseline, ...):

* two passes (before): ``evaluate_model_binary`` predicts the cubes for the result file and
  throws the probabilities away; the model is loaded again (``load_run``) and every validation
  cube is predicted again (``predict_labelled``) for the probability cache
  (``write_prob_cache``).
* one pass (now): ``evaluate_run`` predicts each cube once and writes the result file and the
  probability cache from that pass.

Both write the same files (checked). Prints each round, the best time of each and their ratio
(goal: one pass <= 0.6 x two passes). Torch and the data are loaded once before timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer import runs  # noqa: E402
from trainer.evaluation import evaluate_model_binary, evaluate_run, load_run  # noqa: E402


def train_demo(root: Path, steps: int) -> Path:
    """The demo config trained for ``steps`` steps on the CPU: ``<root>/runs/demo``."""
    env = dict(os.environ, VOXELBOARD_DATA_DIR=str(root / "data"), PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable, str(REPO / "run.py"), "train", str(REPO / "examples" / "demo_cnn3d.py"),
        "--n-steps", str(steps), "--save-path", str(root / "runs"), "--save-name", "demo",
        "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root, timeout=900)
    if proc.returncode != 0:
        sys.exit(f"training the demo failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return root / "runs" / "demo"


def two_passes(run_dir: Path, snapshot: Path, mode: str, data_dir: Path, name: str) -> None:
    """Evaluate, then load the model again and predict the validation cubes again (before)."""
    from trainer.inference import predict_labelled

    run = load_run(run_dir, snapshot, "cpu", data_dir)
    attrs = {"snapshot": str(snapshot), "step": int(run.state.get("step", -1))}
    evaluate_model_binary(run.model, name, data=run.data, run_dir=run_dir, mode=mode,
                          device=run.device, splits=("valid",), attrs=attrs)  # fmt: skip
    run = load_run(run_dir, snapshot, "cpu", data_dir)
    cubes = []
    for raw, label in zip(run.data.valid_d, run.data.valid_l):
        label = np.asarray(label)
        label = label[0] if label.ndim == 4 else label
        raw_c, label_c, prob = predict_labelled(run.model, raw, label, 1, run.device)
        cubes.append((raw_c, prob, label_c))
    runs.write_prob_cache(runs.prob_cache_path(run_dir, name), cubes, {"snapshot": str(snapshot)})


def one_pass(run_dir: Path, snapshot: Path, mode: str, data_dir: Path, name: str) -> None:
    """``evaluate_run``: each cube predicted once, result and cache from that pass (now)."""
    evaluate_run(run_dir, snapshot, "valid", mode, "cpu", name, data_dir=data_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training steps of the demo run")
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds of each path")
    ap.add_argument("--mode", choices=("binned", "exact"), default="binned")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="vb-bench-evaluate-"))
    try:
        t0 = time.perf_counter()
        run_dir = train_demo(root, args.steps)
        snapshot = runs.snapshot_path(run_dir, "FINAL")
        data_dir = root / "data"
        print(f"demo run trained for {args.steps} steps in {time.perf_counter() - t0:.1f} s")
        warm = load_run(run_dir, snapshot, "cpu", data_dir)  # torch, the model code, the data
        shapes = [tuple(np.asarray(r).shape) for r in warm.data.valid_d]
        print(f"validation cubes: {shapes}, counting: {args.mode}, torch threads: ", end="")
        import torch

        print(torch.get_num_threads())
        times: dict[str, list[float]] = {"two passes (before)": [], "one pass (now)": []}
        for r in range(args.rounds):
            for label, fn, name in (
                ("two passes (before)", two_passes, "BEFORE"),
                ("one pass (now)", one_pass, "NOW"),
            ):
                t = time.perf_counter()
                fn(run_dir, snapshot, args.mode, data_dir, name)
                times[label].append(time.perf_counter() - t)
                print(f"  round {r + 1}: {label:20s} {times[label][-1]:7.2f} s")
        before, now = (
            runs.read_result(runs.result_path(run_dir, n))["valid"] for n in ("BEFORE", "NOW")
        )
        same = np.array_equal(before.tp, now.tp) and np.array_equal(before.fp, now.fp)
        cache = {
            n: runs.read_prob_cache(runs.prob_cache_path(run_dir, n))["cubes"]
            for n in ("BEFORE", "NOW")
        }
        if not same or cache["BEFORE"] != cache["NOW"]:
            sys.exit("the two paths wrote different results or caches")
        b, n = min(times["two passes (before)"]), min(times["one pass (now)"])
        print(f"two passes (before): {b:.2f} s   one pass (now): {n:.2f} s   ratio {n / b:.2f} "
              f"(goal <= 0.60)")  # fmt: skip
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

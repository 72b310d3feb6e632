"""Trainer overhead and data waiting, against a bare PyTorch loop.

(a) Time per step of ``Trainer.run`` against a bare PyTorch loop with the same model, optimiser
    and pre-made batches (goal: at most 1.05x).
(c) Fraction of step time the trainer waits for data with ``background_processes=2`` and the
    real demo ``BatchCreatorImage`` (goal: under 5% when getbatch is cheaper than a step).

    python bench/bench_trainer.py [--steps 60] [--model cnn3d|unet3d]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import ExperimentConfig  # noqa: E402
from trainer.synthetic import ensure_demo_data  # noqa: E402
from trainer.trainer import Trainer  # noqa: E402

CONFIG = """
from trainer.models import build_model
from trainer.synthetic import ensure_demo_data
_demo = ensure_demo_data({data!r})
def create_model():
    return build_model({model!r}, n_classes=2)
data_class = "BatchCreatorImage"
data_init_kwargs = _demo.data_init_kwargs()
data_batch_args = dict(grey_augment_channels=[0], warp=0.0)
n_steps = {steps}
history_freq = 10**9
monitor_batch_size = 2
batch_size = 2
optimiser = "Adam"
optimiser_params = dict(lr=1e-3, mom=0.9, beta2=0.999)
param_save_it = 10**9
plot_on = False
print_status = False
background_processes = {bg}
"""


class PreMade:
    """A data source that cycles through batches made up front (no data cost at all)."""

    def __init__(self, batches):
        self._it = itertools.cycle(batches)
        self.train_d = []

    def getbatch(self, **kw):
        return next(self._it)


def make_trainer(tmp: Path, data: Path, model: str, steps: int, bg: int, name: str) -> Trainer:
    cfg_file = tmp / f"{name}.py"
    cfg_file.write_text(CONFIG.format(data=str(data), model=model, steps=steps, bg=bg))
    cfg = ExperimentConfig(str(cfg_file))
    cfg.apply_overrides(save_path=str(tmp / "runs"), save_name=name)
    cfg.make_dir()
    return Trainer(cfg, device="cpu")


def step_times(trainer: Trainer, skip: int = 5) -> np.ndarray:
    t = trainer.tracker.timeline["time"].to_numpy()
    return np.diff(t)[skip:]


def bare_loop(model, optimizer, batches, steps: int) -> np.ndarray:
    model.train()
    times = []
    it = itertools.cycle(batches)
    t0 = time.perf_counter()
    for _ in range(steps):
        data, target = next(it)
        x = torch.as_tensor(data)
        y = torch.as_tensor(target).long()[:, 0]
        loss = F.cross_entropy(model(x), y, ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        float(loss)
        now = time.perf_counter()
        times.append(now - t0)
        t0 = now
    return np.asarray(times[5:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--model", default="cnn3d")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = tmp / "data"
        ensure_demo_data(data)

        # (a) overhead: trainer vs bare loop on identical pre-made batches, interleaved rounds
        tr = make_trainer(tmp, data, args.model, args.steps, 0, "overhead")
        batches = [tr.data.getbatch(batch_size=2, source="train") for _ in range(8)]
        tr.data = PreMade(batches)
        model = type(tr.model)(n_classes=2)
        model.load_state_dict(tr.model.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
        ratios = []
        for r in range(3):
            bare = bare_loop(model, opt, batches, args.steps)
            tr.exp_config.n_steps = tr.step + args.steps
            tr.run()
            ours = step_times(tr)[-(args.steps - 6) :]
            ratios.append(statistics.median(ours) / statistics.median(bare))
            print(f"(a) round {r}: trainer {statistics.median(ours) * 1e3:.1f} ms/step, "
                  f"bare loop {statistics.median(bare) * 1e3:.1f} ms/step, "
                  f"ratio {ratios[-1]:.3f}x")  # fmt: skip
        print(f"(a) trainer / bare PyTorch time per step: {statistics.median(ratios):.3f}x "
              "(goal <= 1.05x)")  # fmt: skip

        # (c) waiting for data with two background processes and the real data source
        tr = make_trainer(tmp, data, args.model, args.steps, 2, "waiting")
        t_get = []
        for _ in range(10):
            t0 = time.perf_counter()
            tr.data.getbatch(**tr.batch_kwargs)
            t_get.append(time.perf_counter() - t0)
        tr.run()
        steps = step_times(tr, skip=0)
        frac = tr.data_wait_s / max(tr.train_time, 1e-9)
        print(f"(c) getbatch {statistics.median(t_get) * 1e3:.1f} ms, step "
              f"{statistics.median(steps) * 1e3:.1f} ms; waited for data {tr.data_wait_s:.2f} s of "
              f"{tr.train_time:.2f} s training = {100 * frac:.1f}% (goal < 5%)")  # fmt: skip


if __name__ == "__main__":
    main()

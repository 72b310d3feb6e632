"""The training loop: ELEKTRONN2's ``Trainer`` on PyTorch.

The loop reads top to bottom: get a batch, take a step, log it, then "if due: monitor /
snapshot / preview / schedules", then the stop check. Everything the dashboard shows is
written into the run directory (docs/run-directory.md) as it happens.

Example:
    >>> from trainer import ExperimentConfig, Trainer
    >>> cfg = ExperimentConfig("examples/demo_cnn3d.py")  # doctest: +SKIP
    >>> cfg.make_dir()  # doctest: +SKIP
    >>> Trainer(cfg).run()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import runs
from trainer.best import BestValue
from trainer.class_metrics import class_counts, metric_columns, overlap_scores
from trainer.devices import device_info, resolve_device
from trainer.distributed import DistContext
from trainer.errors import ConfigError
from trainer.history import HistoryTracker
from trainer.losses import make_loss
from trainer.optimisers import get_hyper, make_optimiser
from trainer.schedules import Schedule
from trainer.sweeps import TrialReporter

logger = logging.getLogger("voxelboard")

SNAPSHOT_FORMAT = 1
#: labels below zero are ignored by loss and error (ELEKTRONN2 used -1 and -666)
IGNORE_INDEX = -100


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


class Trainer:
    """Trains ``exp_config``'s model on its data source, writing into its run directory.

    Args:
        exp_config: an ``ExperimentConfig`` whose ``make_dir()`` has been called (or is
            called here when it has no ``run_dir`` yet).
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; default the config's
            ``device`` key, else auto.
        resume: continue from the newest snapshot in the run directory.
        dist: this process's place in a distributed run (``trainer.distributed.from_env``);
            ``None`` for a single process. Only rank 0 writes the run directory.
        trial: a sweep trial's reporter: each history row's metric goes to the sweep's
            pruner, and a pruned trial stops like a stop request with state ``pruned``.
    """

    def __init__(
        self,
        exp_config: Any,
        device: str | None = None,
        resume: bool = False,
        dist: DistContext | None = None,
        trial: TrialReporter | None = None,
    ):
        self.exp_config = cfg = exp_config
        self.trial = trial
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        if cfg.run_dir is None:
            cfg.make_dir()
        self.run_dir = Path(cfg.run_dir)
        spec = _device_spec(device, cfg.device)
        self.device = dist.device if dist is not None else resolve_device(spec)
        self.model = self._create_model().to(self.device)
        self.net = self._wrap_distributed(self.model)
        self.rank_pids = dist.gather(os.getpid()) if dist is not None else [os.getpid()]
        self.optimizer = make_optimiser(self.model, cfg.optimiser, cfg.optimiser_params)
        self.schedules = self._bind_schedules()
        self.data = self._load_data()
        self.preview_data = self._load_preview_data() if self.is_main else []
        self.batch_size = int(cfg.batch_size)
        self.monitor_batch_size = _round_up(int(cfg.monitor_batch_size), self.batch_size)
        weights = cfg.class_weights
        self.class_weights = (
            torch.tensor(np.asarray(weights, dtype=np.float32), device=self.device)
            if weights is not None
            else None
        )
        self.loss_spec = make_loss(cfg.loss, cfg.loss_params, self.class_weights)
        self._loss_checked = False
        self._instances: list[np.ndarray] | None = None  # valid cubes' neurons, read when needed
        self.metric_columns = self._history_metric_columns()
        store = self.run_dir / runs.HISTORY_DIR if self.is_main else None
        self.tracker = HistoryTracker(path=store, extra_history_columns=self.metric_columns)
        self.best = self._best_value()
        self.amp = cfg.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0  # index of the next training step
        self.train_time = 0.0  # seconds of training, without previews and the shell
        self.stop_reason: str | None = None
        self.pruned_reason: str | None = None  # a sweep's pruner stopped this trial
        self._interactive_request = False
        self._preview_hours_done: float | None = None
        self._t_per_it = 0.0
        self.data_wait_s = 0.0  # time spent waiting for batches (bench/bench_trainer.py)
        if resume:
            self._resume()

    # ------------------------------------------------------------------ set-up
    def _create_model(self) -> torch.nn.Module:
        cfg = self.exp_config
        load_path = cfg.model_load_path
        if load_path:
            state = torch.load(
                os.path.expanduser(load_path), map_location="cpu", weights_only=False
            )
            if isinstance(state, torch.nn.Module):
                return state
            if cfg.create_model is None:
                raise ValueError(
                    f"model_load_path {load_path!r} holds a state dict, not a model; "
                    "also give create_model so VoxelBoard can build the model to load it into"
                )
            model = build_model(cfg)
            model.load_state_dict(state.get("model", state))
            return model
        return build_model(cfg)

    def _wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around the model in a distributed run; each rank draws its own batches."""
        if self.dist is None:
            return model
        from torch.nn.parallel import DistributedDataParallel

        torch.manual_seed(torch.initial_seed() + self.dist.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _bind_schedules(self) -> dict[str, Schedule]:
        bound: dict[str, Schedule] = {}
        for name, params in self.exp_config.schedules.items():
            if not params:
                continue
            sched = Schedule(**params)
            if name in ("lr", "mom", "momentum", "wd", "weight_decay"):
                sched.bind_variable(obj=self.optimizer, prop_name=name)
            elif hasattr(self.model, name):
                sched.bind_variable(obj=self.model, prop_name=name)
            elif hasattr(self.exp_config, name):
                sched.bind_variable(obj=self.exp_config, prop_name=name)
            else:
                raise ValueError(
                    f"schedules[{name!r}] in {self.exp_config.exp_file}: no optimiser key, model "
                    "attribute or config key of that name; use lr, mom, wd, a model attribute "
                    "(e.g. a dropout rate) or a config key (e.g. history_freq)"
                )
            bound[name] = sched
            logger.info("Schedule for %s: %r", name, sched)
        return bound

    def _history_metric_columns(self) -> tuple[str, ...]:
        """Extra history columns: per-class IoU/Dice for class losses (hook: none for tracing),
        and ``valid_are`` when ``history_are_threshold`` is set."""
        cols = ()
        if self.loss_spec.targets == "classes":
            cols = metric_columns(int(self.model.n_classes))
        cfg = self.exp_config
        if cfg.history_are_threshold is not None:
            if not cfg.instance_files:
                raise ConfigError(
                    f"{cfg.exp_file}: 'history_are_threshold' needs the ground-truth neurons: set "
                    "'instance_files' (one (file, key) per cube, as l_files), or remove it"
                )
            cols = (*cols, "valid_are")
        return cols

    def _best_value(self) -> BestValue:
        """The ``best_metric`` record; its column must be one this run writes."""
        from trainer.config import check_best_metric
        from trainer.history import HISTORY_COLUMNS

        cfg = self.exp_config
        problem = check_best_metric(cfg.best_metric, (*HISTORY_COLUMNS, *self.metric_columns))
        if problem:
            raise ConfigError(f"{cfg.exp_file}: 'best_metric': {problem}")
        return BestValue(cfg.best_metric, cfg.best_mode)

    def _load_data(self) -> Any:
        cfg = self.exp_config
        cls = resolve_data_class(cfg.data_class)
        kwargs = dict(cfg.data_init_kwargs)
        from trainer.data import BatchCreatorImage

        if isinstance(cls, type) and issubclass(cls, BatchCreatorImage):
            kwargs.setdefault("memory_budget_mb", cfg.data_memory_budget_mb)
        data = cls(self.model, None, **kwargs)
        if self.dist is not None and hasattr(data, "reseed"):
            data.reseed(int(np.random.SeedSequence().entropy % 2**31) + self.dist.rank)
        return data

    def _load_preview_data(self) -> list[np.ndarray]:
        path = self.exp_config.preview_data_path
        if not path:
            return []
        from trainer.data import load_preview_data

        return load_preview_data(path)

    @property
    def batch_kwargs(self) -> dict[str, Any]:
        """getbatch kwargs for training batches (config's data_batch_args + batch_size)."""
        kw = dict(self.exp_config.data_batch_args)
        kw.update(batch_size=self.batch_size, source="train")
        return kw

    # ------------------------------------------------------------------ the loop
    def run(self) -> str:
        """Train until n_steps, max_runtime, a stop request or an error.

        Returns:
            The final state: ``'finished'`` or ``'stopped'``.

        Raises:
            DivergedError: the loss became NaN/inf (state ``diverged`` is written first).
            Exception: anything else (state ``failed`` is written first).
        """
        cfg = self.exp_config
        n_steps = int(cfg.n_steps)
        with (
            contextlib.closing(self.tracker),
            self._status() as status,
            self._signals(),
            self._batches() as batches,
        ):
            self._log_start()
            t0 = time.perf_counter()
            while self.step < n_steps:
                t_fetch = time.perf_counter()
                batch = next(batches)
                self.data_wait_s += time.perf_counter() - t_fetch
                loss, batch_char = self._train_step(batch)
                now = time.perf_counter()
                self._count_time(now - t0)
                t0 = now
                self.tracker.update_timeline([self.train_time, loss, batch_char])
                step, self.step = self.step, self.step + 1
                t0 += self._after_step(step, batch, loss, status)
                self._update_schedules(step)
                if self._interactive_request:
                    t0 += self._shell()
                if self._should_stop():
                    break
            return self._finish(status)

    def _count_time(self, t_it: float) -> None:
        self.train_time += t_it
        self._t_per_it = t_it if self._t_per_it == 0 else 0.8 * self._t_per_it + 0.2 * t_it

    def _train_step(self, batch: tuple[np.ndarray, ...]) -> tuple[float, float]:
        self.model.train()
        data, target = self._to_device(batch)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self._loss(self.net(data), target)
        if not self._loss_checked:
            self._check_loss_output(loss)
        self._optimise(loss)
        return float(loss.detach()), _batch_char(batch[1])

    def _check_loss_output(self, loss: Any) -> None:
        """The first step's loss must be a finite scalar tensor: else the config's loss is wrong.

        Raises:
            ValueError: naming the ``loss`` config key and what it returned.
        """
        cfg = self.exp_config
        if not isinstance(loss, torch.Tensor):
            got = f"a {type(loss).__name__}"
        elif loss.numel() != 1:
            got = f"a tensor of shape {tuple(loss.shape)}"
        elif not torch.isfinite(loss.detach()).all():
            got = f"{loss.item()}"
        else:
            self._loss_checked = True
            return
        raise ValueError(
            f"{cfg.exp_file}: the loss of config key 'loss' ({self.loss_spec.name}) returned "
            f"{got} at step {self.step}; it must return a finite scalar tensor "
            "(reduce over the batch, e.g. .mean(), and check it for NaN)"
        )

    def _optimise(self, loss: torch.Tensor) -> None:
        """Backward and optimiser step (through the AMP scaler); NaN/inf raises DivergedError."""
        if not torch.isfinite(loss):
            raise DivergedError(
                f"loss became {loss.item()} at step {self.step}; lower the learning rate "
                "(optimiser_params['lr']) or resume from the last good snapshot"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _after_step(self, step: int, batch: tuple, loss: float, status: runs.StatusFile) -> float:
        """Monitoring, snapshots and previews when due.

        Returns:
            Seconds not to count as training time (previews, as in ELEKTRONN2).
        """
        cfg = self.exp_config
        if step % int(cfg.history_freq) == 0 or self.step >= int(cfg.n_steps):
            self._monitor(step, batch, loss, status)
        if step > 0 and step % int(cfg.param_save_it) == 0:
            self._save_snapshot(step)
        excluded = self._preview(step) if self._preview_due(step) else 0.0
        status.update(write=False, step=self.step, train_time_s=self.train_time,
                      data_wait_s=self.data_wait_s, **self._speed())  # fmt: skip
        status.check()  # the heartbeat could not write status.json: stop, do not train unseen
        return excluded

    def _monitor(self, step: int, batch: tuple, loss: float, status: runs.StatusFile) -> None:
        loss_after = self._eval_loss(batch)
        train_loss, train_err = self.test_model("train")
        valid_loss, valid_err, counts = self._validate()
        if self.dist is not None:
            train_loss, train_err, valid_loss, valid_err, loss, loss_after, *flat = self.dist.mean(
                [train_loss, train_err, valid_loss, valid_err, loss, loss_after,
                 *(counts.ravel().tolist() if counts is not None else [])]
            )  # fmt: skip
            # mean counts over ranks: the same ratios (IoU, Dice) as the summed counts
            counts = np.reshape(flat, counts.shape) if counts is not None else None
            self._check_ranks_in_sync(status)
        if not self.is_main:
            return
        lr = get_hyper(self.optimizer, "lr")
        mom = get_hyper(self.optimizer, "mom")
        row = dict(steps=step, time=self.train_time, train_loss=train_loss, valid_loss=valid_loss,
                   loss_gain=loss_after - loss, train_err=train_err, valid_err=valid_err, lr=lr,
                   mom=mom, gradnetrate=0.0)  # fmt: skip
        if self.metric_columns:
            row.update(self._scores(counts))
        if "valid_are" in self.metric_columns:
            row["valid_are"] = self._neuron_error()
        self.tracker.update_history(row)
        if self.trial is not None and self.stop_reason is None:
            self.pruned_reason = self.trial.report(step, row)
            self.stop_reason = self.pruned_reason
        improved = self.best.update(row.get(self.best.metric, math.nan), step, self.train_time)
        self._save_snapshot(runs.LAST)
        if improved:
            best = runs.snapshot_path(self.run_dir, runs.BEST)
            with runs.writing(best, self.run_dir):
                runs.keep_snapshot_as(self.run_dir, runs.LAST, runs.BEST)
        speed = self._speed()
        status.update(train_loss=train_loss, valid_loss=valid_loss, train_err=train_err,
                      valid_err=valid_err, lr=lr, error_metric=self.loss_spec.error_label,
                      **self.best.state_dict(), **speed)  # fmt: skip
        if self.exp_config.print_status:
            logger.info(
                "%05i L_m=%.3f, L=%.2f, tr=%05.2f%%, vl=%05.2f%%, L_diff=%+.1e, LR=%.2e, "
                "%.2f it/s, %.2f MVx/s, %s",
                step, self._smoothed_loss(), loss, train_err, valid_err, loss_after - loss, lr,
                speed["it_per_s"], speed["voxels_per_s"] / 1e6, _pretty_time(self.train_time),
            )  # fmt: skip

    def _scores(self, counts: np.ndarray | None) -> dict[str, float]:
        """Per-class IoU/Dice columns of validation counts; NaN without validation data."""
        if counts is None:
            return dict.fromkeys(self.metric_columns, math.nan)
        return overlap_scores(counts)

    def _neuron_error(self) -> float:
        """Mean adapted Rand error of the validation cubes' neurons at ``history_are_threshold``
        (threshold -> components, ``trainer.segmentation``); NaN, with a warning, if it cannot be
        computed. Predicts every validation cube densely: costs a dense prediction per cube."""
        from trainer.evaluation.neurons import load_instances
        from trainer.inference import centre_crop, predict_labelled
        from trainer.segmentation import segmentation_scores, threshold_components

        cfg = self.exp_config
        try:
            if self._instances is None:
                l_path = (cfg.data_init_kwargs or {}).get("l_path")
                cubes = list(getattr(self.data, "valid_cubes", []))
                self._instances = load_instances(cfg.instance_files, l_path, cubes)
            errors = []
            for raw, lab, inst in zip(self.data.valid_d, self.data.valid_l, self._instances):
                lab = np.asarray(lab)
                lab = lab[0] if lab.ndim == 4 else lab
                _, _, prob = predict_labelled(self.model, np.asarray(raw), lab, 1, self.device)
                seg = threshold_components(prob, float(cfg.history_are_threshold))
                gt = centre_crop(np.asarray(inst), prob.shape)
                errors.append(segmentation_scores(gt, seg, check=False).adapted_rand_error)
            return float(np.mean(errors)) if errors else math.nan
        except Exception as e:  # noqa: BLE001 - a monitor column must not stop training
            logger.warning("valid_are (history_are_threshold) not computed: %s", e)
            return math.nan

    def _should_stop(self) -> bool:
        max_runtime = self.exp_config.max_runtime
        if max_runtime and self.train_time > float(max_runtime) and self.stop_reason is None:
            self.stop_reason = "max_runtime reached"
            logger.info("Timeout: max_runtime of %s s reached", max_runtime)
        if self.dist is not None and self.dist.any(self.stop_reason is not None):
            # every rank leaves the loop at the same step, or the others would hang
            self.stop_reason = self.stop_reason or "another rank stopped"
        return self.stop_reason is not None

    def _check_ranks_in_sync(self, status: runs.StatusFile) -> None:
        """Record how far apart the ranks' parameters are (DDP keeps them identical)."""
        from trainer.distributed import param_fingerprint

        prints = np.asarray(self.dist.gather(param_fingerprint(self.model)))
        diff = float(np.abs(prints - prints[0]).max())
        status.update(write=False, rank_param_max_diff=diff)
        if diff > 1e-6 * max(1.0, float(np.abs(prints[0]).max())):
            logger.warning("Ranks' parameters differ by %.3g: DDP is out of sync", diff)

    def _finish(self, status: runs.StatusFile) -> str:
        if not self.is_main:
            return (
                "stopped" if self.stop_reason not in (None, "max_runtime reached") else "finished"
            )
        self._save_snapshot(runs.FINAL)
        if self.exp_config.plot_on:
            prefix = runs.history_plot_prefix(self.run_dir)
            try:
                self.tracker.plot(str(prefix))
            except Exception as e:  # the HTML copy of the history is a convenience
                logger.warning("Could not write the history plot %s.*.html: %s", prefix.name, e)
        interrupted = self.stop_reason is not None and self.stop_reason != "max_runtime reached"
        state = "pruned" if self.pruned_reason else "stopped" if interrupted else "finished"
        status.update(state=state, step=self.step, ended=time.time(), stop_reason=self.stop_reason)
        logger.info("End of training (%s) after %d steps, %s", state, self.step,
                    _pretty_time(self.train_time))  # fmt: skip
        return state

    # ------------------------------------------------------------------ monitoring
    def test_model(self, data_source: str) -> tuple[float, float]:
        """Loss and error (percent of labelled voxels) on ``monitor_batch_size`` examples.

        Args:
            data_source: ``'train'`` or ``'valid'``.

        Returns:
            ``(loss, error)``; ``(nan, nan)`` when the data source has no validation set.
            The error is the classification error in percent of labelled voxels for class
            losses, the mean squared error for ``SquaredLoss`` (``loss_spec.error_label``).
        """
        return self._test(data_source)[:2]

    def _validate(self) -> tuple[float, float, np.ndarray | None]:
        """Validation loss, error and per-class counts (``None`` without class metrics)."""
        if not self.metric_columns:
            return (*self.test_model("valid"), None)
        return self._test("valid")

    def _test(self, data_source: str) -> tuple[float, float, np.ndarray | None]:
        """``test_model`` and the per-class (tp, fp, fn) counts of class losses."""
        from trainer.data import NoValidationData

        kw = dict(self.exp_config.data_batch_args)
        kw.update(batch_size=self.monitor_batch_size, source=data_source)
        try:
            data, target = self.data.getbatch(**kw)[:2]
        except NoValidationData:
            return math.nan, math.nan, None
        classes = self.loss_spec.targets == "classes"
        counts = np.zeros((int(self.model.n_classes), 3)) if classes else None
        was_training = self.model.training
        self.model.eval()
        loss_sum = wrong = counted = 0.0
        try:
            with torch.inference_mode():
                for i in range(0, len(data), self.batch_size):
                    sl = slice(i, i + self.batch_size)
                    x, y = self._to_device((data[sl], target[sl]))
                    with torch.autocast(self.device.type, enabled=self.amp):
                        out = self.model(x)
                    n, bad = _error_terms(out, y, classes)
                    loss_sum += float(self._loss(out, y)) * n
                    wrong, counted = wrong + bad, counted + n
                    if classes:
                        counts += class_counts(out.argmax(1), y, counts.shape[0])
        finally:
            self.model.train(was_training)
        if counted == 0:
            return math.nan, math.nan, None
        scale = 100.0 if classes else 1.0
        return loss_sum / counted, scale * wrong / counted, counts

    def _eval_loss(self, batch: tuple) -> float:
        """Loss on ``batch`` after the update (the ``loss_gain`` of ELEKTRONN2)."""
        with torch.inference_mode():
            data, target = self._to_device(batch)
            with torch.autocast(self.device.type, enabled=self.amp):
                return float(self._loss(self.model(data), target))

    def _loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The config's ``loss`` (trainer.losses; ELEKTRONN2's weighting by default)."""
        return self.loss_spec.fn(output, target)

    def _to_device(self, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        data, target = batch[0], batch[1]
        x = torch.as_tensor(np.ascontiguousarray(data), dtype=torch.float32)
        if self.loss_spec.targets == "values":
            y = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32)
        else:
            y = torch.as_tensor(np.ascontiguousarray(target)).long()
            if y.ndim == x.ndim:  # (bs, 1, z, y, x) -> (bs, z, y, x)
                y = y[:, 0]
            y = torch.where(y < 0, torch.full_like(y, IGNORE_INDEX), y)
        non_blocking = self.device.type == "cuda"
        return x.to(self.device, non_blocking=non_blocking), y.to(
            self.device, non_blocking=non_blocking
        )

    def _smoothed_loss(self) -> float:
        n = int(self.exp_config.loss_smoothing_length)
        if self.tracker.n_rows("timeline") == 0:
            return math.nan
        return float(self.tracker.tail("timeline", n)["loss"].mean())

    def _speed(self) -> dict[str, float]:
        if self._t_per_it <= 0:
            return {"it_per_s": 0.0, "voxels_per_s": 0.0, "eta_s": None}
        ranks = self.dist.world_size if self.dist is not None else 1
        voxels = ranks * self._voxels_per_step()
        remaining = max(int(self.exp_config.n_steps) - self.step, 0)
        return {
            # it/s and voxels/s count all ranks: each rank takes one step on its own batch
            "it_per_s": ranks / self._t_per_it,
            "voxels_per_s": voxels / self._t_per_it,
            "eta_s": remaining * self._t_per_it,
        }

    def _voxels_per_step(self) -> int:
        """Input voxels one rank processes per step (the MVx/s of the status line)."""
        return self.batch_size * int(np.prod(getattr(self.model, "patch_size", (1,))))

    def _update_schedules(self, step: int) -> None:
        for sched in self.schedules.values():
            sched.update(step)

    # ------------------------------------------------------------------ snapshots
    def _save_snapshot(self, which: str | int) -> Path | None:
        if not self.is_main:
            return None
        state = {
            "format": SNAPSHOT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedules": {k: s.state_dict() for k, s in self.schedules.items()},
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "train_time_s": self.train_time,
            "save_name": self.exp_config.save_name,
            "preview_hours_done": self._preview_hours_done,
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state()},
            "best": self.best.state_dict(),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        path = runs.snapshot_path(self.run_dir, which)
        with runs.writing(path, self.run_dir):
            path.parent.mkdir(parents=True, exist_ok=True)
            # a failed write leaves the previous snapshot of this name as it was
            runs.atomic_write_bytes(path, buf.getvalue())
        return path

    def _resume(self) -> None:
        path = runs.latest_snapshot(self.run_dir)
        if path is None:
            raise FileNotFoundError(
                f"cannot resume {self.run_dir}: no snapshot in {self.run_dir / runs.SNAPSHOT_DIR}; "
                "start a new run instead"
            )
        state = load_snapshot(
            path, self.device, hint="move it out of snapshots/ so --resume takes the next newest"
        )
        self.model.load_state_dict(state["model"])
        saved_groups = len(state["optimizer"].get("param_groups", []))
        if saved_groups != len(self.optimizer.param_groups):
            raise ValueError(
                f"cannot resume from {path}: its optimiser state has {saved_groups} parameter "
                f"group(s), this optimiser has {len(self.optimizer.param_groups)} (weights, which "
                "are decayed, and the other parameters); the snapshot was written by a VoxelBoard "
                "that decayed every parameter. Continue it with that version, or start a new run"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        for name, s in state.get("schedules", {}).items():
            if name in self.schedules:
                self.schedules[name].load_state_dict(s)
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.train_time = float(state.get("train_time_s", 0.0))
        self._preview_hours_done = state.get("preview_hours_done")
        self.best.load_state_dict(state.get("best"))
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"].cpu())
        if "numpy" in rng:
            np.random.set_state(rng["numpy"])
        if self.is_main:
            with runs.writing(self.run_dir / runs.HISTORY_DIR, self.run_dir):
                self.tracker.truncate(self.step - 1)
        self.resumed_from = path
        logger.info("Resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ previews
    def _preview_due(self, step: int) -> bool:
        if not self.preview_data:
            return False
        cfg = self.exp_config
        if cfg.preview_every and step % int(cfg.preview_every) == 0:
            return True
        hours = self.train_time / 3600.0
        initial, period = float(cfg.initial_prev_h), float(cfg.prev_save_h)
        if self._preview_hours_done is None:
            return hours >= initial
        return hours - self._preview_hours_done >= period

    def _preview(self, step: int) -> float:
        """Write a preview. Returns the seconds it took.

        A preview that cannot be computed is logged and training goes on; one that cannot be
        written (a full disk) raises ``RunWriteError`` and stops the run.
        """
        t0 = time.perf_counter()
        self._preview_hours_done = self.train_time / 3600.0
        try:
            kw = dict(self.exp_config.preview_kwargs)
            kw.pop("number", None)
            self.preview_slice(number=step, **kw)
        except runs.RunWriteError:
            raise  # a full disk stops the run; a preview that cannot be computed does not
        except Exception:
            logger.warning("Preview at step %d failed:\n%s", step, traceback.format_exc())
        return time.perf_counter() - t0

    def preview_slice(
        self, number: int = 0, export_class: str | int = "all", max_z_pred: int = 5
    ) -> Path:
        """Predict the central slab of every preview cube and write ``previews/preview-<number>.h5``.

        Args:
            number: the step the preview belongs to (file name and ``step`` attribute).
            export_class: ``'all'`` keeps every class, an int (or list of ints) only those.
            max_z_pred: number of output z-planes to predict.
        """
        blocks = []
        for i, cube in enumerate(self.preview_data):
            raw = self._preview_slab(cube, max_z_pred)
            blocks.append((i, raw, self.predict_dense(raw)))
        return self._write_preview(number, blocks, export_class)

    def preview_slice_from_traindata(self, cube_i: int = 0, off: tuple = (0, 0, 0),
                                     sh: tuple = (10, 400, 400), number: int = 0,
                                     export_class: str | int = "all") -> Path:  # fmt: skip
        """Like ``preview_slice`` on a crop ``[off : off + sh]`` of training cube ``cube_i``."""
        cube = self.data.train_d[cube_i]
        patch = np.asarray(self.model.patch_size)
        sh = np.maximum(np.asarray(sh), patch)
        sl = tuple(slice(o, o + s) for o, s in zip(off, sh))
        raw = np.ascontiguousarray(cube[(slice(None), *sl)], dtype=np.float32)
        return self._write_preview(
            number, [(f"train{cube_i}", raw, self.predict_dense(raw))], export_class
        )

    def predict_and_write(self, pred_node: Any, raw_img: np.ndarray, number: int = 0,
                          export_class: str | int = "all", block_name: str = "",
                          z_thick: int = 5) -> Path:  # fmt: skip
        """Predict ``raw_img`` (ch, z, y, x) densely and write it as a preview.

        ``pred_node`` is kept for signature compatibility; the model is always used.
        """
        raw = np.asarray(raw_img, dtype=np.float32)
        return self._write_preview(
            number, [(block_name or 0, raw, self.predict_dense(raw))], export_class
        )

    def predict_dense(self, raw: np.ndarray) -> np.ndarray:
        """Tiled dense class probabilities (n_classes, z', y', x') for a (C, z, y, x) cube."""
        from trainer.inference import predict_dense

        return predict_dense(self.model, raw, device=self.device, amp=self.amp)

    def _preview_slab(self, cube: np.ndarray, max_z_pred: int) -> np.ndarray:
        off_z = int(self.model.offsets[0])
        need = max(int(self.model.patch_size[0]), max_z_pred + 2 * off_z)
        z = cube.shape[1]
        if need > z:
            raise ValueError(
                f"preview cube has {z} z-planes but the model needs {need} "
                f"(patch z {self.model.patch_size[0]}, max_z_pred {max_z_pred}); "
                "use a thicker preview cube or a smaller max_z_pred in preview_kwargs"
            )
        z0 = (z - need) // 2
        return np.ascontiguousarray(cube[:, z0 : z0 + need], dtype=np.float32)

    def _write_preview(self, number: int, blocks: list, export_class: str | int) -> Path:
        """Write ``(name, raw cube, probabilities)`` blocks as the preview of step ``number``:
        each raw cube cut to the region its probabilities cover (the model's offsets)."""
        oz, oy, ox = (int(o) for o in self.model.offsets)
        aligned = []
        for name, raw, prob in blocks:
            region = raw[0, oz : raw.shape[1] - oz, oy : raw.shape[2] - oy, ox : raw.shape[3] - ox]
            prob = _select_classes(prob, export_class)
            aligned.append((name, region[: prob.shape[1], : prob.shape[2], : prob.shape[3]], prob))
        return runs.write_preview(
            self.run_dir, number, aligned, hours=self.train_time / 3600.0,
            n_classes=int(self.model.n_classes), save_name=str(self.exp_config.save_name),
            z0=oz, source=str(self.exp_config.preview_data_path),
        )  # fmt: skip

    def debug_getcnnbatch(self) -> tuple[np.ndarray, ...]:
        """One training batch with dense (un-strided) labels, for inspection.

        Also writes its first example (data, target, overlay of the middle target section)
        to ``Batch_test_image.html`` in the run directory, as ELEKTRONN2 wrote a PNG.
        """
        from trainer.plotting import batch_figure

        kw = self.batch_kwargs
        kw["force_dense"] = True
        batch = self.data.getbatch(**kw)
        offsets = tuple(getattr(self.model, "offsets", (0, 0, 0)))
        if self.is_main and batch[0].ndim == 5:
            html = batch_figure(batch[0][0], batch[1][0], offsets).to_html(
                include_plotlyjs="directory"
            )
            path = self.run_dir / runs.DEBUG_BATCH_FILE
            with runs.writing(path, self.run_dir):
                runs.atomic_write_bytes(path, html.encode())
            logger.info("Wrote %s", path)
        return batch

    # ------------------------------------------------------------------ context managers
    @contextlib.contextmanager
    def _status(self) -> Iterator[runs.StatusFile]:
        if not self.is_main:
            yield _NoStatus()
            return
        cfg = self.exp_config
        info = device_info(self.device)
        status = runs.Status(state="running", step=self.step, n_steps=int(cfg.n_steps),
                             pid=os.getpid(), started=time.time())  # fmt: skip
        if self.dist is not None:
            status.extra.update(world_size=self.dist.world_size, backend=self.dist.backend,
                                rank_pids=self.rank_pids)  # fmt: skip
        status.extra.update(info, save_name=cfg.save_name, config_file=str(cfg.exp_file),
                            resumed_from=str(getattr(self, "resumed_from", "") or "") or None,
                            ended=None, stop_reason=None)  # fmt: skip
        interval = float(cfg.heartbeat_s)
        with runs.StatusFile(self.run_dir, status, interval=interval) as sf:
            try:
                yield sf
            except DivergedError as e:
                logger.error("Diverged: %s", e)
                _final_state(sf, state="diverged", error=str(e), step=self.step)
                raise
            except runs.RunWriteError as e:
                logger.error("Training stopped at step %d: %s", self.step, e)
                logger.debug("%s", traceback.format_exc())
                _final_state(sf, state="failed", error=str(e), step=self.step)
                raise
            except BaseException as e:
                logger.error("Training failed at step %d:\n%s", self.step, traceback.format_exc())
                _final_state(sf, state="failed", error=f"{type(e).__name__}: {e}", step=self.step)
                raise

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM (and SIGINT without a terminal) ask to stop after the current step."""
        interactive = sys.stdin is not None and sys.stdin.isatty()

        def on_term(signum: int, frame: Any) -> None:
            self.stop_reason = f"signal {signal.Signals(signum).name}"
            logger.info("Received %s: stopping after this step", signal.Signals(signum).name)

        def on_int(signum: int, frame: Any) -> None:
            if interactive:
                self._interactive_request = True
            else:
                on_term(signum, frame)

        import threading

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_int)
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    @contextlib.contextmanager
    def _batches(self) -> Iterator[Iterator[tuple]]:
        bp = self.exp_config.background_processes
        kw = self.batch_kwargs
        if not bp:
            yield (self.data.getbatch(**kw) for _ in iter(int, 1))
            return
        from trainer.parallel import BackgroundProc

        n_proc = max(2, int(bp))
        with BackgroundProc(self.data.getbatch, n_proc=n_proc, target_kwargs=kw) as bg:
            self._bg = bg
            yield (bg.get() for _ in iter(int, 1))

    def _shell(self) -> float:
        """ELEKTRONN2's Ctrl+C shell (terminal only). Returns the seconds spent in it."""
        from trainer.shell import user_input

        self._interactive_request = False
        t0 = time.perf_counter()
        if (
            user_input({"trainer": self, "exp_config": self.exp_config, "model": self.model})
            == "kill"
        ):
            self.stop_reason = "killed from the shell"
        if getattr(self, "_bg", None) is not None:
            self._bg.reset()
        return time.perf_counter() - t0

    def _log_start(self) -> None:
        info = device_info(self.device)
        logger.info(
            "Training %s on %s (torch %s%s), %d steps from step %d, run dir %s",
            self.exp_config.save_name, info.get("device"), torch.__version__,
            f", {info['gpu_name']}" if info.get("gpu_name") else "", int(self.exp_config.n_steps),
            self.step, self.run_dir,
        )  # fmt: skip
        logger.info("Data: %r", self.data)


# ---------------------------------------------------------------------- helpers
class _NoStatus:
    """Stands in for the status file on ranks other than 0."""

    def update(self, write: bool = True, **fields: Any) -> None:
        pass

    def check(self) -> None:
        pass


def _final_state(sf: runs.StatusFile, state: str, error: str, step: int) -> None:
    """Write a failure into status.json if the disk still lets us; else say so in the log."""
    try:
        sf.update(state=state, error=error, step=step, ended=time.time())
    except runs.RunWriteError as e:
        logger.error("The final state (%s) could not be recorded either: %s", state, e)


class SnapshotError(ValueError):
    """A snapshot file that cannot be loaded (truncated, overwritten, not a snapshot).

    Attributes:
        path: the snapshot file.
    """

    def __init__(self, path: Path, detail: str, hint: str):
        self.path = path
        super().__init__(f"{_snapshot_name(path)} is corrupt or truncated ({detail}): {hint}")


def load_snapshot(
    path: str | os.PathLike, map_location: Any = "cpu", hint: str | None = None
) -> dict:
    """Load a snapshot written by ``Trainer._save_snapshot`` (or a plain state dict).

    Raises:
        FileNotFoundError: no such file.
        SnapshotError: the file is not a loadable snapshot; the message names the file and
            what to do (``hint``, default: pick another snapshot or re-train).
    """
    path = Path(path)
    hint = hint or "pick another snapshot with --snapshot, or re-train / --resume the run"
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch reports a damaged archive as RuntimeError, OSError, EOFError...
        raise SnapshotError(path, _first_line(e), hint) from e
    if not isinstance(state, dict):
        raise SnapshotError(path, f"holds a {type(state).__name__}, not a state dict", hint)
    return state


def _snapshot_name(path: Path) -> str:
    """``<run>/snapshots/LAST.pt`` for a run's snapshot, else the path as given."""
    if path.parent.name == runs.SNAPSHOT_DIR:
        return f"{path.parent.parent.name}/{runs.SNAPSHOT_DIR}/{path.name}"
    return str(path)


def _first_line(e: BaseException) -> str:
    """``Type: first sentence`` of an exception (torch appends paragraphs of advice)."""
    text = str(e).strip().splitlines()
    first = text[0].split(". ")[0].rstrip(".") if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def build_model(cfg: Any) -> torch.nn.Module:
    """The model of a config: ``create_model(model_load_args)`` (or ``create_model()``), checked.

    Raises:
        ValueError: the config has no ``create_model``.
        TypeError: it returned no ``torch.nn.Module``, or one without the geometry attributes
            (``patch_size``, ``offsets``, ``strides``, ``n_classes``) VoxelBoard needs.
    """
    create = cfg.create_model
    if create is None:
        raise ValueError(
            f"{cfg.exp_file}: one of 'create_model' or 'model_load_path' must be given"
        )
    args = cfg.model_load_args
    model = create(args) if args is not None else create()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"create_model in {cfg.exp_file} returned {type(model).__name__}; "
            "it must return a torch.nn.Module"
        )
    for attr in ("patch_size", "offsets", "strides", "n_classes"):
        if not hasattr(model, attr):
            raise TypeError(
                f"the model from create_model in {cfg.exp_file} has no attribute {attr!r}; "
                "VoxelBoard models declare patch_size, offsets, strides and n_classes "
                "(see trainer.models.CNN3D)"
            )
    return model


def resolve_data_class(spec: Any) -> type:
    """The data class a config names: a class of ``trainer.data`` / ``trainer.tracing_data`` by
    name, or a ``(file, class name)`` pair.

    Raises:
        ValueError: no such class (the message says what a config may give).
    """
    if isinstance(spec, str):
        for name in ("trainer.data", "trainer.tracing_data"):
            module = importlib.import_module(name)
            if isinstance(getattr(module, spec, None), type):
                return getattr(module, spec)
        raise ValueError(
            f"data_class {spec!r} is not a VoxelBoard data class; use 'BatchCreatorImage', "
            "'AgentData' (tracing) or a (file, class name) pair for your own class"
        )
    path, name = spec
    path = os.path.expanduser(path)
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"data_class file {path!r} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ValueError(f"data_class file {path!r} has no class {name!r}") from None


def _error_terms(out: torch.Tensor, y: torch.Tensor, classes: bool) -> tuple[int, float]:
    """``(counted voxels, their error sum)``: wrong argmax over labelled voxels for class
    targets, squared error over non-NaN targets for value targets."""
    if classes:
        known = y >= 0
        return int(known.sum()), float(((out.argmax(1) != y) & known).sum())
    y = y.unsqueeze(1) if y.ndim == out.ndim - 1 else y
    known = ~torch.isnan(y)
    diff = torch.where(known, out.float() - y, torch.zeros_like(y))
    return int(known.sum()), float((diff * diff).sum())


def _batch_char(labels: np.ndarray) -> float:
    """ELEKTRONN2's timeline ``batch_char``: the mean label of the batch, ignored voxels left
    out. Computed on the host array, so no device sync is added to the step."""
    labels = np.asarray(labels)
    known = labels[labels >= 0]
    return float(known.mean()) if known.size else 0.0


def _device_spec(cli: str | None, config: Any) -> str:
    """The command line wins over the config; an int in a config means that GPU."""
    spec = cli if cli is not None else config
    if spec is None:
        return "auto"
    return f"cuda:{spec}" if isinstance(spec, int) and not isinstance(spec, bool) else str(spec)


def _select_classes(prob: np.ndarray, export_class: Any) -> np.ndarray:
    if export_class in (None, "all"):
        return prob
    idx = (
        [int(c) for c in export_class]
        if isinstance(export_class, list | tuple)
        else [int(export_class)]
    )
    return prob[idx]


def _round_up(n: int, multiple: int) -> int:
    """Round the monitor batch size up to whole batches (ELEKTRONN2 used the batch count)."""
    return max(multiple, -(-n // multiple) * multiple)


def _pretty_time(seconds: float) -> str:
    if seconds > 4000:
        return f"t={seconds / 3600:.1f}h"
    if seconds > 300:
        return f"t={seconds / 60:.0f}m"
    return f"t={seconds:.0f}s"

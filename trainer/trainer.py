"""The training loop: ELEKTRONN2's ``Trainer`` on PyTorch.

The loop reads top to bottom: get a batch, take a step, log it, then "if due: monitor",
announce the step's end, update the schedules, then the stop check. What happens on those
events (the history store, snapshots, BEST, previews, sweep pruning, extra history columns,
status.json, the log, and a config's own ``callbacks``) is a handler in ``trainer.callbacks``,
so a new feature is a new handler, not a new line here. Everything the dashboard shows is
written into the run directory (docs/run-directory.md) as it happens.

Example:
    >>> from trainer import ExperimentConfig, Trainer
    >>> cfg = ExperimentConfig("examples/demo_cnn3d.py")  # doctest: +SKIP
    >>> cfg.make_dir()  # doctest: +SKIP
    >>> Trainer(cfg).run()  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import callbacks, runs
from trainer.best import BestValue
from trainer.callbacks.previews import preview_slab, write_preview
from trainer.callbacks.snapshots import resume_from_latest
from trainer.callbacks.status import recording
from trainer.class_metrics import class_counts
from trainer.devices import resolve_device
from trainer.distributed import DistContext
from trainer.errors import ConfigError, DivergedError
from trainer.history import HistoryTracker
from trainer.losses import IGNORE_INDEX, make_loss
from trainer.modelio import initial_model, resolve_data_class
from trainer.optimisers import get_hyper, make_optimiser
from trainer.schedules import bind_schedules
from trainer.sweeps import TrialReporter

logger = logging.getLogger("voxelboard")

#: labels below zero are ignored by loss and error (ELEKTRONN2 used -1 and -666)


class Trainer:
    """Trains ``exp_config``'s model on its data source, writing into its run directory.

    Args:
        exp_config: an ``ExperimentConfig``; without a ``run_dir`` yet, ``make_dir()`` is
            called here once the model and the data are set up.
        device: ``'auto'``, ``'cpu'``, ``'cuda'`` or ``'cuda:N'``; default the config's
            ``device`` key, else auto.
        resume: continue from the newest snapshot in the run directory.
        dist: this process's place in a distributed run (``trainer.distributed.from_env``);
            ``None`` for a single process. Only rank 0 writes the run directory.
        trial: a sweep trial's reporter: each history row's metric goes to the sweep's
            pruner, and a pruned trial stops like a stop request with state ``pruned``.

    Attributes:
        callbacks: the handlers of the loop's events (``trainer.callbacks``): the built-in
            features the config asks for and the config's ``callbacks``.
        status: status.json while ``run`` runs (``runs.StatusFile``).
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
        spec = _device_spec(device, cfg.device)
        self.device = dist.device if dist is not None else resolve_device(spec)
        self.model = initial_model(cfg).to(self.device)
        self.net = self._wrap_distributed(self.model)
        self.rank_pids = dist.gather(os.getpid()) if dist is not None else [os.getpid()]
        self.optimizer = make_optimiser(
            self.model, cfg.optimiser, cfg.optimiser_params, cfg.decay_batchnorm_scales
        )
        self.schedules = bind_schedules(cfg.schedules, self.optimizer, self.model, cfg)
        self.data = self._load_data()
        self.preview_data = self._load_preview_data() if self.is_main else []
        # the run directory only once model and data are set up, so bad data leaves none behind
        if cfg.run_dir is None:
            cfg.make_dir()
        self.run_dir = Path(cfg.run_dir)
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
        self.callbacks = callbacks.register(self, self._column_handlers())
        self.metric_columns = self.callbacks.columns()
        store = self.run_dir / runs.HISTORY_DIR if self.is_main else None
        self.tracker = HistoryTracker(path=store, extra_history_columns=self.metric_columns,
                                      loss_smoothing_length=int(cfg.loss_smoothing_length))  # fmt: skip
        self.best = self._best_value()
        self.amp = cfg.mixed_precision and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.step = 0  # index of the next training step
        self.train_time = 0.0  # seconds of training, without previews and the shell
        self.stop_reason: str | None = None
        self.pruned_reason: str | None = None  # a sweep's pruner stopped this trial
        self._interactive_request = False
        self.preview_hours_done: float | None = None  # training hours at the last preview
        self.last_loss = math.nan  # the loss of the last step
        # seconds of the last time_per_step_smoothing_length steps, for speed and ETA
        self._step_times: collections.deque[float] = collections.deque(
            maxlen=int(cfg.time_per_step_smoothing_length)
        )
        self.status: runs.StatusFile | None = None
        self.data_wait_s = 0.0  # time spent waiting for batches (bench/bench_trainer.py)
        if resume:
            resume_from_latest(self)

    # ------------------------------------------------------------------ set-up
    def _wrap_distributed(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around the model in a distributed run; each rank draws its own batches."""
        if self.dist is None:
            return model
        from torch.nn.parallel import DistributedDataParallel

        torch.manual_seed(torch.initial_seed() + self.dist.rank)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _column_handlers(self) -> list[Any]:
        """Handlers of the extra history columns (hook: none for tracing): per-class IoU/Dice
        for class losses, and ``valid_are`` when ``history_are_threshold`` is set."""
        from trainer.callbacks.scores import ClassScores, NeuronScore

        handlers: list[Any] = []
        if self.loss_spec.targets == "classes":
            handlers.append(ClassScores())
        if self.exp_config.history_are_threshold is not None:
            handlers.append(NeuronScore(self.exp_config))
        return handlers

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
            kwargs.setdefault("allow_missing_chunks", cfg.allow_missing_chunks)
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
            The final state: ``'finished'``, ``'stopped'`` or ``'pruned'``.

        Raises:
            DivergedError: the loss became NaN/inf (state ``diverged`` is written first).
            CallbackError: a config's callback raised (state ``failed``, naming it).
            Exception: anything else (state ``failed`` is written first).
        """
        n_steps = int(self.exp_config.n_steps)
        with (
            contextlib.closing(self.tracker),
            recording(self) as self.status,
            self._signals(),
            self._batches() as batches,
        ):
            self.callbacks.train_start()
            t0 = time.perf_counter()
            while self.step < n_steps:
                batch = self._next_batch_timed(batches)
                loss, batch_char = self._train_step(batch)
                t0 = self._count_time(t0)
                self.tracker.update_timeline([self.train_time, loss, batch_char])
                step, self.step, self.last_loss = self.step, self.step + 1, loss
                if step % int(self.exp_config.history_freq) == 0 or self.step >= n_steps:
                    self._monitor(step, batch, loss)
                t0 += self.callbacks.step_end(step, loss)  # snapshots, previews, status
                self._update_schedules(step)
                if self._interactive_request:
                    t0 += self._shell()
                if self._should_stop():
                    break
            return self._finish()

    def _next_batch_timed(self, batches: Iterator[tuple]) -> tuple:
        t_fetch = time.perf_counter()
        batch = next(batches)
        self.data_wait_s += time.perf_counter() - t_fetch
        return batch

    def _count_time(self, t0: float) -> float:
        """Count the step that began at ``t0`` as training time; return now."""
        now = time.perf_counter()
        self.train_time += now - t0
        self._step_times.append(now - t0)
        return now

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

    def _monitor(self, step: int, batch: tuple, loss: float) -> None:
        """Measure a history row (every rank: DDP averages it) and announce it on rank 0."""
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
            self.last_loss = loss  # the status line shows the mean over ranks
            self._check_ranks_in_sync()
        if not self.is_main:
            return
        row = dict(steps=step, time=self.train_time, train_loss=train_loss, valid_loss=valid_loss,
                   loss_gain=loss_after - loss, train_err=train_err, valid_err=valid_err,
                   lr=get_hyper(self.optimizer, "lr"), mom=get_hyper(self.optimizer, "mom"),
                   gradnetrate=0.0)  # fmt: skip
        self.callbacks.history_row(row, counts)

    def _should_stop(self) -> bool:
        max_runtime = self.exp_config.max_runtime
        if max_runtime and self.train_time > float(max_runtime) and self.stop_reason is None:
            self.stop_reason = "max_runtime reached"
            logger.info("Timeout: max_runtime of %s s reached", max_runtime)
        if self.dist is not None and self.dist.any(self.stop_reason is not None):
            # every rank leaves the loop at the same step, or the others would hang
            self.stop_reason = self.stop_reason or "another rank stopped"
        return self.stop_reason is not None

    def _check_ranks_in_sync(self) -> None:
        """Record how far apart the ranks' parameters are (DDP keeps them identical)."""
        from trainer.distributed import param_fingerprint

        prints = np.asarray(self.dist.gather(param_fingerprint(self.model)))
        diff = float(np.abs(prints - prints[0]).max())
        self.status.update(write=False, rank_param_max_diff=diff)
        if diff > 1e-6 * max(1.0, float(np.abs(prints[0]).max())):
            logger.warning("Ranks' parameters differ by %.3g: DDP is out of sync", diff)

    def _finish(self) -> str:
        interrupted = self.stop_reason not in (None, "max_runtime reached")
        state = "pruned" if self.pruned_reason else "stopped" if interrupted else "finished"
        self.callbacks.train_end(state)  # FINAL snapshot, report, status, log
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

    def smoothed_loss(self) -> float:
        """Mean loss of the last ``loss_smoothing_length`` steps (NaN before the first)."""
        n = int(self.exp_config.loss_smoothing_length)
        if self.tracker.n_rows("timeline") == 0:
            return math.nan
        return float(self.tracker.tail_column("timeline", "loss", n).mean())

    def speed(self) -> dict[str, float]:
        """Steps and input voxels per second, and the seconds left to ``n_steps``, from the
        mean time of the last ``time_per_step_smoothing_length`` steps."""
        if not self._step_times:
            return {"it_per_s": 0.0, "voxels_per_s": 0.0, "eta_s": None}
        t_per_it = sum(self._step_times) / len(self._step_times)
        if t_per_it <= 0:
            return {"it_per_s": 0.0, "voxels_per_s": 0.0, "eta_s": None}
        ranks = self.dist.world_size if self.dist is not None else 1
        voxels = ranks * self._voxels_per_step()
        remaining = max(int(self.exp_config.n_steps) - self.step, 0)
        return {
            # it/s and voxels/s count all ranks: each rank takes one step on its own batch
            "it_per_s": ranks / t_per_it,
            "voxels_per_s": voxels / t_per_it,
            "eta_s": remaining * t_per_it,
        }

    def _voxels_per_step(self) -> int:
        """Input voxels one rank processes per step (the MVx/s of the status line)."""
        return self.batch_size * int(np.prod(getattr(self.model, "patch_size", (1,))))

    def _update_schedules(self, step: int) -> None:
        for sched in self.schedules.values():
            sched.update(step)

    # ------------------------------------------------------------------ previews
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
            raw = preview_slab(self.model, cube, max_z_pred)
            blocks.append((i, raw, self.predict_dense(raw)))
        return write_preview(self, number, blocks, export_class)

    def preview_slice_from_traindata(self, cube_i: int = 0, off: tuple = (0, 0, 0),
                                     sh: tuple = (10, 400, 400), number: int = 0,
                                     export_class: str | int = "all") -> Path:  # fmt: skip
        """Like ``preview_slice`` on a crop ``[off : off + sh]`` of training cube ``cube_i``."""
        cube = self.data.train_d[cube_i]
        patch = np.asarray(self.model.patch_size)
        sh = np.maximum(np.asarray(sh), patch)
        sl = tuple(slice(o, o + s) for o, s in zip(off, sh))
        raw = np.ascontiguousarray(cube[(slice(None), *sl)], dtype=np.float32)
        blocks = [(f"train{cube_i}", raw, self.predict_dense(raw))]
        return write_preview(self, number, blocks, export_class)

    def predict_and_write(self, pred_node: Any, raw_img: np.ndarray, number: int = 0,
                          export_class: str | int = "all", block_name: str = "",
                          z_thick: int = 5) -> Path:  # fmt: skip
        """Predict ``raw_img`` (ch, z, y, x) densely and write it as a preview.

        ``pred_node`` is kept for signature compatibility; the model is always used.
        """
        raw = np.asarray(raw_img, dtype=np.float32)
        blocks = [(block_name or 0, raw, self.predict_dense(raw))]
        return write_preview(self, number, blocks, export_class)

    def predict_dense(self, raw: np.ndarray) -> np.ndarray:
        """Tiled dense class probabilities (n_classes, z', y', x') for a (C, z, y, x) cube."""
        from trainer.inference import predict_dense

        return predict_dense(self.model, raw, device=self.device, amp=self.amp)

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


# ---------------------------------------------------------------------- helpers
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


def _round_up(n: int, multiple: int) -> int:
    """Round the monitor batch size up to whole batches (ELEKTRONN2 used the batch count)."""
    return max(multiple, -(-n // multiple) * multiple)

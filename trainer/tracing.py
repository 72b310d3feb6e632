"""Neurite tracing: ELEKTRONN2's ``TracingTrainer`` and ``TracingTrainerRNN`` on PyTorch.

A tracing model looks at a patch cut along the current tracing direction
(``trainer.tracing_data``) and predicts the step to the next position on the neurite, as a
physical vector in the patch frame (mostly along the patch x axis). The ``SkeletonLoss``
scores the new position by its distance to the skeleton's inner hull; with
``sequence_training`` the trainer cuts the next patch where the model pointed and goes on
until the track is lost, the patch leaves the cube or ``max_tracing`` steps have passed.

Both trainers are the ``Trainer`` with a few hooks replaced (``_batches``, ``_train_step``,
``test_model``, ``_eval_loss``), so history, status, snapshots, schedules, resume and the
dashboard work unchanged. ``test_model`` returns the mean tracing loss and, as the error,
the percentage of steps that went off track.

Example:
    >>> from trainer import ExperimentConfig, TracingTrainer
    >>> cfg = ExperimentConfig("examples/demo_tracing.py")  # doctest: +SKIP
    >>> TracingTrainer(cfg).run()  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainer.skeletons import Skeleton
from trainer.tracing_data import (
    TracingBatch,
    Transform,
    WarpingOOBError,
)
from trainer.trainer import Trainer

__all__ = [
    "LossResult",
    "SkeletonLoss",
    "Trace",
    "TracingCNN",
    "TracingRNN",
    "TracingTrainer",
    "TracingTrainerRNN",
    "Transform",
    "WarpingOOBError",
]

logger = logging.getLogger("voxelboard")

#: off-centre distances (fraction of the radius) are clipped here for the timeline statistic
_OFF_CENTRE_CLIP = 2.0
#: fixed seeds of the monitoring start points, so the curves compare like with like
_EVAL_SEEDS = {"train": 1000, "valid": 2000}


# ---------------------------------------------------------------------------------------------
# the loss


class LossResult(NamedTuple):
    """Per-example result of ``SkeletonLoss`` for ``n`` predictions.

    Attributes:
        loss: (n,) tensor, skeleton term plus step prior (differentiable).
        skeleton: (n,) tensor, the skeleton term alone.
        lost: (n,) bool: the predicted position lies outside the neurite.
        off_centre: (n,) distance of the predicted position from the centreline / radius.
        position: (n, 3) predicted positions in data voxels.
        direction: (n, 3) predicted steps as physical unit vectors in the data frame.
    """

    loss: torch.Tensor
    skeleton: torch.Tensor
    lost: np.ndarray
    off_centre: np.ndarray
    position: np.ndarray
    direction: np.ndarray


@dataclasses.dataclass
class SkeletonLoss:
    """Distance of a predicted next position to the neurite's inner hull, plus a step prior.

    With ``rho`` the distance from the predicted position to the nearest centreline point
    and ``r`` the radius there, the inner hull is the tube of radius ``cutoff_inner * r``
    and ``d = max(rho - cutoff_inner * r, 0)`` the distance to it. The skeleton term is

    * 0 while ``d < tolerance`` (on track: no gradient),
    * ``d - tolerance`` inside the neurite (gradient of length 1 towards the skeleton),
    * plus ``rise_factor / 2 * (rho - r)^2`` outside it (``rho > r``), so the pull grows
      with the distance as in ELEKTRONN2; such a step also counts as **lost track**.

    ELEKTRONN2 used ``d`` as the loss and a hand-made gradient; here loss and gradient
    agree (plain autograd). The prior keeps the step length near ``step_length``
    (``prior_length * max(|len - step_length| - length_slack, 0)``) and the step forward
    (``prior_forward * softplus(-p_x)``): without it a zero step would be on track forever.

    Example:
        >>> sk = Skeleton([(8, 20, 10), (8, 20, 60)], radii=6)
        >>> t = Transform.from_direction([8, 20, 20], [0, 0, 1])
        >>> res = SkeletonLoss()(torch.tensor([[0.0, 0.0, 4.0]]), [sk], [t])
        >>> float(res.loss[0]), bool(res.lost[0])
        (0.0, False)
    """

    tolerance: float = 1.5
    cutoff_inner: float = 1.0 / 3.0
    rise_factor: float = 0.1
    step_length: float = 4.0
    prior_length: float = 1.0
    prior_forward: float = 1.0
    length_slack: float = 0.75

    def __call__(
        self, pred: torch.Tensor, skeletons: Sequence[Skeleton], transforms: Sequence[Transform]
    ) -> LossResult:
        """Score predictions ``pred`` (n, 3) (patch frame, physical) against their skeletons."""
        n = len(transforms)
        if pred.shape != (n, 3) or len(skeletons) != n:
            raise ValueError(
                f"SkeletonLoss needs pred of shape (n, 3) with one skeleton and transform per "
                f"row, got pred {tuple(pred.shape)}, {len(skeletons)} skeletons, {n} transforms"
            )
        dev, dt = pred.device, pred.dtype
        rot = torch.as_tensor(np.stack([t.rotation for t in transforms]), dtype=dt, device=dev)
        start = np.stack([t.position * t.scale for t in transforms])
        step = torch.einsum("nij,nj->ni", rot, pred)
        q = torch.as_tensor(start, dtype=dt, device=dev) + step
        q_np = q.detach().cpu().double().numpy()
        centre, radius = np.empty((n, 3)), np.empty(n)
        for i, sk in enumerate(skeletons):
            near = sk.nearest(q_np[i])
            centre[i], radius[i] = near.point[0], near.radius[0]
        r = torch.as_tensor(radius, dtype=dt, device=dev)
        rho = torch.sqrt(((q - torch.as_tensor(centre, dtype=dt, device=dev)) ** 2).sum(1) + 1e-12)
        d = F.relu(rho - self.cutoff_inner * r)
        skel = F.relu(d - self.tolerance) + 0.5 * self.rise_factor * F.relu(rho - r) ** 2
        length = torch.sqrt((pred**2).sum(1) + 1e-12)
        prior = self.prior_length * F.relu((length - self.step_length).abs() - self.length_slack)
        prior = prior + self.prior_forward * F.softplus(-pred[:, 2])
        rho_np = rho.detach().cpu().double().numpy()
        step_np = step.detach().cpu().double().numpy()
        norm = np.linalg.norm(step_np, axis=1, keepdims=True)
        fallback = np.stack([t.direction for t in transforms])
        direction = np.where(norm > 1e-6, step_np / np.maximum(norm, 1e-12), fallback)
        scale = np.stack([t.scale for t in transforms])
        return LossResult(skel + prior, skel, rho_np > radius, rho_np / radius,
                          q_np / scale, direction)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# models


class _Encoder(nn.Sequential):
    """Small anisotropic 3D conv stack: patch (n, 1, pz, py, px) -> features (n, n_out)."""

    def __init__(self, patch_size: Sequence[int], channels: int, n_out: int) -> None:
        c = int(channels)
        g = max(1, c // 4)
        convs = nn.Sequential(
            nn.Conv3d(1, c, (1, 3, 3)), nn.GroupNorm(g, c), nn.ReLU(),
            nn.Conv3d(c, c, (3, 3, 3)), nn.GroupNorm(g, c), nn.ReLU(),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(c, 2 * c, (3, 3, 3)), nn.GroupNorm(g, 2 * c), nn.ReLU(),
            nn.Conv3d(2 * c, 2 * c, (3, 3, 3)), nn.GroupNorm(g, 2 * c), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        try:
            with torch.no_grad():
                n_flat = convs(torch.zeros(1, 1, *patch_size)).shape[1]
        except RuntimeError:
            raise ValueError(
                f"tracing patch_size {tuple(patch_size)} is too small for the encoder; "
                "use at least (7, 17, 17)"
            ) from None
        super().__init__(convs, nn.Linear(n_flat, n_out), nn.ReLU())


class TracingCNN(nn.Module):
    """A patch along the tracing direction -> the step to the next position.

    The output is a physical vector in the patch frame (z, y, x); the last layer starts as a
    straight step of ``step_length`` along +x, so tracing works (badly) from the start.

    Args:
        patch_size: input patch (pz, py, px); the data source cuts patches of this shape.
        step_length: intended step length (x/y voxels); also the loss's prior.
        channels: width of the first conv layers.
        loss: keyword arguments of ``SkeletonLoss`` other than ``step_length``.

    Attributes:
        tracing_loss: the ``SkeletonLoss`` the tracing trainers optimise.
    """

    offsets = (0, 0, 0)
    strides = (1, 1, 1)
    #: length of the predicted vector (the trainer's model contract asks for ``n_classes``)
    n_classes = 3

    def __init__(self, patch_size: Sequence[int] = (9, 27, 27), step_length: float = 4.0,
                 channels: int = 16, loss: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.patch_size = tuple(int(s) for s in patch_size)
        self.step_length = float(step_length)
        self.tracing_loss = SkeletonLoss(step_length=self.step_length, **(loss or {}))
        self.encoder = _Encoder(self.patch_size, channels, 64)
        self.head = nn.Linear(64, 3)
        _init_step_head(self.head, self.step_length)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1, pz, py, px) grey values in [0, 1] -> (n, 3) steps."""
        return self.head(self.encoder((x - 0.5) * 4.0))


class TracingRNN(nn.Module):
    """Recurrent tracer: conv encoder + GRU cell; predicts the step and the neurite radius.

    ``forward(x, hidden)`` takes one patch per trace and the hidden state carried from the
    previous step of that trace (``None`` for a fresh one). Both heads read the current
    patch's features and the new state.

    Args:
        patch_size: input patch (pz, py, px).
        step_length: intended step length (x/y voxels); also the loss's prior.
        hidden_size: GRU state size.
        channels: width of the first conv layers.
        radius_weight: weight of the radius regression (smooth L1, physical units) in the loss.
        loss: keyword arguments of ``SkeletonLoss`` other than ``step_length``.
    """

    offsets = (0, 0, 0)
    strides = (1, 1, 1)
    n_classes = 3

    def __init__(self, patch_size: Sequence[int] = (9, 27, 27), step_length: float = 4.0,
                 hidden_size: int = 64, channels: int = 16, radius_weight: float = 0.2,
                 loss: dict[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.patch_size = tuple(int(s) for s in patch_size)
        self.step_length = float(step_length)
        self.hidden_size = int(hidden_size)
        self.radius_weight = float(radius_weight)
        self.tracing_loss = SkeletonLoss(step_length=self.step_length, **(loss or {}))
        self.encoder = _Encoder(self.patch_size, channels, 64)
        self.cell = nn.GRUCell(64, self.hidden_size)
        # the heads see the patch features next to the state: the state adds context, it
        # need not first learn to pass the current patch through its gates
        self.step_head = nn.Linear(64 + self.hidden_size, 3)
        self.radius_head = nn.Linear(64 + self.hidden_size, 1)
        _init_step_head(self.step_head, self.step_length)
        nn.init.zeros_(self.radius_head.weight)
        nn.init.constant_(self.radius_head.bias, 4.0)  # softplus(4) ~ a typical radius

    def init_hidden(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The zero state of ``n`` fresh traces."""
        return torch.zeros(n, self.hidden_size, device=device)

    def forward(
        self, x: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches (n, 1, pz, py, px) -> ``(step (n, 3), radius (n,), new hidden (n, h))``."""
        if hidden is None:
            hidden = self.init_hidden(len(x), x.device)
        f = self.encoder((x - 0.5) * 4.0)
        h = self.cell(f, hidden)
        z = torch.cat([f, h], dim=1)
        return self.step_head(z), F.softplus(self.radius_head(z)).squeeze(1), h


def _init_step_head(head: nn.Linear, step_length: float) -> None:
    # small but not tiny weights: the encoder learns only as fast as the head passes
    # gradient back, and 1e-3 weights left it idle for thousands of steps
    with torch.no_grad():
        head.weight.mul_(0.2)
    with torch.no_grad():
        head.bias.copy_(torch.tensor([0.0, 0.0, step_length]))


# ---------------------------------------------------------------------------------------------
# trainers


@dataclasses.dataclass
class Trace:
    """One followed trace of sequence training.

    Attributes:
        skel_index: the skeleton's index in its split.
        positions: the start, then every predicted position (data voxels).
        losses: the loss of every step.
        on_track: per step, whether the predicted position stayed inside the neurite.
        end: why it ended: ``'lost track'``, ``'left the volume'``, ``'max_tracing'`` or
            ``'running'``.
    """

    skel_index: int
    positions: list[np.ndarray]
    losses: list[float] = dataclasses.field(default_factory=list)
    on_track: list[bool] = dataclasses.field(default_factory=list)
    end: str = "running"
    # where the model pointed: the next patch is cut there
    next_position: np.ndarray | None = None
    next_direction: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.losses)


class _Rollout(NamedTuple):
    loss: torch.Tensor  # mean over the steps taken
    n_steps: int
    n_off: int
    off_centre: float
    radius_pred: float
    radius_true: float


class TracingTrainer(Trainer):
    """The ``Trainer`` for tracing models (ELEKTRONN2's ``--func trace``).

    The config's ``data_class`` is ``'AgentData'`` (or a data class of your own with the
    same ``getbatch``/``get_newslice``/``skeletons`` methods); the model has a
    ``tracing_loss`` (``SkeletonLoss``). ``sequence_training`` (int > 1: the maximum trace
    length; ``True`` or 1: 50) makes the trainer follow its own predictions; it is re-read
    every step, so a schedule or the shell may change it.

    Attributes:
        traces: the last 200 finished traces (``Trace``), newest last.
    """

    debug_names: tuple[str, ...] = ("step_length", "off_centre", "trace_length")

    def __init__(
        self,
        exp_config: Any,
        device: str | None = None,
        resume: bool = False,
        dist: Any = None,
        trial: Any = None,
    ):
        if dist is not None:
            raise ValueError(
                "tracing trainers run in one process: the next patch depends on the last "
                "prediction; start them without --nproc / torchrun"
            )
        super().__init__(exp_config, device=device, resume=resume, trial=trial)
        self.loss_fn: SkeletonLoss = getattr(self.model, "tracing_loss", None) or SkeletonLoss()
        self.traces: collections.deque[Trace] = collections.deque(maxlen=200)
        self._slots: list[Trace] = []
        self._current: TracingBatch | None = None
        self._eval_sets: dict[str, TracingBatch | None] = {}
        self._last_loss = math.nan
        self.tracker.register_debug_output_names(self.debug_names)

    # -- set-up hooks ---------------------------------------------------------------------
    def _load_preview_data(self) -> list[np.ndarray]:
        if self.exp_config.preview_data_path:
            logger.info("Tracing runs write no previews; preview_data_path is ignored")
        return []

    def _column_handlers(self) -> list[Any]:
        # tracing has no voxel classes: the history keeps its ten standard columns
        return []

    @property
    def max_tracing(self) -> int:
        """Longest trace of sequence training; 0 without sequence training."""
        seq = self.exp_config.sequence_training
        if not seq:
            return 0
        return int(seq) if not isinstance(seq, bool) and int(seq) > 1 else 50

    # -- batches --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _batches(self) -> Iterator[Iterator[TracingBatch]]:
        if self.exp_config.background_processes:
            logger.info("background_processes is ignored by tracing: the next patch depends "
                        "on the last prediction")  # fmt: skip
        self._slots = []
        yield (self._next_batch() for _ in iter(int, 1))

    def _next_batch(self) -> TracingBatch:
        """Continue every trace that is still on track, start new ones for the rest."""
        kw = self.batch_kwargs
        max_len = self.max_tracing
        keep, imgs, transforms = [], [], []
        for trace in self._slots:
            if trace.end == "running" and max_len and len(trace) >= max_len:
                trace.end = "max_tracing"
            if trace.end == "running" and max_len and trace.next_position is not None:
                try:
                    img, t = self.data.get_newslice(trace.next_position, trace.next_direction,
                                                    **kw)  # fmt: skip
                except WarpingOOBError:
                    trace.end = "left the volume"
                else:
                    keep.append(trace)
                    imgs.append(img[None])
                    transforms.append(t.to_array())
                    continue
            if max_len:
                self._finish_trace(trace)
        idx = [t.skel_index for t in keep]
        n_new = self.batch_size - len(keep)
        if n_new:
            fresh = self.data.getbatch(**{**kw, "batch_size": n_new, "source": "train"})
            imgs.append(fresh.img)
            transforms.extend(fresh.transforms)
            for k, arr in zip(fresh.skel_index, fresh.transforms):
                pos = Transform.from_array(arr).position
                keep.append(Trace(int(k), [pos]))
                idx.append(int(k))
        self._slots = keep
        self._current = TracingBatch(np.concatenate(imgs).astype(np.float32, copy=False),
                                     np.array(idx, dtype=np.int64), np.stack(transforms),
                                     "train")  # fmt: skip
        return self._current

    def _finish_trace(self, trace: Trace) -> None:
        self.traces.append(trace)
        logger.debug("Traced for %d iterations (%s)", len(trace), trace.end)

    def _unpack(self, batch: TracingBatch) -> tuple[list[Skeleton], list[Transform]]:
        skels = self.data.skeletons(batch.source)
        return ([skels[int(k)] for k in batch.skel_index],
                [Transform.from_array(a) for a in batch.transforms])  # fmt: skip

    def _img(self, img: np.ndarray) -> torch.Tensor:
        # a copy: the rollout overwrites its patch array in place, and a model may keep
        # its input for the backward pass
        x = torch.tensor(img, dtype=torch.float32)
        return x.to(self.device, non_blocking=self.device.type == "cuda")

    # -- steps ----------------------------------------------------------------------------
    def _train_step(self, batch: TracingBatch) -> tuple[float, float]:
        self.model.train()
        skels, transforms = self._unpack(batch)
        pred = self.model(self._img(batch.img)).float()
        res = self.loss_fn(pred, skels, transforms)
        loss = res.loss.mean()
        self._update(loss)
        if batch is self._current:
            self._advance(res)
        lengths = [len(t) for t in self._slots] if batch is self._current else [0]
        off = float(np.minimum(res.off_centre, _OFF_CENTRE_CLIP).mean())
        step_len = float(pred.detach().norm(dim=1).mean())
        self.tracker.update_debug_outputs(
            [self.step, self._last_loss, step_len, off, float(np.mean(lengths))]
        )
        return self._last_loss, off

    def _update(self, loss: torch.Tensor) -> None:
        """Backward and optimiser step; a NaN/inf loss raises ``DivergedError``."""
        self._optimise(loss)
        self._last_loss = float(loss.detach())

    def _advance(self, res: LossResult) -> None:
        """Record each trace's step and where the model points next."""
        for i, trace in enumerate(self._slots):
            trace.positions.append(res.position[i])
            trace.losses.append(float(res.loss[i].detach()))
            trace.on_track.append(not bool(res.lost[i]))
            if res.lost[i]:
                trace.end = "lost track"
            trace.next_position, trace.next_direction = res.position[i], res.direction[i]

    def _eval_loss(self, batch: TracingBatch) -> float:
        skels, transforms = self._unpack(batch)
        with torch.inference_mode():
            pred = self.model(self._img(batch.img)).float()
            return float(self.loss_fn(pred, skels, transforms).loss.mean())

    def _monitor(self, step: int, batch: tuple, loss: float) -> None:
        super()._monitor(step, batch, loss)
        done = [len(t) for t in self.traces]
        self.status.update(write=False, mean_trace_length=float(np.mean(done)) if done else None,
                      traces_done=len(done))  # fmt: skip

    # -- monitoring -----------------------------------------------------------------------
    def test_model(self, data_source: str) -> tuple[float, float]:
        """Trace from ``monitor_batch_size`` fixed start points of ``data_source``.

        Each start is followed for ``max_tracing`` steps (1 without sequence training) or
        until it is lost or leaves the cube.

        Returns:
            ``(mean loss per step, percent of steps off track)``; ``(nan, nan)`` when the data
            has no validation skeletons.
        """
        start = self._eval_set(data_source)
        if start is None:
            return math.nan, math.nan
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                rng = np.random.default_rng(_EVAL_SEEDS.get(data_source, 0) + 1)
                roll = self._rollout(start, max(self.max_tracing, 1), rng=rng)
        finally:
            self.model.train(was_training)
        if roll.n_steps == 0:
            return math.nan, math.nan
        return float(roll.loss), 100.0 * roll.n_off / roll.n_steps

    def _eval_set(self, source: str) -> TracingBatch | None:
        from trainer.data import NoValidationData

        if source not in self._eval_sets:
            kw = {**self.batch_kwargs, "batch_size": self.monitor_batch_size, "source": source}
            rng = np.random.default_rng(_EVAL_SEEDS.get(source, 0))
            try:
                self._eval_sets[source] = self.data.getbatch(**kw, rng=rng)
            except NoValidationData:
                self._eval_sets[source] = None
        return self._eval_sets[source]

    def _rollout(self, batch: TracingBatch, n_steps: int, rng: Any = None) -> _Rollout:
        """Follow every example of ``batch`` for up to ``n_steps`` steps (lock-step).

        Returns the mean loss over the steps taken (a tensor, differentiable unless called
        in inference mode) and tracing statistics. An example stops after its first step
        off track or when its next patch would leave the cube. ``rng`` draws the random
        rolls (``gamma='rand'``) of the next patches; default the global numpy state.
        """
        skels, transforms = self._unpack(batch)
        n = len(transforms)
        img = np.array(batch.img, dtype=np.float32)
        active = np.ones(n, bool)
        state = self._initial_state(n)
        total: torch.Tensor | float = 0.0
        taken = off = 0
        off_centre, radii = [], ([], [])
        kw = self.batch_kwargs
        for _ in range(int(n_steps)):
            pred, radius, state_new = self._predict(self._img(img), state)
            res = self.loss_fn(pred.float(), skels, transforms)
            aux, r_pred, r_true = self._aux_loss(radius, skels, transforms)
            step_loss = res.loss + aux
            if r_pred is not None:
                radii[0].extend(r_pred[active])
                radii[1].extend(r_true[active])
            # a copy: `active` changes below, autograd must keep this step's mask
            mask = torch.tensor(active, device=step_loss.device)
            total = total + (step_loss * mask).sum()
            taken += int(active.sum())
            off += int((res.lost & active).sum())
            off_centre.extend(np.minimum(res.off_centre[active], _OFF_CENTRE_CLIP))
            state = self._keep_state(state, state_new, mask)
            active &= ~res.lost
            for i in np.flatnonzero(active):
                try:
                    patch, transforms[i] = self.data.get_newslice(
                        res.position[i], res.direction[i], **{**kw, "rng": rng}
                    )
                    img[i] = patch
                except WarpingOOBError:
                    active[i] = False
            if not active.any():
                break
        mean = total / max(taken, 1)
        if not torch.is_tensor(mean):
            mean = torch.tensor(float(mean))
        return _Rollout(mean, taken, off, float(np.mean(off_centre)) if off_centre else 0.0,
                        float(np.mean(radii[0])) if radii[0] else math.nan,
                        float(np.mean(radii[1])) if radii[1] else math.nan)  # fmt: skip

    # The CNN has no state and no radius; TracingTrainerRNN overrides these four.
    def _initial_state(self, n: int) -> Any:
        return None

    def _predict(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any, Any]:
        return self.model(x), None, None

    def _aux_loss(self, radius: Any, skels: Sequence[Skeleton],
                  transforms: Sequence[Transform]) -> tuple[Any, Any, Any]:  # fmt: skip
        """Extra loss per example, predicted and true radius (``None`` without a radius)."""
        return 0.0, None, None

    def _keep_state(self, old: Any, new: Any, mask: torch.Tensor) -> Any:
        return None

    def debug_getcnnbatch(self) -> TracingBatch:
        """One training batch of fresh start points, for inspection."""
        return self.data.getbatch(**self.batch_kwargs)


class TracingTrainerRNN(TracingTrainer):
    """The recurrent tracer's trainer (ELEKTRONN2's ``--func tracernn``).

    Every training step starts ``batch_size`` fresh traces with a zero hidden state and
    unrolls the recurrent model along its own predictions for ``max_tracing`` steps
    (``sequence_training``; 50 when unset), stopping a trace when it is lost or leaves the
    cube; the loss is the mean over the steps taken, back-propagated through the whole
    unroll. The model (``TracingRNN``) also predicts the neurite radius; the mean
    predicted and true radius of each step go to ``HistoryTracker.update_regression``.
    """

    debug_names = ("trace_length", "off_centre", "radius_pred", "radius_true")

    @property
    def max_tracing(self) -> int:
        """Unroll length; 50 when ``sequence_training`` is unset."""
        return super().max_tracing or 50

    @contextlib.contextmanager
    def _batches(self) -> Iterator[Iterator[TracingBatch]]:
        kw = {**self.batch_kwargs, "source": "train"}
        yield (self.data.getbatch(**kw) for _ in iter(int, 1))

    def _train_step(self, batch: TracingBatch) -> tuple[float, float]:
        self.model.train()
        roll = self._rollout(batch, self.max_tracing)
        self._unrolled = roll.n_steps
        self._update(roll.loss)
        if math.isfinite(roll.radius_pred):
            self.tracker.update_regression([roll.radius_pred], [roll.radius_true])
        self.tracker.update_debug_outputs([self.step, self._last_loss,
                                           roll.n_steps / max(len(batch.img), 1),
                                           roll.off_centre, roll.radius_pred,
                                           roll.radius_true])  # fmt: skip
        return self._last_loss, roll.off_centre

    def _voxels_per_step(self) -> int:
        # every unrolled step cuts and encodes one patch per trace
        patch = int(np.prod(self.model.patch_size))
        return max(int(getattr(self, "_unrolled", 0)), self.batch_size) * patch

    def _eval_loss(self, batch: TracingBatch) -> float:
        # re-running the unroll costs as much as the step itself (ELEKTRONN2 skipped it too)
        return self._last_loss

    def _initial_state(self, n: int) -> torch.Tensor:
        return self.model.init_hidden(n, self.device)

    def _predict(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any, Any]:
        return self.model(x, state)

    def _aux_loss(self, radius: torch.Tensor, skels: Sequence[Skeleton],
                  transforms: Sequence[Transform]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:  # fmt: skip
        # the true radius where the patch is centred: what the model sees
        true = np.array([sk.nearest(t.position * t.scale).radius[0]
                         for sk, t in zip(skels, transforms)])  # fmt: skip
        target = torch.as_tensor(true, dtype=radius.dtype, device=radius.device)
        weight = float(getattr(self.model, "radius_weight", 0.2))
        loss = weight * F.smooth_l1_loss(radius, target, reduction="none")
        return loss, radius.detach().cpu().numpy(), true

    def _keep_state(self, old: torch.Tensor, new: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask[:, None], new, old)

"""Evaluating a run's snapshot: ``python run.py evaluate RUN_DIR`` and the page's Evaluate.

``evaluate_run`` loads the run's model from its config copy and a snapshot, predicts each cube
once, and writes from that one pass both the result file (``eval/<name>.h5`` and its figures and
report) and the probability cache of the validation cubes (``eval/<name>_valid_prob.h5``) that
the evaluation page's segmentation view reads. File names and formats: ``trainer.runs`` (``results``, ``result_file``).

This module imports torch only when a function runs, so importing it is cheap.

Example:
    >>> results = evaluate_run("runs/mynet", split="both")  # doctest: +SKIP
    >>> print(format_report(results))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trainer import runs
from trainer.evaluation.reference import evaluate_model_binary
from trainer.metrics import EvaluationResult

__all__ = ["LoadedRun", "default_snapshot", "evaluate_again", "evaluate_run", "load_run"]

#: the environment variable the demo configs read their data folder from
DATA_DIR_ENV = "VOXELBOARD_DATA_DIR"

log = logging.getLogger("voxelboard")


@dataclasses.dataclass
class LoadedRun:
    """A run's model with a snapshot's weights, and its data source, ready to predict."""

    config: Any
    model: Any
    data: Any
    snapshot: Path
    state: dict
    device: Any


def default_snapshot(run_dir: str | os.PathLike) -> Path | None:
    """The snapshot evaluated when none is named: FINAL, else the newest one, else ``None``."""
    final = runs.snapshot_path(run_dir, "FINAL")
    return final if final.is_file() else runs.latest_snapshot(run_dir)


@contextlib.contextmanager
def _data_dir(data_dir: str | os.PathLike | None) -> Iterator[None]:
    """``VOXELBOARD_DATA_DIR`` set to ``data_dir`` while a config and its data load, then as before.

    The demo configs read their data folder from the environment when they are executed.
    """
    if data_dir is None:
        yield
        return
    before = os.environ.get(DATA_DIR_ENV)
    os.environ[DATA_DIR_ENV] = str(data_dir)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(DATA_DIR_ENV, None)
        else:
            os.environ[DATA_DIR_ENV] = before


def load_run(
    run_dir: str | os.PathLike,
    snapshot: str | os.PathLike | None = None,
    device: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> LoadedRun:
    """Build a run's model from its config copy, load a snapshot and its data source.

    Only reads the run directory, so it is safe while the run is still training.

    Args:
        run_dir: the run directory.
        snapshot: snapshot file; default ``snapshots/FINAL.pt``, else the newest snapshot.
        device: ``'auto'``, ``'cpu'``, ``'cuda:N'``; the model is moved there in eval mode.
        data_dir: the data folder for configs that read ``$VOXELBOARD_DATA_DIR`` (the demos');
            default: the environment as it is.

    Raises:
        FileNotFoundError: no config copy or no snapshot (the message names the run).
        trainer.modelio.SnapshotError: the snapshot is corrupt or truncated (names the file).
    """
    from trainer.config import ExperimentConfig
    from trainer.devices import resolve_device
    from trainer.modelio import build_model, load_snapshot, resolve_data_class

    run_dir = Path(run_dir)
    copy = runs.config_copy(run_dir)
    if copy is None:
        raise FileNotFoundError(
            f"{run_dir}: no config copy (0-<config>.py); give the folder of a VoxelBoard run"
        )
    if snapshot is None:
        snapshot = default_snapshot(run_dir)
        if snapshot is None:
            raise FileNotFoundError(f"{run_dir}: no snapshot in {run_dir / runs.SNAPSHOT_DIR} yet")
    snapshot = Path(snapshot)
    if not snapshot.exists() and str(snapshot) in runs.snapshot_names(run_dir):
        snapshot = runs.snapshot_path(run_dir, str(snapshot))  # a name: BEST, LAST, step-N
    if not snapshot.exists():
        names = ", ".join(runs.snapshot_names(run_dir)) or "none yet"
        raise FileNotFoundError(
            f"snapshot {snapshot} does not exist; give a file or a snapshot name of the run "
            f"({names})"
        )
    with _data_dir(data_dir):
        cfg = ExperimentConfig(str(copy), use_existing_dir=True)
        dev = resolve_device(device or "auto")
        model = build_model(cfg)
        state = load_snapshot(snapshot, "cpu")
        model.load_state_dict(state["model"] if "model" in state else state)
        model.to(dev).eval()
        data = resolve_data_class(cfg.data_class)(model, None, **(cfg.data_init_kwargs or {}))
    return LoadedRun(cfg, model, data, snapshot, state, dev)


def evaluate_run(
    run_dir: str | os.PathLike,
    snapshot: str | os.PathLike | None = None,
    split: str = "valid",
    mode: str = "binned",
    device: str | None = None,
    name: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    data_dir: str | os.PathLike | None = None,
    instances: bool = False,
    neuron_kwargs: dict[str, Any] | None = None,
    store_exact: bool = False,
) -> dict[str, EvaluationResult]:
    """Evaluate a run's snapshot on its config's cubes, predicting each cube once.

    Reads the run's config copy and a snapshot (FINAL, else the newest; see ``load_run``) and
    writes ``eval/<name>.h5`` with figures and a report and, when the validation split is
    evaluated, the probability cache ``eval/<name>_valid_prob.h5`` from the same predictions
    (the evaluation page's segmentation view reads it). Only reads the snapshot, so it is safe
    on a run that is still training.

    Args:
        run_dir: the run directory.
        snapshot: snapshot file; default ``snapshots/FINAL.pt``, else the newest snapshot.
        split: ``'valid'``, ``'train'`` or ``'both'``.
        mode: ``'exact'`` or ``'binned'`` counting.
        device: ``'auto'``, ``'cpu'``, ``'cuda:N'``.
        name: result name; default the snapshot's file stem (``FINAL``, ``LAST``, ``step-...``).
        progress: called as ``progress(split, cubes_done, cubes_total)``; default logs a line.
        data_dir: the data folder for configs that read ``$VOXELBOARD_DATA_DIR`` (see
            ``load_run``).
        instances: also score the neurons of the validation cubes against the config's
            ``instance_files`` (``trainer.evaluation.neurons``).
        neuron_kwargs: passed to ``evaluate_neurons`` (thresholds, connectivity, grid, n_proc,
            ignore_labels, convention); ``ignore_labels`` defaults to the config's
            ``instance_ignore_labels``.
        store_exact: also keep the exact counts at every distinct score (``mode='exact'``) in
            the result file; by default it keeps the thinned curves and the binned counts.

    Returns:
        ``{split: EvaluationResult}`` as computed (``trainer.evaluation.format_report`` prints it).

    Raises:
        ValueError: ``instances`` without ``instance_files`` in the config, or unusable ones.
    """
    if split not in ("valid", "train", "both"):
        raise ValueError(f"split {split!r}: expected 'valid', 'train' or 'both'")
    run = load_run(run_dir, snapshot, device, data_dir)
    splits = ("train", "valid") if split == "both" else (split,)
    inst = _instances(run) if instances and "valid" in splits else None
    if inst is not None:
        # the config's instance_ignore_labels unless the caller (run.py's --ignore-labels) gave some
        neuron_kwargs = {
            "ignore_labels": run.config.instance_ignore_labels,
            **(neuron_kwargs or {}),
        }
    name = name or run.snapshot.stem
    step = int(run.state.get("step", -1))

    def log_progress(s: str, done: int, total: int) -> None:
        log.info("evaluate %s: %s cube %d/%d", name, s, done, total)

    cache = runs.prob_cache_path(run_dir, name)
    if "valid" not in splits:
        # the result file is replaced without a valid split: its old cache no longer belongs
        cache.unlink(missing_ok=True)
        writer: Any = contextlib.nullcontext()
    else:
        writer = runs.ProbCacheWriter(
            cache, {"snapshot": str(run.snapshot), "result": name, "step": step}
        )
    with writer as w:

        def keep(s: str, _i: int, raw: np.ndarray, label: np.ndarray, prob: np.ndarray) -> None:
            if s == "valid":
                w.add(raw, prob, label)

        return evaluate_model_binary(
            run.model, name, data=run.data, run_dir=run_dir, mode=mode, device=run.device,
            splits=splits, attrs={"snapshot": str(run.snapshot), "step": step},
            progress=progress or log_progress, on_prediction=keep if w is not None else None,
            instances=inst, neuron_kwargs=neuron_kwargs, store_exact=store_exact,
        )  # fmt: skip


def _instances(run: LoadedRun) -> list[np.ndarray]:
    """The instance label cubes of the run's validation cubes (config key ``instance_files``)."""
    from trainer.evaluation.neurons import load_instances

    files = run.config.instance_files
    if not files:
        raise ValueError(
            "--instances needs the ground-truth neurons: set instance_files = [(file, key), ...] "
            "in the config, one per cube as l_files (the demo data has neurons_<i>.h5['ids'])"
        )
    l_path = (run.config.data_init_kwargs or {}).get("l_path")
    return load_instances(files, l_path, list(getattr(run.data, "valid_cubes", [])))


def evaluate_again(
    run_dir: str | os.PathLike,
    name: str,
    device: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, EvaluationResult]:
    """Evaluate result ``name`` again as it was made: same snapshot, counting, splits and
    stored curves (exact counts again if it kept them).

    For results written before probability caches existed: the new pass writes the result and
    its cache together (``evaluate_run``).

    Raises:
        trainer.runs.ResultFileError: the result file cannot be read.
        FileNotFoundError: the snapshot the result was computed with is gone (names it).
    """
    path = runs.result_path(run_dir, name)
    results = runs.read_result(path, coarse=True)  # the thinned curves: small at any size
    recorded = str(runs.read_result_attrs(path).get("snapshot") or "")
    snapshot = Path(recorded) if recorded else None
    if snapshot is not None and not snapshot.is_file():
        # a relative path was recorded from another working directory: look in the run
        snapshot = runs.snapshot_path(run_dir, snapshot.stem)
    if snapshot is None or not snapshot.is_file():
        raise FileNotFoundError(
            f"{path} was computed with snapshot {recorded or '(not recorded)'}, which is not in "
            f"{Path(run_dir) / runs.SNAPSHOT_DIR}; evaluate a snapshot that exists instead"
        )
    neurons = runs.read_neurons(path)
    # the Rand convention the neurons were scored with (older records: scikit-image's)
    kwargs = {"convention": str(neurons[0].get("rand_convention", "skimage"))} if neurons else None
    split = "both" if {"train", "valid"} <= set(results) else next(iter(results), "valid")
    mode = next(iter(results.values())).mode if results else "binned"
    return evaluate_run(
        run_dir, snapshot, split, mode, device, name, progress=progress, data_dir=data_dir,
        instances=bool(neurons), neuron_kwargs=kwargs, store_exact=runs.stores_exact(path),
    )  # fmt: skip

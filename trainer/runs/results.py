"""The evaluation files of a run directory: their names, formats, atomic writers and readers.

``<run_dir>/eval/`` holds (format in docs/evaluation.md)::

    <name>.h5                          result file: the curves of each split (thinned, binned,
                                       exact on request) and with ``--instances`` the neuron
                                       scores per validation cube (``trainer.runs.result_file``)
    <name>_valid_prob.h5               probability cache: the validation cubes as predicted
    <name>-REPORT.txt                  text report
    <name>_<split>.performance.html    Plotly figures (self-contained HTML)
    <name>_<split>.error_histogram.html
    threshold.json                     the threshold saved on the evaluation page

The evaluation (``trainer.evaluation``) writes a result file and its probability cache from the
same prediction pass; the dashboard only reads them (and writes ``threshold.json``). Every write
is atomic: a reader sees the old file or the new one, never a mix.

Example:
    >>> results = read_result(result_path("runs/mynet", "FINAL"))  # doctest: +SKIP
    >>> results["valid"].at(0.5).f1  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.runs.atomic import atomic_path, atomic_write_json
from trainer.runs.confine import confined

# the result file's format, writers and readers (re-exported: ``trainer.runs`` names them here)
from trainer.runs.result_file import (
    CURVES,
    FORMAT_NAME,
    FORMAT_VERSION,
    SPLITS,
    ResultFileError,
    cube_order,
    plain,
    read_neurons,
    read_result,
    read_result_attrs,
    stores_exact,
    write_error_hist,
    write_result,
    write_split,
)

__all__ = [
    "CURVES",
    "EVAL_DIR",
    "FIGURE_KINDS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "PROB_CACHE_FORMAT",
    "RESULT_SUFFIX",
    "SPLITS",
    "THRESHOLD_FILE",
    "THRESHOLD_KEYS",
    "ProbCacheError",
    "ProbCacheWriter",
    "ResultFileError",
    "eval_dir",
    "figure_path",
    "list_results",
    "prob_cache_path",
    "prob_cache_suffix",
    "read_prob_cache",
    "read_neurons",
    "read_prob_slice",
    "read_result",
    "read_result_attrs",
    "read_threshold",
    "report_path",
    "result_path",
    "stores_exact",
    "threshold_path",
    "write_error_hist",
    "write_prob_cache",
    "write_result",
    "write_split",
    "write_threshold",
]

#: the folder of a run that holds its evaluation files
EVAL_DIR = "eval"
RESULT_SUFFIX = ".h5"
#: what marks a probability cache in ``eval/`` (``<name>_<split>_prob.h5``): not a result file
PROB_SUFFIX = "_prob"
#: the ``format`` attribute of probability caches (caches written before it existed have none)
PROB_CACHE_FORMAT = "voxelboard-probabilities"
THRESHOLD_FILE = "threshold.json"
#: keys every ``threshold.json`` holds
THRESHOLD_KEYS = ("threshold", "method", "beta", "run", "result", "split", "saved", "metrics")
#: HTML figures of a result: ``<name>_<split>.<kind>.html``
FIGURE_KINDS = ("performance", "error_histogram")
_REPORT_SUFFIX = "-REPORT.txt"


class ProbCacheError(ValueError):
    """A probability cache that cannot be read; the message names the file and what to do."""


# ----------------------------------------------------------------------------------------------
# names


def eval_dir(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/eval``."""
    return Path(run_dir) / EVAL_DIR


def result_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``<run_dir>/eval/<name>.h5``."""
    return eval_dir(run_dir) / f"{name}{RESULT_SUFFIX}"


def prob_cache_suffix(split: str = "valid") -> str:
    """What follows a result name in its probability cache's file name: ``_valid_prob.h5``."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
    return f"_{split}{PROB_SUFFIX}{RESULT_SUFFIX}"


def prob_cache_path(run_dir: str | os.PathLike, name: str, split: str = "valid") -> Path:
    """``<run_dir>/eval/<name>_<split>_prob.h5``."""
    return eval_dir(run_dir) / f"{name}{prob_cache_suffix(split)}"


def report_path(run_dir: str | os.PathLike, name: str) -> Path:
    """``<run_dir>/eval/<name>-REPORT.txt``."""
    return eval_dir(run_dir) / f"{name}{_REPORT_SUFFIX}"


def figure_path(run_dir: str | os.PathLike, name: str, split: str, kind: str) -> Path:
    """``<run_dir>/eval/<name>_<split>.<kind>.html``; ``kind`` is one of ``FIGURE_KINDS``."""
    if kind not in FIGURE_KINDS:
        raise ValueError(f"figure kind {kind!r} is not one of {', '.join(FIGURE_KINDS)}")
    return eval_dir(run_dir) / f"{name}_{split}.{kind}.html"


def threshold_path(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/eval/threshold.json``."""
    return eval_dir(run_dir) / THRESHOLD_FILE


def list_results(run_dir: str | os.PathLike) -> list[str]:
    """Names of the result files in ``<run_dir>/eval`` (``<name>.h5``), newest first.

    Probability caches (``*_prob.h5``) and temporary files are left out.
    """
    folder = eval_dir(run_dir)
    try:
        files = [
            p
            for p in confined(folder).iterdir()
            if p.suffix == RESULT_SUFFIX
            and p.is_file()
            and not p.stem.endswith(PROB_SUFFIX)
            and not p.name.startswith(".")
        ]
    except OSError:
        return []

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    return [p.stem for p in sorted(files, key=lambda p: (-mtime(p), p.name))]


# ----------------------------------------------------------------------------------------------
# probability caches


class ProbCacheWriter:
    """Writes a probability cache cube by cube, as the evaluation predicts them.

    Each cube is a group ``cube<i>`` with ``raw`` (float16 in [0, 1]), ``prob`` (class-1
    probability, float16) and ``label`` (int8: 1, 0, -1), chunked by z plane so the page reads
    one plane. The file appears when the block ends without an exception (atomically); an
    exception leaves the old cache, if any, as it was.

    Example:
        >>> path = prob_cache_path(run_dir, "FINAL")  # doctest: +SKIP
        >>> with ProbCacheWriter(path, {"snapshot": "snapshots/FINAL.pt"}) as w:  # doctest: +SKIP
        ...     w.add(raw, prob, label)
    """

    def __init__(self, path: str | os.PathLike, attrs: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.attrs = dict(attrs or {})
        self.n_cubes = 0
        self._file: Any = None
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> ProbCacheWriter:
        import h5py

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = stack.enter_context(h5py.File(tmp, "w"))
            self._file.attrs["format"] = PROB_CACHE_FORMAT
            self._file.attrs["created"] = time.time()
            for k, v in self.attrs.items():
                self._file.attrs[k] = "" if v is None else v
            self._stack = stack.pop_all()
        return self

    def add(self, raw: np.ndarray, prob: np.ndarray, label: np.ndarray) -> None:
        """Append one cube: raw, class-1 probability and labels ``(z, y, x)`` of one shape."""
        raw, prob, label = np.asarray(raw), np.asarray(prob), np.asarray(label)
        if not raw.shape == prob.shape == label.shape or raw.ndim != 3:
            raise ValueError(
                f"cube {self.n_cubes} of {self.path.name}: raw {raw.shape}, prob {prob.shape} "
                f"and label {label.shape} must be 3-d of one shape"
            )
        g = self._file.create_group(f"cube{self.n_cubes}")
        chunks = (1, *raw.shape[1:])
        g.create_dataset("raw", data=raw.astype(np.float16), chunks=chunks)
        g.create_dataset("prob", data=prob.astype(np.float16), chunks=chunks)
        g.create_dataset("label", data=label.astype(np.int8), chunks=chunks)
        self.n_cubes += 1

    def __exit__(self, *exc: object) -> None:
        stack, self._stack, self._file = self._stack, None, None
        if stack is not None:
            stack.__exit__(*exc)


def write_prob_cache(
    path: str | os.PathLike,
    cubes: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``(raw, prob, label)`` cubes ``(z, y, x)`` as one probability cache, atomically."""
    with ProbCacheWriter(path, attrs) as w:
        for raw, prob, label in cubes:
            w.add(raw, prob, label)


def read_prob_cache(path: str | os.PathLike) -> dict[str, Any]:
    """Shapes and source of a probability cache: ``{'cubes': {name: (z, y, x)}, 'snapshot'}``.

    Raises:
        ProbCacheError: unreadable, not a probability cache, or no cubes.
    """
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            cubes = {
                k: tuple(int(s) for s in f[k]["prob"].shape)
                for k in sorted(f, key=cube_order)
                if k.startswith("cube")
            }
            snapshot = str(plain(f.attrs.get("snapshot", "")))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ProbCacheError(
            f"cannot read probability cache {path}: {e}; delete it and evaluate the snapshot "
            "again to rewrite it"
        ) from None
    if not cubes:
        raise ProbCacheError(
            f"probability cache {path} holds no cubes; delete it and evaluate the snapshot again"
        )
    return {"cubes": cubes, "snapshot": snapshot}


def read_prob_slice(
    path: str | os.PathLike, cube: str, z: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw, prob, label)`` of plane ``z`` (clipped to the cube) of one cube; reads one plane.

    Raises:
        ProbCacheError: unreadable file or unknown cube.
    """
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            g = f[cube]
            z = min(max(int(z), 0), g["prob"].shape[0] - 1)
            return (
                np.asarray(g["raw"][z], np.float32),
                np.asarray(g["prob"][z], np.float32),
                np.asarray(g["label"][z], np.int8),
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ProbCacheError(f"cannot read {cube} of probability cache {path}: {e}") from None


def read_prob_cube(path: str | os.PathLike, cube: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(raw, prob, label)`` of a whole cube of a probability cache, as float32, float32 and
    int8 (the viewer shows cubes whole).

    Raises:
        ProbCacheError: unreadable file or unknown cube.
    """
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            g = f[cube]
            return (
                np.asarray(g["raw"][()], np.float32),
                np.asarray(g["prob"][()], np.float32),
                np.asarray(g["label"][()], np.int8),
            )
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ProbCacheError(f"cannot read {cube} of probability cache {path}: {e}") from None


# ----------------------------------------------------------------------------------------------
# the saved threshold


def write_threshold(run_dir: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``eval/threshold.json`` atomically; returns its path.

    Raises:
        ValueError: ``record`` lacks one of ``THRESHOLD_KEYS`` (the message names it).
    """
    missing = [k for k in THRESHOLD_KEYS if k not in record]
    if missing:
        raise ValueError(
            f"{THRESHOLD_FILE} record lacks {', '.join(missing)}; "
            f"it needs {', '.join(THRESHOLD_KEYS)}"
        )
    path = threshold_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(record))
    return path


def read_threshold(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The saved threshold record, or ``None`` if there is none or it cannot be read."""
    import json

    try:
        d = json.loads(confined(threshold_path(run_dir)).read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and all(k in d for k in THRESHOLD_KEYS) else None

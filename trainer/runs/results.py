"""The evaluation files of a run directory: their names, formats, atomic writers and readers.

``<run_dir>/eval/`` holds (format in docs/evaluation.md)::

    <name>.h5                          result file: counts at every threshold, per split, and
                                       with ``--instances`` the neuron scores per validation cube
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
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import (
    COARSE_ABOVE,
    COARSE_SIZE,
    ErrorHistogram,
    EvaluationResult,
    ThresholdChoice,
)
from trainer.runs.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from trainer.runs.confine import OutsideRunsError, confined

__all__ = [
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
    "threshold_path",
    "update_split",
    "write_prob_cache",
    "write_result",
    "write_threshold",
]

#: the folder of a run that holds its evaluation files
EVAL_DIR = "eval"
FORMAT_NAME = "voxelboard-evaluation"
#: 2 added the optional ``neurons`` group (neuron scores per validation cube); 1 is still read
FORMAT_VERSION = 2
OLDEST_READABLE_VERSION = 1
#: the group of the neuron scores: ``neurons/cube<i>`` per validation cube
NEURONS_GROUP = "neurons"
#: the splits a result file can hold
SPLITS = ("valid", "train")
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
_HINT = "re-run `python run.py evaluate RUN_DIR` to write it"


class ResultFileError(ValueError):
    """An evaluation result file that is missing, corrupt, or of another format version.

    Attributes:
        path: the file.
        reason: ``'missing'``, ``'corrupt'``, ``'old-format'``, ``'newer-format'`` or
            ``'refused'`` (a link out of the runs folder, see ``trainer.runs.confine``).
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"evaluation result {path}: {detail}")


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
# result files


def write_result(
    path: str | os.PathLike,
    result_by_split: Mapping[str, EvaluationResult],
    attrs: Mapping[str, Any] | None = None,
    neurons: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write one result file (HDF5) atomically: readers see the old or the new file.

    Args:
        path: the file, usually ``result_path(run_dir, name)``.
        result_by_split: e.g. ``{'valid': res, 'train': res}``.
        attrs: extra root attributes (snapshot, step, ...): str, numbers or None.
        neurons: per validation cube, the neuron scores (``trainer.evaluation.neurons``):
            arrays become datasets under ``neurons/cube<i>/<key>`` (a key may hold ``/``),
            numbers and strings attributes of ``neurons/cube<i>``.
    """
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = time.time()
        for k, v in (attrs or {}).items():
            f.attrs[k] = "" if v is None else v
        for split, res in result_by_split.items():
            _write_split(f.create_group(split), res)
        for i, cube in enumerate(neurons or ()):
            g = f.create_group(f"{NEURONS_GROUP}/cube{i}")
            for k, v in cube.items():
                if isinstance(v, np.ndarray):
                    _dataset(g, k, v)
                else:
                    g.attrs[k] = v
    atomic_write_bytes(path, buf.getvalue())


def read_neurons(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The neuron scores per validation cube as written by ``write_result(neurons=...)``:
    ``[]`` for a file evaluated without instance labels (or of format version 1).

    Raises:
        ResultFileError: the file cannot be read or is of another format.
    """
    import h5py

    path = Path(path)
    try:
        f = h5py.File(confined(path), "r")
    except OutsideRunsError as e:
        raise ResultFileError(path, "refused", e.strerror) from None
    except OSError as e:
        raise ResultFileError(path, "corrupt", f"not a readable HDF5 file ({e}); {_HINT}") from e
    out: list[dict[str, Any]] = []
    with f:
        _check_format(path, f.attrs.get("format"), f.attrs.get("format_version"))
        group = f.get(NEURONS_GROUP)
        for name in sorted(group or (), key=_cube_order):
            g = group[name]
            cube: dict[str, Any] = {k: _plain(v) for k, v in g.attrs.items()}
            cube.update({k: g[k][()] for k in _dataset_names(g)})
            out.append(cube)
    return out


def _dataset_names(group: Any) -> list[str]:
    import h5py

    names: list[str] = []
    group.visititems(lambda k, obj: names.append(k) if isinstance(obj, h5py.Dataset) else None)
    return names


def _dataset(group: Any, name: str, data: np.ndarray) -> None:
    opts = {"compression": "lzf", "shuffle": True} if data.size > COARSE_ABOVE else {}
    group.create_dataset(name, data=data, **opts)


def _write_split(g: Any, res: EvaluationResult) -> None:
    import h5py

    chosen = res.chosen or ThresholdChoice(math.nan, "")
    g.attrs.update(
        {
            "mode": res.mode,
            "n_bins": res.n_bins,
            "n_pos": res.n_pos,
            "n_neg": res.n_neg,
            "n_ignored": res.n_ignored,
            "roc_auc": res.roc_auc,
            "average_precision": res.average_precision,
            "nll": res.nll,
            "chosen_threshold": chosen.threshold,
            "chosen_method": chosen.method,
            "chosen_value": chosen.value,
            "chosen_target": math.nan if chosen.target is None else chosen.target,
        }
    )
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        _dataset(g, name, getattr(res, name))
    fpr, tpr = res.roc()
    rec, prec = res.pr()
    for name, arr in (
        ("roc/fpr", fpr),
        ("roc/tpr", tpr),
        ("pr/recall", rec),
        ("pr/precision", prec),
    ):
        _dataset(g, name, arr)
    g["hist/edges"], g["hist/pos"], g["hist/neg"] = res.hist_edges, res.hist_pos, res.hist_neg
    coarse = g.create_group("coarse")
    small = res.coarsen(COARSE_SIZE) if res.thresholds.size > COARSE_ABOVE else None
    for name in ("thresholds", "tp", "fp", "tn", "fn"):
        if small is None:
            coarse[name] = h5py.SoftLink(f"{g.name}/{name}")
        else:
            coarse[name] = getattr(small, name)
    if res.error_hist is not None:
        eh = g.create_group("error_hist")
        eh.attrs["threshold"] = res.error_hist.threshold
        for name in ("edges", "total", "pos", "neg"):
            eh[name] = getattr(res.error_hist, name)


def read_result(
    path: str | os.PathLike, splits: Sequence[str] | None = None, coarse: bool = False
) -> dict[str, EvaluationResult]:
    """Load a result file written by ``write_result`` without recomputing anything.

    Args:
        path: the ``.h5`` file.
        splits: groups to load (default all present).
        coarse: load the at most ~``COARSE_SIZE`` thresholds meant for browsers instead of all.

    Returns:
        ``{split: EvaluationResult}``; ``roc_auc``/``average_precision`` are the stored values.

    Raises:
        ResultFileError: missing or unreadable file, another format or version, missing keys.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise ResultFileError(path, "missing", f"no such file; {_HINT}")
    try:
        f = h5py.File(confined(path), "r")
    except OutsideRunsError as e:
        raise ResultFileError(path, "refused", e.strerror) from None
    except OSError as e:
        raise ResultFileError(path, "corrupt", f"not a readable HDF5 file ({e}); {_HINT}") from e
    with f:
        _check_format(path, f.attrs.get("format"), f.attrs.get("format_version"))
        names = (
            [s for s in f if s in SPLITS and isinstance(f[s], h5py.Group)]
            if splits is None
            else list(splits)
        )
        out = {}
        for split in names:
            if split not in f:
                raise ResultFileError(
                    path, "corrupt", f"no split {split!r} (has: {', '.join(f) or 'none'}); {_HINT}"
                )
            try:
                out[split] = _read_split(f[split], coarse)
            except (KeyError, ValueError, OSError) as e:
                raise ResultFileError(
                    path, "corrupt", f"split {split!r} is incomplete or damaged ({e}); {_HINT}"
                ) from e
        return out


def _check_format(path: Path, fmt: Any, version: Any) -> None:
    if fmt != FORMAT_NAME or version is None:
        raise ResultFileError(
            path, "old-format", f"not a {FORMAT_NAME} file (no format attribute); {_HINT}"
        )
    if int(version) < OLDEST_READABLE_VERSION:
        raise ResultFileError(
            path,
            "old-format",
            f"format version {int(version)} is older than {OLDEST_READABLE_VERSION}; {_HINT}",
        )
    if int(version) > FORMAT_VERSION:
        raise ResultFileError(
            path,
            "newer-format",
            f"format version {int(version)} is newer than this VoxelBoard reads "
            f"({FORMAT_VERSION}); update VoxelBoard",
        )


def _read_split(g: Any, coarse: bool) -> EvaluationResult:
    src = g["coarse"] if coarse else g
    arr = {name: src[name][()] for name in ("thresholds", "tp", "fp", "tn", "fn")}
    a = g.attrs
    method = str(a["chosen_method"])
    target = float(a["chosen_target"])
    chosen = (
        ThresholdChoice(
            float(a["chosen_threshold"]),
            method,
            float(a["chosen_value"]),
            None if math.isnan(target) else target,
        )
        if method
        else None
    )
    eh = None
    if "error_hist" in g:
        e = g["error_hist"]
        eh = ErrorHistogram(
            edges=e["edges"][()],
            total=e["total"][()],
            pos=e["pos"][()],
            neg=e["neg"][()],
            threshold=float(e.attrs["threshold"]),
        )
    res = EvaluationResult(
        mode=str(a["mode"]),
        n_bins=int(a["n_bins"]),
        n_pos=int(a["n_pos"]),
        n_neg=int(a["n_neg"]),
        n_ignored=int(a["n_ignored"]),
        hist_edges=g["hist/edges"][()],
        hist_pos=g["hist/pos"][()],
        hist_neg=g["hist/neg"][()],
        nll=float(a["nll"]),
        chosen=chosen,
        error_hist=eh,
        **arr,
    )
    sizes = {k: v.shape for k, v in arr.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"per-threshold arrays differ in length: {sizes}")
    res.__dict__["roc_auc"] = float(a["roc_auc"])
    res.__dict__["average_precision"] = float(a["average_precision"])
    return res


def read_result_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a result file (snapshot, step, name, ...) as plain Python values;
    ``{}`` for a file that cannot be read (``read_result`` says why)."""
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            return {k: _plain(v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return {}


def _plain(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def update_split(
    path: str | os.PathLike,
    split: str,
    make: Callable[[EvaluationResult | None], EvaluationResult],
) -> None:
    """Replace one split of a result file, keeping the others (an unreadable old file is replaced).

    ``make`` gets the split's current result (or ``None``) and returns the new one.
    """
    path = Path(path)
    existing: dict[str, EvaluationResult] = {}
    neurons: list[dict[str, Any]] = []
    if path.exists():
        try:
            existing = read_result(path)
            neurons = read_neurons(path)
        except ResultFileError as e:
            warnings.warn(f"replacing unreadable result file: {e}", stacklevel=3)
    existing[split] = make(existing.get(split))
    write_result(path, existing, neurons=neurons)


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


def _cube_order(name: str) -> int:
    return int(name[4:]) if name[4:].isdigit() else 1 << 30


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
                for k in sorted(f, key=_cube_order)
                if k.startswith("cube")
            }
            snapshot = str(_plain(f.attrs.get("snapshot", "")))
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

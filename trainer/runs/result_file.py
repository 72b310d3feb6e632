"""The evaluation result file ``eval/<name>.h5``: its format, atomic writers and readers.

One HDF5 file per evaluation (layout in docs/evaluation.md). Since format version 3 a split
keeps its curves sized by what anyone reads, whatever the number of scores:

* the curve thinned to at most ``MAX_CURVE_POINTS`` thresholds with their exact counts, keeping
  the curve's corners, every preset's threshold and the chosen one (``trainer.curves``);
* the counts at the ``n_bins + 1`` bin edges (``binned/``);
* the exact counts at every distinct score (``exact/``) only when asked for (``store_exact``).

Areas (ROC AUC, AP) are those of the full curve. Files of versions 1 and 2 (every threshold at
the top of the split, a ``coarse/`` copy beside it) are still read, split by split: a split
copied from such a file into a new one keeps its layout.

Every write builds the whole file in memory and replaces the old one atomically. Replacing one
split (``write_split``, ``write_error_hist``) copies the file's other groups as they are and
reads nothing of the split it replaces but its small error histogram.

Example:
    >>> write_result("eval/FINAL.h5", {"valid": res})  # doctest: +SKIP
    >>> read_result("eval/FINAL.h5")["valid"].roc_auc  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainer.curves import StoredCurves, binned_counts_of, stored_curves
from trainer.metrics import (
    DEFAULT_N_BINS,
    ErrorHistogram,
    EvaluationResult,
    ThresholdChoice,
)
from trainer.runs.atomic import atomic_write_bytes
from trainer.runs.confine import OutsideRunsError, confined

__all__ = [
    "CURVES",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "SPLITS",
    "ResultFileError",
    "read_neurons",
    "read_result",
    "read_result_attrs",
    "stores_exact",
    "write_error_hist",
    "write_result",
    "write_split",
]

FORMAT_NAME = "voxelboard-evaluation"
#: 3: curves thinned to ``MAX_CURVE_POINTS`` plus binned counts, exact counts on request;
#: 2: the optional ``neurons`` group; 1 and 2 are still read
FORMAT_VERSION = 3
OLDEST_READABLE_VERSION = 1
#: the split attribute that marks the layout of version 3 (absent: every threshold at the top)
LAYOUT_ATTR = "curves"
LAYOUT_THINNED = "thinned"
#: what ``read_result(curve=...)`` can load
CURVES = ("thinned", "binned", "exact")
#: the group of the neuron scores: ``neurons/cube<i>`` per validation cube
NEURONS_GROUP = "neurons"
#: the splits a result file can hold
SPLITS = ("valid", "train")
_COUNT_ARRAYS = ("thresholds", "tp", "fp", "tn", "fn")
#: datasets with more entries than this are compressed (the exact counts, large binned ones)
_COMPRESS_ABOVE = 100_000
_HINT = "re-run `python run.py evaluate RUN_DIR` to write it"


class ResultFileError(ValueError):
    """An evaluation result file that is missing, corrupt, or of another format version.

    Attributes:
        path: the file.
        reason: ``'missing'``, ``'corrupt'``, ``'old-format'``, ``'newer-format'``,
            ``'refused'`` (a link out of the runs folder, see ``trainer.runs.confine``) or
            ``'not-stored'`` (exact counts asked for a split written without them).
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"evaluation result {path}: {detail}")


# ----------------------------------------------------------------------------------------------
# writing


def write_result(
    path: str | os.PathLike,
    result_by_split: Mapping[str, EvaluationResult | StoredCurves],
    attrs: Mapping[str, Any] | None = None,
    neurons: Sequence[Mapping[str, Any]] | None = None,
    store_exact: bool = False,
) -> None:
    """Write one result file (HDF5) atomically: readers see the old or the new file.

    Args:
        path: the file, usually ``result_path(run_dir, name)``.
        result_by_split: e.g. ``{'valid': res, 'train': res}``: full results, or what
            ``trainer.curves.stored_curves`` made of them (when the caller has it already).
        attrs: extra root attributes (snapshot, step, ...): str, numbers or None.
        neurons: per validation cube, the neuron scores (``trainer.evaluation.neurons``):
            arrays become datasets under ``neurons/cube<i>/<key>`` (a key may hold ``/``),
            numbers and strings attributes of ``neurons/cube<i>``.
        store_exact: also keep the exact counts at every distinct score of exact-mode results
            (``exact/``; ~20 bytes per distinct score before compression).
    """
    with _new_file(path) as f:
        for k, v in (attrs or {}).items():
            f.attrs[k] = "" if v is None else v
        for split, res in result_by_split.items():
            _write_split(f.create_group(split), _stored(res, store_exact))
        for i, cube in enumerate(neurons or ()):
            g = f.create_group(f"{NEURONS_GROUP}/cube{i}")
            for k, v in cube.items():
                if isinstance(v, np.ndarray):
                    _dataset(g, k, v)
                else:
                    g.attrs[k] = v


def write_split(
    path: str | os.PathLike,
    split: str,
    result: EvaluationResult | StoredCurves,
    store_exact: bool = False,
) -> None:
    """Replace one split of a result file (or make the file), keeping its other groups.

    The other splits and the neuron scores are copied as they are; of the split replaced only
    its error histogram is read, and kept when ``result`` has none. An unreadable old file is
    replaced with a warning.
    """
    stored = _stored(result, store_exact)

    def fill(f: Any, old: Any) -> None:
        g = f.create_group(split)
        _write_split(g, stored)
        if stored.thinned.error_hist is None and old is not None and "error_hist" in old:
            old.file.copy(old["error_hist"], g, name="error_hist")

    _rewrite(path, split, fill)


def write_error_hist(
    path: str | os.PathLike,
    split: str,
    hist: ErrorHistogram,
    base: Callable[[], EvaluationResult],
) -> None:
    """Set the error histogram of one split, keeping the rest of the file as it is.

    A split that is not in the file yet is made from ``base()`` first, so the file is always
    complete; an existing split is copied as it is (none of its curves is read).
    """

    def fill(f: Any, old: Any) -> None:
        if old is None:
            _write_split(f.create_group(split), stored_curves(base()).with_error_hist(hist))
            return
        g = f.create_group(split)
        g.attrs.update(dict(old.attrs))
        for name in old:
            if name != "error_hist":
                old.file.copy(old[name], g, name=name)
        _write_error_hist(g, hist)

    _rewrite(path, split, fill)


def _stored(res: EvaluationResult | StoredCurves, store_exact: bool) -> StoredCurves:
    return res if isinstance(res, StoredCurves) else stored_curves(res, store_exact)


@contextlib.contextmanager
def _new_file(path: str | os.PathLike) -> Iterator[Any]:
    """An HDF5 file in memory with the format attributes; written atomically to ``path`` when
    the block ends without an exception."""
    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["created"] = time.time()
        yield f
    atomic_write_bytes(path, buf.getvalue())


def _rewrite(path: str | os.PathLike, split: str, fill: Callable[[Any, Any], None]) -> None:
    """A new file holding the old file's groups but ``split`` (copied, not decoded) and what
    ``fill(new_file, old_split_group_or_None)`` writes."""
    with contextlib.ExitStack() as stack:
        old = _open_old(Path(path))
        if old is not None:
            stack.enter_context(old)
        with _new_file(path) as f:
            for name in old if old is not None else ():
                if name != split:
                    old.copy(old[name], f, name=name)
            fill(f, old[split] if old is not None and split in old else None)


def _open_old(path: Path) -> Any:
    """The existing result file open for reading, ``None`` if there is none or it cannot be
    read (with a warning: it is replaced)."""
    import h5py

    if not path.exists():
        return None
    try:
        f = h5py.File(confined(path), "r")
    except (OSError, OutsideRunsError) as e:
        warnings.warn(f"replacing unreadable result file: {path}: {e}", stacklevel=4)
        return None
    try:
        _check_format(path, f.attrs.get("format"), f.attrs.get("format_version"))
    except ResultFileError as e:
        f.close()
        warnings.warn(f"replacing unreadable result file: {e}", stacklevel=4)
        return None
    return f


def _dataset(group: Any, name: str, data: np.ndarray) -> None:
    opts = {"compression": "lzf", "shuffle": True} if data.size > _COMPRESS_ABOVE else {}
    group.create_dataset(name, data=data, **opts)


def _smallest_uint(a: np.ndarray) -> np.ndarray:
    top = int(a.max()) if a.size else 0
    for t in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(t).max:
            return a.astype(t)
    return a.astype(np.uint64)


def _write_split(g: Any, stored: StoredCurves) -> None:
    res = stored.thinned
    chosen = res.chosen or ThresholdChoice(math.nan, "")
    g.attrs.update(
        {
            LAYOUT_ATTR: LAYOUT_THINNED,
            "mode": res.mode,
            "n_bins": res.n_bins,
            "n_thresholds": stored.n_thresholds,
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
    for name in _COUNT_ARRAYS:
        g[name] = getattr(res, name)
    fpr, tpr = res.roc()
    rec, prec = res.pr()
    g["roc/fpr"], g["roc/tpr"], g["pr/recall"], g["pr/precision"] = fpr, tpr, rec, prec
    g["hist/edges"], g["hist/pos"], g["hist/neg"] = res.hist_edges, res.hist_pos, res.hist_neg
    binned = g.create_group("binned")
    binned.attrs["n_bins"] = stored.n_bins
    for name, arr in zip(("thresholds", "tp", "fp"), stored.binned):
        _dataset(binned, name, arr)
    if stored.exact is not None:
        ex = stored.exact
        # per distinct score, its positives and negatives: small integers that compress well
        # and make tp and fp back with one cumulative sum each
        exact = g.create_group("exact")
        _dataset(exact, "thresholds", ex.thresholds)
        for name, cum in (("pos", ex.tp), ("neg", ex.fp)):
            _dataset(exact, name, _smallest_uint(cum - np.append(cum[1:], 0)))
    if res.error_hist is not None:
        _write_error_hist(g, res.error_hist)


def _write_error_hist(g: Any, hist: ErrorHistogram) -> None:
    eh = g.create_group("error_hist")
    eh.attrs["threshold"] = hist.threshold
    for name in ("edges", "total", "pos", "neg"):
        eh[name] = getattr(hist, name)


# ----------------------------------------------------------------------------------------------
# reading


def _open(path: Path) -> Any:
    import h5py

    try:
        f = h5py.File(confined(path), "r")
    except OutsideRunsError as e:
        raise ResultFileError(path, "refused", e.strerror) from None
    except OSError as e:
        raise ResultFileError(path, "corrupt", f"not a readable HDF5 file ({e}); {_HINT}") from e
    return f


def read_result(
    path: str | os.PathLike,
    splits: Sequence[str] | None = None,
    coarse: bool = False,
    curve: str | None = None,
) -> dict[str, EvaluationResult]:
    """Load a result file written by ``write_result`` without recomputing anything.

    Args:
        path: the ``.h5`` file.
        splits: groups to load (default all present).
        coarse: the thinned curve (``curve='thinned'``), what a browser gets.
        curve: which thresholds to load: ``'thinned'`` (at most ``MAX_CURVE_POINTS``, the
            presets' exactly), ``'binned'`` (the bin edges), ``'exact'`` (every distinct score;
            only where written with ``store_exact``). Default: the most detailed one stored:
            ``exact`` where it is, a binned result's bins, else the thinned curve. Files of
            format 1 and 2 give every threshold, or with ``coarse`` their coarse copy.

    Returns:
        ``{split: EvaluationResult}``; ``roc_auc``/``average_precision`` are the stored values
        (those of the full curve).

    Raises:
        ResultFileError: missing or unreadable file, another format or version, missing keys,
            exact counts asked for but not stored.
    """
    import h5py

    if curve is None and coarse:
        curve = "thinned"
    if curve is not None and curve not in CURVES:
        raise ValueError(f"curve {curve!r} is not one of {', '.join(CURVES)}")
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(path, "missing", f"no such file; {_HINT}")
    with _open(path) as f:
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
            g = f[split]
            if curve == "exact" and g.attrs.get(LAYOUT_ATTR) == LAYOUT_THINNED and "exact" not in g:
                raise ResultFileError(
                    path,
                    "not-stored",
                    f"split {split!r} was written without the exact counts at every score; "
                    "evaluate again with store_exact=True (`python run.py evaluate RUN_DIR "
                    "--mode exact --store-exact`)",
                )
            try:
                out[split] = _read_split(g, curve)
            except (KeyError, ValueError, OSError) as e:
                raise ResultFileError(
                    path, "corrupt", f"split {split!r} is incomplete or damaged ({e}); {_HINT}"
                ) from e
        return out


def stores_exact(path: str | os.PathLike) -> bool:
    """Whether any split of a result file was written with ``store_exact`` (its ``exact/``
    group); ``False`` for a file of format 1 or 2 and for a file that cannot be read."""
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            return any(s in f and "exact" in f[s] for s in SPLITS)
    except (OSError, ValueError):
        return False


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


def _counts_of(g: Any, curve: str | None) -> tuple[dict[str, np.ndarray], int | None]:
    """The per-threshold arrays of split group ``g`` for ``curve`` and, for binned counts, their
    ``n_bins``."""
    a = g.attrs
    n_pos, n_neg = int(a["n_pos"]), int(a["n_neg"])
    if a.get(LAYOUT_ATTR) != LAYOUT_THINNED:  # format 1 or 2: every threshold, a coarse copy
        src = g["coarse"] if curve == "thinned" else g
        arr = {name: src[name][()] for name in _COUNT_ARRAYS}
        if curve != "binned":
            return arr, None
        n_bins = int(a["n_bins"]) or DEFAULT_N_BINS
        t, tp, fp = binned_counts_of(arr["thresholds"], arr["tp"], arr["fp"], n_bins)
        return {"thresholds": t, "tp": tp, "fp": fp, "tn": n_neg - fp, "fn": n_pos - tp}, n_bins
    if curve is None:
        curve = "exact" if "exact" in g else "binned" if a["mode"] == "binned" else "thinned"
    if curve == "thinned":
        return {name: g[name][()] for name in _COUNT_ARRAYS}, None
    if curve == "binned":
        b = g["binned"]
        t, tp, fp = b["thresholds"][()], b["tp"][()], b["fp"][()]
        n_bins = int(b.attrs["n_bins"])
    else:
        e = g["exact"]
        t = e["thresholds"][()]
        tp = np.cumsum(e["pos"][()][::-1], dtype=np.int64)[::-1]
        fp = np.cumsum(e["neg"][()][::-1], dtype=np.int64)[::-1]
        n_bins = None
    tp, fp = np.asarray(tp, np.int64), np.asarray(fp, np.int64)
    return {"thresholds": t, "tp": tp, "fp": fp, "tn": n_neg - fp, "fn": n_pos - tp}, n_bins


def _read_split(g: Any, curve: str | None) -> EvaluationResult:
    a = g.attrs
    arr, n_bins = _counts_of(g, curve)
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
        n_bins=int(a["n_bins"]) if n_bins is None else n_bins,
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


def read_neurons(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The neuron scores per validation cube as written by ``write_result(neurons=...)``:
    ``[]`` for a file evaluated without instance labels (or of format version 1).

    Raises:
        ResultFileError: the file cannot be read or is of another format.
    """
    path = Path(path)
    out: list[dict[str, Any]] = []
    with _open(path) as f:
        _check_format(path, f.attrs.get("format"), f.attrs.get("format_version"))
        group = f.get(NEURONS_GROUP)
        for name in sorted(group or (), key=cube_order):
            g = group[name]
            cube: dict[str, Any] = {k: plain(v) for k, v in g.attrs.items()}
            cube.update({k: g[k][()] for k in _dataset_names(g)})
            out.append(cube)
    return out


def _dataset_names(group: Any) -> list[str]:
    import h5py

    names: list[str] = []
    group.visititems(lambda k, obj: names.append(k) if isinstance(obj, h5py.Dataset) else None)
    return names


def read_result_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a result file (snapshot, step, name, ...) as plain Python values;
    ``{}`` for a file that cannot be read (``read_result`` says why)."""
    import h5py

    try:
        with h5py.File(confined(path), "r") as f:
            return {k: plain(v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return {}


def plain(v: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (bytes decoded, numpy scalars unboxed)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def cube_order(name: str) -> int:
    """Sort key of ``cube<i>`` group names: by ``i``, anything else last."""
    return int(name[4:]) if name[4:].isdigit() else 1 << 30

"""Training history: ELEKTRONN2's ``HistoryTracker`` on an append-only store a dashboard can tail.

The tracker keeps four tables, each a pandas DataFrame when read:

* ``timeline``: one row per training step (row ``i`` is step ``i``, index named ``step``):
  ``time`` (training seconds so far), ``loss`` (loss of the update), ``batch_char``
  (mean target of the batch).
* ``history``: one row per monitoring step: ``steps`` (int), ``time``, ``train_loss``,
  ``valid_loss``, ``loss_gain``, ``train_err``, ``valid_err``, ``lr``, ``mom``, ``gradnetrate``,
  then any ``extra_history_columns`` the writer declared (the trainer's per-class
  ``valid_iou_<c>`` / ``valid_dice_<c>`` and their means; readers find columns by name).
* ``debug``: ``step`` (int), ``loss``, then one column per registered debug output name.
* ``regression``: ``pred_0..k``, ``target_0..k`` (row length fixed by the first row).

With ``path`` (normally ``<run_dir>/history``) every row is appended to the store at once.
The store's files, their format and its readers belong to the run-directory package
(``trainer.runs.history_store``, docs/history-format.md): a killed writer leaves a store
that loads; a reader in another process reads only the bytes added since its last read.

Example:
    >>> import tempfile
    >>> from trainer.runs.history_store import read_table
    >>> store = tempfile.mkdtemp() + "/history"
    >>> h = HistoryTracker(store)
    >>> for step in range(3):
    ...     h.update_timeline([0.1 * step, 1.0 / (step + 1), 0.5])
    >>> read_table(store, "timeline", start=1)["loss"].tolist()
    [0.5, 0.3333333333333333]
    >>> h.close()
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.runs import HISTORY_DIR, HISTORY_PLOT_PREFIX, atomic_write_bytes
from trainer.runs.history_store import (
    FILE_SUFFIX,
    HISTORY_COLUMNS,
    TABLES,
    TIMELINE_COLUMNS,
    read_array,
    store_dir_of,
)
from trainer.runs.history_store import StoreTable as _Table

if TYPE_CHECKING:
    import pandas as pd

# the tracker's row layouts, as ELEKTRONN2's update_timeline / update_history take them
__all__ = ["HISTORY_COLUMNS", "TIMELINE_COLUMNS", "HistoryTracker", "loadhistorytracker"]


def _close_all(tables: dict[str, _Table]) -> None:
    for t in tables.values():
        t.close()


class HistoryTracker:
    """Training history in memory and, with ``path``, appended to an on-disk store at once.

    Args:
        path: store directory (normally ``<run_dir>/history``), created on the first write.
            An existing store is loaded, and new rows are appended to it (resume).
            ``None``: keep everything in memory only.
        loss_smoothing_length: window of the moving average drawn over the timeline loss;
            default the config key's default (the trainer passes the config's value).

    Attributes:
        path: the store directory or ``None``.
        debug_output_names: names of the debug columns, or ``None``.

    Only one tracker (one process) may write a store; any number may read it.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        loss_smoothing_length: int | None = None,
        extra_history_columns: Sequence[str] = (),
    ):
        self.path = None if path is None else Path(path)
        if loss_smoothing_length is None:
            from trainer.config_keys import DEFAULTS

            loss_smoothing_length = DEFAULTS["loss_smoothing_length"]
        self.loss_smoothing_length = int(loss_smoothing_length)
        self.debug_output_names: list[str] | None = None
        self._source = self.path  # store the data came from: default place for plots
        clash = set(extra_history_columns) & set(HISTORY_COLUMNS)
        if clash:
            raise ValueError(f"extra history columns {sorted(clash)} are standard columns already")
        self._tables = {
            "timeline": _Table("timeline", self.path, TIMELINE_COLUMNS),
            "history": _Table("history", self.path, (*HISTORY_COLUMNS, *extra_history_columns)),
            "debug": _Table("debug", self.path),
            "regression": _Table("regression", self.path),
        }
        self._timeline = self._tables["timeline"]
        self._history = self._tables["history"]
        self._debug = self._tables["debug"]
        self._regression = self._tables["regression"]
        self._finalizer = weakref.finalize(self, _close_all, self._tables)
        if self.path is not None and self.path.is_dir():
            self._read_store(self.path)

    # ------------------------------------------------------------------ appending
    def update_timeline(self, vals: Sequence[float]) -> None:
        """Append one timeline row ``[time, loss, batch_char]`` (row number = step)."""
        self._timeline.append(vals)

    def update_history(self, vals: Sequence[float] | Mapping[str, float]) -> None:
        """Append one history row: ``steps, time, train_loss, valid_loss, loss_gain,
        train_err, valid_err, lr, mom, gradnetrate``, then any extra columns.

        A mapping is written by column name: columns it lacks get NaN, names the table has
        no column for are left out (a resumed run keeps the columns its store began with).
        """
        if isinstance(vals, Mapping):
            columns = self._history.columns or HISTORY_COLUMNS
            vals = [float(vals.get(c, np.nan)) for c in columns]
        self._history.append(vals)

    def register_debug_output_names(self, names: Sequence[str]) -> None:
        """Name the debug outputs (the columns after ``step, loss`` in the debug table).

        Raises:
            ValueError: the debug table already has other names.
        """
        names = [str(n) for n in names]
        cols = self._debug.columns
        if cols is not None and list(cols[2:]) != names:
            raise ValueError(
                f"debug outputs are already named {list(cols[2:])}"
                + (f" in {self._debug.path}" if self.path else "")
                + f"; cannot rename them to {names}"
            )
        self.debug_output_names = names

    def update_debug_outputs(self, vals: Sequence[float]) -> None:
        """Append a debug row ``[step, loss, d_1, ..., d_k]``.

        Without registered names the columns are called ``debug_0``, ``debug_1``, ...

        Raises:
            ValueError: the row length does not match the registered names.
        """
        if self._debug.columns is None:
            vals = list(vals)
            k = len(vals) - 2
            names = self.debug_output_names
            if names is None:
                names = [f"debug_{i}" for i in range(max(k, 0))]
            if k < 0 or len(names) != k:
                raise ValueError(
                    f"a debug row is [step, loss, d_1..d_k] with k = {len(names)} registered "
                    f"names {names}, got {len(vals)} values"
                )
            self._debug.set_columns(("step", "loss", *names))
            self.debug_output_names = list(names)
        self._debug.append(vals)

    def update_regression(self, pred: Any, target: Any) -> None:
        """Append one pair of regression rows (prediction and target, same length).

        The first call fixes the length ``k``; columns ``pred_0..k-1, target_0..k-1``.

        Raises:
            ValueError: ``pred`` and ``target`` differ in length, or the length changed.
        """
        p = np.ravel(np.asarray(pred, dtype=np.float64))
        t = np.ravel(np.asarray(target, dtype=np.float64))
        if len(p) != len(t) or len(p) == 0:
            raise ValueError(
                f"update_regression needs pred and target of the same non-zero length, "
                f"got {len(p)} and {len(t)}"
            )
        cols = self._regression.columns
        if cols is None:
            k = len(p)
            self._regression.set_columns(
                tuple(f"pred_{i}" for i in range(k)) + tuple(f"target_{i}" for i in range(k))
            )
        elif len(cols) != 2 * len(p):
            raise ValueError(
                f"regression rows have length {len(cols) // 2} (fixed by the first call), "
                f"got {len(p)}"
            )
        self._regression.append(np.concatenate([p, t]))

    # ------------------------------------------------------------------ reading
    @property
    def timeline(self) -> pd.DataFrame:
        """One row per step: ``time, loss, batch_char``; index ``step``."""
        return self._timeline.frame()

    @property
    def history(self) -> pd.DataFrame:
        """One row per monitoring step (``HISTORY_COLUMNS``)."""
        return self._history.frame()

    @property
    def debug_outputs(self) -> pd.DataFrame | None:
        """``step, loss, <debug names>`` rows, or ``None`` before the first one."""
        return self._debug.frame() if self._debug.columns is not None else None

    @property
    def regression(self) -> pd.DataFrame | None:
        """``pred_*, target_*`` rows, or ``None`` before the first one."""
        return self._regression.frame() if self._regression.columns is not None else None

    @property
    def regression_track(self) -> tuple[np.ndarray, np.ndarray] | None:
        """ELEKTRONN2's ``[pred_rows, target_rows]`` as two ``(n, k)`` arrays, or ``None``."""
        if self._regression.columns is None:
            return None
        arr = self._regression.array()
        k = arr.shape[1] // 2
        return arr[:, :k], arr[:, k:]

    def n_rows(self, table: str) -> int:
        """Number of rows of a table (cheap: no DataFrame is built)."""
        return self._table(table).n

    def tail(self, table: str, n: int) -> pd.DataFrame:
        """The last ``n`` rows of a table, without building the whole DataFrame."""
        return self._table(table).tail(n)

    def tail_column(self, table: str, column: str, n: int) -> np.ndarray:
        """The last ``n`` values of one column of a table, as an array."""
        return self._table(table).tail_column(column, n)

    def _table(self, table: str) -> _Table:
        try:
            return self._tables[table]
        except KeyError:
            raise ValueError(
                f"unknown history table {table!r}; tables are {', '.join(TABLES)}"
            ) from None

    # ------------------------------------------------------------------ store
    def save(self, path: str | os.PathLike) -> None:
        """Write every table to the store directory ``path``, each file atomically.

        Saving to the tracker's own store only flushes it to disk (it is always up to date).
        """
        store = Path(path)
        if self.path is not None and store.resolve() == self.path.resolve():
            self.sync()
            return
        store.mkdir(parents=True, exist_ok=True)
        for t in self._tables.values():
            t.save_to(store)
        self._source = self._source or store

    def load(self, path: str | os.PathLike) -> None:
        """Replace the in-memory tables with those of a store (or of a run directory's store).

        Nothing is written; the tracker's own store, if any, is not touched.

        Raises:
            FileNotFoundError: ``path`` is not a directory.
            HistoryFormatError: a table file is unreadable (names the file).
        """
        store = store_dir_of(path)
        if not store.is_dir():
            raise FileNotFoundError(
                f"no history store at {path}: expected a directory holding "
                f"timeline{FILE_SUFFIX}, history{FILE_SUFFIX}, ... or a run directory with "
                f"{HISTORY_DIR}/"
            )
        for t in self._tables.values():
            t.close()  # the next append re-checks that memory and file agree
        self._read_store(store)
        self._source = store

    def _read_store(self, store: Path) -> None:
        for name, t in self._tables.items():
            got = read_array(store, name)
            if got is None:
                t.replace(np.empty((0, len(t.columns or ()))), None)
                if name in ("debug", "regression"):
                    t.columns = t.pack = None
                continue
            info, arr = got
            if name == "debug":
                self.debug_output_names = list(info.columns[2:])
            t.replace(arr, info.columns)

    def truncate(self, step: int) -> None:
        """Drop everything after ``step``: timeline rows with index > step, history and debug
        rows with ``steps``/``step`` > step (used when resuming from a snapshot).

        Changed files are rewritten atomically with a new generation (readers then re-read);
        unchanged files are left alone. The regression table has no step and is kept.
        """
        step = int(step)
        # the timeline goes last: a crash part-way leaves it the longest table, which is
        # what a resume looks at
        for table in (self._history, self._debug):
            if table.columns is None or table.n == 0:
                continue
            keep = table.array()[:, 0] <= step
            if not keep.all():
                table.rewrite(keep)
        t = self._timeline
        if t.n > max(step + 1, 0):
            t.rewrite(np.arange(t.n) <= step)

    def sync(self) -> None:
        """``fsync`` the open table files (appends survive a process crash without this;
        this guards against a machine crash)."""
        for t in self._tables.values():
            t.sync()

    def close(self) -> None:
        """Close the table files; a later append reopens them."""
        _close_all(self._tables)

    def __enter__(self) -> HistoryTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}={t.n}" for k, t in self._tables.items() if t.n)
        return (
            f"HistoryTracker(path={str(self.path) if self.path else None!r}, {counts or 'empty'})"
        )

    # ------------------------------------------------------------------ plots
    def plot(
        self, save_name: str | None = None, autoscale: bool = True, close: bool = True
    ) -> list[Path]:
        """Write interactive Plotly HTML plots of the history.

        Files: ``<save_name>.timeline.html``, ``<save_name>.history.html``, and
        ``<save_name>.debug.html`` / ``<save_name>.regression.html`` when those tables have
        rows. Each is written atomically; ``plotly.min.js`` is written once beside them, so
        the pages work offline.

        Args:
            save_name: path prefix; default ``<parent of the store>/0-history``.
            autoscale: cut the y axes to the recent range (as ELEKTRONN2), zoom out in the page.
            close: kept for ELEKTRONN2 compatibility (Plotly has no figures to close).

        Returns:
            The files written.

        Raises:
            ValueError: no ``save_name`` and the tracker has no store.
        """
        from trainer import plotting

        if save_name is None:
            if self._source is None:
                raise ValueError(
                    "HistoryTracker.plot needs save_name when the tracker has no store path"
                )
            save_name = str(self._source.parent / HISTORY_PLOT_PREFIX)
        figures = {
            "timeline": plotting.timeline_report(
                self.timeline, self.history, self.loss_smoothing_length, autoscale
            ),
            "history": plotting.history_report(self.history, autoscale),
        }
        if self._debug.n:
            figures["debug"] = plotting.debug_report(self.debug_outputs)
        if self._regression.n:
            figures["regression"] = plotting.regression_report(self.regression)
        written = []
        for kind, fig in figures.items():
            path = Path(f"{save_name}.{kind}.html")
            _write_html(fig, path)
            written.append(path)
        return written


def _write_html(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    js = path.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        atomic_write_bytes(js, get_plotlyjs().encode())
    html = fig.to_html(include_plotlyjs="directory", full_html=True)
    atomic_write_bytes(path, html.encode())


def loadhistorytracker(path: str | os.PathLike) -> HistoryTracker:
    """A memory-only tracker holding the tables of a store (or of a run directory's store).

    Example:
        >>> h = loadhistorytracker("runs/demo")  # doctest: +SKIP
        >>> h.history[["steps", "valid_err"]].tail()  # doctest: +SKIP
    """
    tracker = HistoryTracker()
    tracker.load(path)
    return tracker

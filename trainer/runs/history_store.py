"""The history store: ``<run_dir>/history/<table>.vbh``, its byte format, readers and writer.

This module owns the format (docs/history-format.md): the file names, the tables and their
columns, the header, the records. ``trainer.history.HistoryTracker`` (ELEKTRONN2's class)
writes through ``StoreTable``; the dashboard and any other process read with ``table_info``,
``read_array``, ``read_table``, ``read_since``, ``TableTail`` and ``HistoryReader``, and list a
run's table files with ``history_files``. No other module spells the file suffix.

Each table file is a small header, then fixed-size float64 records appended one by one. A
killed writer leaves a store that loads; a reader in another process reads only the bytes
added since its last read.

Example:
    >>> info = table_info("runs/demo/history", "timeline")  # doctest: +SKIP
    >>> read_table("runs/demo/history", "timeline", start=-100)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.runs import is_run_dir
from trainer.runs.atomic import atomic_write_bytes, writing
from trainer.runs.confine import confined
from trainer.runs.snapshots import history_dir

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FILE_SUFFIX",
    "FORMAT_VERSION",
    "HISTORY_COLUMNS",
    "MAGIC",
    "TABLES",
    "TIMELINE_COLUMNS",
    "Chunk",
    "HistoryFormatError",
    "HistoryReader",
    "StoreTable",
    "TableInfo",
    "TableTail",
    "history_files",
    "read_array",
    "read_since",
    "read_table",
    "store_dir_of",
    "table_info",
    "table_path",
]

MAGIC = b"\x89VBH\r\n\x1a\n"
FORMAT_VERSION = 1
FILE_SUFFIX = ".vbh"
TABLES = ("timeline", "history", "debug", "regression")
TIMELINE_COLUMNS = ("time", "loss", "batch_char")
HISTORY_COLUMNS = (
    "steps", "time", "train_loss", "valid_loss", "loss_gain",
    "train_err", "valid_err", "lr", "mom", "gradnetrate",
)  # fmt: skip

# magic, format version, header size in bytes (records start there)
_PREFIX = struct.Struct("<8sII")
_MAX_HEADER = 1 << 20
_HEAD_READ = 512  # one read covers the header of an ordinary table; longer ones take two
_DTYPE = "<f8"
_OPEN_WRITE = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)

# per table: integer columns, index name
_TABLE_KINDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "timeline": ((), "step"),
    "history": (("steps",), None),
    "debug": (("step",), None),
    "regression": ((), None),
}


class HistoryFormatError(ValueError):
    """A history file is not in the format this VoxelBoard reads; the message names the file."""


@dataclasses.dataclass(frozen=True)
class TableInfo:
    """What a table file's header and size say.

    Attributes:
        table: table name (``timeline``, ``history``, ``debug``, ``regression``).
        n_rows: complete records in the file now (a torn last record is not counted).
        columns: column names, in record order.
        generation: random id, new whenever the file is rewritten (``truncate``, ``save``).
        file: the file, as a string (``path`` gives it as a ``Path``).
        header_size: byte offset of the first record.
        int_columns: columns that hold integers (stored as float64, returned as int64).
        index_name: name of the row-number index (``step`` for the timeline) or ``None``.
    """

    table: str
    n_rows: int
    columns: tuple[str, ...]
    generation: str
    file: str
    header_size: int
    int_columns: tuple[str, ...] = ()
    index_name: str | None = None

    @property
    def path(self) -> Path:
        """The file."""
        return Path(self.file)

    @property
    def record_size(self) -> int:
        """Bytes per record: 8 per column."""
        return 8 * len(self.columns)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Rows added to a table since a reader's last visit (``read_since``).

    Attributes:
        rows: the new rows (index = row number), ``None`` if the table does not exist.
        next_offset: the offset to pass next time.
        generation: the table's generation now (pass it back next time).
        reset: the file was rewritten (or removed) since the last visit: drop what you kept;
            ``rows`` then starts at row 0.
        info: header and size, ``None`` if the table does not exist.
    """

    rows: pd.DataFrame | None
    next_offset: int
    generation: str | None
    reset: bool
    info: TableInfo | None


# ---------------------------------------------------------------------- file format
def table_path(store_dir: str | os.PathLike, table: str) -> Path:
    """``<store_dir>/<table>.vbh``."""
    return Path(_table_file(store_dir, table))


def _table_file(store_dir: str | os.PathLike, table: str) -> str:
    # plain strings: pathlib would cost a third of a one-row tail read
    if table not in TABLES:
        raise ValueError(f"unknown history table {table!r}; tables are {', '.join(TABLES)}")
    return os.path.join(os.fspath(store_dir), table + FILE_SUFFIX)


def _encode_header(table: str, columns: Sequence[str], generation: str) -> bytes:
    int_columns, index_name = _TABLE_KINDS[table]
    meta = {
        "table": table,
        "columns": list(columns),
        "dtype": _DTYPE,
        "generation": generation,
        "int_columns": [c for c in int_columns if c in columns],
        "index": index_name,
        "created": time.time(),
    }
    text = json.dumps(meta, separators=(",", ":")).encode()
    size = _PREFIX.size + len(text) + 1
    size += -size % 8  # records start 8-byte aligned, so the data can be memory-mapped
    body = text.ljust(size - _PREFIX.size - 1) + b"\n"
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, size) + body


@functools.lru_cache(maxsize=512)
def _decode_header(
    head: bytes, path: str
) -> tuple[str, tuple[str, ...], str, tuple[str, ...], str | None]:
    """Parse the header bytes (cached: a file's header never changes in place)."""
    try:
        meta = json.loads(head[_PREFIX.size :])
        table = meta["table"]
        columns = tuple(meta["columns"])
        generation = str(meta["generation"])
        dtype = meta.get("dtype", _DTYPE)
        int_columns = tuple(meta.get("int_columns", ()))
        index_name = meta.get("index")
    except (ValueError, KeyError, TypeError) as e:
        raise HistoryFormatError(
            f"corrupt header in history file {path}: {e}; the file cannot be read, "
            "move it away (the other tables of the run are still readable)"
        ) from None
    if dtype != _DTYPE:
        raise HistoryFormatError(
            f"history file {path} stores {dtype!r} records; this VoxelBoard reads {_DTYPE!r} only"
        )
    if not columns or not all(isinstance(c, str) for c in columns):
        raise HistoryFormatError(f"corrupt header in history file {path}: bad columns {columns!r}")
    return table, columns, generation, int_columns, index_name


def _read_info(fd: int, path: str | Path) -> TableInfo:
    """Header and row count of an open table file."""
    size = os.fstat(fd).st_size
    head = os.pread(fd, _HEAD_READ, 0)
    if len(head) < _PREFIX.size:
        raise HistoryFormatError(
            f"history file {path} is too short ({len(head)} bytes) to hold a header; "
            "it was not written by VoxelBoard's history store"
        )
    magic, version, header_size = _PREFIX.unpack_from(head)
    if magic != MAGIC:
        raise HistoryFormatError(
            f"history file {path} does not start with the VoxelBoard history magic bytes "
            f"(found {magic!r}); it is not a history table, move it out of the history directory"
        )
    if version > FORMAT_VERSION:
        raise HistoryFormatError(
            f"history file {path} has format version {version}; this VoxelBoard reads up to "
            f"{FORMAT_VERSION}, upgrade VoxelBoard to read it"
        )
    if not _PREFIX.size < header_size <= _MAX_HEADER or header_size > size:
        raise HistoryFormatError(
            f"corrupt header in history file {path}: header size {header_size} (file size {size})"
        )
    if header_size > len(head):
        head = os.pread(fd, header_size, 0)
    path = os.fspath(path)
    table, columns, generation, int_columns, index_name = _decode_header(
        bytes(head[:header_size]), path
    )
    n_rows = (size - header_size) // (8 * len(columns))
    return TableInfo(table, n_rows, columns, generation, path, header_size, int_columns, index_name)


def _read_rows(fd: int, info: TableInfo, start: int, stop: int) -> np.ndarray:
    """Records ``[start, stop)`` as a writable ``(n, k)`` float64 array (one pread)."""
    k = len(info.columns)
    n = max(stop - start, 0)
    arr = np.empty((n, k), dtype=_DTYPE)  # read straight into it: no zero-fill, no copy
    if n == 0:
        return arr
    view = memoryview(arr).cast("B")
    offset, got = info.header_size + start * 8 * k, 0
    while got < len(view):  # Linux returns at most ~2 GiB per call
        step = os.preadv(fd, [view[got:]], offset + got)
        if step == 0:  # the file was cut meanwhile
            break
        got += step
    return arr[: got // (8 * k)]  # whole records only


@functools.lru_cache(maxsize=64)
def _column_index(columns: tuple[str, ...]) -> Any:
    import pandas as pd

    # building the Index from a list costs ~70 us per frame; reuse it
    return pd.Index(list(columns))


def _frame(
    arr: np.ndarray,
    columns: tuple[str, ...],
    int_columns: tuple[str, ...],
    index_name: str | None,
    start: int = 0,
) -> pd.DataFrame:
    import pandas as pd

    index = pd.RangeIndex(start, start + len(arr), name=index_name)
    df = pd.DataFrame(arr, columns=_column_index(columns), index=index, copy=False)
    for c in int_columns:
        if c in df.columns:
            df[c] = arr[:, columns.index(c)].astype(np.int64)
    return df


# ---------------------------------------------------------------------- readers
def table_info(store_dir: str | os.PathLike, table: str) -> TableInfo | None:
    """Header and current row count of a table; ``None`` if the table does not exist yet.

    Raises:
        HistoryFormatError: the file exists but its header is not readable (names the file).
    """
    path = _table_file(store_dir, table)
    try:
        fd = os.open(confined(path), _OPEN_READ)
    except FileNotFoundError:
        return None
    try:
        return _read_info(fd, path)
    finally:
        os.close(fd)


def read_array(
    store_dir: str | os.PathLike, table: str, start: int = 0, stop: int | None = None
) -> tuple[TableInfo, np.ndarray] | None:
    """Rows ``[start, stop)`` as a raw ``(n, k)`` float64 array, with the header they came from.

    The cheapest read: open, fstat, two preads, close. ``start``/``stop`` follow Python
    slicing (negative values count from the end). ``None`` if the table does not exist.
    """
    path = _table_file(store_dir, table)
    try:
        fd = os.open(confined(path), _OPEN_READ)
    except FileNotFoundError:
        return None
    try:
        info = _read_info(fd, path)
        lo, hi, _ = slice(start, stop).indices(info.n_rows)
        return info, _read_rows(fd, info, lo, hi)
    finally:
        os.close(fd)


def read_table(
    store_dir: str | os.PathLike, table: str, start: int = 0, stop: int | None = None
) -> pd.DataFrame:
    """Rows ``[start, stop)`` of a table as a DataFrame indexed by row number.

    Cost is proportional to the rows read (one seek + read), not to the table's length.
    ``start``/``stop`` follow Python slicing (``start=-100``: the last 100 rows). A torn
    last record (the writer was killed mid-write, or is writing now) is not returned.
    The timeline's index is named ``step``; ``steps`` (history) and ``step`` (debug) are int64.

    Raises:
        FileNotFoundError: the table does not exist (yet); check ``table_info`` first.
        HistoryFormatError: the header is not readable (names the file).
    """
    got = read_array(store_dir, table, start, stop)
    if got is None:
        raise FileNotFoundError(
            f"history table {table!r} does not exist in {store_dir} (no {table}{FILE_SUFFIX}); "
            "the run has not written it yet"
        )
    info, arr = got
    lo = slice(start, stop).indices(info.n_rows)[0]
    return _frame(arr, info.columns, info.int_columns, info.index_name, lo)


def read_since(
    store_dir: str | os.PathLike, table: str, offset: int = 0, generation: str | None = None
) -> Chunk:
    """Rows added since ``offset``, for readers that keep their own position (one per browser tab).

    Pass back ``chunk.next_offset`` and ``chunk.generation`` next time. When the file was
    rewritten in the meantime (another generation, e.g. after a resume truncated it) the
    chunk has ``reset=True`` and holds the whole table from row 0.

    Example:
        >>> import tempfile
        >>> store = Path(tempfile.mkdtemp())
        >>> t = StoreTable("timeline", store, TIMELINE_COLUMNS)
        >>> t.append([1.0, 0.7, 0.5])
        >>> c = read_since(store, "timeline")
        >>> t.append([2.0, 0.6, 0.5])
        >>> c2 = read_since(store, "timeline", c.next_offset, c.generation)
        >>> c2.rows.index.tolist(), c2.reset
        ([1], False)
        >>> t.close()
    """
    path = _table_file(store_dir, table)
    try:
        fd = os.open(confined(path), _OPEN_READ)
    except FileNotFoundError:
        return Chunk(None, 0, None, generation is not None, None)
    try:
        info = _read_info(fd, path)
        reset = (generation is not None and info.generation != generation) or offset > info.n_rows
        start = 0 if reset else max(int(offset), 0)
        arr = _read_rows(fd, info, start, info.n_rows)
    finally:
        os.close(fd)
    rows = _frame(arr, info.columns, info.int_columns, info.index_name, start)
    return Chunk(rows, start + len(arr), info.generation, reset, info)


class TableTail:
    """A long-lived tail on one table: the file stays open and its header parsed.

    Each ``read_new`` costs one ``stat`` and one ``pread`` whatever the table's length, so a
    process that follows a run for hours (a dashboard poller, a benchmark) pays per new row,
    not per row ever written. A table rewritten in the meantime (``truncate`` on resume
    replaces the file) is detected by its inode and read again from row 0.

    Example:
        >>> tail = TableTail("runs/demo/history", "timeline")  # doctest: +SKIP
        >>> rows, reset = tail.read_new()  # doctest: +SKIP
    """

    def __init__(self, store_dir: str | os.PathLike, table: str):
        self.path = _table_file(store_dir, table)
        self.offset = 0
        self.info: TableInfo | None = None
        self._fd: int | None = None
        self._ino: int | None = None

    def read_new(self) -> tuple[np.ndarray, bool]:
        """Rows added since the last call as an ``(n, k)`` array, and whether the table was
        rewritten (then the rows start at row 0 again). Empty while the table does not exist."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            reset = self.offset > 0
            self.close()
            self.offset = 0
            return np.empty((0, 0), dtype=_DTYPE), reset
        reset = False
        if self._fd is None or st.st_ino != self._ino:
            reset = self._fd is not None
            self.close()
            self._fd = os.open(confined(self.path), _OPEN_READ)
            self._ino = os.fstat(self._fd).st_ino
            self.info = _read_info(self._fd, self.path)
            self.offset = 0 if reset else self.offset
        k = len(self.info.columns)
        n_rows = (st.st_size - self.info.header_size) // (8 * k)
        arr = _read_rows(self._fd, self.info, self.offset, n_rows)
        self.offset += len(arr)
        return arr, reset

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> TableTail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HistoryReader:
    """Tails a history store: each ``poll()`` returns the rows added since the last one.

    Args:
        store_dir: the store (``<run_dir>/history``) or the run directory itself.
        tables: which tables to follow.

    Attributes:
        offsets: next row to read, per table.
        generations: generation seen last, per table.
        reset_tables: tables rewritten (or removed) since the previous poll: drop the rows kept
            for them; the rows ``poll`` returned for them start at row 0.

    Example:
        >>> reader = HistoryReader("runs/demo")  # doctest: +SKIP
        >>> new = reader.poll()  # doctest: +SKIP
        >>> if reader.reset: ...  # doctest: +SKIP
    """

    def __init__(self, store_dir: str | os.PathLike, tables: Iterable[str] = TABLES):
        self.store_dir = store_dir_of(store_dir)
        self.tables = tuple(tables)
        for t in self.tables:
            table_path(self.store_dir, t)  # validates the name
        self.offsets: dict[str, int] = dict.fromkeys(self.tables, 0)
        self.generations: dict[str, str | None] = dict.fromkeys(self.tables)
        self.reset_tables: set[str] = set()

    @property
    def reset(self) -> bool:
        """True if the last poll found a table rewritten; see ``reset_tables``."""
        return bool(self.reset_tables)

    def poll(self) -> dict[str, pd.DataFrame]:
        """New rows per table since the last poll (tables without new rows are left out)."""
        self.reset_tables = set()
        out = {}
        for t in self.tables:
            chunk = read_since(self.store_dir, t, self.offsets[t], self.generations[t])
            if chunk.reset:
                self.reset_tables.add(t)
            self.offsets[t] = chunk.next_offset
            self.generations[t] = chunk.generation
            if chunk.rows is not None and (len(chunk.rows) or chunk.reset):
                out[t] = chunk.rows
        return out


def history_files(run_dir: str | os.PathLike) -> list[Path]:
    """The table files of a run's store that exist now, in ``TABLES`` order (one directory
    scan; files of other names in ``history/`` are not the store's and are left out).

    Example:
        >>> [p.name for p in history_files("runs/demo")]  # doctest: +SKIP
        ['timeline.vbh', 'history.vbh']
    """
    folder = history_dir(run_dir)
    try:
        with os.scandir(confined(folder)) as it:
            names = {e.name for e in it}
    except OSError:
        return []
    return [folder / f"{t}{FILE_SUFFIX}" for t in TABLES if f"{t}{FILE_SUFFIX}" in names]


def store_dir_of(path: str | os.PathLike) -> Path:
    """A store directory given either it or the run directory that holds ``history/``."""
    p = Path(path)
    if any(table_path(p, t).exists() for t in TABLES):
        return p
    if history_dir(p).is_dir() or is_run_dir(p):
        return history_dir(p)
    return p


# ---------------------------------------------------------------------- writer side
class StoreTable:
    """One table of a store, the writer's side: rows in memory (a bytearray of records) and,
    with a store directory, its file, appended record by record.

    Only one process may write a store: a writer that finds more rows in the file than it
    holds refuses to append. ``trainer.history.HistoryTracker`` keeps one per table.

    Args:
        name: one of ``TABLES``.
        store: the store directory, or ``None`` to keep the rows in memory only.
        columns: the column names, or ``None`` until the first row fixes them
            (``set_columns``).
    """

    __slots__ = ("name", "columns", "store", "n", "buf", "fd", "pack", "_frame")

    def __init__(self, name: str, store: Path | None, columns: tuple[str, ...] | None = None):
        self.name = name
        self.store = store
        self.columns: tuple[str, ...] | None = None
        self.n = 0
        self.buf = bytearray()
        self.fd: int | None = None
        self.pack: Any = None
        self._frame: pd.DataFrame | None = None
        if columns is not None:
            self.set_columns(columns)

    def set_columns(self, columns: Sequence[str]) -> None:
        """Fix the column names (before the first row)."""
        self.columns = tuple(columns)
        self.pack = struct.Struct(f"<{len(self.columns)}d").pack

    @property
    def path(self) -> Path | None:
        """The table's file, ``None`` without a store."""
        return None if self.store is None else table_path(self.store, self.name)

    def append(self, vals: Iterable[float]) -> None:
        """Append one row: packed, then handed to the kernel with one ``os.write``.

        Raises:
            ValueError: the row does not have one number per column.
            HistoryFormatError: the file on disk has other columns.
            RuntimeError: the file holds rows this table does not (another writer).
        """
        try:
            rec = self.pack(*vals)
        except (struct.error, TypeError):
            raise ValueError(
                f"a {self.name} row needs {len(self.columns or ())} numbers "
                f"({', '.join(self.columns or ())}), got {vals!r}"
            ) from None
        if self.store is not None:
            with writing(self.path, shown=f"{self.store.name}/{self.path.name}"):
                fd = self.fd if self.fd is not None else self._open_writer()
                # one write per record: O_APPEND puts it at the end even if the file was cut
                done = os.write(fd, rec)
                if done != len(rec):
                    self._write_rest(fd, rec, done)
        self.buf += rec
        self.n += 1
        self._frame = None

    def _write_rest(self, fd: int, rec: bytes, done: int) -> None:
        """Finish a short write (signal, nearly full disk) so no torn record stays behind."""
        rest = memoryview(rec)[done:]
        while rest:
            n = os.write(fd, rest)
            if n == 0:
                raise OSError(
                    f"cannot append to history file {self.path}: the disk may be full; free "
                    "space and resume the run (a torn last record is dropped on reopening)"
                )
            rest = rest[n:]

    def _open_writer(self) -> int:
        path = self.path
        assert path is not None and self.columns is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, _OPEN_WRITE)
        except FileNotFoundError:
            atomic_write_bytes(path, _encode_header(self.name, self.columns, _new_generation()))
            fd = os.open(path, _OPEN_WRITE)
        try:
            info = _read_info(fd, path)
            if info.columns != self.columns:
                raise HistoryFormatError(
                    f"history file {path} has columns {list(info.columns)}, this run writes "
                    f"{list(self.columns)}; use a new run directory (or move the file away)"
                )
            size = os.fstat(fd).st_size
            torn = (size - info.header_size) % info.record_size
            if torn:
                # a writer killed mid-record left a partial record: drop it before appending
                os.ftruncate(fd, size - torn)
            if info.n_rows != self.n:
                raise RuntimeError(
                    f"history file {path} holds {info.n_rows} {self.name} rows but this tracker "
                    f"holds {self.n}: another process is writing to {self.store}; only one "
                    "trainer may write a run directory"
                )
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return fd

    def close(self) -> None:
        """Close the file; the next append reopens it (and checks it first)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def sync(self) -> None:
        """``fsync`` the file if it is open."""
        if self.fd is not None:
            os.fsync(self.fd)

    def array(self) -> np.ndarray:
        """All rows as an ``(n, k)`` float64 array (a copy)."""
        k = len(self.columns or ()) or 1
        # copy: a numpy view would pin the bytearray and forbid further appends
        return np.frombuffer(self.buf, dtype=_DTYPE, count=self.n * k).reshape(self.n, k).copy()

    def frame(self) -> pd.DataFrame:
        """All rows as a DataFrame, as ``read_table`` returns them (built once per change)."""
        if self._frame is None:
            int_columns, index_name = _TABLE_KINDS[self.name]
            self._frame = _frame(self.array(), self.columns or (), int_columns, index_name)
        return self._frame

    def tail(self, n: int) -> pd.DataFrame:
        """The last ``n`` rows as a DataFrame, without building the whole one.

        Raises:
            ValueError: the table has no columns yet (no row was ever appended).
        """
        if self.columns is None:
            raise ValueError(f"the {self.name} table has no rows yet")
        k = len(self.columns)
        lo = max(self.n - int(n), 0)
        arr = np.frombuffer(self.buf, dtype=_DTYPE, count=(self.n - lo) * k, offset=lo * 8 * k)
        int_columns, index_name = _TABLE_KINDS[self.name]
        return _frame(arr.reshape(-1, k).copy(), self.columns, int_columns, index_name, lo)

    def tail_column(self, column: str, n: int) -> np.ndarray:
        """The last ``n`` values of ``column`` (no DataFrame, so no pandas import).

        Raises:
            ValueError: the table has no rows yet or no such column.
        """
        if self.columns is None or column not in self.columns:
            raise ValueError(f"the {self.name} table has no column {column!r} (yet)")
        k = len(self.columns)
        lo = max(self.n - int(n), 0)
        arr = np.frombuffer(self.buf, dtype=_DTYPE, count=(self.n - lo) * k, offset=lo * 8 * k)
        return arr.reshape(-1, k)[:, self.columns.index(column)].copy()

    def save_to(self, store: Path) -> None:
        """Write the rows to ``store`` as a new file (new generation), atomically; an empty
        table writes nothing."""
        if self.columns is None or self.n == 0:
            return
        header = _encode_header(self.name, self.columns, _new_generation())
        atomic_write_bytes(table_path(store, self.name), header + bytes(self.buf))

    def replace(self, arr: np.ndarray, columns: tuple[str, ...] | None) -> None:
        """Set the in-memory rows (no file I/O)."""
        if columns is not None:
            self.set_columns(columns)
        self.buf = bytearray(np.ascontiguousarray(arr, dtype=_DTYPE))  # one copy
        self.n = len(arr)
        self._frame = None

    def rewrite(self, keep: np.ndarray) -> None:
        """Keep only rows ``keep`` (bool mask), in memory and, atomically, on disk."""
        arr = self.array()[keep]
        self.close()
        self.replace(arr, None)
        path = self.path
        if path is not None and path.exists():
            assert self.columns is not None
            header = _encode_header(self.name, self.columns, _new_generation())
            atomic_write_bytes(path, header + bytes(self.buf))


def _new_generation() -> str:
    """A random id for a newly written file (readers compare it to notice rewrites)."""
    return secrets.token_hex(8)

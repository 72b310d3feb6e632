"""trainer.history: the tracker, the append-only store, readers in other processes, kills."""

from __future__ import annotations

import os
import random
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer import plotting
from trainer.history import HISTORY_COLUMNS, HistoryTracker, loadhistorytracker
from trainer.runs.history_store import (
    MAGIC,
    HistoryFormatError,
    HistoryReader,
    TableTail,
    history_files,
    read_since,
    read_table,
    table_info,
    table_path,
)

REPO = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).with_name("history_writer.py")
sys.path.insert(0, str(WRITER.parent))
from history_writer import HISTORY_EVERY, history_row, row  # noqa: E402


def fill(h: HistoryTracker, n: int = 25, start: int = 0) -> None:
    for i in range(start, start + n):
        h.update_timeline(row(i))
        if i % HISTORY_EVERY == 0:
            h.update_history(history_row(i))


def expected_timeline(n: int, start: int = 0) -> np.ndarray:
    return np.array([row(i) for i in range(start, start + n)]).reshape(-1, 3)


# ---------------------------------------------------------------------- in-process behaviour
def test_columns_dtypes_and_index():
    h = HistoryTracker()
    fill(h, 25)
    assert list(h.history.columns) == list(HISTORY_COLUMNS)
    assert h.history["steps"].dtype == np.int64
    assert all(h.history[c].dtype == np.float64 for c in HISTORY_COLUMNS[1:])
    assert h.history["steps"].tolist() == [0, 10, 20]
    assert list(h.timeline.columns) == ["time", "loss", "batch_char"]
    assert h.timeline.index.name == "step" and h.timeline.index.tolist() == list(range(25))
    np.testing.assert_array_equal(h.timeline.to_numpy(), expected_timeline(25))
    assert h.debug_outputs is None and h.regression is None and h.regression_track is None


def test_round_trip_all_tables(tmp_path):
    h = HistoryTracker()
    fill(h, 31)
    h.register_debug_output_names(["ce", "l2"])
    for i in range(4):
        h.update_debug_outputs([i, 1.5 * i, i / 3, -i])
    for i in range(3):
        h.update_regression([i, i + 1.0], np.array([[i * 2.0], [0.5]]))
    h.save(tmp_path / "store")
    back = loadhistorytracker(tmp_path / "store")
    for name in ("timeline", "history", "debug_outputs", "regression"):
        pd.testing.assert_frame_equal(getattr(back, name), getattr(h, name))
    assert back.debug_output_names == ["ce", "l2"]
    assert list(back.debug_outputs.columns) == ["step", "loss", "ce", "l2"]
    assert back.debug_outputs["step"].dtype == np.int64
    assert list(back.regression.columns) == ["pred_0", "pred_1", "target_0", "target_1"]
    pred, target = back.regression_track
    np.testing.assert_array_equal(pred, [[0, 1], [1, 2], [2, 3]])
    np.testing.assert_array_equal(target, [[0, 0.5], [2, 0.5], [4, 0.5]])


def test_store_is_written_at_every_update_and_loads_from_the_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    h = HistoryTracker(run_dir / "history")
    assert not run_dir.exists(), "the store is created on the first write, not before"
    fill(h, 12)
    # no save, no close: another reader sees everything already
    assert table_info(run_dir / "history", "timeline").n_rows == 12
    back = loadhistorytracker(run_dir)  # a run directory holding history/
    pd.testing.assert_frame_equal(back.timeline, h.timeline)
    pd.testing.assert_frame_equal(back.history, h.history)
    h.close()


def test_history_files_lists_the_tables_written_so_far(tmp_path):
    run_dir = tmp_path / "run"
    assert history_files(run_dir) == []  # no store yet
    with HistoryTracker(run_dir / "history") as h:
        h.update_history(history_row(0))
        h.update_timeline(row(0))
        (run_dir / "history" / "notes.txt").write_text("not a table")
        # TABLES order, whatever the order of the first writes; files of other names left out
        assert history_files(run_dir) == [
            table_path(run_dir / "history", "timeline"),
            table_path(run_dir / "history", "history"),
        ]


def test_reopened_store_continues(tmp_path):
    store = tmp_path / "history"
    with HistoryTracker(store) as h:
        fill(h, 15)
    h2 = HistoryTracker(store)
    assert h2.n_rows("timeline") == 15  # an existing store is loaded
    fill(h2, 10, start=15)
    h2.close()
    np.testing.assert_array_equal(read_table(store, "timeline").to_numpy(), expected_timeline(25))
    assert read_table(store, "history")["steps"].tolist() == [0, 10, 20]


@pytest.mark.parametrize(
    ("start", "stop", "index"),
    [(0, None, range(20)), (5, 8, range(5, 8)), (-3, None, range(17, 20)), (18, 99, range(18, 20)),
     (20, None, range(20, 20))],
)  # fmt: skip
def test_read_table_slices(tmp_path, start, stop, index):
    with HistoryTracker(tmp_path) as h:
        fill(h, 20)
    df = read_table(tmp_path, "timeline", start, stop)
    assert df.index.tolist() == list(index) and df.index.name == "step"
    np.testing.assert_array_equal(df.to_numpy(), expected_timeline(len(index), index.start))


def test_read_table_of_a_missing_table(tmp_path):
    assert table_info(tmp_path, "debug") is None
    with pytest.raises(FileNotFoundError, match="'debug' does not exist"):
        read_table(tmp_path, "debug")
    with pytest.raises(ValueError, match="unknown history table 'losses'"):
        table_info(tmp_path, "losses")


def test_truncate_rewrites_and_reader_rereads(tmp_path):
    h = HistoryTracker(tmp_path)
    fill(h, 30)
    h.register_debug_output_names(["a"])
    for i in range(30):
        h.update_debug_outputs([i, 0.1, 0.2])
    reader = HistoryReader(tmp_path)
    first = reader.poll()
    assert len(first["timeline"]) == 30 and not reader.reset
    gen_before = table_info(tmp_path, "timeline").generation
    h.truncate(14)
    assert table_info(tmp_path, "timeline").generation != gen_before
    assert h.n_rows("timeline") == 15
    assert h.history["steps"].tolist() == [0, 10]
    assert h.debug_outputs["step"].max() == 14
    again = reader.poll()
    assert reader.reset_tables == {"timeline", "history", "debug"}
    assert again["timeline"].index.tolist() == list(range(15))  # re-read from row 0
    fill(h, 5, start=15)  # the writer appends to the new file
    new = reader.poll()
    assert not reader.reset and new["timeline"].index.tolist() == list(range(15, 20))
    np.testing.assert_array_equal(
        read_table(tmp_path, "timeline").to_numpy(), expected_timeline(20)
    )
    # nothing after the step: no rewrite, same generation
    gen = table_info(tmp_path, "timeline").generation
    h.truncate(100)
    assert table_info(tmp_path, "timeline").generation == gen
    assert reader.poll() == {} and not reader.reset
    h.close()


def test_read_since_with_a_stale_generation(tmp_path):
    h = HistoryTracker(tmp_path)
    fill(h, 10)
    c = read_since(tmp_path, "timeline")
    assert (c.next_offset, c.reset) == (10, False)
    h.truncate(3)
    c2 = read_since(tmp_path, "timeline", c.next_offset, c.generation)
    assert c2.reset and c2.rows.index.tolist() == [0, 1, 2, 3] and c2.next_offset == 4
    missing = read_since(tmp_path, "regression", 0, "0123")
    assert missing.rows is None and missing.reset  # the table vanished
    h.close()


def test_torn_tail_is_ignored_by_readers_and_cut_by_the_writer(tmp_path):
    h = HistoryTracker(tmp_path)
    fill(h, 5)
    h.close()
    path = table_path(tmp_path, "timeline")
    full_size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(struct.pack("<d", 123.0) + b"\x01\x02\x03\x04")  # half a record
    assert table_info(tmp_path, "timeline").n_rows == 5
    assert len(read_table(tmp_path, "timeline")) == 5
    reader = HistoryReader(tmp_path)
    assert len(reader.poll()["timeline"]) == 5
    assert len(loadhistorytracker(tmp_path).timeline) == 5
    h2 = HistoryTracker(tmp_path)
    fill(h2, 1, start=5)
    h2.close()
    assert path.stat().st_size == full_size + 24  # the partial record is gone
    np.testing.assert_array_equal(read_table(tmp_path, "timeline").to_numpy(), expected_timeline(6))
    assert reader.poll()["timeline"].index.tolist() == [5]


def _header(version: int = 1, size: int = 64, body: bytes = b"{}") -> bytes:
    return struct.pack("<8sII", MAGIC, version, size) + body.ljust(min(size, 4096) - 16)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"", "too short"),
        (b"table,loss\n1,2\n3,4\n", "does not start with the VoxelBoard history magic"),
        (_header(version=99), "format version 99"),
        (_header(size=1 << 30), "header size"),
        (_header(body=b"{not json"), "corrupt header"),
        (_header(body=b'{"table": "timeline"}'), "corrupt header"),
        (_header(size=96, body=b'{"table":"timeline","columns":["a"],"dtype":"<f4","generation":"x"}'),
         "stores '<f4' records"),
    ],
)  # fmt: skip
def test_corrupt_header_errors_name_the_file(tmp_path, content, match):
    path = table_path(tmp_path, "timeline")
    path.write_bytes(content)
    pattern = f"{re.escape(str(path))}.*{match}|{match}.*{re.escape(str(path))}"
    with pytest.raises(HistoryFormatError, match=pattern):
        table_info(tmp_path, "timeline")
    with pytest.raises(HistoryFormatError, match=pattern):
        loadhistorytracker(tmp_path)
    with pytest.raises(HistoryFormatError, match=re.escape(str(path))):
        HistoryTracker(tmp_path)


def test_store_of_another_layout_is_refused(tmp_path):
    h = HistoryTracker(tmp_path)
    h.update_debug_outputs([0, 1.0, 2.0])  # one unnamed debug output
    h.close()
    h2 = HistoryTracker(tmp_path)
    assert h2.debug_output_names == ["debug_0"]
    with pytest.raises(
        ValueError, match=r"already named \['debug_0'\].*cannot rename them to \['x'\]"
    ):
        h2.register_debug_output_names(["x"])


def test_second_writer_is_detected(tmp_path):
    a = HistoryTracker(tmp_path)
    b = HistoryTracker(tmp_path)  # opened before a wrote anything
    fill(a, 3)
    with pytest.raises(RuntimeError, match="holds 3 timeline rows but this tracker holds 0"):
        fill(b, 1)
    a.close()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda h: h.update_history([1, 2, 3]), r"history row needs 10 numbers \(steps, time"),
        (lambda h: h.update_timeline([1.0, "x", 2.0]), "timeline row needs 3 numbers"),
        (lambda h: h.update_regression([1, 2], [3]), "same non-zero length, got 2 and 1"),
        (lambda h: (h.update_regression([1], [2]), h.update_regression([1, 2], [3, 4])),
         r"length 1 \(fixed by the first call\), got 2"),
        (lambda h: (h.register_debug_output_names(["a", "b"]), h.update_debug_outputs([0, 1, 2])),
         "k = 2 registered names"),
        (lambda h: h.n_rows("loss"), "unknown history table 'loss'"),
        (lambda h: h.plot(), "needs save_name"),
    ],
)  # fmt: skip
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(HistoryTracker())


def test_tail_and_n_rows():
    h = HistoryTracker()
    fill(h, 50)
    t = h.tail("timeline", 3)
    assert t.index.tolist() == [47, 48, 49]
    np.testing.assert_array_equal(t.to_numpy(), expected_timeline(3, 47))
    assert h.tail("history", 100)["steps"].tolist() == [0, 10, 20, 30, 40]
    assert h.n_rows("history") == 5


# ---------------------------------------------------------------------- plots
def test_plot_writes_html_next_to_the_store(tmp_path):
    h = HistoryTracker(tmp_path / "run" / "history")
    fill(h, 300)
    written = h.plot()
    names = sorted(p.name for p in written)
    assert names == ["0-history.history.html", "0-history.timeline.html"]
    run = tmp_path / "run"
    timeline_html = (run / "0-history.timeline.html").read_text()
    assert "moving average (200)" in timeline_html and 'src="plotly.min.js"' in timeline_html
    assert (run / "plotly.min.js").stat().st_size > 100_000  # the pages work offline
    assert "valid loss" in (run / "0-history.history.html").read_text()
    h.register_debug_output_names(["ce"])
    h.update_debug_outputs([300, 1.0, 0.5])
    h.update_regression([1.0], [1.1])
    more = h.plot(str(tmp_path / "elsewhere" / "x"))
    assert sorted(p.name for p in more) == [
        "x.debug.html", "x.history.html", "x.regression.html", "x.timeline.html"]  # fmt: skip
    assert not list(tmp_path.rglob("*.tmp"))
    h.close()


def test_timeline_figure_downsamples_but_keeps_spikes():
    n = 200_000
    loss = np.full(n, 1.0)
    loss[123_457] = 50.0
    tl = pd.DataFrame(
        {"time": np.arange(n) * 0.1, "loss": loss, "batch_char": np.full(n, 0.3)},
        index=pd.RangeIndex(n, name="step"),
    )
    fig = plotting.timeline_report(tl, max_points=4000)
    raw = fig.data[0]
    assert len(raw.x) <= 4002 and 123_457 in set(raw.x) and 50.0 in set(raw.y)
    assert fig.data[1].name == "moving average (200)"


def test_figures_of_empty_tables():
    h = HistoryTracker()
    for fig in (plotting.timeline_report(h.timeline), plotting.history_report(h.history)):
        assert "no" in fig.layout.annotations[-1].text


# ---------------------------------------------------------------------- real processes
def _start_writer(store: Path, counter: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(store), str(counter), *extra],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _completed(counter: Path) -> int:
    return struct.unpack("<q", counter.read_bytes())[0]


def _check_store(store: Path, done: int) -> None:
    """All ``done`` completed steps are there, intact; at most the step in flight is extra."""
    if not store.exists():
        assert done == 0
        return
    h = loadhistorytracker(store)
    n = h.n_rows("timeline")
    assert n in (done, done + 1), f"{done} steps completed, store has {n} timeline rows"
    np.testing.assert_array_equal(h.timeline.to_numpy(), expected_timeline(n))
    steps = h.history["steps"].tolist()
    allowed = [list(range(0, done, HISTORY_EVERY))]
    if n == done + 1:
        allowed.append(list(range(0, done + 1, HISTORY_EVERY)))
    assert steps in allowed
    np.testing.assert_array_equal(h.history.to_numpy(), [history_row(s) for s in steps])


def test_sigkilled_writer_leaves_a_loadable_store(tmp_path):
    rng = random.Random(1234)
    continued = tmp_path / "continued"
    counter_continued = tmp_path / "counter-continued"
    counter_continued.write_bytes(bytes(8))
    kills_while_writing = 0
    for round_ in range(20):
        if round_ % 2:
            store, counter = continued, counter_continued
        else:
            store, counter = tmp_path / f"fresh-{round_}", tmp_path / f"counter-{round_}"
            counter.write_bytes(bytes(8))
        before = _completed(counter)
        proc = _start_writer(store, counter)
        try:
            if round_ % 4 < 3:  # mostly kill mid-stream, sometimes during start-up
                deadline = time.monotonic() + 30
                while _completed(counter) == before and time.monotonic() < deadline:
                    time.sleep(0.001)
                    assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(rng.uniform(0, 0.05))
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()
        done = _completed(counter)
        if round_ % 4 < 3:
            kills_while_writing += done > before
        _check_store(store, done)
    assert kills_while_writing >= 10


def test_reader_tails_a_writing_process_and_sees_every_row_once(tmp_path):
    n_steps = 30_000
    counter = tmp_path / "counter"
    counter.write_bytes(bytes(8))
    store = tmp_path / "run" / "history"
    reader = HistoryReader(store)
    proc = _start_writer(store, counter, str(n_steps), "500")
    parts: dict[str, list[pd.DataFrame]] = {"timeline": [], "history": []}
    polls_with_rows = 0
    try:
        while True:
            finished = proc.poll() is not None
            new = reader.poll()
            assert not reader.reset
            polls_with_rows += bool(new)
            for table, rows in new.items():
                parts[table].append(rows)
            if finished:
                break
            time.sleep(0.001)
    finally:
        proc.kill()
        proc.wait()
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert proc.returncode == 0, stderr
    timeline = pd.concat(parts["timeline"])
    assert timeline.index.tolist() == list(range(n_steps))  # each row once, in order
    np.testing.assert_array_equal(timeline.to_numpy(), expected_timeline(n_steps))
    history = pd.concat(parts["history"])
    assert history["steps"].tolist() == list(range(0, n_steps, HISTORY_EVERY))
    assert polls_with_rows > 1, "the reader should have seen the store grow"


def test_table_tail_follows_new_rows_and_a_rewrite(tmp_path):
    store = tmp_path / "history"
    with TableTail(store, "timeline") as tail:
        rows, reset = tail.read_new()
        assert rows.size == 0 and not reset  # no table yet
        h = HistoryTracker(store)
        for i in range(5):
            h.update_timeline([float(i), 1.0 / (i + 1), 0.5])
        rows, reset = tail.read_new()
        assert rows[:, 0].tolist() == [0, 1, 2, 3, 4] and not reset
        h.update_timeline([5.0, 0.1, 0.5])
        rows, reset = tail.read_new()
        assert rows[:, 0].tolist() == [5.0] and not reset
        assert tail.read_new()[0].shape[0] == 0
        h.truncate(2)  # a resume rewrites the file: the tail starts again from row 0
        rows, reset = tail.read_new()
        assert reset and rows[:, 0].tolist() == [0, 1, 2]
        h.close()


def test_extra_history_columns_follow_the_standard_ones_and_rows_go_by_name(tmp_path):
    store = tmp_path / "history"
    with HistoryTracker(store, extra_history_columns=("valid_iou_0", "valid_iou_mean")) as h:
        h.update_history(dict(steps=0, time=1.0, valid_loss=0.5, valid_iou_0=0.25))
    info = table_info(store, "history")
    assert info.columns == (*HISTORY_COLUMNS, "valid_iou_0", "valid_iou_mean")
    row = read_table(store, "history").iloc[0]
    assert (row["steps"], row["valid_loss"], row["valid_iou_0"]) == (0, 0.5, 0.25)
    assert np.isnan(row["train_loss"]) and np.isnan(row["valid_iou_mean"])
    # a store of the ten standard columns (an older run) resumed by a writer with extras
    old = tmp_path / "old"
    with HistoryTracker(old) as h:
        h.update_history([0, 1.0, 0.6, 0.7, 0.0, 10.0, 12.0, 0.01, 0.9, 0.0])
    with HistoryTracker(old, extra_history_columns=("valid_iou_mean",)) as h:
        h.update_history(dict(steps=5, time=2.0, valid_loss=0.4, valid_iou_mean=0.3))
    frame = read_table(old, "history")
    assert tuple(frame.columns) == HISTORY_COLUMNS and list(frame["steps"]) == [0, 5]

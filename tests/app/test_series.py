"""Run-page series: downsampling glue, incremental EMA, incremental polls of a real history store."""

from __future__ import annotations

import os

import numpy as np
import pytest

from app import series
from trainer.history import HistoryTracker
from trainer.smoothing import ema_debiased, sma


def timeline_rows(start: int, stop: int) -> list[list[float]]:
    # noise that depends on the row only, so the rows are the same however they are appended
    return [
        [0.5 * i, 1.0 / (1 + 0.01 * i) + 0.001 * (i * 7919 % 97), 0.5] for i in range(start, stop)
    ]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "run" / "history"
    tracker = HistoryTracker(path)
    yield path, tracker
    tracker.close()


def append(tracker: HistoryTracker, start: int, stop: int) -> None:
    for row in timeline_rows(start, stop):
        tracker.update_timeline(row)


# ------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(("n", "max_points"), [(10, 100), (10_000, 100), (10_001, 2000), (3, 2)])
def test_downsample_indices_bounded_keeps_ends_and_spikes(n, max_points):
    y = np.sin(np.arange(n) / 7.0)
    y[n // 3] = 50.0
    y[n // 2] = -50.0
    idx = series.downsample_indices(y, max_points)
    assert len(idx) <= max_points + 2  # min and max per bucket plus first and last point
    assert idx[0] == 0 and idx[-1] == n - 1
    assert {n // 3, n // 2} <= set(idx.tolist())
    assert np.all(np.diff(idx) > 0)
    if n <= max_points:
        assert len(idx) == n


@pytest.mark.parametrize("weight", [0.0, 0.6, 0.99])
@pytest.mark.parametrize("cuts", [[1], [7, 8, 9], [1, 2, 3, 50]])
def test_continue_ema_in_chunks_equals_ema_debiased_of_whole_series(weight, cuts):
    values = np.random.default_rng(1).normal(1.0, 0.3, 100)
    values[[5, 40]] = np.nan  # passed through, accumulator untouched
    state, parts = None, []
    for chunk in np.split(values, cuts):
        out, state = series.continue_ema(chunk, state, weight)
        parts.append(out)
    whole = ema_debiased(values, weight)
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-12, equal_nan=True)
    assert state[1] == 98


def test_continue_ema_of_empty_chunk_keeps_state():
    out, state = series.continue_ema(np.empty(0), (0.25, 3), 0.6)
    assert len(out) == 0 and state == (0.25, 3)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"mode": "median"}, "smoothing mode 'median'"),
        ({"weight": 1.0}, r"\[0, 1\)"),
        ({"window": 0}, ">= 1"),
    ],
)
def test_smoothing_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        series.Smoothing(**kw)


def test_run_dir_for_accepts_only_runs_directly_under_runs_dir(tmp_path):
    runs = tmp_path / "runs"
    (runs / "good.run-1").mkdir(parents=True)
    (runs / ".hidden").mkdir()
    (runs / "a_file").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, runs / "escape")
    os.symlink(runs / "good.run-1", runs / "alias")
    assert series.run_dir_for(runs, "good.run-1") == runs / "good.run-1"
    assert series.run_dir_for(runs, "alias") == runs / "alias"  # a link that stays inside
    for bad in [
        "..",
        ".",
        "../outside",
        "good.run-1/..",
        "/etc",
        ".hidden",
        "a_file",
        "escape",
        "missing",
        "",
        None,
        5,
        "x" * 101,
    ]:
        assert series.run_dir_for(runs, bad) is None, bad
    assert series.run_dir_for(None, "good.run-1") is None


# ---------------------------------------------------------------------- polling a store


def test_missing_store_loads_empty_and_polls_ask_for_reload_once_rows_exist(tmp_path):
    store = tmp_path / "history"
    tl = series.load_timeline(store)
    assert tl.n_total == 0 and len(tl.x) == 0
    up = series.poll_timeline(store, tl.cursor)  # a queued run: nothing to send yet
    assert len(up.x) == 0 and up.cursor == tl.cursor
    tracker = HistoryTracker(store)
    append(tracker, 0, 3)
    tracker.close()
    assert series.poll_timeline(store, tl.cursor) is None  # a table appeared: build it whole
    assert series.load_timeline(store).n_total == 3


def test_poll_returns_only_new_rows_and_continues_the_ema(store):
    path, tracker = store
    append(tracker, 0, 500)
    smoothing = series.Smoothing("ema", 0.9)
    tl = series.load_timeline(path, smoothing=smoothing, max_points=100)
    assert tl.n_total == 500 and tl.n_shown == len(tl.x) <= 102
    assert tl.x[-1] == 499
    append(tracker, 500, 503)
    up = series.poll_timeline(path, tl.cursor, smoothing=smoothing, max_points=100)
    assert up.x.tolist() == [500, 501, 502]
    assert up.n_total == 503 and up.n_shown == tl.n_shown + 3
    all_loss = np.array([r[1] for r in timeline_rows(0, 503)])
    np.testing.assert_allclose(up.loss, all_loss[500:])
    np.testing.assert_allclose(up.smoothed, ema_debiased(all_loss, 0.9)[500:], rtol=1e-12)
    again = series.poll_timeline(path, up.cursor, smoothing=smoothing, max_points=100)
    assert len(again.x) == 0 and again.cursor["rows"] == 503


def test_poll_continues_the_moving_average_and_uses_time_axis(store):
    path, tracker = store
    append(tracker, 0, 40)
    smoothing = series.Smoothing("sma", window=8)
    tl = series.load_timeline(path, smoothing=smoothing, x_axis="time")
    append(tracker, 40, 45)
    up = series.poll_timeline(path, tl.cursor, smoothing=smoothing, x_axis="time")
    all_loss = np.array([r[1] for r in timeline_rows(0, 45)])
    np.testing.assert_allclose(up.smoothed, sma(all_loss, 8)[40:], rtol=1e-12)
    assert up.x.tolist() == [0.5 * i for i in range(40, 45)]


def test_poll_with_other_settings_or_after_truncate_asks_for_reload(store):
    path, tracker = store
    append(tracker, 0, 50)
    tl = series.load_timeline(path)
    assert series.poll_timeline(path, tl.cursor, smoothing=series.Smoothing("ema", 0.5)) is None
    assert series.poll_timeline(path, tl.cursor, x_axis="time") is None
    assert series.poll_timeline(path, None) is None
    tracker.truncate(20)  # a resume: the file is rewritten with a new generation
    append(tracker, 21, 80)  # ... and grows past the old row count again
    assert series.poll_timeline(path, tl.cursor) is None
    reloaded = series.load_timeline(path)
    assert reloaded.n_total == 80 and reloaded.cursor["generation"] != tl.cursor["generation"]


def test_read_new_rows_reload_when_table_has_fewer_rows_than_cursor(store):
    path, tracker = store
    append(tracker, 0, 10)
    cursor = series.load_timeline(path).cursor
    new = series.read_new_rows(path, "timeline", {**cursor, "rows": 11})
    assert new.reload
    new = series.read_new_rows(path, "timeline", {**cursor, "rows": 7}, context=3)
    assert not new.reload and new.start == 4 and new.first_new == 3 and new.n_rows == 10
    assert new.frame.index.tolist() == list(range(4, 10))


def test_appended_points_stay_bounded(store):
    path, tracker = store
    append(tracker, 0, 30)
    tl = series.load_timeline(path, max_points=20)
    cursor, shown = tl.cursor, tl.n_shown
    reloads = 0
    for start in range(30, 130, 10):
        append(tracker, start, start + 10)
        up = series.poll_timeline(path, cursor, max_points=20)
        if up is None:  # the browser would hold more than 2 * max_points: rebuild
            reloads += 1
            up = series.load_timeline(path, max_points=20)
            assert up.n_shown <= 22
        cursor, shown = up.cursor, up.n_shown
        assert shown <= 40
        assert up.x[-1] == start + 9  # the newest point is always drawn
    assert reloads >= 2


def test_a_big_batch_of_new_rows_is_downsampled_before_it_is_sent(store):
    path, tracker = store
    append(tracker, 0, 10)
    tl = series.load_timeline(path, max_points=400)
    append(tracker, 10, 2010)
    up = series.poll_timeline(path, tl.cursor, max_points=400)
    assert len(up.x) <= 102 and up.x[-1] == 2009 and up.n_total == 2010


def test_history_poll_reads_only_new_rows(store):
    path, tracker = store
    for i in range(5):
        tracker.update_history([100 * i, 10.0 * i, 1.0, 1.1, 0.0, 0.3, 0.4, 0.01, 0.9, 0.0])
    hi = series.load_history(path)
    assert set(hi.curves) == set(series.HISTORY_COLUMNS)
    assert hi.curves["valid_loss"][0].tolist() == [0, 100, 200, 300, 400]
    tracker.update_history([500, 50.0, 0.5, float("nan"), 0.0, 0.2, 0.3, 0.01, 0.9, 0.0])
    up = series.poll_history(path, hi.cursor)
    assert up.curves["train_loss"][0].tolist() == [500] and up.curves["train_loss"][1].tolist() == [
        0.5
    ]
    assert np.isnan(up.curves["valid_loss"][1][0])  # kept, so the browser shows the gap
    assert up.n_total == 6 and up.cursor["rows"] == 6
    assert series.poll_history(path, hi.cursor, x_axis="time") is None


def test_compare_curves_skips_runs_without_the_column(tmp_path):
    runs = {}
    for name, n in [("a", 3), ("b", 0)]:
        d = tmp_path / name
        runs[name] = d
        if n:
            with HistoryTracker(d / "history") as h:
                for i in range(n):
                    h.update_history([i, i, 1.0, 2.0 - i, 0, 0, 0, 0, 0, 0])
    curves, totals = series.compare_curves(runs, "valid_loss")
    assert list(curves) == ["a"] and totals == {"a": 3}
    assert curves["a"][1].tolist() == [2.0, 1.0, 0.0]

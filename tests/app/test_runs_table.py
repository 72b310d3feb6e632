"""The runs grid's pure parts and its sparkline reader (app/runs_table.py).

Browser behaviour of the grid (renderers, sorting, selection, polling):
tests/app/test_experiments_browser.py.
"""

from __future__ import annotations

import math
import random

import pytest

from app.components import STATE_COLORS
from app.runs_table import (
    SPARK_POINTS,
    Sparklines,
    badge_looks,
    bucket_width,
    column_defs,
    contrast,
    sparkline_points,
)
from trainer.history import HistoryTracker
from trainer.runs.history_store import table_path


def history_row(step: int, valid_loss: float) -> list[float]:
    """steps, time, train_loss, valid_loss, loss_gain, train_err, valid_err, lr, mom, gradnetrate"""
    return [step, step, 1.0, valid_loss, 0.0, 0.3, 0.3, 0.01, 0.9, 0.0]


@pytest.mark.parametrize(
    "n, max_points, width",
    [
        (0, 50, 1),
        (1, 50, 1),
        (50, 50, 1),
        (51, 50, 2),
        (100, 50, 2),
        (101, 50, 4),
        (10**6, 50, 32768),
    ],
)
def test_bucket_width_is_the_smallest_power_of_two_that_fits(n, max_points, width):
    assert bucket_width(n, max_points) == width
    assert math.ceil(n / width) <= max_points


@pytest.mark.parametrize(
    "values, max_points, points",
    [
        ([], 50, []),
        ([2.0], 50, [2.0]),
        ([4, 3, 2, 1], 2, [3.5, 1.5]),
        ([4, 3, 2], 2, [3.5, 2.0]),
        ([1, math.nan, math.nan, math.nan, 5], 2, [1.0, 5.0]),  # NaN left out of the mean
        ([math.nan, math.nan, 1, 2], 2, [None, 1.5]),  # a bucket without values is a gap
        ([0.123456789], 5, [0.1235]),  # 4 significant digits
    ],
)
def test_sparkline_points_are_bucket_means(values, max_points, points):
    assert sparkline_points(values, max_points) == points


def test_bad_max_points_is_refused_with_its_value():
    with pytest.raises(ValueError, match="max_points 0: expected at least 1"):
        sparkline_points([1.0], 0)


def test_sparklines_read_appended_rows_and_equal_the_whole_history(tmp_path):
    run_dir = tmp_path / "run"
    tracker = HistoryTracker(run_dir / "history")
    lines = Sparklines(max_points=7)
    rng = random.Random(0)
    values: list[float] = []
    try:
        assert lines.points(run_dir) == []  # no history yet
        for _ in range(40):
            for _ in range(rng.randint(0, 9)):
                v = math.nan if rng.random() < 0.1 else rng.random()
                values.append(v)
                tracker.update_history(history_row(len(values), v))
            tracker.sync()
            assert lines.points(run_dir) == sparkline_points(values, 7)
        assert len(values) > 7 * 16  # the buckets were merged several times
    finally:
        tracker.close()


def test_sparklines_start_again_when_a_resume_truncates_the_history(tmp_path):
    run_dir = tmp_path / "run"
    tracker = HistoryTracker(run_dir / "history")
    lines = Sparklines()
    try:
        for step in range(100):
            tracker.update_history(history_row(step, 10.0))
        tracker.sync()
        assert lines.points(run_dir) == [10.0] * 50
        tracker.truncate(9)  # rows of steps 0..9 stay, in a new generation of the file
        tracker.update_history(history_row(10, 1.0))
        tracker.sync()
        assert lines.points(run_dir) == [10.0] * 10 + [1.0]
    finally:
        tracker.close()


def test_a_corrupt_history_gives_no_sparkline_and_no_error(tmp_path):
    store = tmp_path / "run" / "history"
    store.mkdir(parents=True)
    table_path(store, "history").write_bytes(b"\x00garbage" * 10)
    assert Sparklines().points(tmp_path / "run") == []


def test_sparklines_hold_at_most_max_runs(tmp_path):
    lines = Sparklines(max_runs=2)
    for name in "abc":
        tracker = HistoryTracker(tmp_path / name / "history")
        tracker.update_history(history_row(0, 1.0))
        tracker.close()
        assert lines.points(tmp_path / name) == [1.0]
    assert len(lines) == 2


def test_every_state_badge_has_readable_text():
    looks = badge_looks()
    assert set(looks) == set(STATE_COLORS)
    for state, look in looks.items():
        assert contrast(look["background"], look["color"]) >= 4.5, state


def test_contrast_matches_the_wcag_examples():
    assert contrast("#ffffff", "#000000") == pytest.approx(21.0)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)


def test_columns_have_unique_fields_and_readable_headers():
    defs = column_defs()
    fields = [c["field"] for c in defs]
    assert len(fields) == len(set(fields))
    assert all(len(c["headerName"]) >= 2 for c in defs)
    assert {"name", "state", "progress", "valid_curve", "issue"} <= set(fields)
    assert SPARK_POINTS <= 50


def test_the_rows_signature_changes_with_any_cell_and_only_then():
    from app.runs_table import rows_signature

    rows = [{"id": "a", "state": "running", "step": 3, "spark": [1.0, 0.5]}, {"id": "b"}]
    same = [{"spark": [1.0, 0.5], "step": 3, "state": "running", "id": "a"}, {"id": "b"}]
    assert rows_signature(rows) == rows_signature(same)  # key order is no change
    for changed in (
        [{**rows[0], "step": 4}, rows[1]],
        [{**rows[0], "spark": [1.0, 0.4]}, rows[1]],
        [rows[1], rows[0]],  # the order is what the grid shows
        rows[:1],
    ):
        assert rows_signature(changed) != rows_signature(rows)

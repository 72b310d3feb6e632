"""Figure builders: trace layout, point-count note, axes, and the preview images' pixels."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest

from app import figures, image_figures


def decode_png(uri: str) -> np.ndarray:
    """Decode the PNGs ``png_data_uri`` writes (8-bit grey or RGB, filter 0) back to pixels."""
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix)
    data = base64.b64decode(uri[len(prefix) :])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body)
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    w, h, depth, colour_type = header[:4]
    channels = {0: 1, 2: 3}[colour_type]
    assert depth == 8
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + w * channels)
    assert (rows[:, 0] == 0).all()
    img = rows[:, 1:].reshape(h, w, channels)
    return img[..., 0] if channels == 1 else img


@pytest.mark.parametrize(
    ("shown", "total", "text"),
    [
        (2000, 1_000_000, "showing 2,000 of 1,000,000 points"),
        (5, 5, "5 points"),
        (0, 0, "0 points"),
    ],
)
def test_points_note(shown, total, text):
    assert figures.points_note(shown, total) == text


def test_timeline_figure_traces_note_and_log_axis():
    x = np.arange(0, 1000, 10)
    loss = 1.0 / (1 + x)
    fig = figures.timeline_figure(
        x, loss, loss * 0.9, n_total=1000, log_y=True, smoothing_label="EMA 0.6"
    )
    assert [t.name for t in fig.data] == ["loss", "EMA 0.6"]
    assert len(fig.data[0].x) == len(fig.data[1].y) == 100
    assert fig.data[0].opacity < 1  # the raw curve is faded under the smoothed one
    assert fig.layout.annotations[0].text == "showing 100 of 1,000 points"
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.uirevision == "timeline"
    # plain lists: a Dash Patch can extend them in the browser, typed-array blobs it cannot
    assert isinstance(fig.to_plotly_json()["data"][0]["x"], list)


def test_timeline_without_smoothing_keeps_an_empty_second_trace():
    fig = figures.timeline_figure(np.arange(3), np.ones(3))
    assert len(fig.data) == 2 and len(fig.data[1].x) == 0
    assert fig.layout.annotations[0].text == "3 points"
    assert fig.layout.yaxis.type == "linear"


@pytest.mark.parametrize(
    ("x", "loss", "smoothed", "match"),
    [
        (np.arange(3), np.ones(4), None, "x and loss differ"),
        (np.arange(3), np.ones(3), np.ones(2), "x and smoothed differ"),
    ],
)
def test_timeline_figure_rejects_mismatched_arrays(x, loss, smoothed, match):
    with pytest.raises(ValueError, match=match):
        figures.timeline_figure(x, loss, smoothed)


def test_history_figures_panels_traces_and_axes():
    x = np.arange(10) * 100
    curves = {c: (x, np.linspace(1, 0.1, 10)) for c in ("train_loss", "valid_loss", "lr", "mom")}
    curves["loss_gain"] = (x, np.linspace(-0.1, 0.1, 10))
    figs = figures.history_figures(curves, n_total=40, log_y=True, x_axis="time")
    assert set(figs) == {"loss", "error", "lr", "gain", "are"}
    assert [t.name for t in figs["loss"].data] == ["train loss", "valid loss"]
    assert [t.name for t in figs["error"].data] == ["train error", "valid error"]
    assert [len(t.x) for t in figs["error"].data] == [0, 0]  # missing columns: empty traces
    assert figs["lr"].data[1].yaxis == "y2" and figs["lr"].layout.yaxis2.overlaying == "y"
    assert figs["loss"].layout.annotations[0].text == "showing 10 of 40 points"
    assert figs["loss"].layout.yaxis.type == "log"
    assert figs["gain"].layout.yaxis.type == "linear"  # loss gain may be negative
    assert figs["loss"].layout.xaxis.title.text == "training time (s)"


def test_the_adapted_rand_error_panel_draws_valid_are_and_is_empty_without_it():
    x = np.arange(4) * 50
    fig = figures.history_figure("are", {"valid_are": (x, np.array([0.9, 0.6, 0.5, 0.45]))})
    assert [t.name for t in fig.data] == ["valid adapted Rand error"]
    assert list(fig.data[0].y) == [0.9, 0.6, 0.5, 0.45]
    assert fig.layout.title.text == "Neurons: adapted Rand error (validation)"
    assert "are" in figures.OPTIONAL_PANELS
    empty = figures.history_figures({"train_loss": (x, np.ones(4))})["are"]
    assert [len(t.x) for t in empty.data] == [0]  # drawn only when the run writes the column


def test_curve_figures_keep_fixed_margins_for_their_labels():
    """Axes do not grow the margins (a second full draw in plotly.js): the figures leave room."""
    x = np.arange(5)
    figs = [figures.timeline_figure(x, np.ones(5)), figures.compare_figure({"a": (x, x)})]
    figs += figures.history_figures(
        {"lr": (x, np.full(5, 0.002)), "mom": (x, np.full(5, 0.9))}
    ).values()
    for fig in figs:
        template = fig.layout.template.layout
        assert template.xaxis.automargin is False and template.yaxis.automargin is False
        assert template.yaxis.ticklabeloverflow == "allow"
        assert fig.layout.margin.l == figures.MARGIN["l"]
    lr = figures.history_figure("lr", {"mom": (x, np.full(5, 0.9))})
    assert lr.layout.margin.r == figures.MARGIN_RIGHT_Y2  # the momentum axis on the right


def test_history_figure_rejects_unknown_panel():
    with pytest.raises(ValueError, match="unknown history panel 'speed'"):
        figures.history_figure("speed", {})


def test_compare_figure_one_trace_per_run():
    curves = {"a": (np.arange(5), np.ones(5)), "b": (np.arange(3), np.zeros(3))}
    fig = figures.compare_figure(curves, column="valid_loss", n_totals={"a": 50, "b": 3})
    assert [t.name for t in fig.data] == ["a", "b"]
    assert [len(t.y) for t in fig.data] == [5, 3]
    assert fig.data[0].line.color != fig.data[1].line.color
    assert fig.layout.annotations[0].text == "showing 8 of 53 points"
    assert "valid loss" in fig.layout.title.text
    assert figures.compare_figure({}).layout.annotations[0].text == "choose runs to compare"


def test_schedule_figure_rows_plans_and_logged_values():
    plans = {
        "lr": (np.array([0, 1000, 2000]), np.array([0.1, 0.05, 0.05])),
        "mom": (np.array([0, 2000]), np.array([0.9, 0.9])),
    }
    fig = figures.schedule_figure(
        plans, actual={"lr": (np.array([500]), np.array([0.1]))}, current_step=700
    )
    assert [t.name for t in fig.data] == [
        "learning rate (planned)",
        "learning rate (logged)",
        "momentum (planned)",
    ]
    assert fig.data[0].line.shape == "hv"  # values hold until the next update point
    assert fig.data[2].yaxis == "y2"  # one row per scheduled parameter
    assert any(s.type == "line" and s.x0 == 700 for s in fig.layout.shapes)


def test_schedule_figure_without_schedules_says_so():
    fig = figures.schedule_figure({})
    assert len(fig.data) == 0
    assert "no schedules" in fig.layout.annotations[0].text


@pytest.mark.parametrize("shape", [(4, 6), (5, 3, 3)])
def test_png_round_trip(shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(decode_png(image_figures.png_data_uri(img)), img)


@pytest.mark.parametrize(
    ("img", "match"),
    [(np.zeros((2, 2)), "uint8"), (np.zeros((2, 2, 4), np.uint8), r"\(h, w\) or \(h, w, 3\)")],
)
def test_png_rejects_other_pixels(img, match):
    with pytest.raises(ValueError, match=match):
        image_figures.png_data_uri(img)


def test_overlay_blends_class_colour_by_probability_and_opacity():
    raw = np.full((2, 2), 0.5)
    prob = np.array([[0.0, 1.0], [0.5, 1.0]])
    colour = (255, 0, 0)
    rgb = image_figures.overlay_rgb(raw, prob, opacity=1.0, colour=colour)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [128, 128, 128]  # no probability: raw grey
    assert rgb[0, 1].tolist() == [255, 0, 0]  # certain, full opacity: the class colour
    assert rgb[1, 0].tolist() == [191, 64, 64]  # half way
    assert np.array_equal(
        image_figures.overlay_rgb(raw, prob, 0.0, colour)[..., 0], np.full((2, 2), 128)
    )


def test_preview_figure_overlay_and_side_by_side():
    raw = np.linspace(0, 1, 12).reshape(3, 4)
    prob = np.zeros((3, 4))
    fig = image_figures.preview_figure(raw, prob, 0.5, "overlay", title="step 10")
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    pixels = decode_png(fig.data[0].source)
    assert pixels.shape == (3, 4, 3)
    assert np.array_equal(pixels[..., 0], (raw * 255 + 0.5).astype(np.uint8))
    side = image_figures.preview_figure(raw, np.ones((3, 4)), 0.5, "side")
    assert [t.name for t in side.data] == ["raw", "probability"]
    assert decode_png(side.data[0].source).shape == (3, 4)
    assert decode_png(side.data[1].source).shape == (3, 4, 3)


@pytest.mark.parametrize(
    ("raw", "prob", "mode", "match"),
    [
        (np.zeros((3, 4)), np.zeros((4, 3)), "overlay", "equal in shape"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), "overlay", "2-d"),
        (np.zeros((3, 4)), np.zeros((3, 4)), "blend", "unknown preview mode 'blend'"),
    ],
)
def test_preview_figure_rejects_bad_input(raw, prob, mode, match):
    with pytest.raises(ValueError, match=match):
        image_figures.preview_figure(raw, prob, 0.5, mode)


def test_regression_figure_keeps_newest_rows_coloured_by_row_on_equal_axes():
    rng = np.random.default_rng(0)
    target = rng.uniform(1.0, 3.0, (30, 2))
    pred = target + rng.normal(0, 0.1, (30, 2))
    pred[-1, 1] = np.nan  # a non-finite pair is left out of its output only
    fig = figures.regression_figure(pred, target, n_total=100, max_points=20)
    assert [t.name for t in fig.data] == ["output 0", "output 1", "identity"]
    assert [t.type for t in fig.data[:2]] == ["scattergl", "scattergl"]
    assert fig.data[0].x == tuple(target[-20:, 0]) and fig.data[0].y == tuple(pred[-20:, 0])
    assert len(fig.data[1].x) == 19
    # rows 10..29 of the 30 passed are rows 80..99 of the 100-row table; newest is brightest
    assert fig.data[0].customdata == tuple(range(80, 100))
    assert fig.data[0].marker.color == tuple(range(80, 100))
    assert (fig.data[0].marker.cmin, fig.data[0].marker.cmax) == (80, 99)
    assert fig.data[0].marker.symbol != fig.data[1].marker.symbol
    assert fig.data[0].marker.showscale and not fig.data[1].marker.showscale
    assert fig.layout.annotations[0].text == "showing 20 of 100 points"
    ident = fig.data[2]
    kept = np.concatenate([pred[-20:], target[-20:]])
    assert ident.x == ident.y and ident.x[0] < np.nanmin(kept) and ident.x[1] > np.nanmax(kept)
    assert fig.layout.xaxis.range == fig.layout.yaxis.range == ident.x
    assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    assert fig.layout.uirevision == "regression"
    assert isinstance(fig.to_plotly_json()["data"][0]["x"], list)


@pytest.mark.parametrize(
    ("pred", "target", "name", "n", "note"),
    [
        ([1.0, 2.0, 3.0], [1.5, 2.0, 2.5], "prediction", 3, "3 points"),
        ([], [], "prediction", 0, "no regression rows yet"),
        ([np.nan, np.inf], [1.0, 2.0], "prediction", 0, "0 of 2 points"),
    ],
)
def test_regression_figure_one_output_and_empty(pred, target, name, n, note):
    fig = figures.regression_figure(pred, target)
    assert fig.data[0].name == name and len(fig.data[0].x) == n
    assert note in fig.layout.annotations[0].text
    lo, hi = fig.layout.xaxis.range
    assert lo < hi  # a usable range even with nothing finite to scale to


@pytest.mark.parametrize(
    ("pred", "target", "kw", "match"),
    [
        (np.ones((3, 2)), np.ones((3, 1)), {}, r"differ in shape: \(3, 2\) vs \(3, 1\)"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), {}, r"\(n,\) or \(n, k\)"),
        (np.ones(3), np.ones(3), {"max_points": 0}, "max_points must be at least 1"),
    ],
)
def test_regression_figure_rejects_bad_input(pred, target, kw, match):
    with pytest.raises(ValueError, match=match):
        figures.regression_figure(pred, target, **kw)


def test_report_and_dashboard_draw_train_and_valid_in_the_same_colours():
    """The trainer's HTML history report and the run page colour each curve alike: a colour
    changed on one side only fails here, whichever side it is."""
    import pandas as pd

    from trainer import plotting

    steps = np.arange(1.0, 11.0)
    table = {c: np.linspace(1.0, 0.1, 10) for c in ("train_loss", "valid_loss", "train_err",
                                                    "valid_err", "lr", "mom", "gradnetrate",
                                                    "loss_gain", "time")}  # fmt: skip
    report = plotting.history_report(pd.DataFrame({"steps": steps, **table}), autoscale=False)
    # the report's raw curves, by name (its SMA curves repeat the error colours)
    in_report = {t.name: t.line.color for t in report.data if "SMA" not in (t.name or "")}
    curves = {c: (steps, y) for c, y in table.items()}
    in_dashboard = {}
    for panel in ("loss", "error", "lr"):
        for trace in figures.history_figure(panel, curves).data:
            in_dashboard[trace.name] = trace.line.color
    pairs = {  # report name: dashboard label
        "train loss": figures.COLUMN_LABELS["train_loss"],
        "valid loss": figures.COLUMN_LABELS["valid_loss"],
        "train err": figures.COLUMN_LABELS["train_err"],
        "valid err": figures.COLUMN_LABELS["valid_err"],
        "lr": figures.COLUMN_LABELS["lr"],
        "mom": figures.COLUMN_LABELS["mom"],
    }
    for report_name, label in pairs.items():
        assert in_report[report_name] == in_dashboard[label], (report_name, label)
    assert in_report["train loss"] != in_report["valid loss"]

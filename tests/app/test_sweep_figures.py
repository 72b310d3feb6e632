"""The sweep page's pure builders: parallel coordinates, curves, table order and CSV."""

from __future__ import annotations

import csv
import io
import math

import pytest

from app.sweep_figures import (
    BEST_WIDTH,
    DIMMED_OPACITY,
    LINE_WIDTH,
    TrialRow,
    best_run,
    csv_text,
    curves_figure,
    parameter_dimension,
    parcoords_figure,
    sorted_rows,
)

LR = {"low": 1e-4, "high": 1e-1, "log": True, "int": False}
DROPOUT = {"low": 0.0, "high": 0.5, "log": False, "int": False}
OPTIMISER = {"values": ["Adam", "SGD", "AdamW"]}
SHAPE = {"values": [[1, 2, 2], [2, 4, 4]]}
BATCH = {"values": [1, 2, 4]}

ROWS = [
    TrialRow("s-000", 0, "finished", 0.50, {"lr": 1e-3, "optimiser": "SGD"}, 60),
    TrialRow("s-001", 1, "pruned", 0.90, {"lr": 1e-2, "optimiser": "Adam"}, 20),
    TrialRow("s-002", 2, "failed", None, {"lr": 3e-4, "optimiser": "AdamW"}, 5),
    TrialRow("s-003", 3, "running", 0.40, {"lr": 1e-4, "optimiser": "Adam"}, 40),
]


@pytest.mark.parametrize(
    "goal, order, best",
    [
        ("min", ["s-003", "s-000", "s-001", "s-002"], "s-003"),
        ("max", ["s-001", "s-000", "s-003", "s-002"], "s-001"),
    ],
)
def test_rows_sort_by_the_best_value_and_a_trial_without_one_comes_last(goal, order, best):
    assert [r.run for r in sorted_rows(ROWS, goal)] == order
    assert best_run(ROWS, goal) == best


def test_no_value_no_best_and_ties_go_to_the_earlier_trial():
    none = [TrialRow("a", 0, "running", None, {}), TrialRow("b", 1, "failed", math.nan, {})]
    assert best_run(none, "min") is None
    tie = [TrialRow("late", 5, "finished", 0.3, {}), TrialRow("early", 2, "finished", 0.3, {})]
    assert best_run(tie, "min") == "early"


def test_log_range_axis_draws_log10_with_ticks_labelled_in_values():
    dim = parameter_dimension("lr", LR, [1e-3, 1e-2])
    assert dim["label"] == "lr (log)"
    assert dim["values"] == pytest.approx([-3, -2])
    assert dim["range"] == pytest.approx([-4, -1])
    assert dim["tickvals"] == pytest.approx([-4, -3, -2, -1])
    assert dim["ticktext"] == ["0.0001", "0.001", "0.01", "0.1"]


def test_log_range_within_one_decade_still_gets_ticks():
    dim = parameter_dimension("lr", {"low": 2e-3, "high": 8e-3, "log": True}, [4e-3])
    assert len(dim["tickvals"]) == 3 and dim["ticktext"][0] == "0.002"
    assert dim["ticktext"][-1] == "0.008"


def test_linear_range_axis_is_the_values_between_the_bounds():
    dim = parameter_dimension("dropout", DROPOUT, [0.1, 0.3])
    assert dim == {"label": "dropout", "values": [0.1, 0.3], "range": [0.0, 0.5]}


def test_categorical_axis_draws_indices_with_the_values_as_tick_labels():
    dim = parameter_dimension("optimiser", OPTIMISER, ["SGD", "Adam", "AdamW", "RMSprop"])
    assert dim["values"][:3] == [1, 0, 2]
    assert math.isnan(dim["values"][3])  # not among the sweep's values: no line there
    assert dim["tickvals"] == [0, 1, 2]
    assert dim["ticktext"] == ["Adam", "SGD", "AdamW"]
    shape = parameter_dimension("patch", SHAPE, [[2, 4, 4]])  # JSON lists, as trials.json has
    assert shape["values"] == [1] and shape["ticktext"] == ["[1, 2, 2]", "[2, 4, 4]"]


def test_numeric_values_keep_a_tick_per_value_and_go_log_over_a_decade():
    dim = parameter_dimension("batch_size", BATCH, [2, 4])
    assert dim["values"] == [2.0, 4.0] and dim["tickvals"] == [1.0, 2.0, 4.0]
    assert dim["ticktext"] == ["1", "2", "4"]
    lr = parameter_dimension("lr", {"values": [1e-3, 1e-2, 1e-1]}, [1e-2])
    assert lr["label"] == "lr (log)" and lr["values"] == pytest.approx([-2])
    one = parameter_dimension("x", {"values": [3]}, [3])
    assert one["range"] == [2.5, 3.5]  # a drawable range for a single value


def test_parcoords_has_a_line_per_valued_trial_and_an_axis_per_parameter_and_the_metric():
    fig = parcoords_figure({"lr": LR, "optimiser": OPTIMISER}, ROWS, "valid_loss", "min")
    (trace,) = fig.data
    assert trace.type == "parcoords"
    labels = [d.label for d in trace.dimensions]
    assert labels == ["lr (log)", "optimiser", "valid_loss (min)"]
    assert list(trace.dimensions[-1]["values"]) == [0.50, 0.90, 0.40]  # s-002 has no value
    assert list(trace.line.color) == [0.50, 0.90, 0.40]
    assert trace.line.reversescale  # the lowest loss at the bright end
    assert "1 without a value yet" in fig.layout.title.text
    maxed = parcoords_figure({"lr": LR}, ROWS, "valid_iou_mean", "max")
    assert not maxed.data[0].line.reversescale
    assert maxed.data[0].line.cmin is None and maxed.data[0].dimensions[-1].range is None


def test_parcoords_of_one_value_draws_its_colour_bar_and_axis_around_it():
    (only,) = [r for r in ROWS if r.value == 0.40]
    trace = parcoords_figure({"lr": LR}, [only], "valid_loss", "min").data[0]
    assert (trace.line.cmin, trace.line.cmax) == pytest.approx((0.36, 0.44))
    assert trace.dimensions[-1]["range"] == pytest.approx((0.36, 0.44))


def test_curves_have_a_trace_per_trial_in_order_dimmed_when_not_completed_and_best_wide():
    curves = {"s-000": ([0, 10], [0.8, 0.5]), "s-001": ([0], [0.9]), "s-003": ([0], [0.4])}
    fig = curves_figure(ROWS, curves, "valid_loss", "s-003")
    assert [t.name for t in fig.data] == ["s-000", "s-001 (pruned)", "s-002 (failed)",
                                          "s-003 (best)"]  # fmt: skip
    assert list(fig.data[0].y) == [0.8, 0.5] and list(fig.data[2].x) == []
    assert [t.opacity for t in fig.data] == [1.0, DIMMED_OPACITY, DIMMED_OPACITY, 1.0]
    assert [t.line.width for t in fig.data] == [LINE_WIDTH] * 3 + [BEST_WIDTH]
    assert fig.layout.yaxis.title.text == "valid_loss"
    with pytest.raises(ValueError, match="s-000.*differ in length"):
        curves_figure(ROWS, {"s-000": ([0, 1], [0.5])}, "valid_loss", None)


def test_csv_has_one_row_per_trial_with_run_number_state_value_parameters_and_steps():
    rows = [*ROWS, TrialRow("s-004", 4, "queued", None, {"lr": 2e-3, "optimiser": [1, 2]})]
    text = csv_text(rows, ["lr", "optimiser"])
    got = list(csv.reader(io.StringIO(text)))
    assert got[0] == ["run", "number", "state", "value", "lr", "optimiser", "steps"]
    assert got[1] == ["s-000", "0", "finished", "0.5", "0.001", "SGD", "60"]
    assert got[3] == ["s-002", "2", "failed", "", "0.0003", "AdamW", "5"]
    assert got[5] == ["s-004", "4", "queued", "", "0.002", "[1, 2]", ""]
    assert len(got) == 1 + len(rows)
    assert float(got[4][3]) == 0.40  # values round-trip exactly


def test_a_trial_stopped_by_hand_is_named_but_not_dimmed():
    rows = [TrialRow("a", 0, "stopped", 0.3, {}), TrialRow("b", 1, "stopped", 0.5, {})]
    fig = curves_figure(rows, {}, "valid_loss", "a")
    assert [t.name for t in fig.data] == ["a (stopped, best)", "b (stopped)"]
    assert [t.opacity for t in fig.data] == [1.0, 1.0]


def test_the_page_shows_parameters_in_the_sweep_sections_order():
    from app.sweep_view import SweepView
    from trainer.runs.sweeps import TrialsRecord

    spec = {
        "parameters": {"batch_size": {"values": [1, 2]}, "lr": {"low": 1e-4, "high": 1e-2,
                                                               "log": True, "int": False}},
        "parameter_order": ["lr", "batch_size"],
    }  # fmt: skip
    view = SweepView("s", {"spec": spec}, TrialsRecord(), [], None, None, {}, False)
    assert list(view.parameters) == ["lr", "batch_size"]
    del spec["parameter_order"]  # a sweep.json written before the order was recorded
    assert list(view.parameters) == ["batch_size", "lr"]

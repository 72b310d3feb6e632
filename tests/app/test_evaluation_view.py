"""Evaluation page pieces without a browser: result loading, metric table, figures, caches."""

from __future__ import annotations

import json
import math
import warnings

import h5py
import numpy as np
import plotly.io as pio
import pytest

from app import evaluation_figures as ef
from app import evaluation_view as ev
from app import neuron_figures as nf
from trainer import runs
from trainer.evaluation import confusion_table
from trainer.metrics import NOTHING_POSITIVE, SingleClassWarning, evaluate_arrays
from trainer.runs import read_result, write_result

RUN = "evald"


def scores(n: int = 4000, seed: int = 0, exact_ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Labels (with some ignored voxels) and overlapping scores, rounded so ties exist."""
    rng = np.random.default_rng(seed)
    gt = (rng.random(n) < 0.3).astype(np.int8)
    s = np.clip(rng.normal(0.35 + 0.3 * gt, 0.15), 0, 1)
    if exact_ties:
        s = np.round(s, 3)
    gt[rng.random(n) < 0.02] = -1
    return gt, s


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "runs" / RUN
    (d / "eval").mkdir(parents=True)
    gt, s = scores()
    res = evaluate_arrays(gt, s, mode="exact")
    train = evaluate_arrays(*scores(seed=1), mode="binned", n_bins=1000)
    write_result(
        d / "eval" / "FINAL.h5", {"valid": res, "train": train}, {"snapshot": "", "step": 7}
    )
    return d


def test_load_view_sends_the_coarse_counts_and_presets_of_the_file(run_dir):
    view = ev.load_view(run_dir, "FINAL", "valid")
    res = read_result(run_dir / "eval" / "FINAL.h5", coarse=True)["valid"]
    assert view["thresholds"].tolist() == res.thresholds.tolist()
    for k in ("tp", "fp", "tn", "fn"):
        assert view[k].tolist() == getattr(res, k).tolist()
    assert view["roc_auc"] == pytest.approx(res.roc_auc, abs=0)
    assert view["chosen"]["threshold"] == res.chosen.threshold
    assert view["step"] == 7 and view["mode"] == "exact"
    for preset in ev.PRESETS:
        assert view["presets"][preset] == res.choose(preset).threshold
    at = res.at(0.5)  # the counts the slider shows at a threshold are the file's
    assert ev.counts_at(view, 0.5) == {k: getattr(at, k) for k in ev.COUNT_KEYS}


def test_the_browser_store_keeps_every_threshold_and_count_exactly(run_dir):
    view = ev.load_view(run_dir, "FINAL", "valid")
    # through JSON as the browser gets it (the browser searches these thresholds)
    store = json.loads(json.dumps(ev.browser_view(view)))
    assert store["thresholds"]["dtype"] == "f8"  # scores rounded to 3 decimals: no float32
    assert ev.unpack_array(store["thresholds"]).tolist() == view["thresholds"].tolist()
    for k in ("tp", "fp"):
        assert ev.unpack_array(store[k]).tolist() == view[k].tolist()
    assert "tn" not in store and "fn" not in store  # n_neg - fp and n_pos - tp
    assert store["n_pos"] == view["n_pos"] and store["presets"] == view["presets"]


def test_scores_of_a_float32_map_pack_as_float32_with_nothing_positive_after_them():
    scores = np.unique(np.random.default_rng(0).random(10_000, dtype=np.float32))
    t = np.concatenate([scores.astype(np.float64), [NOTHING_POSITIVE]])
    packed = json.loads(json.dumps(ev.pack_array(t)))
    assert packed["dtype"] == "f4" and packed["tail"] == [NOTHING_POSITIVE]
    assert ev.unpack_array(packed).tolist() == t.tolist()
    assert len(json.dumps(packed)) < len(json.dumps(t.tolist())) / 3
    assert ev.pack_array(t.astype(np.float64) + 1e-9)["dtype"] == "f8"  # not float32 values


@pytest.mark.parametrize(
    ("top", "dtype"), [(0, "u1"), (255, "u1"), (256, "u2"), (2**32 - 1, "u4"), (2**32, "f8")]
)
def test_counts_pack_in_the_smallest_exact_type(top, dtype):
    counts = np.array([top, top // 2, 0], np.int64)
    packed = ev.pack_array(counts)
    assert packed["dtype"] == dtype
    assert ev.unpack_array(packed).tolist() == counts.tolist()


def test_counts_that_do_not_add_up_are_a_damaged_file(run_dir):
    view = ev.load_view(run_dir, "FINAL", "valid")
    view["fn"] = view["fn"] + 1
    with pytest.raises(ev.ResultViewError, match="damaged.*re-run the evaluation"):
        ev.browser_view(view)
    with pytest.raises(ValueError, match="counts must lie in"):
        ev.pack_array(np.array([-1, 2]))


def test_large_results_reach_the_browser_coarsened(tmp_path):
    rng = np.random.default_rng(3)
    gt = (rng.random(300_000) < 0.2).astype(np.int8)
    s = np.clip(rng.normal(0.4 + 0.2 * gt, 0.2), 0, 1)
    d = tmp_path / "big"
    (d / "eval").mkdir(parents=True)
    write_result(d / "eval" / "x.h5", {"valid": evaluate_arrays(gt, s)})
    view = ev.load_view(d, "x", "valid")
    assert len(view["thresholds"]) <= 10_010
    assert view["thresholds"][-1] == NOTHING_POSITIVE
    assert len(json.dumps(ev.browser_view(view))) < 400_000


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.35, 0.4005, 0.5, 0.77, 1.0, NOTHING_POSITIVE])
@pytest.mark.parametrize("beta", [1.0, 0.5, 2.0])
def test_metrics_at_match_the_evaluation_module_and_the_voxels(run_dir, threshold, beta):
    res = read_result(run_dir / "eval" / "FINAL.h5", coarse=True)["valid"]
    m = ev.metrics_at(res, threshold, beta)
    gt, s = scores()
    tp, tn, fp, fn = confusion_table(gt, s >= threshold)
    assert (m.tp, m.fp, m.tn, m.fn) == (tp, fp, tn, fn)
    rows = {k: v for k, _label, v in ev.metrics_rows(m)}
    assert [k for k, _ in ev.METRIC_ROWS] == list(rows)
    expected = res.at(threshold, beta)
    for key, value in rows.items():
        assert value == getattr(expected, key) or (
            math.isnan(value) and math.isnan(getattr(expected, key))
        )
    assert ev.counts_at(ev.load_view(run_dir, "FINAL", "valid"), threshold) == {
        "tp": tp, "fp": fp, "tn": tn, "fn": fn
    }  # fmt: skip


@pytest.mark.parametrize(
    "key, value, text",
    [
        ("tp", 1234567, "1,234,567"),
        ("f1", 0.123456, "0.1235"),
        ("mcc", float("nan"), "–"),
        ("fn", 0, "0"),
    ],
)
def test_format_value(key, value, text):
    assert ev.format_value(key, value) == text


def test_metrics_csv_and_saved_threshold_hold_the_table(run_dir):
    res = read_result(run_dir / "eval" / "FINAL.h5", coarse=True)["valid"]
    m = ev.metrics_at(res, 0.42, 2.0)
    csv = dict(
        line.split(",", 1) for line in ev.metrics_csv(m, result="FINAL", split="valid").splitlines()
    )
    assert csv["metric"] == "value" and float(csv["threshold"]) == 0.42 and csv["split"] == "valid"
    assert int(csv["tp"]) == m.tp and float(csv["fbeta"]) == m.fbeta and float(csv["mcc"]) == m.mcc
    record = ev.threshold_record(m, run=RUN, result="FINAL", split="valid", method="preset: max f1")
    path = runs.write_threshold(run_dir, record)
    saved = json.loads(path.read_text())
    assert path == run_dir / "eval" / "threshold.json"
    assert saved["threshold"] == 0.42 and saved["metrics"]["tp"] == m.tp
    assert saved["metrics"]["f1"] == m.f1 and saved["method"] == "preset: max f1"
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp left


def _write_old(path):
    with h5py.File(path, "w") as f:
        f["valid/thresholds"] = np.linspace(0, 1, 5)


def _write_newer(path):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "voxelboard-evaluation"
        f.attrs["format_version"] = 99


@pytest.mark.parametrize(
    "make, split, match",
    [
        (None, "valid", "No result file"),
        (lambda p: p.write_bytes(b"not hdf5 at all"), "valid", "damaged or incomplete"),
        (_write_old, "valid", "older VoxelBoard"),
        (_write_newer, "valid", "newer VoxelBoard"),
        ("single", "valid", "only negatives"),
        ("ok", "test", "no 'test' split"),
    ],
)
def test_bad_result_files_give_a_message(tmp_path, make, split, match):
    path = tmp_path / "eval" / "bad.h5"
    path.parent.mkdir()
    if make == "single":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SingleClassWarning)
            write_result(path, {"valid": evaluate_arrays(np.zeros(50), np.linspace(0, 1, 50))})
    elif make == "ok":
        write_result(path, {"valid": evaluate_arrays(*scores(200))})
    elif make is not None:
        make(path)
    with pytest.raises(ev.ResultViewError, match=match):
        ev.load_view(tmp_path, "bad", split)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", ".hidden", "", None, "/tmp/x/secret", "../../../x/secret", "a\x00b"]
)
def test_result_names_cannot_leave_the_eval_folder(tmp_path, name):
    with pytest.raises(ev.ResultViewError, match="result name .* is refused"):
        ev.result_file(tmp_path, name)
    with pytest.raises(ev.ResultViewError, match="result name .* is refused"):
        ev.prob_cache_path(tmp_path, name)


def test_list_results_skips_caches_and_temporaries(run_dir):
    (run_dir / "eval" / "FINAL_valid_prob.h5").write_bytes(b"")
    (run_dir / "eval" / ".FINAL.h5.123.tmp").write_bytes(b"")
    (run_dir / "eval" / "FINAL-REPORT.txt").write_text("")
    assert runs.list_results(run_dir) == ["FINAL"]
    assert runs.list_results(run_dir / "nowhere") == []


# -------------------------------------------------------------------------------- figures


def _trace(fig, meta):
    (t,) = [t for t in fig.data if t.meta == meta]
    return t


def test_roc_and_pr_figures_mark_the_threshold_and_overlay_others(run_dir):
    view = ev.load_view(run_dir, "FINAL", "valid")
    # the coarse counts the view was made of, as the page reads them for its metrics
    res = ev.read_split(ev.result_file(run_dir, "FINAL"), "valid")
    m = res.at(0.45)
    other = ev.compare_curve(read_result(run_dir / "eval" / "FINAL.h5")["train"], "FINAL train")
    roc = ef.roc_figure(view, 0.45, [other])
    marker = _trace(roc, ef.MARKER)
    assert (marker.x[0], marker.y[0]) == (m.fpr, m.tpr)
    curve = _trace(roc, ef.MAIN_CURVE)
    assert list(curve.customdata) == view["thresholds"].tolist()  # clicks give thresholds
    assert "AUC" in curve.name and any("FINAL train" in t.name for t in roc.data)
    pr = ef.pr_figure(view, 0.45)
    marker = _trace(pr, ef.MARKER)
    assert (marker.x[0], marker.y[0]) == (m.recall, m.precision)
    prevalence = view["n_pos"] / (view["n_pos"] + view["n_neg"])
    assert pr.data[0].y == (prevalence, prevalence) and "AP" in _trace(pr, ef.MAIN_CURVE).name


def test_confusion_cells_hold_counts_and_row_percentages():
    z, text = ef.confusion_z(tp=30, fp=10, tn=90, fn=70)
    assert z == [[0.9, 0.1], [0.7, 0.3]]
    assert text[0][0] == "90<br>90.0%" and text[1][1] == "30<br>30.0%"
    fig = ef.confusion_figure(30, 10, 90, 70, 0.5)
    assert fig.data[0].meta == ef.CONFUSION and "0.5000" in fig.layout.title.text
    assert ef.confusion_z(0, 0, 5, 0)[0] == [[1.0, 0.0], [0.0, 0.0]]  # an empty row stays 0


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.55, 0.99])
def test_error_histogram_shades_the_fp_and_fn_mass(run_dir, threshold):
    view = ev.load_view(run_dir, "FINAL", "valid")
    fig = ef.error_hist_figure(view, threshold, log_y=True)
    fn_bins, fp_bins = _trace(fig, ef.FN_SHADE).y, _trace(fig, ef.FP_SHADE).y
    c = ev.counts_at(view, threshold)
    # thresholds on a histogram edge: the shaded bins hold exactly the FN and FP voxels
    assert sum(fn_bins) == c["fn"] and sum(fp_bins) == c["fp"]
    assert f"({c['fn']:,})" in _trace(fig, ef.FN_SHADE).name
    assert fig.layout.yaxis.type == "log" and fig.layout.shapes[0].x0 == threshold
    assert ef.error_hist_figure(view, threshold, log_y=False).layout.yaxis.type == "linear"


def test_metric_curves_of_an_exact_result_are_thinned_to_the_plot_s_width():
    rng = np.random.default_rng(5)
    label = (rng.random(3 * ef.MAX_CURVE_POINTS) < 0.4).astype(np.int8)
    res = evaluate_arrays(label, rng.random(label.size), mode="exact")
    t = res.thresholds[res.thresholds <= 1.0]
    assert len(t) > 2 * ef.MAX_CURVE_POINTS  # a threshold per distinct score
    view = {"thresholds": res.thresholds, "tp": res.tp, "fp": res.fp, "tn": res.tn, "fn": res.fn}
    fig = ef.metric_curves_figure(view, 0.5)
    x = np.asarray(fig.data[0].x)
    assert len(x) <= ef.MAX_CURVE_POINTS and x[0] == t[0] and x[-1] == t[-1]
    assert np.all(np.diff(x) > 0) and set(x) <= set(t)  # stored thresholds, in order
    i = np.searchsorted(res.thresholds, x)
    precision = res.tp[i] / np.maximum(res.tp[i] + res.fp[i], 1)
    assert np.allclose(np.asarray(fig.data[0].y), precision)
    # the ROC and PR curves likewise, each point carrying its stored threshold for a click
    n_pos = int(res.tp[0] + res.fn[0])
    view.update(thresholds=res.thresholds.tolist(), n_pos=n_pos, n_neg=label.size - n_pos)
    for build, tpr_axis in ((ef.roc_figure, "y"), (ef.pr_figure, "x")):
        (curve,) = [d for d in build(view, 0.5, []).data if d.meta == ef.MAIN_CURVE]
        # the browser reads a click's threshold from the typed array the figure sends
        sent = json.loads(pio.to_json(build(view, 0.5, [])))["data"]
        (packed,) = [d["customdata"] for d in sent if d.get("meta") == ef.MAIN_CURVE]
        assert packed["dtype"] == "f8"  # every threshold exactly
        assert ev.unpack_array(packed).tolist() == np.asarray(curve.customdata).tolist()
        t_points = np.asarray(curve.customdata)
        assert len(t_points) <= ef.MAX_CURVE_POINTS
        assert t_points[0] == res.thresholds[0] and t_points[-1] == res.thresholds[-1]
        i = np.searchsorted(res.thresholds, t_points)
        assert np.allclose(np.asarray(curve[tpr_axis]), res.tp[i] / n_pos)


def test_metric_curves_draw_four_metrics_and_the_threshold_line(run_dir):
    view = ev.load_view(run_dir, "FINAL", "valid")
    fig = ef.metric_curves_figure(view, 0.4)
    assert [t.name for t in fig.data] == ["precision", "recall", "f1", "accuracy"]
    assert max(fig.data[0].x) <= 1.0  # the none-positive end point is left out
    assert fig.layout.shapes[0].x0 == 0.4
    html = ef.figure_html(fig)
    # standalone: plotly.js inline (MBs), no script loaded from the network
    assert "<html>" in html and len(html) > 1_000_000 and '<script src="http' not in html


def test_segmentation_colours_tp_fp_fn_and_counts_them():
    raw = np.full((2, 3), 0.5, np.float32)
    prob = np.array([[0.9, 0.9, 0.1], [0.1, 0.6, 0.2]], np.float32)
    label = np.array([[1, 0, 1], [0, -1, 0]], np.int8)
    rgb = ef.segmentation_rgb(raw, prob, label, 0.5, opacity=1.0)
    assert tuple(rgb[0, 0]) == ef.SEG_COLOURS["tp"]
    assert tuple(rgb[0, 1]) == ef.SEG_COLOURS["fp"]
    assert tuple(rgb[0, 2]) == ef.SEG_COLOURS["fn"]
    assert tuple(rgb[1, 0]) == (128, 128, 128) and tuple(rgb[1, 1]) == (128, 128, 128)
    assert ef.segmentation_counts(prob, label, 0.5) == {"tp": 1, "fp": 1, "fn": 1, "tn": 2}
    fig = ef.segmentation_figure(raw, prob, label, 0.5, title="t")
    assert fig.data[0].source.startswith("data:image/png;base64,")
    assert [t.name for t in fig.data[1:]] == [
        "true positive (1)", "false positive (1)", "false negative (1)"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="2-d of one shape"):
        ef.segmentation_rgb(raw, prob[:1], label, 0.5)


def apply_patch(figure: dict, patch) -> dict:
    """A ``dash.Patch`` of assignments applied to a drawn figure, as the browser does."""
    for op in patch.to_plotly_json()["operations"]:
        assert op["operation"] == "Assign", op
        *where, last = op["location"]
        target = figure
        for key in where:
            target = target[key]
        target[last] = op["params"]["value"]
    return figure


@pytest.mark.parametrize("colouring", ["errors", "instances"])
def test_an_image_patch_turns_a_drawn_plane_into_the_next_one(colouring):
    rng = np.random.default_rng(3)
    raw, prob = rng.random((2, 3, 9, 8), dtype=np.float32)
    label = (rng.random((3, 9, 8)) < 0.4).astype(np.int8)
    seg, gt = rng.integers(0, 6, (2, 3, 9, 8))

    def figure_and_parts(z: int, t: float):
        if colouring == "errors":
            fig = ef.segmentation_figure(raw[z], prob[z], label[z], t, title=f"z {z} t {t}")
            return fig, ef.segmentation_parts(raw[z], prob[z], label[z], t)
        split, merge = (2, 0) if t < 0.5 else (0, 5)
        return (
            nf.instance_figure(seg[z], gt[z], split, merge, title=f"z {z} t {t}"),
            nf.instance_parts(seg[z], gt[z], split, merge),
        )

    drawn = json.loads(figure_and_parts(0, 0.3)[0].to_json())
    want, (source, names) = figure_and_parts(2, 0.7)
    patched = apply_patch(drawn, ef.image_patch(source, names, "z 2 t 0.7"))
    assert patched == json.loads(want.to_json())
    assert patched != json.loads(figure_and_parts(0, 0.3)[0].to_json())


def test_probability_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.random((4, 6, 5)).astype(np.float32)
    prob = rng.random((4, 6, 5)).astype(np.float32)
    label = (rng.random((4, 6, 5)) < 0.4).astype(np.int8)
    path = ev.prob_cache_path(tmp_path, "FINAL")
    path.parent.mkdir()
    runs.write_prob_cache(path, [(raw, prob, label)], {"snapshot": "snap.pt"})
    assert runs.read_prob_cache(path) == {"cubes": {"cube0": (4, 6, 5)}, "snapshot": "snap.pt"}
    r, p, g = runs.read_prob_slice(path, "cube0", 2)
    assert np.allclose(r, raw[2], atol=1e-3) and np.allclose(p, prob[2], atol=1e-3)
    assert np.array_equal(g, label[2])
    # the view's counts come from the same threshold rule as the evaluation's
    tp, tn, fp, fn = confusion_table(label[2], p >= 0.5)
    assert ef.segmentation_counts(p, g, 0.5) == {"tp": tp, "fp": fp, "fn": fn, "tn": tn}
    with pytest.raises(runs.ProbCacheError, match="cube9"):
        runs.read_prob_slice(path, "cube9", 0)
    path.write_bytes(b"junk")
    with pytest.raises(runs.ProbCacheError, match="delete it"):
        runs.read_prob_cache(path)


@pytest.mark.parametrize(("results", "disabled"), [([], True), (["FINAL"], False)])
def test_the_result_choice_says_no_result_yet_until_there_is_one(results, disabled):
    from app.evaluation_layout import NO_RESULT, result_row

    row = result_row(results, {"result": results[0]} if results else {})
    (dropdown,) = [c for c in _walk(row) if getattr(c, "id", None) == "eval-result"]
    assert (dropdown.placeholder, dropdown.disabled) == (NO_RESULT, disabled)
    assert NO_RESULT == "no result yet"


def _walk(component):
    yield component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str):
            yield from _walk(child)

"""The evaluation page's segmentation view and "Neurons" panel: what the server draws per step.

The segmentation view shows one plane of a validation cube at the page's threshold, from the
probability cache the evaluation wrote with its result (``trainer.runs.read_prob_slice``; the
evaluation is never recomputed), coloured TP / FP / FN (``app.evaluation_figures``) or by
neuron (``app.neuron_figures``). The Neurons panel's exact scores at the threshold come from
one segmentation of the chosen cube (``app.neurons_view``). A figure already drawn gets a
``dash.Patch`` of its picture instead of a new figure. Names a client sent are checked
(``app.paths``); a problem becomes the message shown in place of the figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from dash import no_update

from app import evaluation_figures as ef
from app import evaluation_view as ev
from app import neuron_figures as nf
from app import neurons_view as nv
from app import paths
from trainer import runs

__all__ = [
    "NO_SEG",
    "neuron_outputs",
    "neuron_threshold",
    "plane_outputs",
    "plane_title",
    "read_plane",
    "render_segmentation",
    "seg_meta",
    "segment",
]


#: the segmentation view's controls without a result: cube options and value, z max, value and
#: marks, message, style of "Evaluate again for the segmentation"
NO_SEG = ([], None, 0, 0, {}, "", {"display": "none"})


def seg_meta(run_dir: Path, result: Any, cube: Any, z: Any, read_only: bool) -> tuple:
    """The segmentation view's controls for ``result`` (see ``NO_SEG``), keeping ``cube`` and
    ``z`` where the probability cache has them; a ``read_only`` dashboard offers no button
    that predicts."""
    hidden = {"display": "none"}
    shown = hidden if read_only else {}
    try:
        path = ev.prob_cache_path(run_dir, result)
    except ev.ResultViewError as e:
        return [], None, 0, 0, {}, str(e), hidden
    if not path.is_file():
        if ev.is_unreadable(run_dir, result):
            return NO_SEG  # the page says why (eval-no-view); predicting would not help
        how = (
            "a dashboard that is not read-only predicts them by evaluating it again"
            if read_only
            else "press 'Evaluate again for the segmentation' (its snapshot, counting and splits)"
        )
        message = (
            "This result was written without probability maps of the validation cubes (an "
            f"evaluation writes them with the result): {how}."
        )
        return [], None, 0, 0, {}, message, shown
    try:
        meta = runs.read_prob_cache(path)
    except runs.ProbCacheError as e:
        return [], None, 0, 0, {}, str(e), shown
    cubes = list(meta["cubes"])
    cube = cube if cube in cubes else cubes[0]
    nz = meta["cubes"][cube][0]
    z = z if isinstance(z, int) and 0 <= z < nz else nz // 2
    marks = {i: str(i) for i in sorted({0, nz // 2, nz - 1})}
    return cubes, cube, nz - 1, z, marks, "", hidden


def read_plane(run_dir: Path, result: str, cube: str, z: int) -> tuple:
    """``(raw, prob, label)`` of plane ``z`` of ``cube`` from the result's probability cache.

    Raises:
        ResultViewError: a refused result or cube name, or an unreadable cache.
    """
    path = ev.prob_cache_path(run_dir, result)
    try:
        paths.check_name("cube", cube)
    except paths.ClientPathError as e:
        raise ev.ResultViewError(str(e)) from None
    try:
        return runs.read_prob_slice(path, cube, z)
    except runs.ProbCacheError as e:
        raise ev.ResultViewError(str(e)) from None


def plane_title(result: str, cube: str, z: int, threshold: float) -> str:
    return f"{result} · {cube} · z {int(z)} · threshold {threshold:.4f}"


def render_segmentation(
    run_dir: Path, result: str, cube: str, z: int, threshold: float
) -> go.Figure:
    """The segmentation figure of plane ``z`` of ``cube`` at ``threshold`` (one plane read).

    Raises:
        ResultViewError: a refused result or cube name, or an unreadable cache.
    """
    raw, prob, label = read_plane(run_dir, result, cube, z)
    title = plane_title(result, cube, z, threshold)
    return ef.segmentation_figure(raw, prob, label, threshold, title=title)


def plane_outputs(
    run_dir: Path,
    result: str,
    cube: str,
    z: int,
    t: float,
    instances: bool,
    segmented: tuple | None,
    error: str | None,
    drawn: Any,
) -> list:
    """``[figure, drawn, message]`` of the segmentation view: a Patch of the drawn figure when
    its kind (result, cube, colouring) is unchanged, a new figure otherwise."""
    kind = [result, cube, "instances" if instances else "errors"]
    try:
        if instances:
            if segmented is None:
                raise nv.NeuronViewError(error)
            seg, gt, _prob, _record, s = segmented
            z = min(z, seg.shape[0] - 1)
            title = f"{plane_title(result, cube, z, t)} · {s.n_segments} segments"
            if drawn == kind:
                source, names = nf.instance_parts(seg[z], gt[z], s.largest_split, s.largest_merge)
                return [ef.image_patch(source, names, title), kind, ""]
            fig = nf.instance_figure(seg[z], gt[z], s.largest_split, s.largest_merge, title)
            return [fig, kind, ""]
        raw, prob, label = read_plane(run_dir, result, cube, z)
        title = plane_title(result, cube, z, t)
        if drawn == kind:
            source, names = ef.segmentation_parts(raw, prob, label, t)
            return [ef.image_patch(source, names, title), kind, ""]
        return [ef.segmentation_figure(raw, prob, label, t, title=title), kind, ""]
    except (ev.ResultViewError, nv.NeuronViewError) as e:
        return [go.Figure(layout={"height": 520}), None, str(e)]


def neuron_outputs(
    result: str, cube: str, t: float, segmented: tuple | None, error: str | None, drawn: Any
) -> list:
    """The Neurons panel: its curves (drawn once per result and cube), message and table."""
    blank = [""] * len(nv.SCORE_ROWS)
    if segmented is None:
        # nothing drawn stays as it is; curves of another cube are cleared
        # the message says why; no empty frame with axes under it
        fig = nf.message_figure("" if error else "No neuron scores to draw.", height=40)
        return [fig, None, error, "", *blank]
    _seg, _gt, _prob, record, s = segmented
    if drawn == [result, cube]:
        fig = no_update  # drawn: assets/evaluation.js moves their threshold line in place
    else:
        fig = nf.neuron_curves_figure(
            record, t, title=f"{result} · {cube}: neurons against threshold"
        )
    cells = [
        f"{getattr(s, k):.4f}" if k[:2] != "n_" else f"{getattr(s, k):,}" for k, _ in nv.SCORE_ROWS
    ]
    return [fig, [result, cube], "", f"exact scores at threshold {t:.4f}", *cells]


def segment(run_dir: Path, result: str, cube: Any, t: float) -> tuple[tuple | None, str | None]:
    """``(nv.segment_cube's tuple, None)`` for ``cube`` at threshold ``t``, or ``(None, why)``
    for a refused cube name or a result without neuron scores."""
    try:
        paths.check_name("cube", cube)
        return nv.segment_cube(run_dir, result, cube, t), None
    except (paths.ClientPathError, nv.NeuronViewError) as e:
        return None, str(e)


def neuron_threshold(run_dir: Path, result: str, cube: Any, key: str) -> float | None:
    """The threshold ``key`` (``best_voi_threshold``, ``best_are_threshold``) of ``cube``'s
    neuron record, ``None`` if the cube or the result has none."""
    try:
        paths.check_name("cube", cube)
        return float(nv.neuron_records(run_dir, result)[nv.cube_index(cube)][key])
    except (paths.ClientPathError, nv.NeuronViewError, IndexError, KeyError):
        return None

"""Preview page (``/run/<name>/preview``): the run's preview predictions as an image viewer.

Each ``previews/preview-<step>.h5`` file (format: docs/run-directory.md) holds one or more
cubes of raw data with the network's class probabilities. The viewer picks a preview by
step (slider, newest by default, follows new ones), a cube, a z plane, a class, and draws
raw grey with the class probability as a coloured overlay, or both side by side. Images
are rendered on the server as PNG data (``app.figures.preview_figure``).

Decoded cubes are cached in a small LRU keyed by (file, mtime), so moving the z slider
rereads nothing. A missing or corrupt file shows a message naming it.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html, no_update

from app import figures, inputs, series
from app.callbacks import callback
from app.components import run_not_found
from trainer import runs

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>/preview", "title": "VoxelBoard preview"}

REFRESH_MS = 5000
_STEP_IN_NAME = re.compile(r"preview-(\d+)\.h5$")
_BLOCK = re.compile(r"^block(\d+)$")
_ROW = {"display": "flex", "flexWrap": "wrap", "gap": "16px", "alignItems": "center"}


class PreviewError(ValueError):
    """A preview file cannot be read or does not follow the documented format."""


class PreviewMeta(NamedTuple):
    """What a preview file holds (a NamedTuple: Dash executes page modules before
    registering them, which a dataclass cannot live with).

    Attributes:
        step: training step of the preview.
        hours: training time in hours.
        n_classes: number of classes in ``prob``.
        blocks: block name -> ``(z, y, x)`` shape, in block order.
        z0: block name -> z index of the cube's first plane in its source.
    """

    step: int
    hours: float
    n_classes: int
    blocks: dict[str, tuple[int, int, int]]
    z0: dict[str, int]


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError as e:
        raise PreviewError(f"preview file {path} is gone: {e.strerror}") from None


def _block_order(name: str) -> int:
    m = _BLOCK.match(name)
    return int(m.group(1)) if m else 1 << 30


@functools.lru_cache(maxsize=256)
def _meta_cached(path: str, mtime_ns: int) -> PreviewMeta:
    try:
        with h5py.File(path, "r") as f:
            blocks, z0 = {}, {}
            for name in sorted((k for k in f if _BLOCK.match(k)), key=_block_order):
                g = f[name]
                if "raw" not in g or "prob" not in g:
                    raise PreviewError(f"preview file {path}: group {name!r} lacks 'raw' or 'prob'")
                raw, prob = g["raw"].shape, g["prob"].shape
                if len(raw) != 3 or len(prob) != 4 or tuple(prob[1:]) != tuple(raw):
                    raise PreviewError(
                        f"preview file {path}: {name}/raw {raw} and {name}/prob {prob} do not match "
                        "the format (z, y, x) and (n_classes, z, y, x)"
                    )
                blocks[name] = tuple(int(s) for s in raw)
                z0[name] = int(g.attrs.get("z0", 0))
            if not blocks:
                raise PreviewError(f"preview file {path} holds no block0, block1, ... groups")
            n_classes = int(f.attrs.get("n_classes", f[next(iter(blocks))]["prob"].shape[0]))
            step = f.attrs.get("step")
            if step is None:
                m = _STEP_IN_NAME.search(path)
                step = int(m.group(1)) if m else 0
            return PreviewMeta(int(step), float(f.attrs.get("hours", 0.0)), n_classes, blocks, z0)
    except PreviewError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise PreviewError(f"cannot read preview file {path}: {e}") from None


def read_meta(path: Path) -> PreviewMeta:
    """Step, hours, classes and block shapes of a preview file (cached by file and mtime)."""
    return _meta_cached(str(path), _mtime(path))


@functools.lru_cache(maxsize=8)
def _block_cached(path: str, mtime_ns: int, block: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with h5py.File(path, "r") as f:
            raw = np.asarray(f[block]["raw"][()], dtype=np.float32)
            prob = np.asarray(f[block]["prob"][()], dtype=np.float32)
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise PreviewError(f"cannot read {block} of preview file {path}: {e}") from None
    raw.setflags(write=False)
    prob.setflags(write=False)
    return raw, prob


def read_block(path: Path, block: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded ``(raw, prob)`` of one cube, float32, from a small LRU keyed by (file, mtime)."""
    return _block_cached(str(path), _mtime(path), block)


def _preview_label(path: Path) -> str:
    try:
        meta = read_meta(path)
        return f"step {meta.step:,} · {meta.hours:.2f} h"
    except PreviewError:
        return f"{path.name} (unreadable)"


def _file_marks(files: list[Path]) -> dict:
    if not files:
        return {}
    every = max(1, len(files) // 6)
    keep = set(range(0, len(files), every)) | {len(files) - 1}
    marks = {}
    for i in sorted(keep):
        m = _STEP_IN_NAME.search(files[i].name)
        marks[i] = f"{int(m.group(1)):,}" if m else str(i)
    return marks


def _labelled(label: str, control, width: str = "auto") -> html.Div:
    return html.Div([html.Label(label), control], style={"width": width})


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The preview viewer of run ``name``; a clear message if there is no such run."""
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "prev-missing")
    files = runs.preview_files(run_dir)
    last = max(len(files) - 1, 0)
    return html.Div(
        [
            dcc.Store(id="prev-name", data=name),
            dcc.Interval(id="prev-interval", interval=REFRESH_MS),
            html.Div(
                [
                    html.H2(f"{name}: previews", style={"margin": "0 12px 0 0"}),
                    dcc.Link("curves", href=f"/run/{name}"),
                    dcc.Link("all runs", href="/"),
                ],
                style=_ROW,
            ),
            _labelled(
                "Preview (training step)",
                dcc.Slider(
                    id="prev-file", min=0, max=last, step=1, value=last, marks=_file_marks(files)
                ),
                "100%",
            ),
            html.Div(id="prev-file-label", style={"fontWeight": "bold"}),
            html.Div(
                [
                    _labelled(
                        "Cube",
                        dcc.Dropdown(id="prev-block", clearable=False, style={"width": "140px"}),
                    ),
                    _labelled(
                        "Class",
                        dcc.Dropdown(id="prev-class", clearable=False, style={"width": "140px"}),
                    ),
                    _labelled(
                        "Opacity",
                        dcc.Slider(
                            id="prev-opacity",
                            min=0,
                            max=1,
                            step=0.05,
                            value=0.5,
                            marks={0: "0", 1: "1"},
                        ),
                        "220px",
                    ),
                    _labelled(
                        "View",
                        dcc.RadioItems(
                            id="prev-mode",
                            options=[
                                {"label": "overlay", "value": "overlay"},
                                {"label": "side by side", "value": "side"},
                            ],
                            value="overlay",
                            inline=True,
                        ),
                    ),
                ],
                style=_ROW,
            ),
            _labelled("z plane", dcc.Slider(id="prev-z", min=0, max=0, step=1, value=None), "100%"),
            html.Div(id="prev-message", style={"color": "#dc3545", "padding": "6px 0"}),
            dcc.Graph(
                id="prev-graph",
                figure={"data": [], "layout": {"height": 560}},
                config={"displaylogo": False},
            ),
        ],
        style={"padding": "10px 16px"},
    )


def _files_of(name: Any) -> list[Path] | None:
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    return None if run_dir is None else runs.preview_files(run_dir)


def _pick(files: list[Path], index: Any) -> Path:
    """The file at slider position ``index`` (clamped; the first for anything not a number)."""
    return files[inputs.integer(index, lo=0, hi=len(files) - 1) or 0]


@callback(
    Output("prev-file", "max"),
    Output("prev-file", "marks"),
    Output("prev-file", "value"),
    Input("prev-interval", "n_intervals"),
    State("prev-file", "value"),
    State("prev-file", "max"),
    State("prev-name", "data"),
    prevent_initial_call=True,
)
def _on_refresh(_tick, value, old_max, name):
    files = _files_of(name)
    if files is None:
        return no_update, no_update, no_update
    new_max = max(len(files) - 1, 0)
    if new_max == old_max:
        return no_update, no_update, no_update
    # a viewer on the newest preview follows new ones; one looking back stays put
    index = inputs.integer(value, lo=0)
    follow = index is None or index == old_max
    return new_max, _file_marks(files), new_max if follow else min(index, new_max)


@callback(
    Output("prev-block", "options"),
    Output("prev-block", "value"),
    Output("prev-class", "options"),
    Output("prev-class", "value"),
    Output("prev-file-label", "children"),
    Input("prev-file", "value"),
    State("prev-block", "value"),
    State("prev-class", "value"),
    State("prev-name", "data"),
)
def _on_file(index, block, cls, name):
    files = _files_of(name)
    if not files:
        return [], None, [], None, "no previews yet: the trainer writes one every preview interval"
    path = _pick(files, index)
    try:
        meta = read_meta(path)
    except PreviewError as e:
        return [], None, [], None, str(e)
    blocks = list(meta.blocks)
    classes = [{"label": f"class {c}", "value": c} for c in range(meta.n_classes)]
    block = inputs.choice(block, meta.blocks, blocks[0])
    cls = inputs.integer(cls)
    cls = cls if cls is not None and 0 <= cls < meta.n_classes else min(1, meta.n_classes - 1)
    return blocks, block, classes, cls, _preview_label(path)


@callback(
    Output("prev-z", "max"),
    Output("prev-z", "value"),
    Output("prev-z", "marks"),
    Input("prev-block", "value"),
    Input("prev-file", "value"),
    State("prev-z", "value"),
    State("prev-name", "data"),
)
def _on_block(block, index, z, name):
    files = _files_of(name)
    if not files or inputs.text(block) is None:
        return no_update, no_update, no_update
    path = _pick(files, index)
    try:
        meta = read_meta(path)
    except PreviewError:
        return 0, 0, {}
    if block not in meta.blocks:
        return no_update, no_update, no_update
    nz = meta.blocks[block][0]
    z0 = meta.z0.get(block, 0)
    z = inputs.integer(z)
    z = z if z is not None and 0 <= z < nz else nz // 2
    marks = {i: str(z0 + i) for i in sorted({0, nz // 2, nz - 1})}
    return nz - 1, z, marks


def render_preview(
    path: Path, block: str, z: int, cls: int, opacity: float, mode: str
) -> go.Figure:
    """The figure of one plane of one cube of one preview file (cached decode)."""
    meta = read_meta(path)
    if block not in meta.blocks:
        raise PreviewError(f"preview file {path} has no {block!r}; it has {', '.join(meta.blocks)}")
    raw, prob = read_block(path, block)
    z = min(max(int(z), 0), raw.shape[0] - 1)
    cls = min(max(int(cls), 0), prob.shape[0] - 1)
    colour = figures.CLASS_COLOURS[cls % len(figures.CLASS_COLOURS)]
    title = f"step {meta.step:,} · {meta.hours:.2f} h · {block} · z {meta.z0.get(block, 0) + z} · class {cls}"
    return figures.preview_figure(
        raw[z],
        prob[cls, z],
        opacity,
        mode,
        colour=colour,
        title=title,
        uirevision=f"{path.parent}|{block}",
    )


@callback(
    Output("prev-graph", "figure"),
    Output("prev-message", "children"),
    Input("prev-file", "value"),
    Input("prev-block", "value"),
    Input("prev-z", "value"),
    Input("prev-class", "value"),
    Input("prev-opacity", "value"),
    Input("prev-mode", "value"),
    State("prev-name", "data"),
)
def _on_render(index, block, z, cls, opacity, mode, name):
    files = _files_of(name)
    if files is None:
        return no_update, f"run {name!r} is gone from the runs directory"
    if not files:
        return no_update, "This run has no previews yet."
    path = _pick(files, index)
    mode = inputs.choice(mode, ("overlay", "side"), "overlay")
    opacity = inputs.number(opacity, lo=0.0, hi=1.0)
    block, cls = inputs.text(block), inputs.integer(cls, lo=0)
    try:
        if block is None or cls is None:  # the cube and class choices are still on their way
            read_meta(path)
            return no_update, ""
        z = inputs.integer(z, lo=0) or 0
        return render_preview(path, block, z, cls, 0.5 if opacity is None else opacity, mode), ""
    except PreviewError as e:
        return go.Figure(layout={"height": 560}), str(e)

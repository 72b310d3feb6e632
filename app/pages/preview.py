"""Preview page (``/run/<name>/preview``): the run's preview predictions as an image viewer.

Each ``previews/preview-<step>.h5`` file (format: docs/run-directory.md) holds one or more
cubes of raw data with the network's class probabilities. The viewer picks a preview by
step (slider, newest by default, follows new ones), a cube, a z plane, a class, and draws
raw grey with the class probability as a coloured overlay, or both side by side. Images
are rendered on the server as PNG data (``app.figures.preview_figure``). The page comes with
the newest preview's view filled in, so its image is drawn with the page; callbacks only
answer the controls. A run without previews says when its first comes, and the viewer
replaces that sentence when it does.

The files are read through ``trainer.runs`` (``read_preview_meta``, ``read_preview_block``):
decoded cubes are cached in a small LRU keyed by (file, mtime), so moving the z slider
rereads nothing. A missing or corrupt file shows a message naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from dash import Input, Output, State, dcc, html, no_update

from app import figures, inputs, series
from app.callbacks import callback
from app.components import (
    ROW,
    empty_state,
    graph,
    labelled,
    run_href,
    run_not_found,
    url_part,
)
from trainer import runs
from trainer.runs import PreviewError, read_preview_block, read_preview_meta

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>/preview", "title": "VoxelBoard preview"}

REFRESH_MS = 5000


def _preview_label(path: Path) -> str:
    try:
        meta = read_preview_meta(path)
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
        step = runs.preview_step(files[i])
        marks[i] = f"{step:,}" if step is not None else str(i)
    return marks


def layout(name: str | None = None, **kwargs: Any) -> html.Div:
    """The preview viewer of run ``name``; a clear message if there is no such run.

    The page comes with its first view (the newest preview's cubes, classes, z plane and
    image): nothing waits for a callback before the image is drawn. A run without previews
    shows a sentence saying when the first comes, and the viewer replaces it when it does.
    """
    name = url_part(name)
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    if run_dir is None:
        return run_not_found(name, "prev-missing")
    files = runs.preview_files(run_dir)
    return html.Div(
        [
            dcc.Store(id="prev-name", data=name),
            html.Div(
                [
                    html.H1(f"{name}: previews", className="vb-page-title"),
                    dcc.Link("curves", href=run_href(name)),
                    dcc.Link("all runs", href="/"),
                ],
                style=ROW,
            ),
            html.Div(_viewer(files) if files else _waiting(name, run_dir), id="prev-body"),
        ],
        style={"padding": "10px 16px"},
    )


def _waiting(name: str, run_dir: Path) -> list:
    """The page body of a run without previews: when the first comes, and a poll for it."""
    return [
        empty_state(
            _waiting_text(run_dir),
            "prev-empty",
            dcc.Link("see the curves", href=run_href(name), className="vb-link"),
        ),
        dcc.Interval(id="prev-wait", interval=REFRESH_MS),
    ]


def _waiting_text(run_dir: Path) -> str:
    """When a run's first preview comes, from its resolved config's preview settings."""
    config = runs.read_resolved_config(run_dir)
    if config is None:
        return "No preview yet: the trainer writes them while it trains."
    if "preview_data_path" in config and config["preview_data_path"] is None:
        return "This run makes no previews: its config sets no preview_data_path."
    every = config.get("preview_every")
    if isinstance(every, int) and every > 0:
        return f"No preview yet: the trainer writes one every {every:,} steps."
    first, then = config.get("initial_prev_h"), config.get("prev_save_h")
    if isinstance(first, int | float) and isinstance(then, int | float):
        return (
            f"No preview yet: the first comes after {first:g} h of training, "
            f"then one every {then:g} h."
        )
    return "No preview yet: the trainer writes them while it trains."


def _viewer(files: list[Path]) -> list:
    """The viewer on the newest of ``files`` (not empty), with its first view filled in."""
    last = len(files) - 1
    blocks, block, classes, cls, label = _file_choices(files, last, None, None)
    z_max, z, z_marks = _z_choices(files, last, block, None) or (0, None, {})
    figure, message, no_image = _render(files, last, block, z, cls, 0.5, "overlay")
    return [
        dcc.Interval(id="prev-interval", interval=REFRESH_MS),
        labelled(
            "Preview (training step)",
            dcc.Slider(
                id="prev-file", min=0, max=last, step=1, value=last, marks=_file_marks(files)
            ),
            "100%",
        ),
        html.Div(label, id="prev-file-label", style={"fontWeight": "bold"}),
        html.Div(
            [
                labelled(
                    "Cube",
                    dcc.Dropdown(
                        id="prev-block",
                        options=blocks,
                        value=block,
                        clearable=False,
                        style={"width": "140px"},
                    ),
                ),
                labelled(
                    "Class",
                    dcc.Dropdown(
                        id="prev-class",
                        options=classes,
                        value=cls,
                        clearable=False,
                        style={"width": "140px"},
                    ),
                ),
                labelled(
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
                labelled(
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
            className="vb-controls",
        ),
        labelled(
            "z plane",
            dcc.Slider(id="prev-z", min=0, max=z_max, step=1, value=z, marks=z_marks),
            "100%",
        ),
        html.Div(message, id="prev-message", style={"color": "#dc3545", "padding": "6px 0"}),
        html.Div(
            graph("prev-graph", 560, figure=None if figure is no_update else figure),
            id="prev-graph-box",
            hidden=no_image is True,
        ),
    ]


def _files_of(name: Any) -> list[Path] | None:
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    return None if run_dir is None else runs.preview_files(run_dir)


def _pick(files: list[Path], index: Any) -> Path:
    """The file at slider position ``index`` (clamped; the first for anything not a number)."""
    return files[inputs.integer(index, lo=0, hi=len(files) - 1) or 0]


@callback(
    Output("prev-body", "children"),
    Input("prev-wait", "n_intervals"),
    State("prev-name", "data"),
    prevent_initial_call=True,
)
def _on_first_preview(_tick, name):
    files = _files_of(name)
    return _viewer(files) if files else no_update


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
    prevent_initial_call=True,  # the layout carries the newest preview's (_viewer)
)
def _on_file(index, block, cls, name):
    return _file_choices(_files_of(name) or [], index, block, cls)


def _file_choices(files: list[Path], index: Any, block: Any, cls: Any) -> tuple:
    """(cube options, cube, class options, class, label) of the preview at ``index``; the
    cube and class chosen stay when that preview has them."""
    if not files:
        return [], None, [], None, "no previews yet: the trainer writes one every preview interval"
    path = _pick(files, index)
    try:
        meta = read_preview_meta(path)
    except PreviewError:  # the message under the controls says why (_render)
        return [], None, [], None, _preview_label(path)
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
    prevent_initial_call=True,  # the layout carries the newest preview's (_viewer)
)
def _on_block(block, index, z, name):
    return _z_choices(_files_of(name) or [], index, block, z) or (no_update,) * 3


def _z_choices(files: list[Path], index: Any, block: Any, z: Any) -> tuple | None:
    """(last plane, plane, marks) of the z slider for ``block`` of the preview at ``index``
    (the plane kept when the cube has it, else the middle one); ``None``: nothing to change."""
    if not files or inputs.text(block) is None:
        return None
    path = _pick(files, index)
    try:
        meta = read_preview_meta(path)
    except PreviewError:
        return 0, 0, {}
    if block not in meta.blocks:
        return None
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
    meta = read_preview_meta(path)
    if block not in meta.blocks:
        raise PreviewError(f"preview file {path} has no {block!r}; it has {', '.join(meta.blocks)}")
    raw, prob = read_preview_block(path, block)
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
    Output("prev-graph-box", "hidden"),
    Input("prev-file", "value"),
    Input("prev-block", "value"),
    Input("prev-z", "value"),
    Input("prev-class", "value"),
    Input("prev-opacity", "value"),
    Input("prev-mode", "value"),
    State("prev-name", "data"),
    prevent_initial_call=True,  # the layout carries the newest preview's image (_viewer)
)
def _on_render(index, block, z, cls, opacity, mode, name):
    files = _files_of(name)
    if files is None:
        return no_update, f"run {name!r} is gone from the runs directory", True
    return _render(files, index, block, z, cls, opacity, mode)


def _render(
    files: list[Path], index: Any, block: Any, z: Any, cls: Any, opacity: Any, mode: Any
) -> tuple:
    """(figure or ``no_update``, message, whether the graph is hidden) of the preview at
    ``index`` as the controls say. An unreadable preview hides the graph (no empty frame) and
    its message names the file and the problem."""
    if not files:
        return no_update, "This run has no previews yet.", True
    path = _pick(files, index)
    mode = inputs.choice(mode, ("overlay", "side"), "overlay")
    opacity = inputs.number(opacity, lo=0.0, hi=1.0)
    block, cls = inputs.text(block), inputs.integer(cls, lo=0)
    try:
        if block is None or cls is None:  # the cube and class choices are still on their way
            read_preview_meta(path)
            return no_update, "", no_update
        z = inputs.integer(z, lo=0) or 0
        opacity = 0.5 if opacity is None else opacity
        return render_preview(path, block, z, cls, opacity, mode), "", False
    except PreviewError as e:
        return no_update, str(e), True

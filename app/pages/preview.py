"""Preview page (``/run/<name>/preview``): the run's preview predictions as an image viewer.

Each ``previews/preview-<step>.h5`` file (format: docs/run-directory.md) holds one or more
cubes of raw data with the network's class probabilities. The viewer picks a preview by
step (slider, newest by default, follows new ones), a cube, a z plane, a class, and draws
raw grey with the class probability as a coloured overlay, or both side by side. The
sliders hold the training step and the data's own z (``z0`` + plane), so the number box
beside each shows and takes the value its label and the figure's title name. Images
are rendered on the server as PNG data (``app.image_figures.preview_figure``). The page comes with
the newest preview's view filled in, so its image is drawn with the page; callbacks only
answer the controls. A run without previews says when its first comes, and the viewer
replaces that sentence when it does. The page looks for new previews every ``panel_ms``
(``app.refresh``: 2.5 times the dashboard's ``--refresh``).

The page's view model is ``app.preview_view``: it lists and reads the files through
``trainer.runs``, whose decoded cubes are cached in a small LRU keyed by (file, mtime), so
moving the z slider rereads nothing. A missing or corrupt file shows a message naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dash import Input, Output, State, dcc, html, no_update

from app import current_context, inputs, series
from app import preview_view as pv
from app import viewer as vw
from app.callbacks import callback
from app.components import (
    ROW,
    empty_state,
    graph,
    labelled,
    neuroglancer_link,
    run_href,
    run_not_found,
    url_part,
)

#: where the page is served (``create_app`` registers it)
PAGE = {"path_template": "/run/<name>/preview", "title": "VoxelBoard preview"}


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
    files = pv.preview_files(run_dir)
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
            pv.waiting_text(run_dir),
            "prev-empty",
            dcc.Link("see the curves", href=run_href(name), className="vb-link"),
        ),
        dcc.Interval(id="prev-wait", interval=current_context().intervals.panel_ms),
    ]


def _viewer(files: list[Path]) -> list:
    """The viewer on the newest of ``files`` (not empty), with its first view filled in."""
    slider = pv.file_slider(files)
    last = slider["max"]
    blocks, block, classes, cls, label = pv.file_choices(files, last, None, None)
    z_min, z_max, z, z_marks = pv.z_choices(files, last, block, None) or (0, 0, None, {})
    figure, message, no_image = pv.render(files, last, block, z, cls, 0.5, "overlay")
    return [
        dcc.Interval(id="prev-interval", interval=current_context().intervals.panel_ms),
        labelled(
            "Preview (training step)",
            dcc.Slider(id="prev-file", value=last, **slider),
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
            dcc.Slider(id="prev-z", min=z_min, max=z_max, step=1, value=z, marks=z_marks),
            "100%",
        ),
        html.Div(
            message, id="prev-message", style={"color": "var(--vb-danger)", "padding": "6px 0"}
        ),
        html.Div(
            graph("prev-graph", 560, figure=None if figure is no_update else figure),
            id="prev-graph-box",
            hidden=no_image is True,
        ),
        *([neuroglancer_link("prev")] if current_context().viewer_host else []),
    ]


def _files_of(name: Any) -> list[Path] | None:
    root = series.app_runs_dir()
    run_dir = series.run_dir_for(root, name)
    return None if run_dir is None else pv.preview_files(run_dir)


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
    Output("prev-file", "min"),
    Output("prev-file", "max"),
    Output("prev-file", "step"),
    Output("prev-file", "marks"),
    Output("prev-file", "allow_direct_input"),
    Output("prev-file", "value"),
    Input("prev-interval", "n_intervals"),
    State("prev-file", "value"),
    State("prev-file", "max"),
    State("prev-name", "data"),
    prevent_initial_call=True,
)
def _on_refresh(_tick, value, old_max, name):
    files = _files_of(name)
    slider = pv.file_slider(files) if files else None
    if slider is None or slider["max"] == old_max:
        return (no_update,) * 6
    # a viewer on the newest preview follows new ones; one looking back stays on its file
    at = inputs.integer(value)
    follow = at is None or at == old_max
    kept = pv.file_positions(files)[files.index(pv.pick(files, at))] if not follow else None
    return (*slider.values(), slider["max"] if follow else kept)


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
    return pv.file_choices(_files_of(name) or [], index, block, cls)


@callback(
    Output("prev-z", "min"),
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
    return pv.z_choices(_files_of(name) or [], index, block, z) or (no_update,) * 4


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
    return pv.render(files, index, block, z, cls, opacity, mode)


@callback(
    Output("prev-ng-link", "href"),
    Output("prev-ng-link", "children"),
    Output("prev-ng-link", "hidden"),
    Output("prev-ng-msg", "children"),
    Input("prev-ng-open", "n_clicks"),
    State("prev-file", "value"),
    State("prev-block", "value"),
    State("prev-name", "data"),
    prevent_initial_call=True,
)
def _on_neuroglancer(_n, index, block, name):
    return vw.preview_outputs(_files_of(name), index, block, current_context().viewer_host)

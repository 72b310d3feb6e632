"""Experiments page (``/``): all runs, launch form, stop/resume/delete, log tail, system panel.

Ids are prefixed ``exp-``. The selected run lives in the browser (``exp-selected`` store),
so every viewer has their own selection; the runs, the queue and the children live in the
app's launcher and the run directories. In read-only mode the controls are hidden and
their callbacks refuse to act. The launch form's resource fields are the launcher
backend's (``Backend.form_fields``).

Sweeps: the runs grid's Sweep column names the sweep each trial belongs to, and a list above
the grid shows every sweep of the runs folder (``app.sweep_view``). A config with a
``sweep`` section is launched as a sweep: the form says how many runs it makes
(``trainer.sweeps.read_sweep_section``, which never runs the config), and Launch starts
making the sweep in a child process (``app.sweeper.start_sweep``) and returns at once; the
``exp-sweep-start`` store then follows that child until the sweep is made or refused, and
the launcher thread drives the sweep (``Launcher.drive_sweeps``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dash_ag_grid as dag
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app import DEMO_CONFIG, changes_runs, current_context, paths
from app.backends import Backend
from app.callbacks import callback
from app.components import (
    empty_state,
    fmt_bytes,
    meter,
    panel,
    run_href,
    state_badge,
    sweep_href,
    text_input,
)
from app.inputs import strings
from app.readers import has_snapshot, list_runs, log_path, tail_lines
from app.run_actions import after_stop, buttons
from app.runs_table import (
    DEFAULT_COL_DEF,
    GRID_OPTIONS,
    Sparklines,
    column_defs,
    grid_rows,
    rows_signature,
)
from app.security import LaunchError, config_options, resolve_config
from app.sweep_view import read_sweep_lines, sweep_hint
from app.sweeper import SweepStart, start_sweep
from app.system import system_stats
from trainer.runs.sweeps import check_sweep_id
from trainer.sweeps import MAX_PARALLEL, SWEEP_DEFAULTS, SweepSection, read_sweep_section

#: where the page is served (``create_app`` registers it)
PAGE = {"path": "/", "name": "Experiments", "title": "VoxelBoard: experiments"}

LOG_LINES = 200
#: the id type of the launch form's resource fields (``{"type": RESOURCE, "index": key}``)
RESOURCE = "exp-resource"

#: valid-loss sparklines of every run this server shows (reads only new history rows)
SPARKLINES = Sparklines()


def _grid_rows(
    runs: list[dict[str, Any]], jobs: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    return grid_rows(current_context().runs_dir, runs, SPARKLINES, jobs)


def _launch_panel(
    configs: list[dict[str, Any]], devices: list[str], hidden: bool, backend: Backend
) -> html.Section:
    def field(label: str, component: Any) -> html.Label:
        return html.Label(
            [html.Span(label, className="vb-field-label"), component], className="vb-field"
        )

    fields = {} if hidden else backend.form_fields()
    return panel(
        "Launch",
        field(
            "Config",
            dcc.Dropdown(
                id="exp-config",
                options=configs,
                value=default_config(configs),
                clearable=False,
                placeholder="no configs found",
            ),
        ),
        field(
            "Device", dcc.Dropdown(id="exp-device", options=devices, value="auto", clearable=False)
        ),
        html.Div(
            [
                field("Steps", text_input("exp-n-steps", "from config")),
                field("Batch size", text_input("exp-batch-size", "from config")),
                field("Learning rate", text_input("exp-lr", "from config")),
                html.Div(
                    field("Save name", text_input("exp-save-name", "config name")),
                    id="exp-save-name-field",  # hidden for a sweep: its trials are named for it
                ),
            ],
            id="exp-override-fields",
            className="vb-grid",
        ),
        html.Div(
            [
                html.Div(id="exp-sweep-hint", className="vb-muted"),
                field("Runs", text_input("exp-n-runs", "from the sweep")),
                field(
                    "Max parallel",
                    dcc.Input(
                        id="exp-max-parallel",
                        type="number",
                        min=1,
                        max=MAX_PARALLEL,
                        step=1,
                        value=SWEEP_DEFAULTS["max_parallel"],
                        className="vb-input",
                    ),
                ),
            ],
            id="exp-sweep-fields",
            hidden=True,  # until a config with a sweep section is chosen
        ),
        html.Div(
            [
                field(
                    label,
                    dcc.Input(
                        id={"type": RESOURCE, "index": key},
                        type="text",
                        placeholder=backend.form_placeholder(key),
                        className="vb-input",
                    ),
                )
                for key, label in fields.items()
            ],
            id="exp-resource-fields",
            className="vb-grid",
            hidden=not fields,
        ),
        html.Button("Launch", id="exp-launch", className="vb-button vb-primary"),
        html.Div(id="exp-launch-msg", className="vb-msg"),
        # how making a launched sweep went: its own element, as the read-only guard refuses
        # every callback that answers in exp-launch-msg
        html.Div(id="exp-sweep-msg", className="vb-msg"),
        id="exp-launch-panel",
        className="vb-launch",
        hidden=hidden,
    )


def _actions_panel(hidden: bool) -> html.Section:
    return panel(
        "Selected run",
        html.Div(id="exp-selection", children=_selection_view(None)),
        html.Div(
            [
                html.Button("Stop", id="exp-stop", className="vb-button", disabled=True),
                html.Button("Resume", id="exp-resume", className="vb-button", disabled=True),
                html.Button(
                    "Delete", id="exp-delete", className="vb-button vb-danger", disabled=True
                ),
            ],
            id="exp-buttons",
            className="vb-buttons",
            hidden=hidden,
        ),
        html.Div(id="exp-action-msg", className="vb-msg"),
        # "<run>: stopping." until the run has ended (refresh_runs), then "<run>: stopped."
        html.Div(id="exp-stop-msg", className="vb-msg"),
        dcc.ConfirmDialog(id="exp-delete-confirm"),
    )


def layout(**kwargs: Any) -> html.Div:
    """The page; query-string arguments are ignored."""
    c = current_context()
    configs = [] if c.read_only else config_options(c.configs_dirs)
    devices = ["auto"] if c.read_only else c.launcher.devices()
    rows = _grid_rows(list_runs(c.runs_dir))
    sweeps = read_sweep_lines(c.runs_dir, None if c.read_only else c.launcher.backend)
    return html.Div(
        [
            # the page's level-one heading for screen readers; the navigation bar shows its name
            html.H1("Experiments", className="vb-sr-only"),
            dcc.Interval(id="exp-interval", interval=c.intervals.live_ms),
            dcc.Interval(id="exp-sys-interval", interval=c.intervals.panel_ms),
            dcc.Store(id="exp-selected"),
            dcc.Store(id="exp-stopping"),  # the run whose "stopping." message waits for its end
            dcc.Store(id="exp-refresh"),
            dcc.Store(id="exp-log-sig"),
            # the digest of the rows the grid holds (a poll finding the same sends none)
            dcc.Store(id="exp-rows-sig", data=rows_signature(rows)),
            dcc.Store(id="exp-sweep-start"),  # the token of a sweep being made
            html.Div(
                [
                    _launch_panel(configs, devices, c.read_only, c.launcher.runner),
                    _actions_panel(hidden=c.read_only),
                    panel("System", html.Div(id="exp-system", children=_system_view())),
                ],
                className="vb-row",
            ),
            empty_state(_no_runs_text(configs, c.read_only), "exp-empty", hidden=bool(rows)),
            panel(
                "Sweeps",
                html.Ul(_sweeps_view(sweeps), id="exp-sweeps", className="vb-sweeps"),
                id="exp-sweeps-panel",
                hidden=not sweeps,
            ),
            panel(
                "Runs",
                dag.AgGrid(
                    id="exp-table",
                    columnDefs=column_defs(r["name"] for r in rows),
                    defaultColDef=DEFAULT_COL_DEF,
                    rowData=rows,
                    getRowId="params.data.id",
                    selectedRows=[],
                    dashGridOptions=GRID_OPTIONS,
                    # names the role="grid" element for screen readers once it exists
                    eventListeners={"modelUpdated": ["vbLabelGrid(params, 'Runs')"]},
                    style={"height": None},
                    className="vb-runs-grid",
                ),
                id="exp-runs-panel",
                hidden=not rows,
            ),
            panel(
                "Log",
                html.Pre(id="exp-log", className="vb-log"),
                html.Div(id="exp-log-name"),
                id="exp-log-panel",
                hidden=True,  # until a run is selected
            ),
        ],
        className="vb-experiments",
    )


# -- views (pure) --------------------------------------------------------------------------


def _is_demo(option: dict[str, Any]) -> bool:
    return str(option["label"]).rsplit("/", 1)[-1] == DEMO_CONFIG


def default_config(configs: list[dict[str, Any]]) -> str | None:
    """The Config dropdown's first value: the demo config where it is listed (README and the
    first-start sentence tell a newcomer to launch it), else the first config listed."""
    usable = [o for o in configs if not o.get("disabled")]
    pick = next((o for o in usable if _is_demo(o)), usable[0] if usable else None)
    return None if pick is None else pick["value"]


def _no_runs_text(configs: list[dict[str, Any]], read_only: bool) -> str:
    """The experiments page's sentence while the runs directory holds no run."""
    if read_only:
        return "No runs in this runs directory yet."
    usable = [o for o in configs if not o.get("disabled")]
    if not usable:
        return "No runs yet: put a config file into the configs folder, then press Launch."
    pick = next((o for o in usable if _is_demo(o)), usable[0])
    return f"No runs yet: pick {pick['label']} and press Launch."


def _selection_view(row: dict[str, Any] | None) -> Any:
    if row is None:
        return html.Span("Select a run in the table.", className="vb-muted")
    name = row["name"]
    items: list[Any] = [
        html.Strong(row["name"], id="exp-selected-name"),
        " ",
        state_badge(row["state"]),
        " ",
        dcc.Link("Curves", href=run_href(name), className="vb-link"),
        " ",
        dcc.Link("Preview", href=run_href(name, "/preview"), className="vb-link"),
        " ",
        dcc.Link("Evaluation", href=run_href(name, "/evaluation"), className="vb-link"),
    ]
    issue = " | ".join(x for x in (row.get("badge"), row.get("error")) if x)
    if issue:
        items.append(html.Div(issue, className="vb-error"))
    return items


def _sweeps_view(lines: list[dict[str, Any]]) -> list[html.Li]:
    """The sweeps list: per sweep its page, state, trials done of all, best value and run,
    and a button that filters the runs grid to its trials."""
    items = []
    for line in lines:
        sweep_id = line["id"]
        total = f" of {line['total']}" if line["total"] is not None else ""
        parts: list[Any] = [
            dcc.Link(sweep_id, href=sweep_href(sweep_id), className="vb-link"),
            " ",
            state_badge(line["state"]),
            f" {line['done']}{total} trials done",
        ]
        if line.get("driver"):
            parts += [" · ", html.Span(line["driver"], className="vb-sweep-driver")]
        if line.get("problem"):
            parts += [" ", html.Span(line["problem"], className="vb-error")]
        if line["best_run"] is not None:
            run = line["best_run"]
            parts += [
                f" · best {line['metric']} {line['best']:g} (",
                dcc.Link(run, href=run_href(run), className="vb-link"),
                ")",
            ]
        parts += [
            " ",
            html.Button(
                "show its runs",
                id={"type": "exp-sweep-filter", "index": sweep_id},
                className="vb-button vb-small",
                title=f"filter the runs table to the trials of {sweep_id}",
            ),
        ]
        items.append(html.Li(parts, className="vb-sweep-line"))
    return items


def _system_view() -> list[Any]:
    c = current_context()
    runs = c.launcher.overview()  # one scan of the runs folder for the whole panel
    active = runs.active
    gpus_of_runs = {n: int(d.split(":")[1]) for n, d in active.items() if d.startswith("cuda:")}
    s = system_stats(runs.pids, gpus_of_runs)
    out: list[Any] = [
        meter("CPU", s.cpu_percent / 100, f"{s.cpu_percent:.0f}% of {s.n_cpus} cores"),
        meter(
            "RAM",
            s.ram_used / max(1, s.ram_total),
            f"{fmt_bytes(s.ram_used)} / {fmt_bytes(s.ram_total)}",
        ),
    ]
    for g in s.gpus:
        out += [
            html.Div(f"GPU {g.index}: {g.name}", className="vb-gpu-name"),
            meter("util", g.util_percent / 100, f"{g.util_percent:.0f}%"),
            meter(
                "mem",
                g.mem_used / max(1, g.mem_total),
                f"{fmt_bytes(g.mem_used)} / {fmt_bytes(g.mem_total)}",
            ),
            html.Div(f"runs: {', '.join(g.runs) or 'none'}", className="vb-muted"),
        ]
    for text, bad in c.launcher.runner.notes(bool(s.gpus)):
        out.append(html.Div(text, className="vb-error" if bad else "vb-muted"))
    cpu_runs = sorted(n for n, d in active.items() if d == "cpu")
    out.append(html.Div(f"CPU runs: {', '.join(cpu_runs) or 'none'}", className="vb-muted"))
    out.append(html.Div(f"Queue: {', '.join(runs.queued) or 'empty'}", className="vb-muted"))
    return out


def _message(text: str, ok: bool) -> html.Div:
    return html.Div(text, className="vb-ok" if ok else "vb-error")


_READ_ONLY = "This dashboard is read-only."


# -- callbacks -----------------------------------------------------------------------------


@callback(
    Output("exp-table", "rowData"),
    Output("exp-table", "selectedRows"),
    Output("exp-selection", "children"),
    Output("exp-stop", "disabled"),
    Output("exp-resume", "disabled"),
    Output("exp-delete", "disabled"),
    Output("exp-empty", "hidden"),
    Output("exp-runs-panel", "hidden"),
    Output("exp-sweeps", "children"),
    Output("exp-sweeps-panel", "hidden"),
    Output("exp-stop-msg", "children"),
    Output("exp-stopping", "data"),
    Output("exp-rows-sig", "data"),
    Input("exp-interval", "n_intervals"),
    Input("exp-refresh", "data"),
    Input("exp-selected", "data"),
    State("exp-stopping", "data"),
    State("exp-rows-sig", "data"),
)
def refresh_runs(
    _n: int | None, _refresh: Any, selected: str | None, stopping: Any, rows_sig: Any
) -> tuple:
    c = current_context()
    runs = list_runs(c.runs_dir)
    rows = _grid_rows(runs, c.launcher.jobs())
    sig = rows_signature(rows)
    row = next((r for r in runs if r["name"] == selected), None)
    snapshot = row is not None and _has_snapshot(row["name"])
    # rows keep their ids (getRowId), so new row data keeps the grid's selection and scroll;
    # the selection is only set when the store changed it (a launch, a delete)
    grid_selection = (
        {"ids": [row["name"]] if row else []} if ctx.triggered_id == "exp-selected" else no_update
    )
    sweeps = read_sweep_lines(c.runs_dir, None if c.read_only else c.launcher.backend)
    stopped = after_stop(stopping, next((r for r in runs if r["name"] == stopping), None))
    return (
        no_update if sig == rows_sig else rows,
        grid_selection,
        _selection_view(row),
        *buttons(row, snapshot),
        bool(runs),
        not runs,
        _sweeps_view(sweeps),
        not sweeps,
        no_update if stopped is None else _message(stopped, True),
        no_update if stopped is None else None,
        no_update if sig == rows_sig else sig,
    )


def _has_snapshot(name: str) -> bool:
    c = current_context()
    try:
        return has_snapshot(paths.run_dir(c.runs_dir, name, follow_links=c.follow_links))
    except paths.ClientPathError:  # a folder linked out of the runs folder: never read
        return False


@callback(
    Output("exp-table", "filterModel"),
    Input({"type": "exp-sweep-filter", "index": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def show_sweep_runs(_clicks: Any) -> Any:
    clicked = ctx.triggered_id
    value = ctx.triggered[0].get("value") if ctx.triggered else None
    if not isinstance(clicked, dict) or not value:  # buttons (re)drawn, not clicked
        return no_update
    try:
        sweep_id = check_sweep_id(clicked.get("index"))
    except ValueError:
        return no_update
    return {"sweep": {"filterType": "text", "type": "equals", "filter": sweep_id}}


@callback(
    Output("exp-selected", "data"),
    Input("exp-table", "selectedRows"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
def select_run(rows: Any, current: str | None) -> Any:
    ids = [r.get("id") for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    name = next(iter(strings(ids)), None)
    if rows == [] and current is not None:  # unselected in the grid: no action on any run
        return None
    return no_update if name == current or name is None else name


@callback(
    Output("exp-log", "children"),
    Output("exp-log-name", "children"),
    Output("exp-log-sig", "data"),
    Output("exp-log-panel", "hidden"),
    Input("exp-interval", "n_intervals"),
    Input("exp-selected", "data"),
    State("exp-log-sig", "data"),
)
def tail_log(_n: int | None, selected: str | None, sig: list | None) -> tuple:
    try:
        c = current_context()
        run_dir = paths.run_dir(c.runs_dir, selected, follow_links=c.follow_links)
    except paths.ClientPathError:  # nothing selected, or a crafted name: never leave runs_dir
        return "", "", None, True
    path = log_path(run_dir)
    try:
        st = paths.confined(path).stat() if path is not None else None
    except paths.OutsideRunsError as e:
        return "", str(e), None, False
    except OSError:  # deleted between the two looks
        st = None
    if st is None:
        return "", "no log yet", None, False
    new_sig = [str(path), st.st_size, st.st_mtime_ns]
    if new_sig == sig:
        return no_update, no_update, no_update, False
    lines = "\n".join(tail_lines(path, LOG_LINES))
    return lines, f"{path.name}, last {LOG_LINES} lines", new_sig, False


@callback(
    Output("exp-sweep-hint", "children"),
    Output("exp-sweep-fields", "hidden"),
    Output("exp-save-name-field", "hidden"),
    Output("exp-max-parallel", "value"),
    Input("exp-config", "value"),
)
def show_sweep_form(config: Any) -> tuple:
    c = current_context()
    section = None if c.read_only else _config_sweep(c.configs_dirs, config)
    if section is None:
        return "", True, False, no_update
    hint = sweep_hint(section, c.launcher.runner.sweep_limit())
    return hint, False, True, section.max_parallel


def _config_sweep(configs_dir: tuple[Path, ...], config: Any) -> SweepSection | None:
    """The sweep section of a launchable config, or ``None``."""
    try:
        return read_sweep_section(resolve_config(configs_dir, config))
    except LaunchError:
        return None


@callback(Output("exp-system", "children"), Input("exp-sys-interval", "n_intervals"))
def refresh_system(_n: int | None) -> list[Any]:
    return _system_view()


@callback(
    Output("exp-launch-msg", "children"),
    Output("exp-sweep-msg", "children"),
    Output("exp-selected", "data", allow_duplicate=True),
    Output("exp-refresh", "data"),
    Output("exp-sweep-start", "data"),
    Input("exp-launch", "n_clicks"),
    State("exp-config", "value"),
    State("exp-device", "value"),
    State("exp-n-steps", "value"),
    State("exp-batch-size", "value"),
    State("exp-lr", "value"),
    State("exp-save-name", "value"),
    State("exp-max-parallel", "value"),
    State("exp-n-runs", "value"),
    State({"type": RESOURCE, "index": ALL}, "value"),
    State({"type": RESOURCE, "index": ALL}, "id"),
    prevent_initial_call=True,
)
@changes_runs
def launch_run(
    _clicks, config, device, n_steps, batch_size, lr, save_name, max_parallel, n_runs, values, ids
) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), "", no_update, no_update, no_update
    section = _config_sweep(c.configs_dirs, config)
    try:
        resources = c.launcher.runner.resources_from_form(_form_values(ids, values))
        overrides = {"n_steps": n_steps, "batch_size": batch_size, "lr": lr}
        if section is not None:
            parallel = section.max_parallel if max_parallel is None else max_parallel
            token = start_sweep(c.launcher, config, device, parallel, resources, overrides, n_runs)
            start = c.launcher.sweep_starts.get(token)
            return "", _sweep_start_view(start), no_update, no_update, token
        overrides["save_name"] = save_name
        name = c.launcher.launch(config, device=device, overrides=overrides, resources=resources)
    except LaunchError as e:
        return _message(f"Not launched. {e}", False), "", no_update, no_update, no_update
    return _message(f"Launched {name}.", True), "", name, time.time(), no_update


def _form_values(ids: Any, values: Any) -> dict[str, Any]:
    """The resource fields' values by key (what a browser sent may be anything)."""
    if not isinstance(ids, list) or not isinstance(values, list):
        return {}
    keys = [i.get("index") if isinstance(i, dict) else None for i in ids]
    return {k: v for k, v in zip(keys, values) if isinstance(k, str)}


@callback(
    Output("exp-sweep-msg", "children", allow_duplicate=True),
    Output("exp-sweep-start", "data", allow_duplicate=True),
    Output("exp-refresh", "data", allow_duplicate=True),
    Input("exp-interval", "n_intervals"),
    State("exp-sweep-start", "data"),
    prevent_initial_call=True,
)
def follow_sweep_start(_n: int | None, token: Any) -> tuple:
    """Says how making the sweep went once its child has ended."""
    if not isinstance(token, str) or not token:
        return no_update, no_update, no_update
    start = current_context().launcher.sweep_starts.get(token)
    if start is None:
        text = "This dashboard knows no such sweep launch (was it restarted?); see the sweeps list."
        return _message(text, False), None, no_update
    if not start.done:
        return no_update, no_update, no_update
    return _sweep_start_view(start), None, time.time()


def _sweep_start_view(start: SweepStart | None) -> html.Div:
    """The launch form's message about a sweep being made, made, or refused."""
    if start is None or not start.done:
        name = start.config if start is not None else "the config"
        return _message(
            f"Making a sweep of {name}: run.py sweep checks the config and makes the sweep.", True
        )
    if start.sweep_id is None:
        return html.Div(
            [html.Div(f"Not launched: {start.config} "
                      + ("took too long." if start.timed_out else "is no valid sweep.")),
             html.Ul([html.Li(ln) for ln in start.problems or []], className="vb-error-lines")],
            className="vb-error",
        )  # fmt: skip
    return html.Div(
        ["Made sweep ", dcc.Link(start.sweep_id, href=sweep_href(start.sweep_id),
                                 id="exp-new-sweep", className="vb-link"),
         f": this dashboard starts its trials, at most {start.max_parallel} at once."],
        className="vb-ok",
    )  # fmt: skip


@callback(
    Output("exp-action-msg", "children"),
    Output("exp-refresh", "data", allow_duplicate=True),
    Output("exp-stop-msg", "children", allow_duplicate=True),
    Output("exp-stopping", "data", allow_duplicate=True),
    Input("exp-stop", "n_clicks"),
    Input("exp-resume", "n_clicks"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
@changes_runs
def stop_or_resume(_stop, _resume, selected: str | None) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), no_update, no_update, no_update
    try:
        if ctx.triggered_id == "exp-stop":
            result = c.launcher.stop(selected)
            if result == "stopping":  # refresh_runs says when it has stopped (after_stop)
                return "", time.time(), _message(f"{selected}: stopping.", True), selected
            text = f"{selected}: {result}."
        else:
            c.launcher.resume(selected)
            text = f"{selected}: resuming from its last snapshot."
    except LaunchError as e:
        return _message(str(e), False), no_update, "", None
    return _message(text, True), time.time(), "", None


@callback(
    Output("exp-delete-confirm", "displayed"),
    Output("exp-delete-confirm", "message"),
    Input("exp-delete", "n_clicks"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
def ask_delete(_clicks, selected: str | None) -> tuple:
    try:
        name = paths.run_dir(current_context().runs_dir, selected).name
    except paths.ClientPathError:  # nothing selected, or not a run: nothing to ask about
        return False, no_update
    return True, f"Delete run {name} and all its files (snapshots, history, previews)?"


@callback(
    Output("exp-action-msg", "children", allow_duplicate=True),
    Output("exp-selected", "data", allow_duplicate=True),
    Output("exp-refresh", "data", allow_duplicate=True),
    Input("exp-delete-confirm", "submit_n_clicks"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
@changes_runs
def delete_run(_submit, selected: str | None) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), no_update, no_update
    try:
        c.launcher.delete(selected)
    except LaunchError as e:
        return _message(str(e), False), no_update, no_update
    return _message(f"Deleted {selected}.", True), None, time.time()

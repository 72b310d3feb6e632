"""Experiments page (``/``): all runs, launch form, stop/resume/delete, log tail, system panel.

Ids are prefixed ``exp-``. The selected run lives in the browser (``exp-selected`` store),
so every viewer has their own selection; the runs, the queue and the children live in the
app's launcher and the run directories. In read-only mode the controls are hidden and
their callbacks refuse to act.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import dash_ag_grid as dag
from dash import Input, Output, State, ctx, dcc, html, no_update

from app import changes_runs, current_context, paths
from app.callbacks import callback
from app.components import (
    empty_state,
    fmt_bytes,
    fmt_duration,
    fmt_time,
    meter,
    panel,
    round_sig,
    state_badge,
)
from app.inputs import strings
from app.launcher import DELETABLE_STATES, RESUMABLE_STATES
from app.readers import list_runs, log_path, tail_lines
from app.runs_table import DEFAULT_COL_DEF, GRID_OPTIONS, Sparklines, column_defs
from app.security import LaunchError, list_configs
from app.slurm import run_state as slurm_run_state
from app.system import system_stats

#: where the page is served (``create_app`` registers it)
PAGE = {"path": "/", "name": "Experiments", "title": "VoxelBoard: experiments"}

REFRESH_MS = 2000
SYSTEM_MS = 5000
LOG_LINES = 200
STOPPABLE_STATES = frozenset({"queued", "running"})
#: resource fields of the launch form with the Slurm backend (ids ``exp-slurm-<key>``)
SLURM_FIELDS = {
    "partition": "Partition",
    "account": "Account",
    "gpus": "GPUs",
    "cpus": "CPUs",
    "mem": "Memory",
    "time": "Time limit",
}


def _slurm_defaults(c: Any) -> dict[str, Any] | None:
    """The launcher's Slurm defaults, or ``None`` when it does not use Slurm."""
    return c.launcher.slurm_defaults if c.launcher.backend == "slurm" else None


#: valid-loss sparklines of every run this server shows (reads only new history rows)
SPARKLINES = Sparklines()


def table_rows(
    runs: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any]] | None = None,
    curves: dict[str, list[float | None]] | None = None,
) -> list[dict[str, Any]]:
    """Display rows for the runs grid from ``app.readers.list_runs`` summaries.

    The Slurm job id and the reason a queued job waits come from the summary (the
    launcher's record); ``jobs`` (``Launcher.jobs()``) fills them in for summaries without.
    The state is the summary's (``trainer.runs.merge_state`` already trusts Slurm's
    ``RUNNING`` over a pid on another machine); a ``lost`` row whose job ``jobs`` says is
    running shows as running. ``curves`` holds each run's valid-loss sparkline
    (``app.runs_table.Sparklines``); a run without one gets ``[]``.
    """
    rows = []
    for r in runs:
        job = dict((jobs or {}).get(r["name"]) or {})
        if r.get("job_id"):
            job = {"job_id": r["job_id"], "state": r.get("slurm_state"),
                   "reason": r.get("slurm_reason")}  # fmt: skip
        state = r["state"]
        if state == "lost" and slurm_run_state(job.get("state") or "") == "running":
            state = "running"
        why = None
        if state == "queued" and job.get("state"):
            why = f"Slurm: {job['state']}" + (f" ({job['reason']})" if job.get("reason") else "")
        issue = " | ".join(x for x in (why, r["badge"], r["error"]) if x)
        rows.append(
            {
                "id": r["name"],
                "name": r["name"],
                "config": r["config"],
                "state": state,
                "step": r["step"],
                "n_steps": r["n_steps"],
                "progress": r["progress"],
                "valid_curve": (curves or {}).get(r["name"], []),
                "eta": fmt_duration(r["eta_s"]),
                "eta_s": r["eta_s"],
                "it_per_s": round_sig(r["it_per_s"], 3),
                **{
                    k: round_sig(r[k])
                    for k in ("train_loss", "valid_loss", "train_err", "valid_err")
                },
                "device": r["device"] or "",
                "job": job.get("job_id") or "",
                "started": fmt_time(r["started"]),
                "duration": fmt_duration(r["duration_s"]),
                "duration_s": r["duration_s"],
                "issue": issue[:300],
            }
        )
    return rows


def _grid_rows(
    runs: list[dict[str, Any]], jobs: dict[str, dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """``table_rows`` with each run's valid-loss sparkline."""
    runs_dir = current_context().runs_dir
    return table_rows(
        runs, jobs, {r["name"]: SPARKLINES.points(runs_dir / r["name"]) for r in runs}
    )


def _launch_panel(
    configs: list[str], devices: list[str], hidden: bool, slurm: dict[str, Any] | None
) -> html.Section:
    def field(label: str, component: Any) -> html.Label:
        return html.Label(
            [html.Span(label, className="vb-field-label"), component], className="vb-field"
        )

    def text(id_: str, placeholder: str) -> dcc.Input:
        return dcc.Input(id=id_, type="text", placeholder=placeholder, className="vb-input")

    return panel(
        "Launch",
        field(
            "Config",
            dcc.Dropdown(
                id="exp-config",
                options=configs,
                value=configs[0] if configs else None,
                clearable=False,
                placeholder="no configs found",
            ),
        ),
        field(
            "Device", dcc.Dropdown(id="exp-device", options=devices, value="auto", clearable=False)
        ),
        html.Div(
            [
                field("Steps", text("exp-n-steps", "from config")),
                field("Batch size", text("exp-batch-size", "from config")),
                field("Learning rate", text("exp-lr", "from config")),
                field("Save name", text("exp-save-name", "config name")),
            ],
            className="vb-grid",
        ),
        html.Div(
            [
                field(label, text(f"exp-slurm-{key}", _default_hint(slurm, key)))
                for key, label in SLURM_FIELDS.items()
            ],
            id="exp-slurm-fields",
            className="vb-grid",
            hidden=slurm is None,
        ),
        html.Button("Launch", id="exp-launch", className="vb-button vb-primary"),
        html.Div(id="exp-launch-msg", className="vb-msg"),
        id="exp-launch-panel",
        className="vb-launch",
        hidden=hidden,
    )


def _default_hint(defaults: dict[str, Any] | None, key: str) -> str:
    value = (defaults or {}).get(key)
    return "config / cluster default" if value in (None, "", 0) else f"default {value}"


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
        dcc.ConfirmDialog(id="exp-delete-confirm"),
    )


def layout(**kwargs: Any) -> html.Div:
    """The page; query-string arguments are ignored."""
    c = current_context()
    configs = [] if c.read_only else list_configs(c.configs_dir)
    devices = ["auto"] if c.read_only else c.launcher.devices()
    rows = _grid_rows(list_runs(c.runs_dir))
    return html.Div(
        [
            dcc.Interval(id="exp-interval", interval=REFRESH_MS),
            dcc.Interval(id="exp-sys-interval", interval=SYSTEM_MS),
            dcc.Store(id="exp-selected"),
            dcc.Store(id="exp-refresh"),
            dcc.Store(id="exp-log-sig"),
            html.Div(
                [
                    _launch_panel(configs, devices, c.read_only, _slurm_defaults(c)),
                    _actions_panel(hidden=c.read_only),
                    panel("System", html.Div(id="exp-system", children=_system_view())),
                ],
                className="vb-row",
            ),
            empty_state(_no_runs_text(configs, c.read_only), "exp-empty", hidden=bool(rows)),
            panel(
                "Runs",
                dag.AgGrid(
                    id="exp-table",
                    columnDefs=column_defs(),
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


def _no_runs_text(configs: list[str], read_only: bool) -> str:
    """The experiments page's sentence while the runs directory holds no run."""
    if read_only:
        return "No runs in this runs directory yet."
    if not configs:
        return "No runs yet: put a config file into the configs folder, then press Launch."
    pick = "demo_cnn3d.py" if "demo_cnn3d.py" in configs else configs[0]
    return f"No runs yet: pick {pick} and press Launch."


def _selection_view(row: dict[str, Any] | None) -> Any:
    if row is None:
        return html.Span("Select a run in the table.", className="vb-muted")
    name = quote(row["name"])
    items: list[Any] = [
        html.Strong(row["name"], id="exp-selected-name"),
        " ",
        state_badge(row["state"]),
        " ",
        dcc.Link("Curves", href=f"/run/{name}", className="vb-link"),
        " ",
        dcc.Link("Preview", href=f"/run/{name}/preview", className="vb-link"),
    ]
    issue = " | ".join(x for x in (row.get("badge"), row.get("error")) if x)
    if issue:
        items.append(html.Div(issue, className="vb-error"))
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
    if c.launcher.backend == "slurm":
        out.append(html.Div("Launches go to Slurm as batch jobs.", className="vb-muted"))
        if c.launcher.jobs_error:
            out.append(html.Div(f"Slurm: {c.launcher.jobs_error}", className="vb-error"))
    elif not s.gpus:
        out.append(html.Div("No NVIDIA GPU found: runs use the CPU.", className="vb-muted"))
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
    Input("exp-interval", "n_intervals"),
    Input("exp-refresh", "data"),
    Input("exp-selected", "data"),
)
def refresh_runs(_n: int | None, _refresh: Any, selected: str | None) -> tuple:
    c = current_context()
    runs = list_runs(c.runs_dir)
    row = next((r for r in runs if r["name"] == selected), None)
    state = row["state"] if row else None
    # rows keep their ids (getRowId), so new row data keeps the grid's selection and scroll;
    # the selection is only set when the store changed it (a launch, a delete)
    grid_selection = (
        {"ids": [row["name"]] if row else []} if ctx.triggered_id == "exp-selected" else no_update
    )
    return (
        _grid_rows(runs, c.launcher.jobs()),
        grid_selection,
        _selection_view(row),
        state not in STOPPABLE_STATES,
        state not in RESUMABLE_STATES,
        state not in DELETABLE_STATES,
        bool(runs),
        not runs,
    )


@callback(
    Output("exp-selected", "data"),
    Input("exp-table", "selectedRows"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
def select_run(rows: Any, current: str | None) -> Any:
    ids = [r.get("id") for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
    name = next(iter(strings(ids)), None)
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
        run_dir = paths.run_dir(current_context().runs_dir, selected)
    except paths.ClientPathError:  # nothing selected, or a crafted name: never leave runs_dir
        return "", "", None, True
    path = log_path(run_dir)
    try:
        st = path.stat() if path is not None else None
    except OSError:  # deleted between the two looks
        st = None
    if st is None:
        return "", "no log yet", None, False
    new_sig = [str(path), st.st_size, st.st_mtime_ns]
    if new_sig == sig:
        return no_update, no_update, no_update, False
    lines = "\n".join(tail_lines(path, LOG_LINES))
    return lines, f"{path.name}, last {LOG_LINES} lines", new_sig, False


@callback(Output("exp-system", "children"), Input("exp-sys-interval", "n_intervals"))
def refresh_system(_n: int | None) -> list[Any]:
    return _system_view()


@callback(
    Output("exp-launch-msg", "children"),
    Output("exp-selected", "data", allow_duplicate=True),
    Output("exp-refresh", "data"),
    Input("exp-launch", "n_clicks"),
    State("exp-config", "value"),
    State("exp-device", "value"),
    State("exp-n-steps", "value"),
    State("exp-batch-size", "value"),
    State("exp-lr", "value"),
    State("exp-save-name", "value"),
    *(State(f"exp-slurm-{key}", "value") for key in SLURM_FIELDS),
    prevent_initial_call=True,
)
@changes_runs
def launch_run(_clicks, config, device, n_steps, batch_size, lr, save_name, *slurm) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), no_update, no_update
    overrides = {"n_steps": n_steps, "batch_size": batch_size, "lr": lr, "save_name": save_name}
    resources = dict(zip(SLURM_FIELDS, slurm)) if c.launcher.backend == "slurm" else None
    try:
        name = c.launcher.launch(config, device=device, overrides=overrides, resources=resources)
    except LaunchError as e:
        return _message(f"Not launched. {e}", False), no_update, no_update
    return _message(f"Launched {name}.", True), name, time.time()


@callback(
    Output("exp-action-msg", "children"),
    Output("exp-refresh", "data", allow_duplicate=True),
    Input("exp-stop", "n_clicks"),
    Input("exp-resume", "n_clicks"),
    State("exp-selected", "data"),
    prevent_initial_call=True,
)
@changes_runs
def stop_or_resume(_stop, _resume, selected: str | None) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), no_update
    try:
        if ctx.triggered_id == "exp-stop":
            result = c.launcher.stop(selected)
            text = f"{selected}: {result}."
        else:
            c.launcher.resume(selected)
            text = f"{selected}: resuming from its last snapshot."
    except LaunchError as e:
        return _message(str(e), False), no_update
    return _message(text, True), time.time()


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

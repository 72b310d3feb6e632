"""Experiments page (``/``): all runs, launch form, stop/resume/delete, log tail, system panel.

Ids are prefixed ``exp-``. The selected run lives in the browser (``exp-selected`` store),
so every viewer has their own selection; the runs, the queue and the children live in the
app's launcher and the run directories. In read-only mode the controls are hidden and
their callbacks refuse to act.

Sweeps: the runs grid's Sweep column names the sweep each trial belongs to (its
``trial.json``), and a list above the grid shows every sweep of the runs folder. A config
with a ``sweep`` section is launched as a sweep: the form reads the section with ``ast``
(never running the config here) to say how many runs it makes, and Launch runs
``run.py sweep --detach`` as a child process, which executes the config and makes the
sweep; the launcher thread then drives it (``Launcher.drive_sweeps``).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import dash_ag_grid as dag
from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app import REPO_ROOT, changes_runs, current_context, inputs, limits, paths
from app.callbacks import callback
from app.components import (
    empty_state,
    fmt_bytes,
    fmt_duration,
    fmt_time,
    meter,
    panel,
    round_sig,
    run_href,
    state_badge,
    sweep_href,
)
from app.inputs import strings
from app.launcher import DELETABLE_STATES, RESUMABLE_STATES
from app.readers import list_runs, log_path, read_json, tail_lines
from app.runs_table import DEFAULT_COL_DEF, GRID_OPTIONS, Sparklines, column_defs
from app.security import LaunchError, list_configs, resolve_config, validate_device
from app.slurm import check_resource
from app.slurm import run_state as slurm_run_state
from app.system import system_stats
from trainer.runs.sweeps import (
    SWEEP_FILE,
    TRIAL_FILE,
    TRIALS_FILE,
    TrialsRecord,
    check_sweep_id,
    iter_sweep_dirs,
    read_trial,
)

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
#: seconds ``run.py sweep --detach`` may take to check a config and make its sweep
SWEEP_TIMEOUT_S = 60
#: the parallel cap the form offers (``trainer.sweeps.MAX_PARALLEL``)
MAX_PARALLEL = 20
#: most lines of ``run.py sweep``'s complaint the form shows
ERROR_LINES = 30


# -- sweeps (pure, or reading files only) ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SweepSection:
    """What the launch form knows of a config's ``sweep`` section without running the config.

    Attributes:
        n_runs: runs the sweep makes, or ``None`` when that is known only once the config
            runs (the section is no literal, or does not say).
        max_parallel: the section's ``max_parallel`` (1 when it does not say).
    """

    n_runs: int | None
    max_parallel: int = 1


def read_sweep_section(config_file: str | os.PathLike) -> SweepSection | None:
    """The ``sweep`` section of a config, read with ``ast`` (the config is not executed).

    Returns ``None`` when the config has no top-level ``sweep = ...`` (or sets it to
    ``None``). A section built from
    literals (``dict(...)``, ``{...}``, lists, numbers, strings, ``**{...}`` inside a
    ``dict(...)``) gives its number of runs: ``n_runs`` for ``random`` and ``tpe``, the
    grid's size for ``grid`` (at most ``n_runs``, as ``trainer.sweeps.parse_sweep`` counts);
    any other expression gives a section of unknown size. An unreadable file or one with a
    syntax error has no section here: launching it reports the problem.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "c.py"
    >>> _ = f.write_text("sweep = dict(parameters=dict(lr=[1e-3, 3e-3], batch_size=[1, 2, 4]))")
    >>> read_sweep_section(f)
    SweepSection(n_runs=6, max_parallel=1)
    """
    try:
        tree = ast.parse(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    node = None
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "sweep" for t in stmt.targets)
        ) or (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "sweep"
            and stmt.value is not None
        ):
            node = stmt.value
    if node is None:
        return None
    try:
        section = _literal(node)
    except ValueError:
        return SweepSection(None)
    if section is None:  # `sweep = None`: the config's default, no sweep
        return None
    if not isinstance(section, dict):
        return SweepSection(None)
    return SweepSection(_sweep_size(section), _max_parallel(section.get("max_parallel", 1)))


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval`` that also takes ``dict(key=..., **{...})`` calls, nested."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args:
            raise ValueError("dict() with positional arguments")
        out: dict[Any, Any] = {}
        for k in node.keywords:
            value = _literal(k.value)
            if k.arg is None:
                if not isinstance(value, dict):
                    raise ValueError("** of no dict")
                out.update(value)
            else:
                out[k.arg] = value
        return out
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("** inside {...}")
        return {ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    return ast.literal_eval(node)


def _sweep_size(section: dict) -> int | None:
    n_runs = section.get("n_runs")
    n_runs = n_runs if isinstance(n_runs, int) and not isinstance(n_runs, bool) else None
    if section.get("method", "grid") != "grid":
        return n_runs
    params = section.get("parameters")
    if not isinstance(params, dict) or not params:
        return None
    if not all(isinstance(v, list | tuple) for v in params.values()):
        return None  # a range on a grid: the sweep's own checks say what is wrong
    grid = math.prod(len(v) for v in params.values())
    return grid if n_runs is None else min(n_runs, grid)


def _max_parallel(value: Any) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_PARALLEL
    return value if ok else 1


def sweep_hint(section: SweepSection | None, backend: str, max_cpu_runs: int) -> str:
    """The launch form's sentence about a sweep config (``''`` for an ordinary config)."""
    if section is None:
        return ""
    size = (
        "This config defines a sweep (its size is known when it starts)."
        if section.n_runs is None
        else f"This config defines a sweep of {section.n_runs} run"
        f"{'' if section.n_runs == 1 else 's'}."
    )
    drive = " Launch makes the sweep; this dashboard then starts up to Max parallel trials at once"
    if backend == "local":
        drive += (
            f", and it runs at most {max_cpu_runs} CPU run{'' if max_cpu_runs == 1 else 's'} "
            "at once (more trials wait in the queue)"
        )
    return size + drive + "."


def sweep_argv(
    config: Path,
    *,
    python: str,
    runs_dir: Path,
    data_dir: Path,
    backend: str,
    max_parallel: int,
    device: str,
    resources: dict[str, Any] | None = None,
) -> list[str]:
    """The ``run.py sweep --detach`` command that makes a sweep of ``config``."""
    argv = [python, str(REPO_ROOT / "run.py"), "sweep", str(config), "--detach",
            f"--runs-dir={runs_dir}", f"--data-dir={data_dir}", f"--backend={backend}",
            f"--max-parallel={max_parallel}", f"--device={device}"]  # fmt: skip
    for key, value in (resources or {}).items():
        argv.append(f"--slurm-{key}={value}")
    return argv


def sweep_line(sweep_id: str, record: dict | None, trials: TrialsRecord) -> dict[str, Any]:
    """One line of the sweeps list: state (``stopping`` while a stop waits for trials),
    trials done and asked for, the metric and the best value told so far with its run."""
    spec = (record or {}).get("spec")
    spec = spec if isinstance(spec, dict) else {}
    state = trials.state
    if state == "running" and trials.stop_requested is not None:
        state = "stopping"
    values = [
        (t.value, t.run)
        for t in trials.trials
        if isinstance(t.value, int | float) and math.isfinite(t.value)
    ]
    pick = max if spec.get("goal") == "max" else min
    best = pick(values, key=lambda v: v[0]) if values else (None, None)
    n_runs = spec.get("n_runs")
    return {
        "id": sweep_id,
        "state": state,
        "done": sum(1 for t in trials.trials if t.told is not None),
        "total": n_runs if isinstance(n_runs, int) else None,
        "metric": spec.get("metric") if isinstance(spec.get("metric"), str) else "valid_loss",
        "best": round_sig(best[0]),
        "best_run": best[1],
    }


def read_sweep_lines(runs_dir: Path) -> list[dict[str, Any]]:
    """A ``sweep_line`` per sweep of the runs folder, newest first; each sweep's files are
    parsed again only when they changed (``app.readers.read_json``)."""
    lines = []
    for folder in iter_sweep_dirs(runs_dir):
        record, problem = read_json(folder / SWEEP_FILE)
        d, _ = read_json(folder / TRIALS_FILE)
        trials = TrialsRecord.from_json(d) if d else TrialsRecord()
        created = (record or {}).get("created")
        line = sweep_line(folder.name, record, trials)
        if record is None:  # nothing drives it: its state would be a stale word
            line["state"] = "damaged"
            line["problem"] = f"{SWEEP_FILE}: {problem or 'not a JSON object'}"
        lines.append((created if isinstance(created, int | float) else 0.0, line))
    return [line for _, line in sorted(lines, key=lambda x: x[0], reverse=True)]


def trial_sweep(run_dir: Path) -> str:
    """The sweep id of a run's ``trial.json``, or ``''`` for a run outside a sweep; the file is
    read again only when its stat changed."""
    try:
        st = (run_dir / TRIAL_FILE).stat()
    except OSError:
        return ""
    return _trial_sweep(str(run_dir), st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=4096)
def _trial_sweep(run_dir: str, mtime_ns: int, size: int, ino: int) -> str:
    sweep = (read_trial(run_dir) or {}).get("sweep")
    try:
        return check_sweep_id(sweep)
    except ValueError:
        return ""


def table_rows(
    runs: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any]] | None = None,
    curves: dict[str, list[float | None]] | None = None,
    sweeps: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Display rows for the runs grid from ``app.readers.list_runs`` summaries.

    The Slurm job id and the reason a queued job waits come from the summary (the
    launcher's record); ``jobs`` (``Launcher.jobs()``) fills them in for summaries without.
    The state is the summary's (``trainer.runs.merge_state`` already trusts Slurm's
    ``RUNNING`` over a pid on another machine); a ``lost`` row whose job ``jobs`` says is
    running shows as running. ``curves`` holds each run's valid-loss sparkline
    (``app.runs_table.Sparklines``); a run without one gets ``[]``. ``sweeps`` holds the
    sweep id of each sweep trial (``trial_sweep``); other runs get ``''``.
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
                "sweep": (sweeps or {}).get(r["name"], ""),
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
    """``table_rows`` with each run's valid-loss sparkline and sweep."""
    runs_dir = current_context().runs_dir
    return table_rows(
        runs,
        jobs,
        {r["name"]: SPARKLINES.points(runs_dir / r["name"]) for r in runs},
        {r["name"]: trial_sweep(runs_dir / r["name"]) for r in runs},
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
            id="exp-override-fields",
            className="vb-grid",
        ),
        html.Div(
            [
                html.Div(id="exp-sweep-hint", className="vb-muted"),
                field(
                    "Max parallel",
                    dcc.Input(
                        id="exp-max-parallel",
                        type="number",
                        min=1,
                        max=MAX_PARALLEL,
                        step=1,
                        value=1,
                        className="vb-input",
                    ),
                ),
            ],
            id="exp-sweep-fields",
            hidden=True,  # until a config with a sweep section is chosen
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
    sweeps = read_sweep_lines(c.runs_dir)
    return html.Div(
        [
            # the page's level-one heading for screen readers; the navigation bar shows its name
            html.H1("Experiments", className="vb-sr-only"),
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
                "Sweeps",
                html.Ul(_sweeps_view(sweeps), id="exp-sweeps", className="vb-sweeps"),
                id="exp-sweeps-panel",
                hidden=not sweeps,
            ),
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
    Output("exp-sweeps", "children"),
    Output("exp-sweeps-panel", "hidden"),
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
    sweeps = read_sweep_lines(c.runs_dir)
    return (
        _grid_rows(runs, c.launcher.jobs()),
        grid_selection,
        _selection_view(row),
        state not in STOPPABLE_STATES,
        state not in RESUMABLE_STATES,
        state not in DELETABLE_STATES,
        bool(runs),
        not runs,
        _sweeps_view(sweeps),
        not sweeps,
    )


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


@callback(
    Output("exp-sweep-hint", "children"),
    Output("exp-sweep-fields", "hidden"),
    Output("exp-override-fields", "hidden"),
    Output("exp-max-parallel", "value"),
    Input("exp-config", "value"),
)
def show_sweep_form(config: Any) -> tuple:
    c = current_context()
    section = None if c.read_only else _config_sweep(c.configs_dir, config)
    if section is None:
        return "", True, False, no_update
    hint = sweep_hint(section, c.launcher.backend, c.launcher.max_cpu_runs)
    return hint, False, True, section.max_parallel


def _config_sweep(configs_dir: Path, config: Any) -> SweepSection | None:
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
    Output("exp-selected", "data", allow_duplicate=True),
    Output("exp-refresh", "data"),
    Input("exp-launch", "n_clicks"),
    State("exp-config", "value"),
    State("exp-device", "value"),
    State("exp-n-steps", "value"),
    State("exp-batch-size", "value"),
    State("exp-lr", "value"),
    State("exp-save-name", "value"),
    State("exp-max-parallel", "value"),
    *(State(f"exp-slurm-{key}", "value") for key in SLURM_FIELDS),
    prevent_initial_call=True,
)
@changes_runs
def launch_run(
    _clicks, config, device, n_steps, batch_size, lr, save_name, max_parallel, *slurm
) -> tuple:
    c = current_context()
    if c.read_only:
        return _message(_READ_ONLY, False), no_update, no_update
    section = _config_sweep(c.configs_dir, config)
    if section is not None:
        parallel = section.max_parallel if max_parallel is None else max_parallel
        return _launch_sweep(config, device, parallel, slurm), no_update, time.time()
    overrides = {"n_steps": n_steps, "batch_size": batch_size, "lr": lr, "save_name": save_name}
    resources = dict(zip(SLURM_FIELDS, slurm)) if c.launcher.backend == "slurm" else None
    try:
        name = c.launcher.launch(config, device=device, overrides=overrides, resources=resources)
    except LaunchError as e:
        return _message(f"Not launched. {e}", False), no_update, no_update
    return _message(f"Launched {name}.", True), name, time.time()


def _launch_sweep(config: str, device: Any, max_parallel: Any, slurm: tuple) -> html.Div:
    """Make a sweep with ``run.py sweep --detach`` in a child process (the config runs there,
    not here); the launcher thread then drives it (``Launcher.drive_sweeps``)."""
    c = current_context()
    parallel = inputs.integer(max_parallel)
    if parallel is None or not 1 <= parallel <= MAX_PARALLEL or parallel != max_parallel:
        return _message(
            f"Not launched. Max parallel: expected a whole number of trials from 1 to "
            f"{MAX_PARALLEL}, got {max_parallel!r}",
            False,
        )
    try:
        path = resolve_config(c.configs_dir, config)
        device = validate_device(device, c.launcher.gpus())
        resources = (
            {k: check_resource(k, v) for k, v in zip(SLURM_FIELDS, slurm) if v not in (None, "")}
            if c.launcher.backend == "slurm"
            else None
        )
    except LaunchError as e:
        return _message(f"Not launched. {e}", False)
    from app.sweeper import unfinished

    open_sweeps = sum(1 for _ in unfinished(c.runs_dir, c.launcher.backend))
    if open_sweeps >= limits.MAX_SWEEPS:
        sweeps = "sweep is" if open_sweeps == 1 else "sweeps are"
        return _message(
            f"Not launched: {open_sweeps} {sweeps} unfinished, the most this dashboard starts; "
            "stop one on its sweep page, or wait until one ends",
            False,
        )
    argv = sweep_argv(path, python=c.launcher.python, runs_dir=c.runs_dir,
                      data_dir=c.data_dir, backend=c.launcher.backend, max_parallel=parallel,
                      device=device, resources=resources)  # fmt: skip
    env = {**os.environ, "VOXELBOARD_DATA_DIR": str(c.data_dir)}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SWEEP_TIMEOUT_S,
                              stdin=subprocess.DEVNULL, env=env, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return _message(
            f"Not launched: run.py sweep did not make the sweep within {SWEEP_TIMEOUT_S} s "
            f"(executing {path.name} takes that long?); try `python run.py sweep {path.name}` "
            "in a terminal",
            False,
        )
    except OSError as e:
        return _message(f"Not launched: cannot start run.py sweep: {e}", False)
    sweep_id = (done.stdout.strip().splitlines() or [""])[-1]
    if done.returncode != 0 or not _is_sweep_id(sweep_id):
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()][-ERROR_LINES:]
        lines = lines or [f"run.py sweep ended with exit status {done.returncode}"]
        return html.Div(
            [html.Div(f"Not launched: {path.name} is no valid sweep."),
             html.Ul([html.Li(ln.strip()) for ln in lines], className="vb-error-lines")],
            className="vb-error",
        )  # fmt: skip
    return html.Div(
        ["Made sweep ", dcc.Link(sweep_id, href=sweep_href(sweep_id),
                                 id="exp-new-sweep", className="vb-link"),
         f": this dashboard starts its trials, at most {parallel} at once."],
        className="vb-ok",
    )  # fmt: skip


def _is_sweep_id(text: str) -> bool:
    try:
        check_sweep_id(text)
    except ValueError:
        return False
    return True


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

"""Jobs page (``/jobs``, ``/jobs?run=<name>``): predict and segment jobs.

One row per job of the runs folder, started from the shell (in one process, or with many
workers) or from the dashboard: run, kind, output, backend, blocks done out of total with a
bar, the step being worked on,
throughput, ETA, failed and retried blocks, and the job's state; under it each worker's
state and blocks, and each Slurm array task's state. Stop stops a running job's workers,
Resume runs its command again (it does only the blocks still missing); both are left out
of a read-only dashboard and refused there by the server.

What it shows comes from ``app.jobs_view.read_jobs``; Slurm is asked through the
launcher's Slurm backend (``SlurmBackend.jobs``: at most one ``squeue`` per job per
``slurm_poll_s`` seconds, however many pages poll). Stop and Resume go through
``app.job_actions``. The ``jobs-interval`` re-reads the jobs while one is unfinished. Ids are
prefixed ``jobs-``.
"""

from __future__ import annotations

import time
from typing import Any

from dash import ALL, Input, Output, State, ctx, dcc, html, no_update

from app import changes_runs, components, current_context
from app.callbacks import callback
from app.components import (
    ROW,
    empty_state,
    fmt_duration,
    labelled,
    run_href,
    state_badge,
    text_input,
    url_part,
)
from app.job_actions import JobActionError, resume, start, start_command, stop
from app.jobs_view import (
    RESUMABLE,
    STOPPABLE,
    JobRow,
    find_record,
    read_jobs,
    unfinished,
    worker_summary,
)
from app.series import run_dir_for
from app.slurm import SlurmError

#: where the page is served (``create_app`` registers it)
PAGE = {"path": "/jobs", "title": "VoxelBoard jobs"}

#: seconds the page polls after a Stop or Resume, while workers start or leave
FOLLOW_S = 120.0
_READ_ONLY = "This dashboard is read-only: it stops and resumes no job."
_EMPTY = (
    "No predict or segment job yet. `run.py predict RUN_DIR INPUT OUTPUT` (in one process, "
    "or with `--workers N` or `--backend slurm --jobs N`), and the same for segment, list "
    "their jobs here."
)


def _rate(rate: float | None) -> str:
    return "" if not rate else f"{rate:.2f} blocks/s"


def _bar(row: JobRow) -> html.Div:
    return html.Div(
        [
            html.Progress(
                value=str(row.done),
                max=str(max(row.total, 1)),
                className="jobs-bar",
                **{"aria-label": f"{row.done} of {row.total} blocks done"},
            ),
            html.Span(f"{row.done}/{row.total}", className="jobs-count"),
        ],
        title=row.step,
    )


def _actions(row: JobRow, read_only: bool) -> list:
    if read_only:
        return []
    key = {"run": row.run, "job": row.job}
    out = []
    if row.state in STOPPABLE:
        out.append(components.button("Stop", id={"type": "jobs-stop", **key}, kind="danger"))
    if row.state in RESUMABLE:
        out.append(components.button("Resume", id={"type": "jobs-resume", **key}))
    return out


def _workers(row: JobRow) -> html.Td:
    items: list = [
        html.Li(
            [
                f"{w.name} on {w.host}: ",
                state_badge(w.state),
                f" {w.blocks} blocks",
                html.Span(f" {w.error}", className="vb-error") if w.error else "",
            ],
            className="jobs-worker",
            **{"data-state": w.state},
        )
        for w in row.workers
    ]
    items += [
        html.Li(f"Slurm task {task}: {state}", className="jobs-task") for task, state in row.tasks
    ]
    note = [html.P(row.note, className="vb-muted")] if row.note else []
    summary = html.P(worker_summary(row), className="jobs-summary")
    return html.Td([summary, html.Ul(items, className="jobs-workers"), *note], colSpan=11)


def jobs_table(rows: list[JobRow], read_only: bool) -> html.Table:
    """The jobs, newest first; each job's workers and tasks in the row under it."""
    head = html.Tr(
        [
            html.Th(h)
            for h in (
                "run",
                "kind",
                "output",
                "backend",
                "blocks",
                "throughput",
                "ETA",
                "failed",
                "retried",
                "state",
            )
        ]
        # the buttons' column: its header is read, not drawn
        + [html.Th(html.Span("actions", className="vb-sr-only"))]
    )
    body = []
    for r in rows:
        body.append(
            html.Tr(
                [
                    html.Td(dcc.Link(r.run, href=run_href(r.run))),
                    html.Td(r.kind),
                    html.Td(r.output, className="jobs-output"),
                    html.Td(r.backend),
                    html.Td(_bar(r)),
                    html.Td(_rate(r.throughput)),
                    html.Td(fmt_duration(r.eta_s) if r.state == "running" else ""),
                    html.Td(str(r.failed), className="jobs-failed"),
                    html.Td(str(r.retried), className="jobs-retried"),
                    html.Td(state_badge(r.state), className="jobs-state"),
                    html.Td(_actions(r, read_only)),
                ],
                className="jobs-row",
                **{"data-job": r.job, "data-state": r.state},
            )
        )
        body.append(html.Tr(_workers(r), className="jobs-detail"))
    return html.Table([html.Thead(head), html.Tbody(body)], className="jobs-table")


def start_form(run: str) -> html.Details:
    """Start a predict or segment job with run ``run`` (paths inside the data folder)."""
    return html.Details(
        [
            html.Summary(f"Start a job with {run}"),
            components.controls(
                labelled(
                    "Kind",
                    dcc.Dropdown(
                        id="jobs-kind", options=["predict", "segment"], value="predict",
                        clearable=False,
                    ),
                    "9em",
                ),
                labelled("Input (volume, or probabilities to segment)", text_input("jobs-input", "em.zarr"), "18em"),
                labelled("Key", text_input("jobs-key", "raw"), "7em"),
                labelled("Output (zarr)", text_input("jobs-output", "prob.zarr"), "18em"),
                labelled(
                    "Backend",
                    dcc.Dropdown(
                        id="jobs-backend", options=["local", "slurm"], value="local",
                        clearable=False,
                    ),
                    "8em",
                ),
                labelled("Workers or Slurm jobs", dcc.Input(id="jobs-count", type="number", value=2,
                                                            min=1, step=1, className="vb-input"), "8em"),
                components.button("Start", id="jobs-start", kind="primary"),
            ),
        ],
        className="jobs-start",
    )  # fmt: skip


def _slurm(c: Any) -> Any:
    """The client the page asks Slurm through: the launcher's rate-limited Slurm backend."""
    return c.launcher.backends["slurm"]


def layout(run: str | None = None, **kwargs: Any) -> html.Div:
    """Every job of the runs folder, or of run ``run`` only."""
    c = current_context()
    run = url_part(run) or None
    rows = read_jobs(c.runs_dir, run, _slurm(c))
    title = f"Jobs of {run}" if run else "Jobs"
    return html.Div(
        [
            dcc.Store(id="jobs-run", data=run),
            # until when the page polls whatever the jobs' states (set by Stop and Resume)
            dcc.Store(id="jobs-follow", data=0),
            dcc.Interval(
                id="jobs-interval",
                interval=current_context().intervals.live_ms,
                disabled=not unfinished(rows),
            ),
            html.Div(
                [html.H1(title, className="vb-page-title"), dcc.Link("all runs", href="/")],
                style=ROW,
            ),
            *([start_form(run)] if run and not c.read_only else []),
            html.Div(id="jobs-msg", className="vb-msg"),
            empty_state(_EMPTY, "jobs-empty", hidden=bool(rows)),
            html.Div(jobs_table(rows, c.read_only), id="jobs-table", className="jobs-table-box"),
        ],
        className="jobs-page",
    )


# ---------------------------------------------------------------------------- callbacks


@callback(
    Output("jobs-table", "children"),
    Output("jobs-interval", "disabled"),
    Input("jobs-interval", "n_intervals"),
    State("jobs-run", "data"),
    State("jobs-follow", "data"),
    prevent_initial_call=True,
)
def _on_poll(_tick, run, follow):
    c = current_context()
    rows = read_jobs(c.runs_dir, url_part(run) or None, _slurm(c))
    following = isinstance(follow, (int, float)) and time.time() < follow
    return jobs_table(rows, c.read_only), not (unfinished(rows) or following)


def _clicked_record(c: Any) -> tuple[dict | None, str]:
    """The record of the job whose button was clicked, or ``None`` and why."""
    key = ctx.triggered_id
    if not isinstance(key, dict):
        return None, ""
    run_dir = run_dir_for(c.runs_dir, key.get("run"))
    record = find_record(run_dir, key.get("job")) if run_dir is not None else None
    if record is None:
        return None, f"No job {str(key.get('job'))[:60]!r} of run {str(key.get('run'))[:60]!r}."
    return record, ""


@callback(
    Output("jobs-msg", "children"),
    Output("jobs-interval", "disabled", allow_duplicate=True),
    Output("jobs-follow", "data"),
    Input({"type": "jobs-stop", "run": ALL, "job": ALL}, "n_clicks"),
    Input({"type": "jobs-resume", "run": ALL, "job": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
@changes_runs
def act(_stops, _resumes):
    """Stop or Resume the job whose button was clicked."""
    c = current_context()
    if c.read_only:
        return html.Span(_READ_ONLY, className="vb-error"), no_update, no_update
    if not any(t["value"] for t in ctx.triggered):  # a table redrawn, not a click
        return no_update, no_update, no_update
    record, why = _clicked_record(c)
    if record is None:
        return (html.Span(why, className="vb-error") if why else no_update), no_update, no_update
    try:
        if ctx.triggered_id["type"] == "jobs-stop":
            stopped = stop(record)
            text = f"Stopping {', '.join(stopped)}." if stopped else "No worker was running."
        else:
            pid = resume(record)
            text = f"Resumed {record['kind']} of {record['output']} (process {pid})."
    except (JobActionError, SlurmError, OSError) as e:
        return html.Span(f"Not done: {e}"[:400], className="vb-error"), no_update, no_update
    # polling resumes, and lasts while the workers start or stop, so the page follows the job
    return html.Span(text, className="vb-ok"), False, time.time() + FOLLOW_S


@callback(
    Output("jobs-msg", "children", allow_duplicate=True),
    Output("jobs-interval", "disabled", allow_duplicate=True),
    Output("jobs-follow", "data", allow_duplicate=True),
    Input("jobs-start", "n_clicks"),
    State("jobs-run", "data"),
    State("jobs-kind", "value"),
    State("jobs-input", "value"),
    State("jobs-key", "value"),
    State("jobs-output", "value"),
    State("jobs-backend", "value"),
    State("jobs-count", "value"),
    prevent_initial_call=True,
)
@changes_runs
def start_job(_clicks, run, kind, source, key, output, backend, count):
    """Start the job the form describes, detached; it lists itself once prepared."""
    c = current_context()
    if c.read_only:
        return html.Span(_READ_ONLY, className="vb-error"), no_update, no_update
    run_dir = run_dir_for(c.runs_dir, url_part(run))
    if run_dir is None:
        return (
            html.Span(f"run: no run {str(run)[:60]!r}.", className="vb-error"),
            no_update,
            no_update,
        )
    try:
        argv = start_command(run_dir, c.data_dir, kind, source, key, output, backend, count)
        log = c.jobs_dir / f"start-{kind}-{time.time_ns()}.log"
        pid = start(argv, log)
    except (JobActionError, OSError) as e:
        return html.Span(f"Not started: {e}"[:400], className="vb-error"), no_update, no_update
    text = (
        f"Started {kind} of {argv[4]} into {argv[5]} (process {pid}); it is listed here once "
        f"its output is prepared. What it says goes to {log}."
    )
    return html.Span(text, className="vb-ok"), False, time.time() + FOLLOW_S

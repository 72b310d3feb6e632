"""What the pages show of sweeps: the experiments page's sweeps list and the sweep page's view.

The run-directory side of a sweep (``sweep.json``, ``trials.json``, each trial's
``trial.json`` and history store) is read here, through ``trainer.runs.sweeps`` and
``app.readers.read_json``; the pages get plain values, ``TrialRow``s and figures, and never
a file name.

The sweep page follows a sweep with a cursor (``read_view``): ``sweep.json`` and
``trials.json`` are parsed again only when their files changed, a trial whose run had ended
when the cursor read it is not read again, and an open trial's history store gives only the
rows added since the last poll (``app.series.read_new_rows``), appended to its curve with a
``dash.Patch``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Any

import numpy as np
from dash import Patch, no_update

from app import inputs, series, sweep_figures
from app.components import round_sig
from app.readers import read_json, run_summary
from app.sweep_figures import TrialRow
from trainer.best import mode_for
from trainer.runs import FINAL_STATES, TRUNCATED, history_dir, launch_backend
from trainer.runs.sweeps import (
    SWEEP_FILE,
    SWEEP_FINAL_STATES,
    TRIAL_FILE,
    TRIALS_FILE,
    TrialsRecord,
    check_sweep_id,
    iter_sweep_dirs,
    read_trial,
    sweep_dir,
)
from trainer.sweeps import SWEEP_DEFAULTS, SweepSection, best_value

#: a trial's run state after which its files no longer change
ENDED = FINAL_STATES | {"lost", TRUNCATED}
#: most points of one trial's curve drawn from a full read
MAX_POINTS = 2000


def spec_metric(spec: Any) -> str:
    """The metric of a recorded spec (``sweep.json``), or the sweeps' default."""
    metric = spec.get("metric") if isinstance(spec, dict) else None
    return metric if isinstance(metric, str) else SWEEP_DEFAULTS["metric"]


def spec_goal(spec: Any) -> str:
    """``'min'`` or ``'max'``: a recorded spec's goal, else its metric's (``mode_for``)."""
    goal = spec.get("goal") if isinstance(spec, dict) else None
    return goal if goal in ("min", "max") else mode_for(spec_metric(spec))


def read_trials_record(folder: Path) -> tuple[TrialsRecord, str | None]:
    """A sweep's ``trials.json`` (an empty record when it is missing), and what is wrong with
    it (``None``); parsed again only when the file changed."""
    d, problem = read_json(folder / TRIALS_FILE)
    return (TrialsRecord.from_json(d) if d else TrialsRecord()), problem


def stoppable(folder: Path) -> bool:
    """Whether a sweep runs and no stop was asked for (its Stop button shows)."""
    trials, _problem = read_trials_record(folder)
    return trials.state == "running" and trials.stop_requested is None


# ------------------------------------------------------------- the experiments page


def sweep_hint(section: SweepSection | None, limit: str = "") -> str:
    """The launch form's sentence about a sweep config (``''`` for an ordinary config).

    ``limit`` is the backend's clause about how many trials run at once on it
    (``Backend.sweep_limit``), ``''`` when it sets none.
    """
    if section is None:
        return ""
    size = (
        "This config defines a sweep (its size is known when it starts)."
        if section.n_runs is None
        else f"This config defines a sweep of {section.n_runs} run"
        f"{'' if section.n_runs == 1 else 's'}."
    )
    drive = " Launch makes the sweep; this dashboard then starts up to Max parallel trials at once"
    return size + drive + (f", {limit}" if limit else "") + "."


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
        if isinstance(t.value, int | float) and math.isfinite(t.value) and t.state != TRUNCATED
    ]
    pick = max if spec_goal(spec) == "max" else min
    best = pick(values, key=lambda v: v[0]) if values else (None, None)
    n_runs = spec.get("n_runs")
    return {
        "id": sweep_id,
        "state": state,
        "done": sum(1 for t in trials.trials if t.told is not None),
        "total": n_runs if isinstance(n_runs, int) else None,
        "metric": spec_metric(spec),
        "best": round_sig(best[0]),
        "best_run": best[1],
    }


def driver_text(
    sweep_id: str, state: str, cli_pid: int | None, backend: str, dashboard_backend: str | None
) -> str:
    """Who drives a running sweep, for the sweeps list: a live ``run.py sweep`` (``cli_pid``),
    else this dashboard when it drives sweeps of the sweep's ``backend`` (``None``: it drives
    none, a read-only one), else what starts a driver; ``''`` for a sweep that has ended."""
    if state not in ("running", "stopping"):
        return ""
    if cli_pid is not None:
        return f"driven by run.py sweep, pid {cli_pid}"
    if dashboard_backend == backend:
        return "driven by this dashboard"
    return f"not driven here: run `python run.py sweep --resume {sweep_id}` ({backend} backend)"


def read_sweep_lines(runs_dir: Path, dashboard_backend: str | None = None) -> list[dict[str, Any]]:
    """A ``sweep_line`` per sweep of the runs folder, newest first, with who drives it
    (``driver_text``; ``dashboard_backend``: the backend whose sweeps this dashboard drives);
    each sweep's files are parsed again only when they changed (``app.readers.read_json``)."""
    from app.sweeper import cli_driver

    lines = []
    for folder in iter_sweep_dirs(runs_dir):
        record, problem = read_json(folder / SWEEP_FILE)
        trials, _problem = read_trials_record(folder)
        created = (record or {}).get("created")
        line = sweep_line(folder.name, record, trials)
        running = line["state"] in ("running", "stopping")
        line["driver"] = driver_text(
            folder.name, line["state"], cli_driver(folder) if running else None,
            launch_backend(record), dashboard_backend,
        )  # fmt: skip
        if record is None:  # nothing drives it: its state would be a stale word
            line["state"] = "damaged"
            line["problem"] = f"{SWEEP_FILE}: {problem or 'not a JSON object'}"
        lines.append((created if isinstance(created, int | float) else 0.0, line))
    return [line for _, line in sorted(lines, key=lambda x: x[0], reverse=True)]


def sweep_config_name(runs_dir: Path, sweep_id: str) -> str:
    """The file name of the config a sweep was made from (``demo_sweep.py``), which its
    trials show as their config (each trains the sweep's copy, ``config.py``); ``''`` when
    ``sweep.json`` cannot be read."""
    try:
        folder = sweep_dir(runs_dir, sweep_id)
    except ValueError:
        return ""
    record, _problem = read_json(folder / SWEEP_FILE)
    name = (record or {}).get("config")
    return name if isinstance(name, str) else ""


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


# ------------------------------------------------------------------- the sweep page


@dataclasses.dataclass
class SweepView:
    """What the page shows of a sweep, and how far this browser has read.

    Attributes:
        sweep_id: the sweep.
        record: ``sweep.json``.
        trials: ``trials.json``.
        rows: one ``TrialRow`` per trial, in trial order.
        best: the best run, or ``None``.
        curves: the curves figure (a ``go.Figure`` on a full read, a ``Patch`` or
            ``no_update`` on a poll).
        cursor: the new ``sweep-cursor`` value.
        changed: whether anything the page shows changed since ``cursor`` (a full read:
            always).
        error: what could not be read, or ``''``.
    """

    sweep_id: str
    record: dict
    trials: TrialsRecord
    rows: list[TrialRow]
    best: str | None
    curves: Any
    cursor: dict
    changed: bool
    error: str = ""

    @property
    def spec(self) -> dict:
        spec = self.record.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def metric(self) -> str:
        return spec_metric(self.spec)

    @property
    def goal(self) -> str:
        return spec_goal(self.spec)

    @property
    def parameters(self) -> dict:
        params = self.spec.get("parameters")
        if not isinstance(params, dict):
            return {}
        order = self.spec.get("parameter_order")
        names = [n for n in order if n in params] if isinstance(order, list) else []
        names += [n for n in params if n not in names]  # the section's order, when recorded
        return {
            k: params[k] for k in names if isinstance(params[k], dict) and _valid_param(params[k])
        }

    @property
    def ended(self) -> bool:
        """Nothing will change any more: the sweep ended and so did every trial's run."""
        return self.trials.state in SWEEP_FINAL_STATES and all(r.state in ENDED for r in self.rows)


def _valid_param(p: dict) -> bool:
    if "values" in p:
        return isinstance(p["values"], list)
    ok = all(isinstance(p.get(k), int | float) for k in ("low", "high"))
    return ok and (not p.get("log") or p["low"] > 0)


# ----------------------------------------------------------------------------- reading


def read_view(runs_dir: Path, folder: Path, cursor: Any = None) -> SweepView:
    """The sweep in ``folder`` as the page shows it.

    Args:
        runs_dir: the runs folder (the trials' run directories are in it).
        folder: the sweep's folder (``app.sweeper.sweep_folder``).
        cursor: the ``sweep-cursor`` this browser holds, or ``None`` for a full read. A
            cursor of another sweep, or one that does not fit ``trials.json``, counts as
            ``None``.

    Returns:
        A ``SweepView``; on a poll its ``curves`` holds only what changed.
    """
    record, problem = read_json(folder / SWEEP_FILE)
    record = record or {}
    trials, trials_problem = read_trials_record(folder)
    error = "; ".join(
        f"cannot read {folder.name}/{name}: {p}"
        for name, p in ((SWEEP_FILE, problem), (TRIALS_FILE, trials_problem))
        if p
    )
    spec = record.get("spec")
    metric, goal = spec_metric(spec), spec_goal(spec)
    previous = _fitting_runs(cursor, folder.name, trials)
    poll = previous is not None
    curves, changed = {}, not poll
    fresh: list[dict] = []
    for i, entry in enumerate(trials.trials):
        old = previous[i] if poll and i < len(previous) else None
        state, new, points = _follow_trial(runs_dir, entry.run, metric, goal, old)
        fresh.append(state)
        curves[entry.run] = points
        changed = changed or new
    rows = [
        TrialRow(
            run=e.run,
            number=e.number,
            state=s["state"],
            value=e.value if e.told is not None and e.value is not None else s["best"],
            params=e.params if isinstance(e.params, dict) else {},
            steps=s["steps"],
        )
        for e, s in zip(trials.trials, fresh, strict=True)
    ]
    best = sweep_figures.best_run(rows, goal)
    key = [trials.state, trials.reason, trials.stop_requested, best, error]
    changed = changed or not poll or key != (cursor or {}).get("key")
    if not poll:
        figure = sweep_figures.curves_figure(rows, curves, metric, best)
    elif changed:
        figure = _curves_patch(rows, curves, previous, fresh, best)
    else:
        figure = no_update
    for s, r in zip(fresh, rows, strict=True):
        s["look"] = _look(r, best)
    new_cursor = {"sweep": folder.name, "runs": fresh, "key": key}
    return SweepView(folder.name, record, trials, rows, best, figure, new_cursor, changed, error)


def _fitting_runs(cursor: Any, sweep_id: str, trials: TrialsRecord) -> list[dict] | None:
    """The cursor's per-trial entries if the cursor is this sweep's and fits its trials
    (it comes back from the browser: anything odd means a full read)."""
    if not isinstance(cursor, dict) or cursor.get("sweep") != sweep_id:
        return None
    runs = cursor.get("runs")
    if not isinstance(runs, list) or len(runs) > len(trials.trials):
        return None
    clean = [_entry_of(entry, t.run) for entry, t in zip(runs, trials.trials, strict=False)]
    return None if None in clean else clean


def _entry_of(entry: Any, run: str) -> dict | None:
    """A cursor entry of trial ``run`` with every field of the right type, else ``None``."""
    if not isinstance(entry, dict) or entry.get("run") != run:
        return None
    rows, shown = inputs.integer(entry.get("rows")), inputs.integer(entry.get("shown"))
    steps, best = entry.get("steps"), entry.get("best")
    ok = (
        isinstance(entry.get("state"), str)
        and isinstance(entry.get("done"), bool)
        and isinstance(entry.get("generation"), str | None)
        and rows is not None
        and rows >= 0
        and shown is not None
        and shown >= 0
        and (steps is None or inputs.integer(steps) is not None)
        and (best is None or inputs.number(best) is not None)
    )
    if not ok:
        return None
    return {
        **{k: entry[k] for k in ("run", "state", "done", "generation")},
        "rows": rows,
        "shown": shown,
        "steps": None if steps is None else inputs.integer(steps),
        "best": None if best is None else inputs.number(best),
        "look": entry.get("look"),
    }


def _follow_trial(
    runs_dir: Path, run: str, metric: str, goal: str, old: dict | None
) -> tuple[dict, bool, Any]:
    """One trial's new cursor entry, whether anything changed, and its points: all of them
    (``(x, y)``) without ``old``, the new ones as ``('append', x, y)`` or a full reread as
    ``('replace', x, y)`` with it, ``None`` when nothing is new."""
    if old is not None and old.get("done"):
        return dict(old), False, None
    run_dir = series.run_dir_for(runs_dir, run)
    # status first: rows written before a final status are then read by this same call
    summary = run_summary(run_dir) if run_dir is not None else None
    state = summary["state"] if summary else "queued"
    steps = summary["step"] if summary and state != "queued" else None
    if summary and summary["truncated"]:
        state = TRUNCATED
    entry = {
        "run": run,
        "state": state,
        "steps": steps,
        "generation": None,
        "rows": 0,
        "shown": 0,
        "best": None,
        "done": state in ENDED,
    }
    if old is not None:
        entry.update(
            generation=old["generation"], rows=old["rows"], shown=old["shown"], best=old["best"]
        )
    store = history_dir(run_dir) if run_dir is not None else None
    if old is None or store is None:
        return _reread(store, metric, goal, entry, old)
    try:
        new = series.read_new_rows(store, "history", _table_cursor(old))
    except (OSError, ValueError):  # a corrupt store: the run page names it
        return entry, _changed(old, entry), None
    if new.reload and new.generation is None:  # the table is gone
        return entry, _changed(old, entry), None
    if new.reload:
        return _reread(store, metric, goal, entry, old)
    fresh = new.frame.iloc[new.first_new :]
    x, y = _metric(fresh, metric, new.start + new.first_new)
    best = best_value([v for v in (entry["best"], *y.tolist()) if v is not None], goal)
    entry.update(generation=new.generation, rows=new.n_rows, best=best)
    if entry["shown"] + len(x) > 2 * MAX_POINTS:
        return _reread(store, metric, goal, entry, old)
    entry["shown"] += len(x)
    points = ("append", x, y) if len(x) else None
    return entry, bool(len(x)) or _changed(old, entry), points


def _table_cursor(old: dict | None) -> dict:
    if old is None:
        return {"generation": None, "rows": 0}
    return {"generation": old.get("generation"), "rows": int(old["rows"])}


def _changed(old: dict, entry: dict) -> bool:
    return any(old.get(k) != entry[k] for k in ("state", "steps", "best", "done"))


def _reread(
    store: Path | None, metric: str, goal: str, entry: dict, old: dict | None
) -> tuple[dict, bool, Any]:
    """A trial's whole curve (a first read, a table truncated by a resume, or one grown
    past what a curve keeps): every row read, downsampled. A missing or unreadable store
    gives no points (the run page names what is wrong with it)."""
    from trainer.runs.history_store import read_table, table_info

    try:
        info = table_info(store, "history") if store is not None else None
        frame = read_table(store, "history") if info is not None else None
    except (OSError, ValueError):
        info = frame = None
    x, y = _metric(frame, metric, 0)
    idx = series.downsample_indices(y, MAX_POINTS)
    entry.update(
        generation=info.generation if info is not None else None,
        rows=len(frame) if frame is not None else 0,
        shown=len(idx),
        best=best_value(y.tolist(), goal),
    )
    points = (x[idx], y[idx]) if old is None else ("replace", x[idx], y[idx])
    return entry, old is None or len(idx) > 0 or _changed(old, entry), points


def _metric(frame: Any, metric: str, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``metric`` in history rows, non-finite values left out."""
    if frame is None or metric not in frame:
        return np.empty(0), np.empty(0)
    y = frame[metric].to_numpy(dtype=np.float64)
    if "steps" in frame:
        x = frame["steps"].to_numpy()
    else:
        x = np.arange(start, start + len(frame), dtype=np.int64)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def _look(row: TrialRow, best: str | None) -> list:
    style = sweep_figures.curve_style(row.state, row.run == best)
    return [sweep_figures.trace_name(row, row.run == best), *style.values()]


def _curves_patch(
    rows: list[TrialRow], curves: dict, previous: list[dict], fresh: list[dict], best: str | None
) -> Any:
    """Appends new points, adds traces of new trials and restyles traces whose state or
    best mark changed; ``no_update`` when nothing did."""
    p = Patch()
    touched = False
    for i, row in enumerate(rows):
        if i >= len(previous):  # a new trial: its whole trace
            x, y = curves[row.run]
            one = sweep_figures.curves_figure([row], {row.run: (x, y)}, "", best).data[0]
            one.line.color = _colour(i)
            p["data"].append(one.to_plotly_json())
            touched = True
            continue
        points = curves.get(row.run)
        if points is not None and points[0] == "append":
            p["data"][i]["x"].extend(np.asarray(points[1]).tolist())
            p["data"][i]["y"].extend(np.asarray(points[2]).tolist())
            touched = True
        elif points is not None and points[0] == "replace":
            p["data"][i]["x"] = np.asarray(points[1]).tolist()
            p["data"][i]["y"] = np.asarray(points[2]).tolist()
            touched = True
        look = _look(row, best)
        if previous[i].get("look") != look:
            name, opacity, width, dash = look
            p["data"][i]["name"] = name
            p["data"][i]["opacity"] = opacity
            p["data"][i]["line"]["width"] = width
            p["data"][i]["line"]["dash"] = dash
            touched = True
    return p if touched else no_update


def _colour(i: int) -> str:
    import plotly.colors as pcolors

    palette = pcolors.qualitative.Plotly
    return palette[i % len(palette)]


def spec_line(view: SweepView) -> str:
    """What was asked: method, runs, metric and goal, pruner, parallel cap, config."""
    spec = view.spec
    if not spec:
        return "sweep.json has no readable spec"
    pruner = "no pruning"
    if spec.get("prune"):
        pruner = (
            f"pruner {spec.get('pruner')} (after "
            f"{spec.get('warmup_steps', SWEEP_DEFAULTS['warmup_steps'])} steps, "
            f"{spec.get('startup_runs', SWEEP_DEFAULTS['startup_runs'])} complete runs first)"
        )
    parts = [
        f"method {spec.get('method')}",
        f"{spec.get('n_runs')} runs",
        f"metric {view.metric} ({view.goal})",
        pruner,
        f"at most {view.record.get('max_parallel', spec.get('max_parallel'))} at once",
        f"config {view.record.get('config', '?')}",
        f"{launch_backend(view.record)} backend",
    ]
    params = ", ".join(_param_text(k, p) for k, p in view.parameters.items())
    return "  ·  ".join(str(p) for p in parts) + (f"  ·  parameters: {params}" if params else "")


def _param_text(name: str, p: dict) -> str:
    if "values" in p:
        return f"{name} in {[sweep_figures.fmt_value(v) for v in p['values']]}".replace("'", "")
    log = ", log" if p.get("log") else ""
    return f"{name} {sweep_figures.fmt_value(p['low'])}..{sweep_figures.fmt_value(p['high'])}{log}"

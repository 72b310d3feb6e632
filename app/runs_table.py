"""The experiments page's runs grid: its rows, dash-ag-grid column definitions and sparklines.

The grid's cell renderers (state badge, progress bar, sparkline) are JavaScript functions in
``assets/dashAgGridComponentFunctions.js``, the place dash-ag-grid looks them up by name; this
module gives them their data. A sparkline is at most ``SPARK_POINTS`` numbers per run: the
mean of each run of consecutive history rows (``sparkline_points``), kept up to date by
``Sparklines``, which reads only the history rows appended since its last look (one open,
two preads with ``trainer.runs.history_store.read_array``).
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from app.components import STATE_COLORS, fmt_duration, fmt_time, round_sig
from app.slurm import run_state as slurm_run_state
from app.sweep_view import sweep_config_name, trial_sweep
from trainer.runs import history_dir
from trainer.runs.history_store import read_array

#: most points of one run's valid-loss sparkline
SPARK_POINTS = 50
#: history column the sparkline draws
SPARK_COLUMN = "valid_loss"
#: text colours a state badge may use: the one that contrasts more with its background wins
BADGE_TEXT = ("#ffffff", "#212529")


# -- sparkline values (pure) ---------------------------------------------------------------


def bucket_width(n: int, max_points: int = SPARK_POINTS) -> int:
    """Rows per sparkline point for ``n`` rows: the smallest power of two giving at most
    ``max_points`` points (``ceil(n / width) <= max_points``)."""
    if max_points < 1:
        raise ValueError(f"max_points {max_points!r}: expected at least 1")
    width = 1
    while -(-n // width) > max_points:
        width *= 2
    return width


def sparkline_points(values: Any, max_points: int = SPARK_POINTS) -> list[float | None]:
    """The sparkline of ``values``: the mean of each ``bucket_width`` consecutive values.

    Non-finite values are left out of their bucket's mean; a bucket without a finite value
    gives ``None`` (a gap). Means are rounded to 4 significant digits.

    >>> sparkline_points([4, 3, 2, 1], max_points=2)
    [3.5, 1.5]
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    width = bucket_width(len(v), max_points)
    out: list[float | None] = []
    for lo in range(0, len(v), width):
        chunk = v[lo : lo + width]
        chunk = chunk[np.isfinite(chunk)]
        out.append(round_sig(float(chunk.mean())) if len(chunk) else None)
    return out


class _Buckets:
    """Sums and counts of finite values per bucket; merged pairwise when too many.

    Equal to ``sparkline_points`` over every value added so far, in memory bounded by
    ``max_points`` buckets, whatever the number of rows.
    """

    def __init__(self, max_points: int) -> None:
        self.max_points = max_points
        self.width = 1
        self.n = 0
        self.sums: list[float] = []
        self.counts: list[int] = []

    def add(self, values: np.ndarray) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        total = self.n + len(v)
        while self.width < bucket_width(total, self.max_points):
            self._halve()
        fill = -self.n % self.width  # room left in the last bucket
        head, rest = v[:fill], v[fill:]
        if len(head):
            finite = head[np.isfinite(head)]
            self.sums[-1] += float(finite.sum())
            self.counts[-1] += len(finite)
        if len(rest):
            pad = -len(rest) % self.width
            rows = np.concatenate([rest, np.full(pad, np.nan)]).reshape(-1, self.width)
            finite = np.isfinite(rows)
            self.sums += np.where(finite, rows, 0.0).sum(axis=1).tolist()
            self.counts += finite.sum(axis=1).tolist()
        self.n = total

    def _halve(self) -> None:
        self.sums = [sum(self.sums[i : i + 2]) for i in range(0, len(self.sums), 2)]
        self.counts = [sum(self.counts[i : i + 2]) for i in range(0, len(self.counts), 2)]
        self.width *= 2

    def points(self) -> list[float | None]:
        return [round_sig(s / c) if c else None for s, c in zip(self.sums, self.counts)]


class Sparklines:
    """Valid-loss sparklines of many runs, each poll reading only new history rows.

    Keyed by history store path, with the rows read so far and the table's generation: a
    resumed run that truncated (rewrote) its history starts again from row 0. Holds at most
    ``max_runs`` runs (least recently asked for dropped first). Safe to share between
    the threads of one server.

    Example:
        >>> lines = Sparklines()
        >>> lines.points("runs/demo")  # [] until the run has history rows
        []
    """

    def __init__(self, max_points: int = SPARK_POINTS, max_runs: int = 1024) -> None:
        self.max_points = max_points
        self.max_runs = max_runs
        self._runs: collections.OrderedDict[str, tuple[dict, _Buckets]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """How many runs are held."""
        return len(self._runs)

    def points(self, run_dir: str | Path) -> list[float | None]:
        """The sparkline of the run at ``run_dir``; ``[]`` without a readable history."""
        store = str(history_dir(run_dir))
        with self._lock:
            offset, generation, buckets = self._runs.pop(store, (0, None, None))
            try:
                got = read_array(store, "history", offset)
                if got is not None and (buckets is None or got[0].generation != generation
                                        or got[0].n_rows < offset):  # fmt: skip
                    # first look, or a resume rewrote the table: read it from row 0
                    buckets, got = _Buckets(self.max_points), read_array(store, "history", 0)
            except Exception:  # a torn or foreign store must not break the runs table
                return []
            if got is None:  # no history table (yet, or any more)
                return []
            info, rows = got
            if SPARK_COLUMN in info.columns:
                buckets.add(rows[:, info.columns.index(SPARK_COLUMN)])
            else:
                buckets.add(np.full(len(rows), np.nan))
            self._runs[store] = (info.n_rows, info.generation, buckets)
            while len(self._runs) > self.max_runs:
                self._runs.popitem(last=False)
            return buckets.points()


# -- grid columns (pure) -------------------------------------------------------------------


def _luminance(color: str) -> float:
    """WCAG relative luminance of a ``#rrggbb`` colour."""
    channels = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def badge_looks() -> dict[str, dict[str, str]]:
    """Background and text colour of each state's badge; the text colour is whichever of
    ``BADGE_TEXT`` contrasts more with the state's colour."""
    return {
        state: {"background": color, "color": max(BADGE_TEXT, key=lambda t: contrast(t, color))}
        for state, color in STATE_COLORS.items()
    }


def _text(field: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": name, "filter": "agTextColumnFilter", **extra}


def _number(field: str, name: str, **extra: Any) -> dict[str, Any]:
    return {
        "field": field,
        "headerName": name,
        "filter": "agNumberColumnFilter",
        "type": "rightAligned",
        **extra,
    }


#: pixels per character of a run name and around it (padding, sort icon), and the name
#: column's narrowest and widest default width
NAME_CHAR_PX, NAME_PAD_PX, NAME_MIN_PX, NAME_MAX_PX = 8, 40, 180, 420


def name_width(names: Iterable[str]) -> int:
    """The Run column's default width for ``names``: the longest shown whole (a sweep
    trial's ``<config>-sweep-<n>-NNN`` included), within ``NAME_MIN_PX``..``NAME_MAX_PX``.

    Example:
        >>> name_width(["demo_sweep-sweep-1-003"])
        216
    """
    longest = max((len(n) for n in names), default=0)
    return max(NAME_MIN_PX, min(NAME_MAX_PX, longest * NAME_CHAR_PX + NAME_PAD_PX))


def column_defs(names: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The runs grid's columns, in the order the table shows them.

    The Run column is pinned left and as wide as the longest of ``names`` (``name_width``);
    the metric columns come right after the state and progress, and the other columns are
    narrow, so the losses and errors are on screen without scrolling on a laptop's screen.
    """
    return [
        _text("name", "Run", pinned="left", width=name_width(names), minWidth=NAME_MIN_PX),
        _text("config", "Config", width=130),
        _text(
            "sweep",
            "Sweep",
            cellRenderer="VbSweepLink",
            headerTooltip="the sweep a run is a trial of; its link opens the sweep's page",
            width=130,
        ),
        _text(
            "state",
            "State",
            cellRenderer="VbStateBadge",
            cellRendererParams={"looks": badge_looks()},
            width=105,
        ),
        _number(
            "progress",
            "Progress",
            cellRenderer="VbProgress",
            headerTooltip="step / total steps, in per cent",
            width=110,
        ),
        _number("valid_loss", "Valid loss", width=90),
        _number("valid_err", "Valid err", width=90),
        _number("train_loss", "Train loss", width=90),
        _number("train_err", "Train err", width=90),
        _number("step", "Step", width=80),
        _number("n_steps", "Total steps", width=80),
        {
            "field": "valid_curve",
            "headerName": "Valid loss curve",
            "headerTooltip": f"mean valid loss over the run, at most {SPARK_POINTS} points",
            "cellRenderer": "VbSparkline",
            "cellDataType": False,  # a list of numbers, drawn only by the renderer
            "sortable": False,
            "filter": False,
            "width": 130,
        },
        _text("eta", "ETA", comparator={"function": "vbEtaOrder"}, width=90),
        _number("it_per_s", "it/s", headerTooltip="training iterations per second", width=80),
        _text("device", "Device", width=100),
        _text("job", "Job", width=100),
        _text("started", "Started", width=140),
        _text("duration", "Duration", comparator={"function": "vbDurationOrder"}, width=100),
        _text("issue", "Issue", cellClass="vb-issue", minWidth=200, flex=1),
    ]


#: settings of every column unless the column says otherwise
DEFAULT_COL_DEF = {
    "sortable": True,
    "resizable": True,
    "floatingFilter": True,
    "floatingFilterComponentParams": {"filterPlaceholder": "filter"},
    "wrapHeaderText": True,
    "autoHeaderHeight": True,
    "suppressHeaderMenuButton": True,
}

#: AG Grid options: one run selected at a time (checkbox or click), 50 rows a page, every
#: column in the DOM (19 columns; tests and screen readers find each cell)
GRID_OPTIONS = {
    "rowSelection": {"mode": "singleRow", "checkboxes": True, "enableClickSelection": True},
    "selectionColumnDef": {"pinned": "left"},
    "pagination": True,
    "paginationPageSize": 50,
    "paginationPageSizeSelector": False,
    "domLayout": "autoHeight",
    "suppressColumnVirtualisation": True,
    "animateRows": False,
    "tooltipShowDelay": 300,
}


# -- rows ------------------------------------------------------------------------------------


def table_rows(
    runs: list[dict[str, Any]],
    jobs: dict[str, dict[str, Any]] | None = None,
    curves: dict[str, list[float | None]] | None = None,
    sweeps: dict[str, str] | None = None,
    sweep_configs: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Display rows for the runs grid from ``app.readers.list_runs`` summaries.

    The Slurm job id and the reason a queued job waits come from the summary (the
    launcher's record); ``jobs`` (``Launcher.jobs()``) fills them in for summaries without.
    The state is the summary's (``trainer.runs.merge_state`` already trusts Slurm's
    ``RUNNING`` over a pid on another machine); a ``lost`` row whose job ``jobs`` says is
    running shows as running. ``curves`` holds each run's valid-loss sparkline
    (``app.runs_table.Sparklines``); a run without one gets ``[]``. ``sweeps`` holds the
    sweep id of each sweep trial (``trial_sweep``); other runs get ``''``. A trial's Config is
    its sweep's config (``sweep_configs``, by sweep id), not the copy every trial trains.
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
        if state == "finished" and r.get("truncated"):
            state = "truncated"
            why = f"truncated: max_runtime ended it at step {r['step']:,} of {r['n_steps']:,}"
        issue = " | ".join(x for x in (why, r["badge"], r["error"]) if x)
        sweep = (sweeps or {}).get(r["name"], "")
        rows.append(
            {
                "id": r["name"],
                "name": r["name"],
                "config": (sweep_configs or {}).get(sweep) or r["config"],
                "sweep": sweep,
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


def grid_rows(
    runs_dir: Path,
    runs: list[dict[str, Any]],
    sparklines: Sparklines,
    jobs: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``table_rows`` with each run's valid-loss sparkline, sweep and its sweep's config."""
    sweeps = {r["name"]: trial_sweep(runs_dir / r["name"]) for r in runs}
    return table_rows(
        runs,
        jobs,
        {r["name"]: sparklines.points(runs_dir / r["name"]) for r in runs},
        sweeps,
        {s: sweep_config_name(runs_dir, s) for s in set(sweeps.values()) if s},
    )


def rows_signature(rows: list[dict[str, Any]]) -> str:
    """A short digest of the grid's rows: a poll that finds the same rows sends none.

    Sending the grid unchanged rows is not free: dash-ag-grid re-applies its ``selectedRows``
    prop on every row update, so rows landing just as a person ticks a row's checkbox could
    put back the selection they had just cleared (more often the shorter ``--refresh`` is).
    """
    text = json.dumps(rows, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

"""Run-page benchmark: one live-update poll on huge histories, first render, and a load run.

    python bench/bench_dashboard.py                    # polls at 10^6 and 10^7 rows, first render,
                                                       # and a 2-minute load run of 20 clients
    python bench/bench_dashboard.py --load-seconds 0   # skip the load run
    python bench/bench_dashboard.py --sizes 1000000    # only 10^6

1. Poll: a synthetic run with N timeline rows (N = 10^6, 10^7) is shown once (full build),
   then the "trainer" appends one row and the run page's update (``update_curves`` with
   ``poll=True``, what the ``run-interval`` callback runs) is timed, with the bytes of its
   JSON answer (the callback's outputs, ``plotly.utils.PlotlyJSONEncoder``). Goals: under
   50 ms, under 10 kB, and at most 2x slower at 10^7 than at 10^6. The same poll is also
   sent through Dash's HTTP endpoint (Flask test client) for the real response size.
   The occasional full rebuild (once a browser holds 2 x 2000 points per curve) is timed too.
2. First render: the full build of a run page (all curves of a 10^5-step run, schedules)
   plus the compare chart with 10 runs.
3. Load: the dashboard served by waitress in a subprocess on 127.0.0.1, a live run
   appending 20 rows/s, and 20 client threads polling the update callback at 1 Hz through
   ``/_dash-update-component``, each keeping its own cursor. Prints errors and latency p95
   (goal: 0 errors, p95 under 200 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import plotly

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from trainer.history import HistoryTracker  # noqa: E402
from trainer.runs import Status, atomic_write_json, write_status  # noqa: E402
from trainer.runs.history_store import table_path  # noqa: E402

CURVE_OUTPUTS = [
    ("run-graph-timeline", "figure"),
    ("run-graph-loss", "figure"),
    ("run-graph-error", "figure"),
    ("run-graph-lr", "figure"),
    ("run-graph-gain", "figure"),
    ("run-cursor", "data"),
    ("run-header", "children"),
    ("run-interval", "disabled"),
    ("run-error", "children"),
]
CONTROLS = [
    ("run-smoothing", "value", "ema"),
    ("run-ema-weight", "value", 0.6),
    ("run-sma-window", "value", 50),
    ("run-options", "value", []),
    ("run-xaxis", "value", "step"),
]


def timeline_rows(start: int, stop: int) -> np.ndarray:
    i = np.arange(start, stop, dtype=np.float64)
    loss = 1.0 / (1.0 + 1e-4 * i) + 0.05 * np.sin(i * 0.37) ** 2
    return np.column_stack([0.01 * i, loss, np.full_like(i, 0.5)])


def append_rows(store: Path, table: str, rows: np.ndarray) -> None:
    """Append float64 records the way the trainer's store does (one write, O_APPEND)."""
    with open(table_path(store, table), "ab") as f:
        f.write(np.ascontiguousarray(rows, dtype="<f8").tobytes())


def make_run(
    runs_dir: Path, name: str, n_timeline: int, n_history: int, chunk: int = 1_000_000
) -> Path:
    """A running run (this process as its trainer) with a synthetic history store."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(
            state="running",
            step=n_timeline,
            n_steps=10 * n_timeline,
            pid=os.getpid(),
            heartbeat=time.time() + 86400,
            started=time.time(),
            extra={"device": "cpu", "it_per_s": 50.0},
        ),
    )
    atomic_write_json(
        run_dir / "config.json",
        {
            "n_steps": 10 * n_timeline,
            "optimiser_params": {"lr": 0.01, "mom": 0.9},
            "schedules": {"lr": {"dec": 0.9, "period": max(1, n_timeline // 10)}},
        },
    )
    store = run_dir / "history"
    with HistoryTracker(store) as tracker:  # writes the headers
        tracker.update_timeline(timeline_rows(0, 1)[0].tolist())
        tracker.update_history([0, 0, 1, 1, 0, 0.5, 0.5, 0.01, 0.9, 0])
    for start in range(1, n_timeline, chunk):
        append_rows(store, "timeline", timeline_rows(start, min(start + chunk, n_timeline)))
    k = np.arange(1, n_history, dtype=np.float64)
    hist = np.column_stack(
        [
            k * 100,
            k,
            1 / (1 + k),
            1.1 / (1 + k),
            0.01 + 0 * k,
            0.3 / (1 + k),
            0.35 / (1 + k),
            0.01 + 0 * k,
            0.9 + 0 * k,
            0 * k,
        ]
    )
    append_rows(store, "history", hist)
    return run_dir


def json_bytes(obj) -> int:
    return len(json.dumps(obj, cls=plotly.utils.PlotlyJSONEncoder).encode())


def build_app(runs_dir: Path):
    from app import create_app

    app = create_app(
        runs_dir,
        runs_dir.parent / "configs",
        runs_dir.parent / "data",
        start_launcher=False,
        gpus=[],
    )
    return app, sys.modules["app.pages.run"]


def poll_payload(name: str, cursor, n: int, *, poll: bool = True) -> dict:
    """The request body Dash's renderer sends for the run page's curves callback."""
    inputs = [{"id": "run-interval", "property": "n_intervals", "value": n}]
    inputs += [{"id": i, "property": p, "value": v} for i, p, v in CONTROLS]
    return {
        "output": "".join(f"..{i}.{p}.." for i, p in CURVE_OUTPUTS).replace("....", "..."),
        "outputs": [{"id": i, "property": p} for i, p in CURVE_OUTPUTS],
        "inputs": inputs,
        "changedPropIds": ["run-interval.n_intervals" if poll else "run-smoothing.value"],
        "state": [
            {"id": "run-cursor", "property": "data", "value": cursor},
            {"id": "run-name", "property": "data", "value": name},
        ],
    }


def cursor_from(body: bytes):
    return json.loads(body)["response"]["run-cursor"]["data"]


def bench_poll(sizes: list[int], repeats: int) -> dict[int, float]:
    from app import run_view
    from app.series import Smoothing

    medians = {}
    print("== live-update poll that adds one row (update_curves, poll=True) ==")
    print(
        f"{'rows':>12} {'cold build':>11} {'full build':>11} {'full bytes':>11} {'poll med':>9} {'poll max':>9} {'bytes':>7} {'http med':>9} {'http bytes':>10}"
    )
    for n in sizes:
        tmp = Path(tempfile.mkdtemp(prefix="vb-bench-"))
        try:
            run_dir = make_run(tmp / "runs", "big", n, 1000)
            app, page = build_app(tmp / "runs")
            smoothing = Smoothing("ema", 0.6)
            t0 = time.perf_counter()
            run_view.update_curves(run_dir, None, smoothing=smoothing, poll=False)
            t_cold = time.perf_counter() - t0  # includes first imports (scipy, plotly validators)
            t0 = time.perf_counter()
            full = run_view.update_curves(run_dir, None, smoothing=smoothing, poll=False)
            t_full = time.perf_counter() - t0
            full_bytes = json_bytes(
                [full[k] for k in ("timeline", "loss", "error", "lr", "gain", "cursor", "header")]
            )
            cursor, times, sizes_b = full["cursor"], [], []
            for r in range(repeats):
                append_rows(run_dir / "history", "timeline", timeline_rows(n + r, n + r + 1))
                t0 = time.perf_counter()
                up = run_view.update_curves(run_dir, cursor, smoothing=smoothing, poll=True)
                times.append(time.perf_counter() - t0)
                outputs = [
                    up[k]
                    for k in ("timeline", "loss", "error", "lr", "gain", "cursor", "header", "stop")
                ]
                sizes_b.append(json_bytes(outputs))
                cursor = up["cursor"]
            # the same poll through Dash's endpoint: request parsing, callback, serialisation
            client = app.server.test_client()
            http_times, http_bytes = [], 0
            for r in range(repeats):
                row = n + repeats + r
                append_rows(run_dir / "history", "timeline", timeline_rows(row, row + 1))
                t0 = time.perf_counter()
                resp = client.post(
                    "/_dash-update-component", json=poll_payload("big", cursor, r + 1)
                )
                http_times.append(time.perf_counter() - t0)
                assert resp.status_code == 200, resp.data[:300]
                http_bytes = len(resp.data)
                cursor = cursor_from(resp.data)
            med = statistics.median(times)
            medians[n] = med
            print(
                f"{n:>12,} {t_cold * 1e3:>9.0f}ms {t_full * 1e3:>9.0f}ms {full_bytes:>11,} {med * 1e3:>7.2f}ms {max(times) * 1e3:>7.2f}ms "
                f"{max(sizes_b):>7,} {statistics.median(http_times) * 1e3:>7.2f}ms {http_bytes:>10,}"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if len(medians) >= 2:
        lo, hi = min(medians), max(medians)
        print(
            f"poll time ratio {hi:,} / {lo:,} rows: {medians[hi] / medians[lo]:.2f}x (goal <= 2x)"
        )
    print("goal: poll < 50 ms and < 10 kB; 'full build' is the page load and the rare rebuild")
    return medians


def bench_first_render(n_runs: int = 10, n_timeline: int = 100_000, n_history: int = 1000) -> None:
    from app import run_view
    from app.series import Smoothing

    print(f"\n== first render of a run page ({n_timeline:,} steps) with {n_runs} runs compared ==")
    tmp = Path(tempfile.mkdtemp(prefix="vb-bench-"))
    try:
        names = [f"run{i:02d}" for i in range(n_runs)]
        for name in names:
            make_run(tmp / "runs", name, n_timeline, n_history)
        app, page = build_app(tmp / "runs")
        root = tmp / "runs"
        with app.server.app_context():
            for column in ("valid_loss", "loss"):
                t0 = time.perf_counter()
                full = run_view.update_curves(
                    root / names[0], None, smoothing=Smoothing(), poll=False
                )
                t_curves = time.perf_counter() - t0
                t0 = time.perf_counter()
                compare = run_view.compare_view(root, names[0], names[1:], column)
                t_compare = time.perf_counter() - t0
                t0 = time.perf_counter()
                layout = page.layout(name=names[0])
                t_layout = time.perf_counter() - t0
                figs = [full[k] for k in ("timeline", "loss", "error", "lr", "gain")]
                total = json_bytes([*figs, compare, layout])
                print(
                    f"compare column {column!r}: layout {t_layout * 1e3:.0f} ms, curves {t_curves * 1e3:.0f} ms, "
                    f"compare {t_compare * 1e3:.0f} ms ({len(compare.data)} traces), "
                    f"total {(t_layout + t_curves + t_compare) * 1e3:.0f} ms, {total / 1e3:,.0f} kB"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SERVER = """
import sys
from waitress import serve
from app import create_app
app = create_app(sys.argv[1], sys.argv[2], sys.argv[3], start_launcher=False, gpus=[])
serve(app.server, host="127.0.0.1", port=int(sys.argv[4]), threads=int(sys.argv[5]), _quiet=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_load(
    seconds: float, clients: int = 20, threads: int = 8, n_timeline: int = 1_000_000
) -> None:
    import requests

    print(
        f"\n== load: {clients} clients polling at 1 Hz for {seconds:.0f} s, waitress with {threads} threads =="
    )
    tmp = Path(tempfile.mkdtemp(prefix="vb-bench-"))
    server = None
    stop = threading.Event()
    try:
        run_dir = make_run(tmp / "runs", "live", n_timeline, 1000)
        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                SERVER,
                str(tmp / "runs"),
                str(tmp / "configs"),
                str(tmp / "data"),
                str(port),
                str(threads),
            ],
            cwd=REPO,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if requests.get(f"{base}/run/live", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.3)

        def trainer() -> None:  # a live run: 20 steps per second, a history row every 100
            row = n_timeline
            while not stop.wait(0.05):
                append_rows(run_dir / "history", "timeline", timeline_rows(row, row + 1))
                row += 1

        latencies: list[float] = []
        loads: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        t_end = time.time() + seconds
        spread = min(10.0, seconds / 4)

        def client(k: int) -> None:
            s = requests.Session()
            cursor, n = None, 0
            # viewers open the page one after another over the first seconds, not all at once
            time.sleep(spread * k / clients)
            while time.time() < t_end and not stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = s.post(
                        f"{base}/_dash-update-component",
                        json=poll_payload("live", cursor, n, poll=cursor is not None),
                        timeout=10,
                    )
                    dt = time.perf_counter() - t0
                    if r.status_code != 200:
                        raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
                    cursor = cursor_from(r.content)
                    with lock:  # the first request is the page load (full build)
                        (latencies if n > 0 else loads).append(dt)
                except Exception as e:
                    with lock:
                        errors.append(f"client {k}: {type(e).__name__}: {e}")
                n += 1
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - t0)))

        feeder = threading.Thread(target=trainer, daemon=True)
        feeder.start()
        pool = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        stop.set()
        feeder.join()
        lat = np.array(latencies) * 1e3
        print(f"requests {len(lat) + len(loads) + len(errors)}, errors {len(errors)}")
        if loads:
            print(
                f"page loads (full build of {n_timeline:,} steps): median {np.median(loads) * 1e3:.0f} ms, max {max(loads) * 1e3:.0f} ms"
            )
        for e in errors[:5]:
            print("  ", e)
        if len(lat):
            print(
                f"poll latency p50 {np.percentile(lat, 50):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, "
                f"max {lat.max():.1f} ms (goal: 0 errors, p95 < 200 ms)"
            )
    finally:
        stop.set()
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="timeline rows"
    )
    parser.add_argument("--repeats", type=int, default=20, help="polls timed per size")
    parser.add_argument(
        "--load-seconds", type=float, default=120.0, help="load run duration; 0 skips it"
    )
    parser.add_argument("--clients", type=int, default=20, help="clients in the load run")
    args = parser.parse_args()
    bench_poll(args.sizes, args.repeats)
    bench_first_render()
    if args.load_seconds > 0:
        bench_load(args.load_seconds, clients=args.clients)


if __name__ == "__main__":
    main()

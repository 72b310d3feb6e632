"""First-paint benchmark: navigation start to the first drawn data, in headless Chromium.

    python bench/bench_first_paint.py                        # this checkout, 10^5 and 10^6 rows
    python bench/bench_first_paint.py --before ../vb-before  # also an older checkout, side by side
    python bench/bench_first_paint.py --pages evaluation --sizes 100000 --loads 9
    python bench/bench_first_paint.py --server --before ../vb-before  # the server's part only

For each size a synthetic running run is written (N timeline rows, 1000 history rows, two
preview files, one evaluation result), the dashboard of each checkout is served by waitress
in a subprocess, and Chromium (selenium, with the flags the browser tests use) loads the run,
preview, evaluation and experiments pages ``--loads`` times each, the checkouts taking turns
load by load (so a change in the machine's load hits both alike). A script installed before
every navigation (``Page.addScriptToEvaluateOnNewDocument``) records ``performance.now()``
(milliseconds since navigation start) at the first animation frame that shows the page's
data: a drawn Plotly trace (``g.trace``, or a heatmap's ``g.hm`` / image's ``g.im``, inside a graph) on the run, preview and evaluation
pages, a runs-table cell naming the run on the experiments page. Prints the median per page
and size, the ratio now / before, and the load average (as ``uptime`` shows it) before and
after each size; goals: under 1 s at 10^5 rows and under 2 s at 10^6 on a quiet 2-core
machine. The run is written by this checkout's trainer: a page an older checkout cannot read
(a newer result format) never draws and shows ``nan``. On a loaded machine (a load average
above the number of cores) the medians move by more than the change being measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests"))

from bench_dashboard import SERVER, free_port, make_run  # noqa: E402
from conftest import CHROMIUM, CHROMIUM_FLAGS  # noqa: E402

from trainer.metrics import evaluate_arrays  # noqa: E402
from trainer.runs import write_result  # noqa: E402

RUN = "live"

#: JavaScript run before each page's own scripts: the time of the first frame showing data
PROBE = """
window.__vbFirstPaint = null;
(function check() {
  var path = location.pathname;
  var found = path === "/"
    ? Array.from(document.querySelectorAll("td, .ag-cell")).some(
        function (c) { return c.textContent.trim() === "__RUN__"; })
    : document.querySelector(
        ".js-plotly-plot g.trace, .js-plotly-plot g.hm, .js-plotly-plot g.im") !== null;
  if (found) { window.__vbFirstPaint = performance.now(); return; }
  requestAnimationFrame(check);
})();
""".replace("__RUN__", RUN)


def write_previews(run_dir: Path, shape=(16, 128, 128)) -> None:
    """Two preview files in the documented format (raw and class probabilities per block)."""
    d = run_dir / "previews"
    d.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for step in (500, 1000):
        with h5py.File(d / f"preview-{step:08d}.h5", "w") as f:
            f.attrs.update(step=step, hours=step / 3600.0, n_classes=2, save_name=run_dir.name)
            g = f.create_group("block0")
            g["raw"] = rng.random(shape, dtype=np.float32)
            prob = rng.random(shape).astype(np.float16)
            g["prob"] = np.stack([1 - prob, prob])
            g.attrs.update(source="synthetic.h5:raw", z0=0)


def write_evaluation(run_dir: Path, shape=(16, 64, 64)) -> None:
    """One exact-mode evaluation result (``eval/FINAL.h5``)."""
    rng = np.random.default_rng(1)
    label = (rng.random(shape) < 0.35).astype(np.int8)
    prob = np.clip(rng.normal(0.35 + 0.3 * label, 0.15), 0, 1).astype(np.float32)
    (run_dir / "eval").mkdir(exist_ok=True)
    res = evaluate_arrays(label, prob, mode="exact")
    write_result(run_dir / "eval" / "FINAL.h5", {"valid": res}, {"snapshot": "", "step": 10})


def make_runs(root: Path, n_timeline: int) -> Path:
    run_dir = make_run(root / "runs", RUN, n_timeline, 1000)
    write_previews(run_dir)
    write_evaluation(run_dir)
    for sub in ("configs", "data"):
        (root / sub).mkdir(exist_ok=True)
    return run_dir


def start_server(checkout: Path, root: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    args = [str(root / "runs"), str(root / "configs"), str(root / "data"), str(port), "8"]
    server = subprocess.Popen([sys.executable, "-c", SERVER, *args], cwd=checkout)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            if requests.get(f"{base}/", timeout=2).status_code == 200:
                return server, base
        except requests.ConnectionError:
            pass
        if time.time() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError(f"the dashboard of {checkout} did not start")
        time.sleep(0.3)


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PROBE})
    return driver


def first_paint(driver, url: str, timeout: float = 60.0) -> float:
    """Seconds from navigation start to the first frame showing the page's data."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.time() + timeout
    while time.time() < deadline:
        t = driver.execute_script("return window.__vbFirstPaint")
        if t is not None:
            return t / 1000
        time.sleep(0.02)
    return float("nan")


PAGES = {
    "run": f"/run/{RUN}",
    "preview": f"/run/{RUN}/preview",
    "evaluation": f"/run/{RUN}/evaluation",
    "experiments": "/",
}


def measure(
    checkouts: dict[str, Path], root: Path, loads: int, pages: list[str]
) -> dict[str, dict[str, float]]:
    """Median first paint per checkout and page; the checkouts take turns load by load."""
    servers = {}
    driver = None
    try:
        for name, checkout in checkouts.items():
            servers[name] = start_server(checkout, root)
        driver = browser()
        for _server, base in servers.values():  # warm each server's caches and imports once
            first_paint(driver, base + PAGES["run"])
        times: dict[str, dict[str, list[float]]] = {k: {p: [] for p in pages} for k in servers}
        for page in pages:
            path = PAGES[page]
            for _ in range(loads):
                for name, (_server, base) in servers.items():
                    times[name][page].append(first_paint(driver, base + path))
        return {k: {p: statistics.median(t) for p, t in v.items()} for k, v in times.items()}
    finally:
        if driver is not None:
            driver.quit()
        for server, _base in servers.values():
            server.terminate()
            server.wait(10)


#: run in a checkout: median seconds and bytes of the callback that answers a page's content
SERVER_TIME = """
import json, statistics, sys, time
from app import create_app
runs, configs, data, loads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
app = create_app(runs, configs, data, start_launcher=False, gpus=[])
client = app.server.test_client()
deps = client.get("/_dash-dependencies").get_json()
(cb,) = [d for d in deps if "_pages_content" in d["output"]]
out = {}
for path in sys.argv[5:]:
    inputs = [{"id": i["id"], "property": i["property"],
               "value": {"pathname": path, "search": "", "hash": ""}.get(i["property"])}
              for i in cb["inputs"]]
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1)))
               for o in cb["output"].strip(".").split("...")]
    body = {"output": cb["output"], "outputs": outputs, "inputs": inputs,
            "changedPropIds": [], "state": []}
    times, size = [], 0
    for _ in range(loads + 1):  # the first one warms caches and imports
        t = time.perf_counter()
        response = client.post("/_dash-update-component", json=body)
        times.append(time.perf_counter() - t)
        size = len(response.data)
    out[path] = [statistics.median(times[1:]), size]
print(json.dumps(out))
"""


def server_times(checkouts: dict[str, Path], root: Path, loads: int, pages: list[str]) -> dict:
    """Per checkout and page: median seconds and bytes of the page's content response, from
    the Flask test client in a process of that checkout (no browser, no network)."""
    args = [str(root / "runs"), str(root / "configs"), str(root / "data"), str(loads)]
    got = {}
    for name, checkout in checkouts.items():
        done = subprocess.run(
            [sys.executable, "-c", SERVER_TIME, *args, *(PAGES[p] for p in pages)],
            cwd=checkout, capture_output=True, text=True, check=True,
        )  # fmt: skip
        by_path = json.loads(done.stdout.strip().splitlines()[-1])
        got[name] = {p: by_path[PAGES[p]] for p in pages}
    return got


def each_size(sizes: list[int], measure: Callable[[Path], Any]) -> Iterator[tuple[int, Any]]:
    """For each number of timeline rows: the runs written to a scratch folder, what
    ``measure(folder)`` gives, the folder removed."""
    for n in sizes:
        root = Path(tempfile.mkdtemp(prefix="vb-first-paint-"))
        try:
            make_runs(root, n)
            yield n, measure(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older checkout to measure beside this one")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES))
    parser.add_argument(
        "--server", action="store_true",
        help="time the server's answer with the page's content instead (no browser)",
    )  # fmt: skip
    args = parser.parse_args()
    checkouts = {"now": REPO} if args.before is None else {"before": args.before, "now": REPO}
    checkouts = {k: Path(c).resolve() for k, c in checkouts.items()}
    if args.server:
        server_main(checkouts, args)
        return
    print(f"median of {args.loads} loads, seconds from navigation start to the first drawn data")
    print(f"{os.cpu_count()} cores, {load_average()}")
    ratio = args.before is not None
    header = f"{'rows':>10} {'page':<12}" + "".join(f"{k:>10}" for k in checkouts)
    print(header + (f"{'now/before':>12}" if ratio else ""))
    for n, got in each_size(args.sizes, lambda r: measure(checkouts, r, args.loads, args.pages)):
        for page in args.pages:
            cells = "".join(f"{got[k][page]:>10.2f}" for k in checkouts)
            if ratio:
                cells += f"{got['now'][page] / got['before'][page]:>12.2f}"
            print(f"{n:>10,} {page:<12}{cells}", flush=True)
        print(f"{'':>10} after {n:,} rows: {load_average()}", flush=True)


def server_main(checkouts: dict[str, Path], args: argparse.Namespace) -> None:
    print(f"median of {args.loads} answers: seconds and MB of the page's content response")
    print(f"{'rows':>10} {'page':<12}" + "".join(f"{k:>16}" for k in checkouts))
    times = functools.partial(server_times, checkouts, loads=args.loads, pages=args.pages)
    for n, got in each_size(args.sizes, times):
        for page in args.pages:
            cells = "".join(
                f"{got[k][page][0]:>8.3f} {got[k][page][1] / 1e6:>6.2f} MB" for k in checkouts
            )
            print(f"{n:>10,} {page:<12}{cells}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()

"""Evaluation page benchmark: time from a threshold-slider change to the updated metrics table.

    python bench/bench_eval_page.py               # 10^4 thresholds, 60 slider steps
    python bench/bench_eval_page.py --steps 200

A run with a binned result of 10^6 voxels (10^4 bins: 10,001 thresholds, all sent to the browser)
and a 64 x 128 x 128 probability cache is served by waitress in a thread on 127.0.0.1 and opened
in headless Chromium (the options of tests/conftest.py). Each step presses an arrow key on the
slider handle. In the page, a ``keydown`` listener (capture phase) takes ``performance.now()``;
MutationObservers note when the metrics table changes (clientside callback, goal < 50 ms) and
when the segmentation slice changes (a server round trip; the thing the table would cost if it
were computed on the server). Prints median and p95 of both, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from app import create_app  # noqa: E402
from app import evaluation_view as ev  # noqa: E402
from trainer import runs  # noqa: E402
from trainer.metrics import evaluate_arrays  # noqa: E402
from trainer.runs import Status, write_result, write_status  # noqa: E402

RUN = "bench"

PROBE = """
window.__vb = {t0: null, table: [], seg: [], segT0: null};
const v = window.__vb;
document.querySelector('#eval-slider').addEventListener('keydown', () => {
  v.t0 = performance.now(); v.segT0 = v.t0;
}, true);
new MutationObserver(() => {
  if (v.t0 !== null) { v.table.push(performance.now() - v.t0); v.t0 = null; }
}).observe(document.querySelector('#eval-table'), {subtree: true, childList: true, characterData: true});
new MutationObserver(() => {
  const g = document.querySelector('#eval-seg .js-plotly-plot');
  const title = g && g.layout && g.layout.title ? g.layout.title.text : '';
  if (v.segT0 !== null && title.indexOf(v.expect) >= 0) {
    v.seg.push(performance.now() - v.segT0); v.segT0 = null;
  }
}).observe(document.querySelector('#eval-seg'), {subtree: true, childList: true, characterData: true, attributes: true});
"""


def make_run(runs_dir: Path, n_voxels: int) -> Path:
    rng = np.random.default_rng(0)
    gt = (rng.random(n_voxels) < 0.3).astype(np.int8)
    scores = np.clip(rng.normal(0.35 + 0.3 * gt, 0.15), 0, 1).astype(np.float32)
    res = evaluate_arrays(gt, scores, mode="binned", n_bins=10_000)
    d = runs_dir / RUN
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=1, n_steps=1))
    write_result(d / "eval" / "FINAL.h5", {"valid": res}, {"snapshot": "", "step": 1})
    shape = (64, 128, 128)
    label = (rng.random(shape) < 0.3).astype(np.int8)
    prob = np.clip(rng.normal(0.35 + 0.3 * label, 0.15), 0, 1).astype(np.float32)
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(rng.random(shape), prob, label)])
    return d


def serve(app) -> tuple[str, object]:
    from waitress.server import create_server

    server = create_server(app.server, host="127.0.0.1", port=0, threads=8)
    threading.Thread(target=server.run, daemon=True).start()
    return f"http://127.0.0.1:{server.effective_port}", server


def browser():
    from conftest import CHROMIUM, CHROMIUM_FLAGS
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return webdriver.Chrome(options=options)


def wait(predicate, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if predicate():
                return
        except Exception:  # still rendering
            pass
        time.sleep(0.05)
    raise TimeoutError("the page did not get there in time")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--voxels", type=int, default=1_000_000)
    args = parser.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    tmp = Path(tempfile.mkdtemp(prefix="vb-bench-eval-"))
    server = driver = None
    try:
        make_run(tmp / "runs", args.voxels)
        app = create_app(tmp / "runs", tmp / "configs", tmp / "data", start_launcher=False, gpus=[])
        url, server = serve(app)
        view = ev.load_view(tmp / "runs" / RUN, "FINAL", "valid")
        payload = len(json.dumps(ev.browser_view(view)))  # the store the page sends
        driver = browser()
        t0 = time.perf_counter()
        driver.get(f"{url}/run/{RUN}/evaluation")
        wait(lambda: driver.find_element(By.ID, "eval-cell-tp").text not in ("", "–"))
        first = time.perf_counter() - t0
        wait(lambda: driver.execute_script(
            "const g = document.querySelector('#eval-seg .js-plotly-plot');"
            "return g && g.data && g.data.length > 1;"
        ))  # fmt: skip
        driver.execute_script(PROBE)
        handle = driver.find_element(By.CSS_SELECTOR, '#eval-slider [role="slider"]')
        for i in range(args.steps):
            before = driver.execute_script(
                "return JSON.parse(document.querySelector('#eval-metrics-json').textContent).threshold"
            )
            key = Keys.ARROW_RIGHT if i % 2 == 0 else Keys.ARROW_LEFT
            expect = before + (1e-4 if i % 2 == 0 else -1e-4)
            driver.execute_script("window.__vb.expect = arguments[0];", f"threshold {expect:.4f}")
            handle.send_keys(key)
            wait(
                lambda: driver.execute_script(
                    "return window.__vb.t0 === null && window.__vb.segT0 === null"
                ),
                10,
            )
            time.sleep(0.05)
        table = driver.execute_script("return window.__vb.table")
        seg = driver.execute_script("return window.__vb.seg")
    finally:
        if driver is not None:
            driver.quit()
        if server is not None:
            server.close()
        shutil.rmtree(tmp, ignore_errors=True)

    n_t = len(view["thresholds"])
    print(
        f"result: {n_t:,} thresholds ({args.voxels:,} voxels, binned); eval-data store {payload / 1e6:.2f} MB JSON"
    )
    print(f"first load until the table is filled: {first * 1000:.0f} ms")
    print(
        f"slider -> metrics table (clientside), {len(table)} steps: median {statistics.median(table):.1f} ms, "
        f"p95 {pct(table, 0.95):.1f} ms  (goal < 50 ms)"
    )
    if seg:
        print(
            f"slider -> segmentation slice (server round trip), {len(seg)} steps: median "
            f"{statistics.median(seg):.1f} ms, p95 {pct(seg, 0.95):.1f} ms"
        )
        print(
            f"server round trip / clientside table (median): {statistics.median(seg) / statistics.median(table):.1f}x"
        )


if __name__ == "__main__":
    main()

"""Regenerate README's pictures: the experiments, run, preview and evaluation pages of a real run,
and the sweep page of a real sweep.

    python docs/screenshots.py                    # docs/images/*.png, a 60-step run, a sweep
    python docs/screenshots.py --out /tmp/shots --steps 10 --width 1000 --height 700
    python docs/screenshots.py --no-sweep         # the four run pictures only
    python docs/screenshots.py --keep /tmp/shots-work --data-dir /tmp/demo  # keep the runs
    python docs/screenshots.py --quick --steps 2 --sweep-steps 1  # the tests' cheaper pictures

In a scratch folder (removed afterwards; ``--keep DIR`` works in a new folder DIR and leaves it)
it writes the demo data (``run.py demo-data``; ``--data-dir`` uses a demo data set already
written, and writes it there when missing), trains
the demo config for ``--steps`` steps on the CPU (``run.py train``), evaluates the run with its
neurons (``run.py evaluate --instances``), runs a small grid sweep of the same config over three
learning rates (``run.py sweep``, two trials at once, ``--sweep-steps`` steps each; skipped with
``--no-sweep``), serves the dashboard on a free loopback port
(``run.py dashboard``) and saves one PNG per page from headless Chromium (selenium, with the
browser tests' flags from ``tests/conftest.py``), each ``--width`` x ``--height`` pixels, once
the page's graphs are drawn and its text has stopped changing. The PNGs are reduced to a
256-colour palette, which keeps a dashboard picture near 100 kB.

The demo config is trained as written except for two keys, so that a short run already has
curves and a preview of a trained network: ``history_freq`` (a history row every tenth of the
run) and ``preview_every`` (a preview at the first and the last step). The sweep's trials train
without previews or background batch workers; they are listed on the experiments page beside
the run.

``--quick`` (what the tests run, tests/conftest.py's ``demo_screens``) makes the same kinds of
runs and pictures for less CPU time: the run and the trials train on batches of one example,
monitor on one example and make their batches in the training process
(``batch_size = monitor_batch_size = 1``, ``background_processes = False``), and the sweep
has two trials (the outer learning rates), run at once, beside the run's training and
evaluation instead of after them. The curves are noisier; use it for checks, not for README's pictures.

Needs the test requirements (``requirements-test.txt``: selenium) and Debian's chromium and
chromium-driver, as the browser tests do. Takes about two minutes on a 2-core CPU with the
default 60 steps, most of it training, and about two more for the sweep's 20-step trials.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUN = "demo_cnn3d"
#: the sweep's config name; its id is ``<name>-sweep-1``, its trials ``<id>-000`` ...
SWEEP_CONFIG = "demo_cnn3d_lr"
#: the swept learning rates: a decade and more apart, so each trial's curve looks different
SWEEP_LRS = (3e-4, 2e-3, 1e-2)
#: ``--quick``'s sweep: the outer two, one trial fewer to start
QUICK_SWEEP_LRS = (3e-4, 1e-2)
#: ``--quick``'s config keys, added to the run's and the trials' configs: batches of one
#: example, made in the training process (no batch workers to start)
QUICK_KEYS = (
    "\n# docs/screenshots.py --quick: the cheapest steps of the same network\n"
    "batch_size = 1\n"
    "monitor_batch_size = 1\n"
    "background_processes = False\n"
)

#: page name -> URL path; the PNG is written as ``<name>.png`` (and ``sweep.png`` for the sweep)
PAGES = {
    "experiments": "/",
    "run": f"/run/{RUN}",
    "preview": f"/run/{RUN}/preview",
    "evaluation": f"/run/{RUN}/evaluation",
}

#: true once the page shows its data: the run's row on the experiments page; elsewhere every
#: visible graph has drawn a trace (a line, a heatmap, an image or parallel coordinates' axes)
#: and no callback is pending
READY = """
const page = document.getElementById("_pages_content");
if (!page || document.querySelector('[data-dash-is-loading="true"]')) return null;
if (arguments[0] === "/") {
  const cells = Array.from(page.querySelectorAll("td, .ag-cell"));
  return cells.some(c => c.textContent.trim() === arguments[1]) ? page.innerText : null;
}
const graphs = Array.from(page.querySelectorAll(".js-plotly-plot"))
  .filter(g => g.offsetParent !== null);
const drawn = graphs.every(g => g.querySelector("g.trace, g.hm, g.im, g.parcoords") !== null);
return graphs.length && drawn ? page.innerText : null;
"""


class ScreenshotError(RuntimeError):
    """A step of the regeneration failed; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args: list[str], cwd: Path, env: dict[str, str], what: str) -> None:
    """``python run.py ARGS``, announced as ``what``; a failure raises with the command's last
    output lines."""
    finish_cli(start_cli(args, cwd, env, what), what)


def start_cli(args: list[str], cwd: Path, env: dict[str, str], what: str) -> subprocess.Popen:
    """``python run.py ARGS`` started, announced as ``what``, its output into a temporary
    file (a pipe nobody reads would fill and stop it); ``finish_cli`` waits for it."""
    print(f"{what} ...", flush=True)
    log = tempfile.TemporaryFile("w+")
    cmd = [sys.executable, str(REPO / "run.py"), *args]
    try:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        log.close()
        raise
    proc.log = log  # type: ignore[attr-defined]
    return proc


def finish_cli(proc: subprocess.Popen, what: str) -> None:
    """Wait for ``start_cli``'s ``proc``; a failure raises with the command's last output
    lines. Interrupted, it stops ``proc`` (the trainer stops after its step and ends its
    workers; a sweep ends its trials)."""
    log = proc.log  # type: ignore[attr-defined]
    try:
        proc.wait()
        log.seek(0)
        output = log.read()
    finally:
        stop(proc)
        log.close()
    if proc.returncode != 0:
        tail = output[-3000:]
        raise ScreenshotError(
            f"{what} failed (exit {proc.returncode}): {' '.join(map(str, proc.args))}\n{tail}"
        )


def write_config(scratch: Path, steps: int, quick: bool = False) -> Path:
    """The demo config with a history row every tenth of the run and a preview at its end
    (and ``QUICK_KEYS`` when ``quick``)."""
    text = (REPO / "examples" / "demo_cnn3d.py").read_text()
    path = scratch / "configs" / "demo_cnn3d.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    overrides = (
        "\n# docs/screenshots.py: curves and a trained preview from a short run\n"
        f"history_freq = {max(1, steps // 10)}\n"
        f"preview_every = {max(1, steps - 1)}\n"
    )
    path.write_text(text + overrides + (QUICK_KEYS if quick else ""))
    return path


def make_run(
    scratch: Path,
    steps: int,
    env: dict[str, str],
    data: Path | None = None,
    quick: bool = False,
    written: bool = False,
) -> Path:
    """A ``steps``-step training run and its evaluation under ``scratch``, on the demo data in
    ``data`` (default ``scratch/data``; written there first unless ``written``; ``quick``: see
    ``write_config``)."""
    data = data or scratch / "data"
    if not written:
        run_cli(["demo-data", str(data)], scratch, env, "writing the demo data")
    config = write_config(scratch, steps, quick)
    run_cli(
        ["train", str(config), "--n-steps", str(steps), "--save-path", str(scratch / "runs"),
         "--save-name", RUN, "--device", "cpu"],
        scratch, env, "training the demo config",
    )  # fmt: skip
    run_dir = scratch / "runs" / RUN
    run_cli(["evaluate", str(run_dir), "--instances"], scratch, env, "evaluating the run")
    return run_dir


def write_sweep_config(scratch: Path, steps: int, quick: bool = False) -> Path:
    """The demo config as a grid sweep over ``SWEEP_LRS``, each trial ``steps`` steps long with
    a history row every tenth of it, no previews (the sweep page shows none) and no
    background batch workers (``quick``: over ``QUICK_SWEEP_LRS``, with ``QUICK_KEYS``)."""
    text = (REPO / "examples" / "demo_cnn3d.py").read_text()
    lrs = QUICK_SWEEP_LRS if quick else SWEEP_LRS
    path = scratch / "configs" / f"{SWEEP_CONFIG}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    overrides = (
        "\n# docs/screenshots.py: a short sweep over the learning rate\n"
        f"n_steps = {steps}\n"
        f"history_freq = {max(1, steps // 10)}\n"
        "preview_data_path = None\n"
        "background_processes = False\n"  # two trials at once already keep the cores busy
        f"sweep = dict(method='grid', parameters=dict(lr={list(lrs)!r}))\n"
    )
    path.write_text(text + overrides + (QUICK_KEYS if quick else ""))
    return path


def make_sweep(scratch: Path, steps: int, env: dict[str, str], data: Path | None = None) -> str:
    """A grid sweep of three ``steps``-step trials into ``scratch/runs``, two at once, over the
    demo data in ``data`` (default ``scratch/data``; written first if missing); returns the
    sweep's id."""
    data = data or scratch / "data"
    if not data.is_dir():
        run_cli(["demo-data", str(data)], scratch, env, "writing the demo data")
    finish_cli(start_sweep(scratch, steps, env, data), SWEEP_WHAT)
    return SWEEP_ID


#: what ``start_sweep`` announces, and the id of the sweep it starts
SWEEP_WHAT = "running the sweep"
SWEEP_ID = f"{SWEEP_CONFIG}-sweep-1"


def start_sweep(
    scratch: Path, steps: int, env: dict[str, str], data: Path, quick: bool = False
) -> subprocess.Popen:
    """``make_sweep``'s sweep started (over the demo data in ``data``, which must exist):
    two trials at once, or ``quick`` (``write_sweep_config``) all its trials at once.
    ``finish_cli(proc, SWEEP_WHAT)`` waits for it."""
    config = write_sweep_config(scratch, steps, quick)
    parallel = len(QUICK_SWEEP_LRS) if quick else 2
    return start_cli(
        ["sweep", str(config), "--runs-dir", str(scratch / "runs"), "--data-dir", str(data),
         "--max-parallel", str(parallel), "--device", "cpu"],
        scratch, env, SWEEP_WHAT,
    )  # fmt: skip


@contextlib.contextmanager
def dashboard(scratch: Path, data: Path, env: dict[str, str], timeout: float = 90.0):
    """The dashboard over ``scratch/runs`` (demo data in ``data``) on a free loopback port,
    stopped on leaving; yields its base URL."""
    port = free_port()
    cmd = [
        sys.executable, str(REPO / "run.py"), "dashboard", "--host", "127.0.0.1",
        "--port", str(port), "--runs-dir", str(scratch / "runs"),
        "--configs-dir", str(REPO / "examples"), "--data-dir", str(data),
    ]  # fmt: skip
    log_path = scratch / "dashboard.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, cwd=scratch, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_server(
                server, base, timeout, lambda: f"{' '.join(cmd)}\n{log_path.read_text()[-3000:]}"
            )
            yield base
        finally:
            stop(server)


def stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Terminate ``proc`` if it still runs (SIGTERM, then SIGKILL after ``grace`` seconds)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_server(server: subprocess.Popen, base: str, timeout: float, why) -> None:
    """Until ``base`` answers; raises with ``why()`` when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base}/", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise ScreenshotError(f"the dashboard did not start: {why()}")
        time.sleep(0.3)


def browser(width: int, height: int):
    """Headless Chromium with the browser tests' flags, its viewport ``width`` x ``height``."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.options import Options

    sys.path.insert(0, str(REPO / "tests"))
    from conftest import CHROMIUM, CHROMIUM_FLAGS

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(options=options)
    except WebDriverException as exc:
        raise ScreenshotError(
            f"could not start Chromium ({CHROMIUM}) through chromedriver: {exc.msg}; "
            "install Debian's chromium and chromium-driver (bash .ci/run does)"
        ) from exc
    # the viewport itself, not the window (a window's size includes what the browser draws)
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


def wait_until_drawn(driver, path: str, timeout: float = 90.0) -> None:
    """Until the page shows its data and its text is the same on three polls in a row."""
    deadline = time.monotonic() + timeout
    last, same = None, 0
    while time.monotonic() < deadline:
        text = driver.execute_script(READY, path, RUN)
        same = same + 1 if text is not None and text == last else 0
        if same >= 2:
            return
        last = text
        time.sleep(0.4)
    raise ScreenshotError(f"{path}: the page did not finish drawing within {timeout:.0f} s")


def save_png(png: bytes, path: Path) -> None:
    """``png`` reduced to a 256-colour palette (a few times smaller, no visible loss)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def screenshots(
    out: Path,
    steps: int,
    width: int,
    height: int,
    sweep_steps: int | None = 20,
    data: Path | None = None,
    keep: Path | None = None,
    quick: bool = False,
) -> list[Path]:
    """Train, evaluate, sweep (unless ``sweep_steps`` is None), serve and photograph; returns
    the PNGs written into ``out``.

    ``data``: demo data to use (written there when missing) instead of a scratch copy.
    ``keep``: a new folder to work in and leave behind (the runs, the sweep, the configs and
    the dashboard's log) instead of a scratch folder that is removed.
    ``quick``: ``QUICK_KEYS`` in every config, and the sweep's two trials at once, beside the
    run's training and evaluation.
    """
    out.mkdir(parents=True, exist_ok=True)
    names = [*PAGES, *(["sweep"] if sweep_steps is not None else [])]
    print(f"{len(names)} pages to photograph: {', '.join(names)}", flush=True)
    if keep is not None:
        try:
            keep.mkdir(parents=True)
        except FileExistsError:
            raise ScreenshotError(f"--keep {keep}: the folder exists; name a new one") from None
        scratch = keep.resolve()
    else:
        scratch = Path(tempfile.mkdtemp(prefix="voxelboard-screenshots-"))
    data = (data or scratch / "data").resolve()
    env = dict(os.environ, VOXELBOARD_DATA_DIR=str(data), PYTHONUNBUFFERED="1")
    sweep = None
    try:
        pages = dict(PAGES)
        if sweep_steps is not None and quick:
            # the data first: the run and the trials would otherwise each write the missing set
            run_cli(["demo-data", str(data)], scratch, env, "writing the demo data")
            sweep = start_sweep(scratch, sweep_steps, env, data, quick=True)
        make_run(scratch, steps, env, data, quick, written=sweep is not None)
        if sweep is not None:
            sweep, started = None, sweep
            finish_cli(started, SWEEP_WHAT)
            pages["sweep"] = f"/sweep/{SWEEP_ID}"
        elif sweep_steps is not None:
            pages["sweep"] = f"/sweep/{make_sweep(scratch, sweep_steps, env, data)}"
        with dashboard(scratch, data, env) as base:
            driver = browser(width, height)
            try:
                written = []
                for name, path in pages.items():
                    driver.get(base + path)
                    wait_until_drawn(driver, path)
                    target = out / f"{name}.png"
                    save_png(driver.get_screenshot_as_png(), target)
                    written.append(target)
                return written
            finally:
                driver.quit()
    finally:
        if sweep is not None:  # the run failed or was interrupted while the sweep ran
            stop(sweep)
            sweep.log.close()  # type: ignore[attr-defined]
        if keep is None:
            shutil.rmtree(scratch, ignore_errors=True)


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images",
                        help="folder for the PNGs (default docs/images)")  # fmt: skip
    parser.add_argument("--steps", type=positive, default=60, help="training steps (default 60)")
    parser.add_argument("--width", type=positive, default=1280, help="pixels (default 1280)")
    parser.add_argument("--height", type=positive, default=800, help="pixels (default 800)")
    parser.add_argument("--sweep-steps", type=positive, default=20,
                        help="training steps of each sweep trial (default 20)")  # fmt: skip
    parser.add_argument("--no-sweep", action="store_true",
                        help="no sweep and no sweep.png (about two minutes less)")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="demo data to use, written there when missing (default: a scratch "
                             "copy written each time)")  # fmt: skip
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="work in the new folder DIR and leave it: the run, the sweep and "
                             "the dashboard's log, to look at or serve again")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="for checks: one-example batches, no batch workers, a sweep of two "
                             "trials at once and beside the run (noisier curves)")  # fmt: skip
    args = parser.parse_args(argv)
    # a terminated script still stops its server and browser and removes its scratch folder
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    start = time.monotonic()
    try:
        sweep_steps = None if args.no_sweep else args.sweep_steps
        written = screenshots(args.out, args.steps, args.width, args.height, sweep_steps,
                              args.data_dir, args.keep, args.quick)  # fmt: skip
    except ScreenshotError as exc:
        print(f"docs/screenshots.py: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"{path} ({path.stat().st_size / 1024:.0f} kB)")
    print(f"{len(written)} screenshots in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

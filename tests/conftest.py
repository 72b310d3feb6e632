"""Shared test set-up: headless Debian Chromium for dash_duo browser tests, each Dash test
server on a free port, the marks of browser tests, the order pytest-xdist hands tests out, and
the demo data sets written once per test session."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one pytest-xdist worker per core already keeps the cores busy: a worker's torch (and the
    # trainings and servers it starts, which inherit this) on one thread each, so two workers'
    # OpenMP pools do not spin against each other on two cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--window-size=1400,1000",
)
_WINDOW = (1400, 1000)


def pytest_setup_options():
    """dash[testing] hook: the selenium options its ``dash_duo`` fixture starts Chromium with."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    return options


#: runs before a page's own scripts: each Dash callback request goes to ``window.__vbRequests``
#: as ``[ms since navigation start, its output]``, and ``window.__vbFirstDrawn`` gets the time
#: the JavaScript expression ``DRAWN`` first holds (checked every animation frame)
_RECORDER = """
window.__vbRequests = [];
window.__vbFirstDrawn = null;
const realFetch = window.fetch;
window.fetch = function (url, init) {
  if (String(url).includes("_dash-update-component")) {
    const body = JSON.parse(String((init && init.body) || "{}"));
    window.__vbRequests.push([performance.now(), body.output || ""]);
  }
  return realFetch.apply(this, arguments);
};
(function check() {
  if (DRAWN) {
    window.__vbFirstDrawn = performance.now();
    return;
  }
  requestAnimationFrame(check);
})();
"""


@pytest.fixture
def record_page():
    """``record_page(dash_duo, drawn)``: record the callback requests of the pages
    ``dash_duo`` opens next, and when the JavaScript expression ``drawn`` first holds."""

    def install(dash_duo, drawn: str) -> None:
        dash_duo.driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument", {"source": _RECORDER.replace("DRAWN", drawn)}
        )

    return install


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _StoppableRunner:
    """A Dash app served from a thread for ``dash_duo``, stopped by shutting its server down.

    dash[testing]'s own threaded runner stops by raising SystemExit into every thread started
    since it began: request threads and the app's own. One that lands while a thread holds a
    lock of Python's threading module leaves that lock held, and the next ``join`` waits for
    ever (seen as a test's teardown reaching the suite's timeout). Here the werkzeug server's
    ``shutdown`` ends ``serve_forever`` within a tenth of a second, and the request threads
    end on their own. The app listens on a free loopback port unless a test names one: two
    pytest-xdist workers would otherwise share dash's counter of ports."""

    scheme, host = "http", "localhost"

    def __init__(self) -> None:
        self.port = 0
        self.started = False
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, app, start_timeout: float = 10, **kwargs) -> None:
        import threading

        from werkzeug.serving import make_server

        if self.started:
            self.stop()
        app.scripts.config.serve_locally = True
        app.css.config.serve_locally = True
        self.port = kwargs.pop("port", None) or free_port()
        kwargs.setdefault("dev_tools_disable_version_check", True)
        listening = threading.Event()
        failed: list[BaseException] = []

        def serve(dash_app, host, port, debug, **_options):
            self._server = make_server(host, port, dash_app.server, threaded=True)
            listening.set()
            self._server.serve_forever(poll_interval=0.1)

        def run():
            try:
                app.run(host="127.0.0.1", port=self.port, **kwargs)
            except BaseException as error:  # noqa: BLE001 - reported to the test below
                failed.append(error)
                listening.set()

        app.backend.run = serve  # Dash.run's set-up, then this server instead of Flask's
        self._thread = threading.Thread(target=run, name=f"dash-app-{self.port}", daemon=True)
        self._thread.start()
        if not listening.wait(start_timeout) or failed:
            raise RuntimeError(f"the test app did not start on port {self.port}: {failed}")
        self.started = True

    __call__ = start

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None and self._thread.is_alive():
                server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        self.started = False


@pytest.fixture
def dash_thread_server() -> Iterator[_StoppableRunner]:
    """The server ``dash_duo`` starts test apps on (``_StoppableRunner``)."""
    runner = _StoppableRunner()
    try:
        yield runner
    finally:
        runner.stop()


class _WorkerChromium:
    """The one Chromium a test process's browser tests share (``dash_duo``).

    Starting and quitting Chromium cost about 1.7 s a test, over a hundred browser tests. Each
    test gets the browser in a new tab, with the other tabs closed (and with them what a test
    attached to its page: scripts run on each new document, emulated sizes), no cookies,
    an empty console log, the window's default size and its own download folder. A browser
    that no longer answers is replaced; the session's end quits it."""

    driver = None

    @classmethod
    def get(cls, make, download_path: str):
        from selenium.common.exceptions import WebDriverException

        if cls.driver is not None:
            try:
                cls._fresh_tab(cls.driver)
            except WebDriverException:
                cls.quit()
        if cls.driver is None:
            cls.driver = make()
        driver = cls.driver
        cls._focused(driver)
        driver.execute_cdp_cmd(
            "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": download_path}
        )
        driver.get_log("browser")  # what earlier tests logged
        driver.set_window_size(*_WINDOW)
        driver.set_script_timeout(30)
        return driver

    @staticmethod
    def _fresh_tab(driver) -> None:
        old = driver.window_handles
        driver.switch_to.new_window("tab")
        tab = driver.current_window_handle
        for handle in old:
            driver.switch_to.window(handle)
            driver.close()
        driver.switch_to.window(tab)
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})

    @staticmethod
    def _focused(driver) -> None:
        """The tab in front and its page focused, as a new browser's only tab is: a tab opened
        after others does not get focus events (an element's focus handler never runs)."""
        driver.execute_cdp_cmd("Page.bringToFront", {})
        driver.execute_cdp_cmd("Emulation.setFocusEmulationEnabled", {"enabled": True})

    @classmethod
    def quit(cls) -> None:
        driver, cls.driver = cls.driver, None
        if driver is not None:
            with contextlib.suppress(Exception):
                driver.quit()


@pytest.fixture
def dash_duo(request, dash_thread_server, tmp_path):
    """dash[testing]'s ``dash_duo`` on the test process's one Chromium (``_WorkerChromium``)."""
    from dash.testing.composite import DashComposite

    class OneChromium(DashComposite):
        def get_webdriver(self):
            return _WorkerChromium.get(super().get_webdriver, self.download_path)

        def __exit__(self, *exc_info):
            # The browser stays for the next test; its page stops polling before the app stops.
            with contextlib.suppress(Exception):
                self.driver.get("about:blank")

    download = tmp_path / "download"
    download.mkdir()
    config = request.config
    with OneChromium(
        server=dash_thread_server,
        browser=config.getoption("webdriver"),
        headless=config.getoption("headless"),
        options=config.hook.pytest_setup_options(),
        download_path=str(download),
        percy_run=False,
    ) as duo:
        yield duo


@pytest.fixture
def grid_select(dash_duo):
    """``select(name, ticked=True)``: tick (or untick) a run's row on the experiments page as a
    person would, and wait until the page's selection panel follows.

    dash-ag-grid puts its last ``selectedRows`` back whenever new rows arrive (a running run's
    row changes at every poll), so a click that lands with a poll's rows can be undone: the
    box flips back and the person clicks again (up to 3 times). What fails is a box that
    stays as clicked while the page does not follow it."""
    import time

    from selenium.common.exceptions import StaleElementReferenceException

    def select(name: str, ticked: bool = True, timeout: float = 10.0) -> None:
        box = f"#exp-table .ag-row[row-id='{name}'] .ag-selection-checkbox input"
        expected = name if ticked else "Select a run"
        seen = None
        for _ in range(3):
            dash_duo.wait_for_element(box, timeout=15).click()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    seen = (dash_duo.find_element(box).is_selected(),
                            dash_duo.find_element("#exp-selection").text)  # fmt: skip
                except StaleElementReferenceException:
                    continue
                if seen[0] == ticked and expected in seen[1]:
                    return
                time.sleep(0.1)
            if seen is not None and seen[0] == ticked:
                pytest.fail(f"{name}'s box is {'' if ticked else 'un'}ticked but for {timeout} s "
                            f"the selection panel said {seen[1]!r}")  # fmt: skip
        pytest.fail(f"{name}: three clicks on its box were each undone by the grid")

    return select


def pytest_sessionfinish(session, exitstatus):
    _WorkerChromium.quit()


def pytest_itemcollected(item):
    """A test that opens Chromium (``dash_duo``) is ``browser`` and ``slow``: starting the
    browser and a server costs seconds a test, so the inner loop (``-m "not slow"``) leaves the
    pages to CI and to ``-m browser``. (Marked as each test is collected, before ``-m``
    selects by marks.)"""
    if "dash_duo" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config, items):
    """In a pytest-xdist worker the ``slow`` tests come first (stable order otherwise), so
    ``--dist loadfile --no-loadscope-reorder`` (.ci/run) hands out the files with long tests
    first and the short ones fill the gaps at the end, instead of one long file running on
    alone. loadfile keeps a
    file's tests in one worker: a module-scoped fixture (a trained run, a finished sweep) is
    made once. The Slurm tests of all workers share one cluster (``cluster``)."""
    if hasattr(config, "workerinput"):  # set in pytest-xdist's workers only
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@contextlib.contextmanager
def _session_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` across the pytest-xdist workers of one session."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _session_root(tmp_path_factory) -> Path:
    """The folder all workers of this session share (each xdist worker's base temp is below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def train_tiny_zarr_run():
    """Train a tiny CNN3D run (``ROOT/runs/tiny``) by ``run.py train`` on a random 24x80x80
    zarr volume written beside it (``ROOT/data.zarr``, arrays ``raw`` and ``lab``).

    Call it as ``train_tiny_zarr_run(ROOT, n_steps)``; it returns the run's folder."""

    def train(root: Path, n_steps: int) -> Path:
        import numpy as np
        import zarr

        raw = np.random.default_rng(0).integers(0, 256, (24, 80, 80), dtype=np.uint8)
        g = zarr.open_group(str(root / "data.zarr"), mode="w")
        g.create_array("raw", data=raw, chunks=(8, 32, 32))
        g.create_array("lab", data=(raw > 128).astype(np.uint8), chunks=(8, 32, 32))
        data = str(root / "data.zarr")
        (root / "tiny.py").write_text(
            "from trainer.models import CNN3D\n"
            f"save_path = {str(root / 'runs')!r}\nsave_name = 'tiny'\nvoxel_size = (40, 8, 8)\n"
            "data_class = 'BatchCreatorImage'\n"
            f"data_init_kwargs = dict(d_files=[({data!r}, 'raw')], l_files=[({data!r}, 'lab')])\n"
            f"batch_size = 1\nn_steps = {n_steps}\nhistory_freq = 1\nmonitor_batch_size = 1\n"
            "optimiser = 'Adam'\noptimiser_params = dict(lr=1e-3)\n"
            "def create_model():\n"
            "    return CNN3D(n_classes=2, in_channels=1, base_filters=4, patch_size=(7, 24, 24))\n"
        )
        proc = subprocess.run([sys.executable, "run.py", "train", str(root / "tiny.py"),
                               "--device", "cpu"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        return root / "runs" / "tiny"

    return train


@dataclasses.dataclass
class Cluster:
    """The session's Slurm test cluster: its ``slurm.conf`` and a client bound to it."""

    conf: Path
    slurm: Any

    def squeue(self, job_id: str):
        """The job as ``squeue`` lists it now (``app.slurm.Job``), or ``None``."""
        return self.slurm.jobs([job_id]).get(job_id)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """A Slurm cluster on localhost (tests/slurm/start_cluster.sh: one node in its default
    partition, two in partition "nodes"), one for the
    whole session: the first worker to need it starts it, every worker that uses it counts
    itself in, and the last to leave stops it. Skips where Slurm cannot be installed."""
    from app.slurm import Slurm

    root = _session_root(tmp_path_factory)
    state, users, outcome = root / "slurm", root / "slurm.users", root / "slurm.outcome"
    scripts = REPO / "tests" / "slurm"

    def stop() -> None:
        subprocess.run(["bash", str(scripts / "stop_cluster.sh"), str(state)],
                       capture_output=True, timeout=120)  # fmt: skip

    with _session_lock(root / "slurm.lock"):
        count = int(users.read_text() or 0) if users.exists() else 0
        if count == 0:
            state.mkdir(exist_ok=True)
            try:
                proc = subprocess.run(["bash", str(scripts / "start_cluster.sh"), str(state)],
                                      capture_output=True, text=True, timeout=900)  # fmt: skip
                result = {"rc": proc.returncode, "stderr": proc.stderr[-1500:]}
            except subprocess.TimeoutExpired:
                result = {"rc": -1, "stderr": "tests/slurm/start_cluster.sh took over 15 minutes"}
            if result["rc"] != 0:
                stop()
            outcome.write_text(json.dumps(result))
        result = json.loads(outcome.read_text())
        if result["rc"] == 0:
            users.write_text(str(count + 1))
    if result["rc"] in (3, 4):
        pytest.skip(f"no Slurm test cluster: {result['stderr'].strip()}")
    if result["rc"] != 0:
        pytest.fail(f"start_cluster.sh exited with {result['rc']}: {result['stderr']}")
    conf = state / "slurm.conf"
    try:
        yield Cluster(conf, Slurm(env={**os.environ, "SLURM_CONF": str(conf)}))
    finally:
        with _session_lock(root / "slurm.lock"):
            count = int(users.read_text()) - 1
            users.write_text(str(count))
            if count == 0:
                stop()
                outcome.unlink()


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory) -> Path:
    """The full-size demo data (h5 cubes, their zarr copy, the tracing data), written once per
    test session and shared by every worker: give it to trainings as ``VOXELBOARD_DATA_DIR``.

    Read only: the examples' ``ensure_*`` calls find it complete and write nothing. A test that
    changes data makes its own set (``trainer.synthetic.make_demo_data``)."""
    from trainer.skeletons import ensure_tracing_data
    from trainer.synthetic import ensure_demo_data, ensure_demo_zarr

    root = _session_root(tmp_path_factory)
    folder = root / "demo-data"
    with _session_lock(root / "demo-data.lock"):
        ensure_demo_zarr(ensure_demo_data(folder))
        ensure_tracing_data(folder)
    return folder


@dataclasses.dataclass(frozen=True)
class Screens:
    """What one run of docs/screenshots.py left (``demo_screens``)."""

    returncode: int
    output: str
    #: the PNGs it wrote (900 x 640)
    images: Path
    #: its ``--keep`` folder: ``runs/`` with the demo run (2 steps, evaluated with its neurons)
    #: and the two trials of its grid sweep (``--quick``), ``configs/``, ``dashboard.log``
    work: Path
    #: scratch folders it left in its TMPDIR, and processes naming that TMPDIR or ``work``
    #: still alive when it had ended (both must be empty)
    left_scratch: list[str]
    left_processes: list[str]


@pytest.fixture(scope="session")
def demo_screens(tmp_path_factory, demo_data_dir) -> Screens:
    """docs/screenshots.py run to its end once per test session, on the session's demo data:
    the README pictures' test reads what it printed and wrote, and the accessibility tests
    serve the run and the sweep it kept (read only)."""
    import psutil

    from trainer.runs import atomic_write_json

    root = _session_root(tmp_path_factory)
    folder = root / "screens"
    record = folder / "result.json"
    with _session_lock(root / "screens.lock"):
        if not record.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            # a short TMPDIR: Chromium's socket paths under it must stay under 108 bytes
            tmp = Path(tempfile.mkdtemp(prefix="vbshots-"))
            work = folder / "work"
            cmd = [sys.executable, str(REPO / "docs" / "screenshots.py"), "--out",
                   str(folder / "images"), "--keep", str(work), "--data-dir", str(demo_data_dir),
                   "--quick", "--steps", "2", "--sweep-steps", "1",
                   "--width", "900", "--height", "640"]  # fmt: skip
            try:
                done = subprocess.run(cmd, env=dict(os.environ, TMPDIR=str(tmp)), timeout=700,
                                      capture_output=True, text=True, check=False)  # fmt: skip
                alive = [
                    " ".join(p.info["cmdline"] or [])
                    for p in psutil.process_iter(["cmdline"])
                    if any(str(f) in " ".join(p.info["cmdline"] or []) for f in (tmp, work))
                ]
                result = {
                    "returncode": done.returncode, "output": done.stdout + done.stderr,
                    "left_scratch": [p.name for p in tmp.glob("voxelboard-screenshots-*")],
                    "left_processes": alive,
                }  # fmt: skip
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            atomic_write_json(record, result)
    result = json.loads(record.read_text())
    return Screens(images=folder / "images", work=folder / "work", **result)


@pytest.fixture
def cli(capsys, monkeypatch):
    """``cli(argv, env=None, cwd=None) -> (exit status, stdout, stderr)``: ``run.py ARGV`` called
    in this test's process (``run.main``), with ``env`` added to the environment and ``cwd`` as
    the working folder, both restored afterwards.

    For commands that refuse their input before anything starts: the refusal, its exit status
    and its words without starting Python and torch again (seconds a test). Anything that
    trains, serves or forks runs as a real subprocess instead."""
    import run

    def call(argv, env: dict[str, str] | None = None, cwd: Path | None = None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        if cwd is not None:
            monkeypatch.chdir(cwd)
        capsys.readouterr()
        try:
            code = run.main([str(a) for a in argv])
        except SystemExit as exc:  # argparse's refusals
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture(autouse=True)
def _voxelboard_logger_as_it_was() -> Iterator[None]:
    """Each test leaves the ``voxelboard`` logger as it found it: ``run.main`` called in-process
    sets up logging as a command does (a stderr handler, level, no propagation), and a handler
    left behind would write to a finished test's closed capture stream."""
    log = logging.getLogger("voxelboard")
    handlers, level, propagate = list(log.handlers), log.level, log.propagate
    yield
    for handler in [h for h in log.handlers if h not in handlers]:
        log.removeHandler(handler)
        handler.close()
    log.setLevel(level)
    log.propagate = propagate

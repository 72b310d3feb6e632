"""Shared test set-up: headless Debian Chromium for dash_duo browser tests, each Dash test
server on a free port, and how pytest-xdist may spread the suite over processes."""

from __future__ import annotations

import shutil
import socket

import pytest

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


@pytest.fixture
def dash_thread_server(dash_thread_server):
    """dash[testing]'s threaded server, started on a free port unless a test names one.

    Its own default counts up from 8050 in each process: two pytest-xdist workers (or another
    suite on this machine) would both take 8050, and a test could then talk to the other's
    app without noticing, since the runner only checks that the port answers."""
    start = dash_thread_server.start

    def start_on_a_free_port(app, start_timeout=3, **kwargs):
        kwargs.setdefault("port", free_port())
        return start(app, start_timeout=start_timeout, **kwargs)

    dash_thread_server.start = start_on_a_free_port
    return dash_thread_server


def _xdist_group(item) -> str | None:
    """The group of tests that must share a pytest-xdist worker with ``item``: the tests using
    the same session-scoped fixture of this suite (the Slurm cluster), else the tests of its file
    when it uses a module-scoped one (a trained run, a finished sweep), else none."""
    shared = []
    for name, defs in sorted(item._fixtureinfo.name2fixturedefs.items()):
        fixture = defs[-1]  # the definition the test gets
        if fixture.baseid.startswith("tests") and fixture.scope in ("module", "session"):
            shared.append((fixture.scope, f"{fixture.baseid}::{name}"))
    sessions = [where for scope, where in shared if scope == "session"]
    if sessions:
        return min(sessions)
    return item.nodeid.split("::", 1)[0] if shared else None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Marks by what a test uses, and where pytest-xdist may run it.

    - A test that opens Chromium (``dash_duo``) is ``browser`` and ``slow``: starting the
      browser and a server costs seconds a test, so the inner loop (``-m "not slow"``) leaves
      the pages to CI and to ``-m browser``.
    - Under ``pytest -n N --dist loadgroup`` (.ci/run), tests that share a costly fixture run
      in one worker, so it is made once, not once per worker: the tests of a file with a
      module-scoped fixture (a trained run, a finished sweep), and the tests of one
      session-scoped fixture (the Slurm cluster: two would fight over the CPUs their tests
      count on). Every other test goes to whichever worker is free. Without ``-n`` the groups
      change nothing.
    - In an xdist worker the ``slow`` tests come first (stable order otherwise): the long ones
      start early, and the short ones fill the gaps at the end instead of one long test
      running on alone.
    """
    for item in items:
        if "dash_duo" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.slow)
        group = _xdist_group(item) if hasattr(item, "_fixtureinfo") else None
        if group is not None and not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(group))
    if hasattr(config, "workerinput"):  # set in pytest-xdist's workers only
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)

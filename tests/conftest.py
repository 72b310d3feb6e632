"""Shared test set-up: headless Debian Chromium for dash_duo browser tests."""

from __future__ import annotations

import shutil

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

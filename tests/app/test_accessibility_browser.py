"""Accessibility of every page, checked by axe-core in a real Chromium, and the keyboard.

axe-core (the npm package, installed by ``.ci/run``) is injected into each page of a real demo
run (trained, evaluated with its neurons) and into the sweep page of a real sweep (two tiny
trials of the demo config) and must find no violation of any impact (minor, moderate,
serious or critical): every control named, enough contrast, a page language, a level-one
heading, no empty table header; and no dropdown may be named by its value alone. The evaluation page's threshold slider moves with the arrow keys.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from selenium.webdriver.common.keys import Keys

from app import create_app

REPO = Path(__file__).resolve().parents[2]
AXE = REPO / ".cache" / "node" / "node_modules" / "axe-core" / "axe.min.js"
RUN = "demo_cnn3d"

pytestmark = [pytest.mark.browser]

#: axe's violations of any impact, one line each: what to fix and where.
#: Left out: Dash's dropdown puts a focusable, aria-hidden input before its button that hands
#: focus to the button at once (React Aria's hidden-select pattern, discussed in axe-core
#: issue 4165); the evaluation page's keyboard test
#: (``test_threshold_slider_moves_with_the_arrow_keys_and_dropdown_focus_lands_on_its_button``)
#: checks that hand-over.
AXE_RUN = """
const done = arguments[arguments.length - 1];
const forwarder = (rule, node) =>
  rule === "aria-hidden-focus" && node.element.classList.contains("dash-dropdown-focus-target");
axe.run(document, {elementRef: true, resultTypes: ["violations"]}).then(result => done(
  result.violations
    .map(v => [v, v.nodes.filter(n => !forwarder(v.id, n))])
    .filter(([v, nodes]) => nodes.length)
    .map(([v, nodes]) => `${v.id} (${v.impact}): ${v.help}; ` +
                        nodes.map(n => n.target.join(" ")).join(" | "))
), error => done([`axe.run failed: ${error}`]));
"""


def axe_source() -> str:
    if not AXE.is_file():
        pytest.fail(
            f"axe-core is not installed ({AXE} is missing): run `bash .ci/run`, which installs "
            "it with npm, or the npm line of .ci/run alone"
        )
    return AXE.read_text()


def violations(dash_duo) -> list[str]:
    driver = dash_duo.driver
    driver.set_script_timeout(120)
    driver.execute_script(axe_source())
    return driver.execute_async_script(AXE_RUN)


def dropdowns_named_by_their_value_only(dash_duo) -> list[str]:
    """Ids of the page's dropdowns whose accessible name is their value alone (no label): a
    screen reader would read "FINAL" with nothing saying what it chooses."""
    found = []
    for button in dash_duo.driver.find_elements("css selector", "#_pages_content .dash-dropdown"):
        value = button.find_element("css selector", ".dash-dropdown-value").text.strip()
        if button.accessible_name.strip() in ("", value):
            found.append(f"{button.get_attribute('id')} ({button.accessible_name!r})")
    return found


@pytest.fixture(scope="module")
def demo_run(demo_screens, demo_data_dir) -> tuple[Path, Path]:
    """The runs folder docs/screenshots.py kept (tests/conftest.py's ``demo_screens``): the demo
    config trained 2 steps (previews, history rows) and evaluated with its neurons, and a grid
    sweep of two 1-step trials (``--quick``); with the session's demo data. Read only."""
    assert demo_screens.returncode == 0, demo_screens.output[-3000:]
    return demo_screens.work / "runs", demo_data_dir


#: the screenshots' grid sweep (two learning rates, ``--quick``), beside the run
demo_sweep = demo_run
SWEEP_ID = "demo_cnn3d_lr-sweep-1"


def serve(dash_duo, folders: tuple[Path, Path]) -> None:
    """The dashboard over ``(runs folder, data folder)``, its launcher not started."""
    runs, data = folders
    app = create_app(runs, REPO / "examples", data, start_launcher=False, gpus=[])
    dash_duo.start_server(app)


def settled(dash_duo, path: str, ready: str, timeout: float = 60.0) -> None:
    """Open ``path``; wait for ``ready``, for every visible graph to draw a trace (or parallel
    coordinates' axes) and for the page's text to stay the same over three polls (late callbacks have landed)."""
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}{path}")
    dash_duo.wait_for_element(ready, timeout=timeout)
    probe = """
    const page = document.getElementById("_pages_content");
    if (document.querySelector('[data-dash-is-loading="true"]')) return null;
    const graphs = Array.from(page.querySelectorAll(".js-plotly-plot"))
      .filter(g => g.offsetParent !== null);
    const drawn = graphs.every(g => g.querySelector("g.trace, g.hm, g.im, g.parcoords"));
    return drawn ? page.innerText : null;
    """
    deadline = time.monotonic() + timeout
    last, same = None, 0
    while same < 2:
        assert time.monotonic() < deadline, f"{path} did not settle"
        text = dash_duo.driver.execute_script(probe)
        same = same + 1 if text is not None and text == last else 0
        last = text
        time.sleep(0.4)


PAGES = [
    ("/", "#exp-table .ag-cell[col-id='name']"),
    (f"/run/{RUN}", "#run-graph-timeline .js-plotly-plot"),
    (f"/run/{RUN}/preview", "#prev-graph .js-plotly-plot"),
    (f"/run/{RUN}/evaluation", "#eval-roc .js-plotly-plot"),
]


@pytest.mark.slow
@pytest.mark.parametrize("path, ready", PAGES, ids=["experiments", "run", "preview", "evaluation"])
def test_no_axe_violation_on_the_pages_of_a_real_run(dash_duo, demo_run, path, ready):
    serve(dash_duo, demo_run)
    settled(dash_duo, path, ready)
    found = violations(dash_duo)
    assert not found, f"{path}: axe-core found\n  " + "\n  ".join(found)
    assert dropdowns_named_by_their_value_only(dash_duo) == []


@pytest.mark.slow
def test_no_axe_violation_on_the_sweep_page_of_a_real_sweep(dash_duo, demo_sweep):
    sweep_id = SWEEP_ID
    serve(dash_duo, demo_sweep)
    path = f"/sweep/{sweep_id}"
    settled(dash_duo, path, "#sweep-parcoords .js-plotly-plot .parcoords")
    assert dash_duo.find_element("#sweep-state").text == "finished"
    assert len(dash_duo.find_elements("#sweep-table tbody tr")) == 2
    found = violations(dash_duo)
    assert not found, f"{path}: axe-core found\n  " + "\n  ".join(found)
    assert dropdowns_named_by_their_value_only(dash_duo) == []


def test_no_axe_violation_on_the_first_start(dash_duo, tmp_path):
    for sub in ("runs", "data"):
        (tmp_path / sub).mkdir()
    serve(dash_duo, (tmp_path / "runs", tmp_path / "data"))
    settled(dash_duo, "/", "#exp-empty")
    found = violations(dash_duo)
    assert not found, "/ (no runs): axe-core found\n  " + "\n  ".join(found)
    assert dropdowns_named_by_their_value_only(dash_duo) == []


@pytest.mark.slow
def test_threshold_slider_moves_with_the_arrow_keys_and_dropdown_focus_lands_on_its_button(
    dash_duo, demo_run
):
    """The evaluation page's keyboard, on one page load: the slider's arrow and page keys, and
    the focus a dropdown's hidden input hands to its named button (the pattern axe's
    ``aria-hidden-focus`` is told to leave out, ``AXE_RUN``)."""
    serve(dash_duo, demo_run)
    settled(dash_duo, f"/run/{RUN}/evaluation", "#eval-roc .js-plotly-plot")
    thumb = dash_duo.find_element('#eval-slider [role="slider"]')
    assert thumb.accessible_name == "Threshold"
    box = dash_duo.find_element("#eval-t-input")
    start = float(box.get_attribute("value"))

    def moved(direction: str) -> bool:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            value = float(box.get_attribute("value"))
            if (value > start) if direction == "up" else (value < start):
                return True
            time.sleep(0.1)
        return False

    thumb.send_keys(Keys.ARROW_RIGHT, Keys.ARROW_RIGHT, Keys.ARROW_UP)
    assert dash_duo.driver.switch_to.active_element == thumb
    assert moved("up"), (start, box.get_attribute("value"))
    start = float(box.get_attribute("value"))
    thumb.send_keys(Keys.PAGE_DOWN)
    assert moved("down"), (start, box.get_attribute("value"))

    dash_duo.driver.execute_script(
        "document.querySelector('#eval-snapshot').previousElementSibling.focus()"
    )
    active = dash_duo.driver.switch_to.active_element
    assert active.get_attribute("id") == "eval-snapshot"
    assert active.accessible_name == "Snapshot FINAL"

"""Runs whose folder names need percent-encoding in an address (spaces, ``#``, ``%``, ``+``,
``&``, letters outside ASCII): every page opens them, from its address and from the links the
pages make."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from app import create_app
from app.components import run_href, sweep_href, url_part
from trainer.runs import Status, write_status

#: a run folder name that every special character of an address would break
ODD = "odd name #1 % 50+50 & ü"


@pytest.mark.parametrize("name", [ODD, "plain-run_1", "a%2Fb", "100%", "?x=1"])
def test_a_run_address_decodes_to_the_name_it_was_made_from(name):
    for href in (run_href(name), run_href(name, "/preview"), run_href(name, "/evaluation")):
        part = href.removeprefix("/run/").removesuffix("/preview").removesuffix("/evaluation")
        assert "/" not in part and "#" not in part and "?" not in part and " " not in part
        assert url_part(part) == name
    assert url_part(sweep_href(name).removeprefix("/sweep/")) == name
    assert url_part(None) is None


def _title(dash_duo) -> str:
    return dash_duo.find_element("h1.vb-page-title").text


def _wait_title(dash_duo, text: str, timeout: float = 20.0) -> str:
    end = time.time() + timeout
    seen = ""
    while time.time() < end:
        try:
            seen = _title(dash_duo)
        except Exception:  # the page is being replaced
            seen = ""
        if seen == text:
            return seen
        time.sleep(0.2)
    return seen


@pytest.mark.browser
def test_every_page_of_a_run_with_an_odd_name_opens_from_its_address_and_links(dash_duo, tmp_path):
    run_dir = tmp_path / "runs" / ODD
    run_dir.mkdir(parents=True)
    write_status(run_dir, Status(state="finished", step=10, n_steps=10))
    app = create_app(
        tmp_path / "runs", tmp_path / "configs", tmp_path / "data", start_launcher=False, gpus=[]
    )
    dash_duo.start_server(app)
    dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/{quote(ODD, safe='')}")
    assert _wait_title(dash_duo, ODD) == ODD
    dash_duo.find_element("#run-preview-link").click()
    assert _wait_title(dash_duo, f"{ODD}: previews") == f"{ODD}: previews"
    dash_duo.wait_for_contains_text("#prev-empty", "No preview yet")
    dash_duo.driver.back()
    assert _wait_title(dash_duo, ODD) == ODD
    dash_duo.find_element("#run-eval-link").click()
    assert _wait_title(dash_duo, f"{ODD}: evaluation") == f"{ODD}: evaluation"
    assert "Run not found" not in dash_duo.driver.find_element("css selector", "body").text

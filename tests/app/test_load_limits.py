"""What one visitor may make the server do at once: segmentation slots and large bodies.

``app.limits.ComputeSlots`` with real threads; the evaluation page's segmentation callback
through real requests to a dashboard served by waitress on 127.0.0.1 while the test holds the
app's segmentation slots; ``GuardMiddleware``'s bound on large bodies read at once, with a
WSGI app that blocks until released. Waits are bounded; no duration is asserted.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app import app_context, create_app, limits
from app import evaluation_view as ev
from app import segmentation_view as sv
from app.security import LARGE_BODY_BYTES, MAX_LARGE_BODIES, GuardMiddleware
from trainer import runs
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, write_result, write_status

RUN = "seg-run"
WAIT_S = 60


def _until(predicate, what: str) -> None:
    end = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"waited {WAIT_S} s for {what}")
        time.sleep(0.01)


# ------------------------------------------------------------------- ComputeSlots, threads


class Holder:
    """A thread that holds a slot of ``slots`` for ``client`` until ``release`` is set."""

    def __init__(self, slots: limits.ComputeSlots, client: str) -> None:
        self.held, self.release = threading.Event(), threading.Event()
        self.outcome: str | None = None
        self.thread = threading.Thread(target=self._run, args=(slots, client), daemon=True)
        self.thread.start()

    def _run(self, slots: limits.ComputeSlots, client: str) -> None:
        try:
            with slots.hold(client):
                self.held.set()
                self.release.wait(WAIT_S)
            self.outcome = "ran"
        except (limits.Busy, limits.Superseded) as e:
            self.outcome = type(e).__name__

    def end(self) -> str | None:
        self.release.set()
        self.thread.join(WAIT_S)
        return self.outcome


def test_other_clients_are_refused_at_once_when_every_slot_is_taken():
    slots = limits.ComputeSlots(2, "segmentation")
    holders = [Holder(slots, f"tab-{i}") for i in range(2)]
    for h in holders:
        assert h.held.wait(WAIT_S)
    with pytest.raises(limits.Busy, match=r"busy: 2 segmentations are running .* try again"):
        with slots.hold("tab-2"):
            pass
    assert [h.end() for h in holders] == ["ran", "ran"]
    with slots.hold("tab-2"):  # free again
        pass


def test_a_client_waits_for_its_own_previous_request_and_the_newest_wins():
    slots = limits.ComputeSlots(2, "segmentation")
    first = Holder(slots, "tab")
    assert first.held.wait(WAIT_S)
    older = Holder(slots, "tab")  # a free slot, but its own request runs: it waits
    _until(lambda: slots.waiting() == 1, "the older request to wait")
    newer = Holder(slots, "tab")
    older.thread.join(WAIT_S)
    assert older.outcome == "Superseded"
    _until(lambda: slots.waiting() == 1, "the newer request to wait")
    assert not newer.held.is_set()
    assert first.end() == "ran"
    assert newer.held.wait(WAIT_S)
    assert newer.end() == "ran"


def test_no_bound_never_refuses():
    slots = limits.ComputeSlots(0, "segmentation")
    with contextlib.ExitStack() as stack:
        for _ in range(50):
            stack.enter_context(slots.hold("tab"))


@pytest.mark.parametrize(
    ("value", "expected"), [("", None), ("3", 3), ("0", 0), (" 1 ", 1)]
)  # fmt: skip
def test_segmentation_slots_from_the_environment(value, expected):
    got = limits.segmentation_slots({limits.SEGMENTATIONS_ENV: value})
    assert got == (expected if expected is not None else limits.segmentation_slots({}))
    assert limits.segmentation_slots({}) >= 1


@pytest.mark.parametrize("value", ["-1", "two", "1.5"])
def test_a_bad_segmentation_bound_is_named(value):
    with pytest.raises(ValueError, match=rf"VOXELBOARD_MAX_SEGMENTATIONS='{value}'.*>= 0"):
        limits.segmentation_slots({limits.SEGMENTATIONS_ENV: value})


# -------------------------------------------------------------- the served evaluation page


def make_run_with_prob_cache(runs_dir: Path) -> Path:
    """A finished run with a result and the probability cache of one small cube."""
    d = runs_dir / RUN
    (d / "eval").mkdir(parents=True)
    write_status(d, Status(state="finished", step=1, n_steps=1))
    rng = np.random.default_rng(0)
    label = (rng.random((4, 16, 16)) < 0.4).astype(np.int8)
    prob = np.clip(rng.normal(0.3 + 0.4 * label, 0.2), 0, 1).astype(np.float32)
    write_result(d / "eval" / "FINAL.h5", {"valid": evaluate_arrays(label, prob)}, {"step": 1})
    runs.write_prob_cache(ev.prob_cache_path(d, "FINAL"), [(rng.random(label.shape), prob, label)])
    return d


class Served:
    """``create_app`` served by waitress in a thread on a free loopback port."""

    def __init__(self, app: Any) -> None:
        from waitress.server import create_server

        self.app = app
        self.server = create_server(app.server, host="127.0.0.1", port=0, threads=8)
        self.port = self.server.effective_port
        threading.Thread(target=self.server.run, daemon=True).start()
        deps = json.loads(self.request("GET", "/_dash-dependencies")[1])
        self.segmentation = next(d for d in deps if "eval-t-answered.data" in d["output"])

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        try:
            headers = {"Host": f"127.0.0.1:{self.port}", "Content-Type": "application/json"}
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def segment(self, t: float, client: str, cube: str) -> dict[str, Any]:
        """What the page's segmentation callback answers for threshold ``t``, by id."""
        values = {
            "eval-t-server.data": t, "eval-seg-z.value": 0, "eval-seg-cube.value": cube,
            "eval-seg-colour.value": "errors", "eval-result.value": "FINAL",
            "eval-run.data": RUN, "eval-client.data": client,
        }  # fmt: skip
        dep = self.segmentation
        specs = dep["output"][2:-2].split("...")
        body = {
            "output": dep["output"],
            "outputs": [dict(zip(("id", "property"), s.rsplit(".", 1))) for s in specs],
            "inputs": [{**i, "value": values.get(f"{i['id']}.{i['property']}")}
                       for i in dep["inputs"]],
            "state": [{**s, "value": values.get(f"{s['id']}.{s['property']}")}
                      for s in dep["state"]],
            "changedPropIds": ["eval-t-server.data"],
        }  # fmt: skip
        status, text = self.request("POST", "/_dash-update-component", json.dumps(body).encode())
        assert status == 200, (status, text[:500])
        return json.loads(text)["response"]

    def close(self) -> None:
        self.server.close()
        app_context(self.app).close()


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Served, str]]:
    tmp = tmp_path_factory.mktemp("load-limits")
    run_dir = make_run_with_prob_cache(tmp / "runs")
    cube = sv.seg_meta(run_dir, "FINAL", None, None, False)[1]
    app = create_app(tmp / "runs", tmp / "configs", tmp / "data", start_launcher=False, gpus=[])
    server = Served(app)
    yield server, cube
    server.close()


def _seg_slots(server: Served) -> limits.ComputeSlots:
    return limits.segmentations(server.app.server.config)


def test_a_busy_dashboard_answers_busy_at_once_and_keeps_the_figure(served):
    server, cube = served
    slots = _seg_slots(server)
    with contextlib.ExitStack() as stack:
        for i in range(max(1, slots.slots)):  # every slot held by other pages
            stack.enter_context(slots.hold(f"other-{i}"))
        answer = server.segment(0.5, "tab-busy", cube)
    assert "eval-seg" not in answer  # the drawn figure stays
    assert answer["eval-seg-msg"]["children"].startswith("busy: ")
    assert "try again" in answer["eval-seg-msg"]["children"]
    assert "eval-t-answered" in answer  # the page may send its next threshold
    answer = server.segment(0.5, "tab-busy", cube)  # slots free: drawn
    assert "threshold 0.5000" in json.dumps(answer["eval-seg"])
    assert answer["eval-seg-msg"]["children"] == ""


def test_the_newest_request_of_a_page_wins_and_the_older_draws_nothing(served):
    server, cube = served
    slots = _seg_slots(server)
    answers: dict[str, dict] = {}

    def ask(key: str, t: float) -> threading.Thread:
        def run() -> None:
            answers[key] = server.segment(t, "tab-newest", cube)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    with slots.hold("tab-newest"):  # the page's previous segmentation still runs
        older = ask("older", 0.4)
        _until(lambda: slots.waiting() == 1, "the older request to wait")
        newer = ask("newer", 0.6)
        older.join(WAIT_S)
        assert set(answers["older"]) == {"eval-t-answered"}  # superseded: nothing drawn
        _until(lambda: slots.waiting() == 1, "the newer request to wait")
    newer.join(WAIT_S)
    assert "threshold 0.6000" in json.dumps(answers["newer"]["eval-seg"])


# ------------------------------------------------------------------ large bodies at once


def _environ(length: int) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/_dash-update-component",
        "HTTP_HOST": "127.0.0.1:8050",
        "CONTENT_LENGTH": str(length),
    }


def test_large_bodies_are_read_a_few_at_a_time():
    release = threading.Event()
    inside = threading.Semaphore(0)

    def app(environ, start_response):  # reads its body slowly, as a parse would
        inside.release()
        release.wait(WAIT_S)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    guard = GuardMiddleware(app)
    statuses: list[str] = []

    def call(length: int) -> None:
        guard(_environ(length), lambda status, headers: statuses.append(status))

    large = LARGE_BODY_BYTES + 1
    threads = [threading.Thread(target=call, args=(large,)) for _ in range(MAX_LARGE_BODIES)]
    for t in threads:
        t.start()
    for _ in threads:
        assert inside.acquire(timeout=WAIT_S)
    refused: list[tuple[str, list]] = []
    body = guard(_environ(large), lambda status, headers: refused.append((status, headers)))
    assert refused[0][0] == "503 Service Unavailable"
    assert ("Retry-After", "1") in refused[0][1]
    text = b"".join(body).decode()
    assert text.startswith("busy: ") and text.count("\n") == 1
    small = threading.Thread(target=call, args=(LARGE_BODY_BYTES,))  # small ones still pass
    small.start()
    assert inside.acquire(timeout=WAIT_S)
    release.set()
    for t in [*threads, small]:
        t.join(WAIT_S)
    assert statuses == ["200 OK"] * (MAX_LARGE_BODIES + 1)
    call(large)  # the slots are free again
    assert statuses[-1] == "200 OK"

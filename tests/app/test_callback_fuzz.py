"""Forged callback requests with hostile values: no callback may answer with a server error.

Every server-side callback ``/_dash-dependencies`` lists gets requests as a browser would
send them (JSON body, same-host ``Origin``), with one input or state slot at a time set to
a hostile value of each class (None, booleans, zero, negative, huge and non-finite numbers,
empty, over-long, path-like and unencodable text, empty and nested containers) and with
every slot set to each hostile value at once. The other slots hold what the
pages' real layouts hold for a runs folder of real-looking runs (history store, previews,
an evaluation result), so callbacks get past their early returns. A callback may answer
with a message, ``no_update`` or nothing (204); never with a status of 500 or more, and
never by raising: an exception the app logs while answering counts as a failure even when
the app's error banner turns it into a 200 (``ErrorLog``).

The background evaluation starts a process per request: it gets fewer values, each
request is polled to its end as the page would, and the test leaves no child behind.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import psutil
import pytest

from app import app_context, create_app
from trainer.history import HistoryTracker
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, atomic_write_json, write_result, write_status

HOST = "127.0.0.1:8050"
HEADERS = {"Origin": f"http://{HOST}", "Accept": "application/json"}
UPDATE = "/_dash-update-component"
FAKE_RUN = Path(__file__).with_name("fake_run.py")

#: values a client can put into any input or state, by class: each slot gets one value of
#: every class (the members take turns from slot to slot) and the "every slot" request of
#: each callback gets every value, so each value still reaches every callback; the JSON body
#: holds ``Infinity``, ``NaN`` and a 31-digit integer for the numbers
BAD_CLASSES: list[list[Any]] = [
    [None],
    [True],
    [0],
    [-1],  # a negative index picks from the end
    [10**30, 1e308],  # beyond int64, near the largest float
    [math.inf, math.nan],
    [""],
    ["x" * 300, "x" * 300 + ".py", "é" * 200],  # over-long, also with a picked file's suffix
    ["../../etc/passwd", "/tmp/x", "-rf"],  # a path out of the runs folder, an option
    ["a\x00b", "\ud800.py"],  # a NUL; a lone surrogate: valid JSON, no file system encodes it
    [[], {}],
    [[[[]]], {"a": {"b": [1]}}],
]
#: what the background evaluation gets, by class as ``BAD_CLASSES``: each request is a process
BACKGROUND_CLASSES: list[list[Any]] = [
    [None],
    [True],
    [math.inf, math.nan],
    [""],
    ["x" * 300],
    ["../../etc/passwd"],
    [[], {"a": {"b": [1]}}],
]
#: the background callback's output, for ``BACKGROUND_CLASSES`` and its own test
BACKGROUND_OUTPUT = "eval-done.data"

RUNS = ("alpha", "beta", "victim")
#: the run stop, resume and delete requests name when their slot is not the one fuzzed
SELECTED = "victim"
SWEEP = "fuzz-sweep-1"
PAGES = ["/", "/run/alpha", "/run/alpha/preview", "/run/alpha/evaluation", f"/sweep/{SWEEP}"]
#: values the layouts leave unset but a browser has by the time it sends the request
BROWSER_VALUES = {
    "exp-selected.data": SELECTED,
    "exp-table.selectedRows": [{"id": SELECTED}],
    "eval-t.data": 0.5,
    "eval-t-server.data": 0.5,
    "eval-seg-ready.data": {"result": "FINAL", "t": 1.0},
    "eval-done.data": {"result": "FINAL", "t": 1.0},
    "eval-result.value": "FINAL",
    "eval-seg-cube.value": "cube0",
    "eval-seg-z.value": 1,
    "prev-block.value": "block0",
    "prev-class.value": 1,
    "prev-z.value": 2,
    "_pages_location.pathname": "/run/alpha",
    "_pages_location.search": "",
}
#: properties a browser counts up; a triggered request carries at least 1
COUNTERS = {"n_clicks", "n_intervals", "submit_n_clicks"}
#: hostile values that only make sense for one property: the page router's URL parts
#: (the query string's ``name`` overrides the path's for the layout)
EXTRA_VALUES = {
    "_pages_location.pathname": ["/run/" + "x" * 300, "/run/..", "/run/a%00b/preview", "//"],
    "_pages_location.search": ["?name=../../etc", "?name=" + "x" * 300, "?a=1&a=2", "?"],
}


# ------------------------------------------------------------------------------------ runs


def write_run(runs_dir: Path, name: str, state: str, error: str | None = None) -> Path:
    """A run directory as the trainer leaves it: status, config, history, log, previews."""
    run_dir = runs_dir / name
    run_dir.mkdir(parents=True)
    write_status(
        run_dir,
        Status(
            state=state,
            step=60,
            n_steps=60,
            heartbeat=time.time(),
            started=time.time() - 60,
            error=error,
            extra={"device": "cpu", "it_per_s": 12.5, "config_file": "train.py"},
        ),
    )
    atomic_write_json(
        run_dir / "config.json",
        {
            "n_steps": 60,
            "optimiser_params": {"lr": 0.01, "mom": 0.9},
            "schedules": {"lr": {"dec": 0.5, "period": 20}},
        },
    )
    tracker = HistoryTracker(run_dir / "history")
    for i in range(60):
        tracker.update_timeline([0.1 * i, 1.0 / (1 + 0.05 * i), 0.5])
    for i in range(4):
        tracker.update_history(
            [15 * i, 1.5 * i, 1.0 / (i + 1), 1.2 / (i + 1), 0.1, 0.3, 0.4, 0.01, 0.9, 0.0]
        )
    for i in range(20):
        tracker.update_regression([1.0 + 0.01 * i], [1.0 + 0.012 * i])
    tracker.close()
    (run_dir / "train.log").write_text("".join(f"step {i} loss 0.5\n" for i in range(60)))
    for step in (30, 60):
        write_preview(run_dir, step)
    return run_dir


def write_preview(run_dir: Path, step: int, shape=(4, 12, 16), n_classes: int = 2) -> None:
    """A preview file in the documented format (docs/run-directory.md)."""
    folder = run_dir / "previews"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(step)
    with h5py.File(folder / f"preview-{step:08d}.h5", "w") as f:
        f.attrs.update(step=step, hours=step / 3600.0, n_classes=n_classes, save_name=run_dir.name)
        for b in range(2):
            g = f.create_group(f"block{b}")
            prob = rng.random((n_classes, *shape)).astype(np.float16)
            g["raw"], g["prob"] = rng.random(shape).astype(np.float32), prob
            g.attrs.update(z0=10 * b)


def write_evaluation(run_dir: Path) -> None:
    """An evaluation result ``eval/FINAL.h5`` and its probability cache for the segmentation."""
    rng = np.random.default_rng(0)
    gt = (rng.random(3000) < 0.3).astype(np.int8)
    scores = np.clip(rng.normal(0.35 + 0.3 * gt, 0.15), 0, 1)
    (run_dir / "eval").mkdir()
    write_result(
        run_dir / "eval" / "FINAL.h5",
        {"valid": evaluate_arrays(gt, scores, mode="binned", n_bins=200)},
        {"snapshot": "", "step": 60},
    )
    with h5py.File(run_dir / "eval" / "FINAL_valid_prob.h5", "w") as f:
        f.attrs["snapshot"] = ""
        g = f.create_group("cube0")
        g["raw"] = rng.random((3, 8, 8)).astype(np.float16)
        g["prob"] = rng.random((3, 8, 8)).astype(np.float16)
        g["label"] = (rng.random((3, 8, 8)) < 0.5).astype(np.int8)


def write_sweep_folder(runs_dir: Path, config: Path) -> None:
    """A running sweep of two trials (alpha ended, beta open) as its driver leaves it."""
    import optuna

    from trainer.runs.sweeps import (
        TrialEntry,
        TrialsRecord,
        study_path,
        sweep_dir,
        write_sweep,
        write_trial,
        write_trials,
    )
    from trainer.sweeps import Choice, SweepSpec, open_study

    spec = SweepSpec(
        method="grid", n_runs=2, metric="valid_loss", goal="min",
        parameters={"lr": Choice((1e-3, 3e-3))}, prune=False, pruner="median", warmup_steps=0,
        startup_runs=2, max_failures=3, max_parallel=1, seed=0,
    )  # fmt: skip
    folder = sweep_dir(runs_dir, SWEEP)
    folder.mkdir(parents=True)
    study = open_study(study_path(folder), SWEEP, spec, create=True)
    for _ in range(2):
        study.ask({"lr": optuna.distributions.CategoricalDistribution([1e-3, 3e-3])})
    study.tell(0, 0.5)
    trials = [
        TrialEntry(0, "alpha", {"lr": 1e-3}, told="complete", state="finished", value=0.5),
        TrialEntry(1, "beta", {"lr": 3e-3}, state="running"),
    ]
    write_trials(folder, TrialsRecord(trials=trials))
    for entry in trials:
        write_trial(runs_dir / entry.run, {"sweep": SWEEP, "number": entry.number,
                                           "drawn": entry.params, "params": entry.params})  # fmt: skip
    write_sweep(folder, {
        "format": 1, "id": SWEEP, "config": config.name, "config_source": str(config),
        "config_path": str(config), "backend": "local", "max_parallel": 1, "device": "auto",
        "resources": {}, "created": time.time(), "spec": spec.to_json(),
    })  # fmt: skip


def _client(tmp_path_factory, read_only: bool):
    """The app over three finished or failed runs; a config to launch; nothing ever starts."""
    root = tmp_path_factory.mktemp("fuzz")
    runs_dir, configs = root / "runs", root / "configs"
    configs.mkdir()
    (configs / "train.py").write_text("# ordinary run\n")
    write_evaluation(write_run(runs_dir, "alpha", "finished"))
    write_run(runs_dir, "beta", "failed", error="diverged at step 40")
    write_run(runs_dir, "victim", "finished")
    write_sweep_folder(runs_dir, configs / "train.py")
    app = create_app(
        runs_dir,
        configs,
        root / "data",
        start_launcher=False,
        gpus=[],
        max_cpu_runs=0,  # launches and resumes stay queued: no trainer is ever started
        run_py=FAKE_RUN,
        read_only=read_only,
    )
    errors = ErrorLog()
    logger = logging.getLogger(app.server.logger.name)
    logger.addHandler(errors)
    try:
        yield Client(app, errors)
    finally:
        logger.removeHandler(errors)
        app_context(app).close()


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    yield from _client(tmp_path_factory, read_only=False)


@pytest.fixture(scope="module")
def read_only_app(tmp_path_factory):
    yield from _client(tmp_path_factory, read_only=True)


# ---------------------------------------------------------------------------------- client


class ErrorLog(logging.Handler):
    """The exceptions the app logs: Flask's for a 500, the app's for a callback that raised.

    A callback that raises is a failure even when the app turns it into a banner on the
    page: a hostile value must get a message of its own or be ignored.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        lines = text.splitlines() or [type(exc).__name__]
        # a background job's error carries the job's traceback: its last line is the cause
        self.causes.append(lines[-1] if "Traceback (most recent call last)" in text else lines[0])


class Client:
    """Sends callback requests as a browser on ``HOST`` would, and records server errors."""

    def __init__(self, app: Any, errors: ErrorLog) -> None:
        self.app = app
        self.http = app.server.test_client()
        self.errors = errors
        self.sent = 0
        page = self.http.get("/", base_url=f"http://{HOST}")
        assert page.status_code == 200, page.status_code
        config = re.search(
            r'<script id="_dash-config" type="application/json">(.*?)</script>', page.text, re.S
        )
        # the page-load token the renderer echoes on every callback request
        self.end_id = json.loads(config.group(1))["end_id"]
        deps = self.http.get("/_dash-dependencies", base_url=f"http://{HOST}")
        assert deps.status_code == 200, deps.status_code
        self.callbacks = [Callback(d) for d in deps.get_json() if not d.get("clientside_function")]
        self.values: dict[str, Any] = {}
        for path in PAGES:
            self.values.update(self.layout_values(path))
        self.values.update(BROWSER_VALUES)

    def post(self, body: dict, **args: str) -> tuple[int, Any, str]:
        """``(status, JSON answer or None, exception the app logged or '')`` of one request."""
        self.sent += 1
        before = len(self.errors.causes)
        response = self.http.post(
            UPDATE,
            base_url=f"http://{HOST}",
            query_string={"endId": self.end_id, **args},
            data=json.dumps(body),  # writes Infinity and NaN as JavaScript does not
            content_type="application/json",
            headers=HEADERS,
        )
        cause = "; ".join(self.errors.causes[before:])
        answer = response.get_json(silent=True) if response.status_code == 200 else None
        return response.status_code, answer, cause

    def layout_values(self, path: str) -> dict[str, Any]:
        """``{'id.prop': value}`` of every component of the page at ``path``, as served."""
        router = next(c for c in self.callbacks if c.output.startswith(".._pages_content."))
        body = router.body(
            {"_pages_location.pathname": path, "_pages_location.search": ""},
            "_pages_location.pathname",
        )
        status, answer, cause = self.post(body)
        assert status == 200, f"page {path}: {status} {cause}"
        values: dict[str, Any] = {}
        _collect(answer["response"]["_pages_content"]["children"], values)
        return values

    def slot_values(self, cb: Callback) -> dict[str, Any]:
        values = {}
        for slot in cb.slots:
            prop = slot.rsplit(".", 1)[1]
            value = self.values.get(slot)
            values[slot] = max(value or 0, 1) if prop in COUNTERS else value
        return values


def _collect(node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, list):
        for child in node:
            _collect(child, out)
    elif isinstance(node, dict) and "props" in node:
        props = node["props"]
        if "id" in props:
            key = props["id"] if isinstance(props["id"], str) else json.dumps(props["id"])
            for prop, value in props.items():
                if prop != "children":
                    out[f"{key}.{prop}"] = value
        for value in props.values():
            _collect(value, out)


def _component_id(text: str) -> Any:
    # pattern-matching ids are JSON in the dependency list; others escape their dots
    return json.loads(text) if text.startswith("{") else text.replace("\\.", ".")


def _split(spec: str) -> tuple[str, str]:
    component, prop = spec.rsplit(".", 1)
    return component, prop


class Callback:
    """One entry of ``/_dash-dependencies`` and the request bodies a browser builds from it."""

    def __init__(self, dep: dict) -> None:
        self.output = dep["output"]
        self.multi = self.output.startswith("..")
        specs = self.output[2:-2].split("...") if self.multi else [self.output]
        self.outputs = [
            {"id": _component_id(c), "property": p} for c, p in (_split(s) for s in specs)
        ]
        self.inputs = [f"{i['id']}.{i['property']}" for i in dep["inputs"]]
        self.state = [f"{s['id']}.{s['property']}" for s in dep["state"]]
        self.background = bool(dep.get("background"))

    @property
    def slots(self) -> list[str]:
        return [*self.inputs, *self.state]

    @property
    def name(self) -> str:
        return ", ".join(f"{o['id']}.{o['property'].split('@')[0]}" for o in self.outputs)

    def body(self, values: dict[str, Any], changed: str | None = None, turn: int = 0) -> dict:
        """The request a browser sends when ``changed`` changed.

        For a state slot (a change of state alone sends nothing) the trigger is input
        number ``turn`` (cycling), so each branch on the trigger gets hostile values.
        """

        def entries(slots: list[str]) -> list[dict]:
            out = []
            for slot in slots:
                component, prop = _split(slot)
                out.append(
                    {"id": _component_id(component), "property": prop, "value": values.get(slot)}
                )
            return out

        if changed not in self.inputs:
            changed = self.inputs[turn % len(self.inputs)] if self.inputs else None
        return {
            "output": self.output,
            "outputs": self.outputs if self.multi else self.outputs[0],
            "inputs": entries(self.inputs),
            "state": entries(self.state),
            "changedPropIds": [changed] if changed else [],
        }


# ----------------------------------------------------------------------------------- tests


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:20]}...({len(text)} chars)"


def _fuzz(client: Client, cb: Callback, classes: list[list[Any]], failures: list[str]) -> None:
    """Each slot one value of each class in ``classes``, the members taking turns from slot to
    slot; then every slot hostile at once, with every value. A request sent already (one
    slot alone is every slot) is not sent again."""
    base = client.slot_values(cb)
    cases = [
        (slot, members[i % len(members)]) for i, slot in enumerate(cb.slots) for members in classes
    ]
    if classes is BAD_CLASSES:
        cases += [(slot, v) for slot in cb.slots for v in EXTRA_VALUES.get(slot, [])]
    cases += [("every slot", value) for members in classes for value in members]
    sent_before: set[str] = set()
    for turn, (slot, value) in enumerate(cases):
        sent = {s: value for s in cb.slots} if slot == "every slot" else {**base, slot: value}
        body = cb.body(sent, slot, turn)
        key = json.dumps(body, sort_keys=True)
        if key in sent_before:
            continue
        sent_before.add(key)
        status, answer, cause = client.post(body)
        if cb.background and status == 200 and answer and "cacheKey" in answer:
            status, cause = _follow(client, body, answer)
        if status >= 500 or cause:
            failures.append(f"{cb.name} | {slot} = {_show(value)} | HTTP {status} | {cause}")


def _follow(client: Client, body: dict, job: dict, limit_s: float = 120.0) -> tuple[int, str]:
    """Poll a background job as the page does until it answers; its final status and cause."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        status, answer, cause = client.post(body, cacheKey=job["cacheKey"], job=job["job"])
        if status != 200 or (answer and ("response" in answer or "sideUpdate" in answer)):
            return status, cause
        time.sleep(0.02)  # a finished job answers on the next poll; a poll costs a millisecond
    raise AssertionError(f"background job of {body['output']} did not finish in {limit_s} s")


def _under(proc: psutil.Process, pids: set[int]) -> bool:
    """``proc`` is one of ``pids`` or a descendant of one (a gone parent ends the search)."""
    try:
        return proc.pid in pids or any(p.pid in pids for p in proc.parents())
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_no_callback_value_gives_a_server_error_and_no_process_is_left(fuzz_app):
    import multiprocess

    client = fuzz_app
    me = psutil.Process(os.getpid())
    # other tests' processes, and what they start meanwhile (the shared Chromium's renderers)
    earlier = {p.pid for p in me.children(recursive=True)}
    failures: list[str] = []
    assert len(client.callbacks) >= 20, [cb.name for cb in client.callbacks]
    assert [cb for cb in client.callbacks if cb.background and BACKGROUND_OUTPUT in cb.name]
    try:
        for cb in client.callbacks:
            _fuzz(client, cb, BACKGROUND_CLASSES if cb.background else BAD_CLASSES, failures)
    finally:
        multiprocess.active_children()  # joins the background jobs that have finished
        started = [p for p in me.children(recursive=True) if not _under(p, earlier)]
        _gone, alive = psutil.wait_procs(started, timeout=60)
    print(f"{client.sent} requests to {len(client.callbacks)} callbacks")
    assert not alive, f"processes left behind: {alive}"
    assert not failures, f"{len(failures)} failed requests:\n" + "\n".join(failures)


@pytest.mark.slow
def test_no_callback_writes_or_starts_anything_on_a_read_only_app(read_only_app):
    """Every callback, sent what a browser would (a click on each of its inputs in turn):
    a read-only app's runs folder stays as it was and no process is started. A new callback
    that writes and lacks ``@changes_runs`` fails here."""
    client = read_only_app
    runs_dir = app_context(client.app).runs_dir

    def tree() -> dict[str, tuple[int, int]]:
        return {
            str(p.relative_to(runs_dir)): (p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in sorted(runs_dir.rglob("*"))
        }

    before = tree()
    me = psutil.Process(os.getpid())
    children_before = {p.pid for p in me.children(recursive=True)}
    refused = []
    for cb in client.callbacks:
        values = client.slot_values(cb)
        for turn, changed in enumerate(cb.inputs or [None]):
            status, answer, _cause = client.post(cb.body(values, changed, turn))
            started = bool(answer and "cacheKey" in answer)
            assert not started, f"{cb.name}: a background job was started on a read-only app"
            if status == 403:
                refused.append(cb.name)
        new = {p.pid for p in me.children(recursive=True)} - children_before
        assert not new, f"{cb.name} started processes {new} on a read-only app"
        assert tree() == before, f"{cb.name} changed the runs folder of a read-only app"
    # the writing callbacks are among those refused: launch, stop/resume, delete, Evaluate, Save
    assert len(set(refused)) >= 5, refused


# ------------------------------------------------------------------- malformed request shapes


@pytest.fixture(scope="module")
def fuzz_server(fuzz_app):
    """The fuzz app served by waitress on a free loopback port: ``(client, host:port)``."""
    import threading

    import waitress

    server = waitress.create_server(fuzz_app.app.server, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    try:
        yield fuzz_app, f"127.0.0.1:{server.effective_port}"
    finally:
        server.close()


def _post_raw(host: str, body: dict) -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(host, timeout=60)
    try:
        conn.request("POST", UPDATE, json.dumps(body),
                     {"Content-Type": "application/json", "Origin": f"http://{host}"})  # fmt: skip
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def _malformed(cb: Callback, body: dict) -> dict[str, dict]:
    """A valid body of ``cb`` made wrong in each way a forged request can be."""
    wrong_outputs = body["outputs"][0] if cb.multi else [body["outputs"], body["outputs"]]
    cases = {
        "inputs of numbers": {**body, "inputs": [1] * max(1, len(body["inputs"]))},
        "outputs of the wrong shape": {**body, "outputs": wrong_outputs},
        "an input of another id": {
            **body, "inputs": [{"id": "nope", "property": "value"}, *body["inputs"][1:]]
        },
    }  # fmt: skip
    if cb.state:  # a callback without state may leave it out, as the renderer does
        cases["no state"] = {k: v for k, v in body.items() if k != "state"}
    return cases


def test_a_malformed_request_or_a_clientside_output_gets_a_one_line_400(fuzz_server):
    """Every server callback, sent its request with wrong inputs, outputs or a missing
    state, and every clientside callback's output: 400 with one line naming what is wrong,
    before Dash runs anything (no exception logged). The valid request still passes."""
    client, host = fuzz_server
    deps = client.http.get("/_dash-dependencies", base_url=f"http://{HOST}").get_json()
    clientside = [d for d in deps if d.get("clientside_function")]
    assert clientside and len(client.callbacks) >= 20
    before = len(client.errors.causes)
    failures, sent = [], 0
    for cb in client.callbacks:
        body = cb.body(client.slot_values(cb))
        for case, wrong in _malformed(cb, body).items():
            status, text = _post_raw(host, wrong)
            sent += 1
            if status != 400 or "\n" in text.strip() or "Traceback" in text:
                failures.append(f"{cb.name} | {case} | HTTP {status} | {text[:200]!r}")
    for dep in clientside:  # as a browser would send them, had they a server function
        slots = {key: [{**s, "value": None} for s in dep[key]] for key in ("inputs", "state")}
        status, text = _post_raw(host, {"output": dep["output"], "outputs": [], **slots})
        sent += 1
        if status != 400 or "computed in the browser" not in text:
            failures.append(f"clientside {dep['output'][:80]} | HTTP {status} | {text[:200]!r}")
    router = next(c for c in client.callbacks if c.output.startswith(".._pages_content."))
    valid = router.body({"_pages_location.pathname": "/", "_pages_location.search": ""})
    assert _post_raw(host, valid)[0] == 200
    print(f"{sent} malformed requests to {len(client.callbacks) + len(clientside)} callbacks")
    assert not failures, f"{len(failures)} failed requests:\n" + "\n".join(failures)
    assert client.errors.causes[before:] == []

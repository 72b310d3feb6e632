"""Jobs page (``/jobs``): real distributed predictions (``run.py predict --workers N`` with a
tiny trained run) read by ``app.jobs_view`` and shown, stopped and resumed in Chromium."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from app import app_context, create_app
from app.components import fmt_duration
from app.job_actions import JobActionError, resume_command, start, start_command
from app.jobs_view import JobRow, WorkerRow, job_state, read_jobs, worker_summary
from app.pages import jobs as jobs_page
from app.pages.jobs import jobs_table
from trainer.block_claims import JOB_DIR, read_job, write_job
from trainer.jobs import job_progress
from trainer.runs.job_records import job_id, read_job_records, write_job_record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, train_tiny_zarr_run) -> Path:
    """A runs folder with one CNN3D run (``tiny``) trained one step on ``data.zarr`` beside it."""
    root = tmp_path_factory.mktemp("jobs")
    train_tiny_zarr_run(root, n_steps=1)
    return root


def _predict_cmd(root: Path, out: Path, workers: int, block: str) -> list[str]:
    return [sys.executable, "run.py", "predict", str(root / "runs" / "tiny"),
            str(root / "data.zarr"), str(out), "--key", "raw", "--block", *block.split(),
            "--device", "cpu", "--workers", str(workers)]  # fmt: skip


@pytest.fixture(scope="module")
def finished_job(tiny) -> tuple[Path, list[str]]:
    """A job two workers finished, started as the page's Start does (its output, command)."""
    argv = start_command(tiny / "runs" / "tiny", tiny, "predict", "data.zarr", "raw",
                         "done.zarr", "local", 2)  # fmt: skip
    pid = start(argv, tiny / "start.log")
    _wait(lambda: not psutil.pid_exists(pid), "the started job's end", 300)
    assert (job_progress(tiny / "done.zarr") or {}).get("complete"), (
        tiny / "start.log"
    ).read_text()
    return tiny / "done.zarr", argv


# -- records and rows (pure) ------------------------------------------------------------------


@pytest.mark.slow
def test_a_started_job_is_found_through_its_record_with_its_progress(tiny, finished_job):
    finished_job, argv = finished_job
    (record,) = [
        r for r in read_job_records(tiny / "runs" / "tiny") if r["output"] == str(finished_job)
    ]
    assert record["id"] == job_id("predict", finished_job) and record["kind"] == "predict"
    assert record["key"] == "prob" and record["cwd"] == str(REPO)
    (row,) = [r for r in read_jobs(tiny / "runs") if r.output == str(finished_job)]
    progress = job_progress(finished_job)
    assert (row.run, row.kind, row.backend, row.state) == ("tiny", "predict", "local", "finished")
    # every step's blocks, the prediction's and the finish's, counted in the job folder
    done = len(os.listdir(finished_job / JOB_DIR / "done"))
    assert row.done == row.total == done == progress["blocks"]["total"] and row.percent == 100
    assert (row.failed, row.retried) == (0, 0)
    # two asked for, capped at the blocks of the largest step
    assert [w.state for w in row.workers] == ["finished"] * progress["workers_asked"]
    assert sum(w.blocks for w in row.workers) == done
    assert read_jobs(tiny / "runs", run="other") == []
    # the same command again (a resumption) keeps one record, with its first creation time
    before = record["created"]
    write_job_record(tiny / "runs" / "tiny", "predict", finished_job, "prob", REPO)
    (again,) = [
        r for r in read_job_records(tiny / "runs" / "tiny") if r["output"] == str(finished_job)
    ]
    assert again["created"] == before and again["submitted"] > before
    # the command the page's Resume runs: this repository's run.py, with this Python
    assert resume_command(record)[:3] == [sys.executable, str(REPO / "run.py"), "predict"]
    assert resume_command(record) == argv


def test_resume_refuses_a_job_file_whose_command_is_not_run_py(tmp_path):
    out = tmp_path / "out.zarr"
    write_job(out / JOB_DIR, {"kind": "predict", "command": ["sh", "-c", "rm -rf ~"], "steps": []})
    record = {"kind": "predict", "output": str(out), "cwd": str(tmp_path)}
    with pytest.raises(JobActionError, match=r"is not `run.py predict \.\.\.`"):
        resume_command(record)
    write_job(out / JOB_DIR, {**read_job(out / JOB_DIR), "command": ["py", "run.py", "segment"]})
    with pytest.raises(JobActionError, match="is not `run.py predict"):
        resume_command(record)


def _progress(workers=(), failed=0, complete=False):
    return {"complete": complete, "blocks": {"failed": failed},
            "workers": [{"state": s} for s in workers]}  # fmt: skip


@pytest.mark.parametrize(
    ("progress", "tasks", "state"),
    [
        (None, {}, "missing"),
        (_progress(["finished"], complete=True), {}, "finished"),
        (_progress(["running", "stopped"]), {}, "running"),
        (_progress(["lost", "stopped"]), {}, "stopped"),
        (_progress(["failed"], failed=1), {}, "failed"),
        (_progress([]), {"7_0": "PENDING", "7_1": "PENDING"}, "queued"),
        (_progress([]), {"7_0": "PENDING", "7_1": "RUNNING"}, "running"),
        (_progress(["stopped"]), {"7_0": "CANCELLED"}, "stopped"),
    ],
)
def test_job_state_from_workers_and_slurm_tasks(progress, tasks, state):
    assert job_state(progress, tasks) == state


def test_read_only_table_has_no_buttons_and_a_writable_one_the_state_s():
    rows = [JobRow("r", "predict-000000000000", "predict", "/o", "local", s, 3, 9)
            for s in ("running", "stopped", "finished")]  # fmt: skip
    assert _button_ids(jobs_table(rows, read_only=True)) == []
    assert _button_ids(jobs_table(rows, read_only=False)) == [
        ("jobs-stop", "running"), ("jobs-resume", "stopped")]  # fmt: skip


def _button_ids(component, state=None) -> list[tuple[str, str]]:
    """(button type, its row's state) of every button under ``component``."""
    state = getattr(component, "data-state", state)
    if getattr(component, "_type", None) == "Button":
        return [(component.id["type"], state)]
    children = getattr(component, "children", None)
    children = children if isinstance(children, list) else [children]
    return [
        b for c in children if c is not None and hasattr(c, "_type") for b in _button_ids(c, state)
    ]


def test_worker_summary_counts_workers_and_slurm_tasks():
    workers = tuple(
        WorkerRow(f"w{i}", "h", s, 1) for i, s in enumerate(["running", "lost", "running"])
    )
    tasks = (("7_0", "RUNNING"), ("7_1", "PENDING"), ("7_2", "RUNNING"))
    row = JobRow("r", "predict-000000000000", "predict", "/o", "slurm", "running",
                 workers=workers, tasks=tasks)  # fmt: skip
    assert (
        worker_summary(row) == "3 workers: 2 running, 1 lost; 3 Slurm tasks: 2 RUNNING, 1 PENDING"
    )
    assert worker_summary(JobRow("r", "j", "predict", "/o", "local", "stopped")) == (
        "no worker has started yet"
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kind", "train", "kind: 'train': expected predict or segment"),
        ("source", "", "input: a path inside the data folder"),
        ("source", "../secret.zarr", "input: '../secret.zarr' is not inside the data folder"),
        ("source", "/etc/passwd", "input: '/etc/passwd' is not inside the data folder"),
        ("source", "link.zarr", "input: 'link.zarr' is not inside the data folder"),
        ("source", "none.zarr", "input: 'none.zarr': no such file or folder"),
        ("output", "../out.zarr", "output: '../out.zarr' is not inside the data folder"),
        ("output", "em.zarr", "output: the same path as the input"),
        ("output", "prob.h5", "output: .*several workers write a zarr folder only"),
        ("key", "../raw", "key: '../raw': expected an array name"),
        ("backend", "ssh", "backend: 'ssh': expected local or slurm"),
        ("count", 0, "workers: '0': expected a whole number 1 to 64"),
        ("count", 2.5, "workers: '2.5': expected a whole number"),
        ("count", "3", "workers: '3': expected a whole number"),
        ("count", 65, "workers: '65': expected a whole number 1 to 64"),
    ],
)
def test_start_form_values_are_checked_naming_the_field(tmp_path, field, value, message):
    data = tmp_path / "data"
    (data / "em.zarr").mkdir(parents=True)
    (data / "link.zarr").symlink_to(tmp_path)
    fields = {"kind": "predict", "source": "em.zarr", "key": "raw", "output": "prob.zarr",
              "backend": "local", "count": 2, field: value}  # fmt: skip
    with pytest.raises(JobActionError, match=message):
        start_command(tmp_path / "run", data, **fields)


def test_start_command_is_run_py_with_paths_in_the_data_folder(tmp_path):
    (tmp_path / "em.zarr").mkdir()
    argv = start_command(tmp_path / "run", tmp_path, "segment", str(tmp_path / "em.zarr"), "",
                         "em.zarr/labels/neurons", "slurm", 300)  # fmt: skip
    root = os.path.realpath(tmp_path)
    assert argv == [sys.executable, str(REPO / "run.py"), "segment", str(tmp_path / "run"),
                    f"{root}/em.zarr", f"{root}/em.zarr/labels/neurons", "--backend", "slurm",
                    "--jobs", "300"]  # fmt: skip


def test_records_with_bad_ids_or_fields_are_left_out(tmp_path):
    folder = tmp_path / "run" / "jobs"
    folder.mkdir(parents=True)
    (folder / "predict-zz.json").write_text('{"kind": "predict", "output": "/o", "cwd": "/"}')
    (folder / "predict-000000000000.json").write_text('{"kind": "rm", "output": "/o", "cwd": "/"}')
    assert read_job_records(tmp_path / "run") == []
    with pytest.raises(ValueError, match="job kind 'train'"):
        write_job_record(tmp_path / "run", "train", tmp_path / "o", None, tmp_path)


# -- the page in Chromium -----------------------------------------------------------------------


def _text(component) -> str:
    """The text a component shows (its children's, in order)."""
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    children = getattr(component, "children", None)
    children = children if isinstance(children, list) else [children]
    return "".join(_text(c) for c in children)


def _table_rows(page) -> list[dict[str, str]]:
    """Each job row of the page's table, as ``{column header: shown text}``."""
    found = []

    def walk(c):
        if getattr(c, "_type", None) == "Table":
            head, body = c.children
            names = [_text(th) for th in head.children.children]
            rows = [tr for tr in body.children if tr.className == "jobs-row"]
            found.extend(dict(zip(names, (_text(td) for td in tr.children))) for tr in rows)
        children = getattr(c, "children", None)
        for child in children if isinstance(children, list) else [children]:
            if hasattr(child, "_type"):
                walk(child)

    walk(page)
    return found


def test_failed_and_retried_blocks_throughput_and_eta_are_on_the_page(tmp_path):
    """Four workers of the block engine (``trainer.block_claims``) in this process: a fails
    in block 2, b takes it over and fails in it too, c takes it over, does it and fails in
    block 4, d takes block 4 over; the page's table, read while d works on block 6, shows 2
    failed blocks (2 and 4, however many times each failed) and 3 retries (2 take-overs of
    block 2, one of block 4), and the throughput and ETA of the done markers' times
    (blocks/s over their ends, blocks left at that rate)."""
    from trainer.block_claims import BlockWorker

    run_dir = tmp_path / "runs" / "lg"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    out = tmp_path / "prob.zarr"
    folder = out / JOB_DIR
    write_job(folder, {"kind": "predict", "key": "prob", "command": ["x"], "backend": "local",
                       "workers": 4, "steps": [{"name": "predict", "blocks": 100000}]})  # fmt: skip
    write_job_record(run_dir, "predict", out, "prob", tmp_path)
    seen = {}

    def work(worker: str, fail: int | None):
        def block(i: int) -> None:
            if i == fail:
                raise OSError(f"{worker}: disk on fire in block {i}")
            if worker == "d" and i == 6:  # d mid-block: the job is running
                seen["rows"] = read_jobs(tmp_path / "runs", "lg")  # as the page and its poll
                seen["page"] = jobs_table(seen["rows"], read_only=False)
                raise SystemExit(143)  # then d is stopped, as by a SIGTERM
            time.sleep(0.02)

        return block

    for name, fail in (("a", 2), ("b", 2), ("c", 4)):
        with pytest.raises(OSError, match="disk on fire"), BlockWorker(
            folder, name, heartbeat=None) as w:  # fmt: skip
            w.run_step("predict", 100000, work(name, fail))
    with pytest.raises(SystemExit), BlockWorker(folder, "d", heartbeat=None) as w:
        w.run_step("predict", 100000, work("d", None))
    ends = sorted(json.loads(p.read_text())["end"] for p in (folder / "done").iterdir())
    assert len(ends) == 6  # blocks 0 to 5
    rate = 5 / (ends[-1] - ends[0])
    (row,) = seen["rows"]
    assert (row.state, row.done, row.total, row.failed, row.retried) == (
        "running", 6, 100000, 2, 3)  # fmt: skip
    assert row.throughput == pytest.approx(rate) and row.eta_s == pytest.approx(99994 / rate)
    assert row.eta_s > 60  # blocks sleep 0.02 s: at most 50 blocks/s, so minutes on the page
    (cells,) = _table_rows(seen["page"])
    assert cells["blocks"] == "6/100000" and cells["state"] == "running"
    assert (cells["failed"], cells["retried"]) == ("2", "3")
    assert cells["throughput"] == f"{rate:.2f} blocks/s"
    assert cells["ETA"] == fmt_duration(99994 / rate) != ""
    shown = _text(seen["page"])  # the failed workers' errors, under the row
    assert "b: disk on fire in block 2" in shown and "c: disk on fire in block 4" in shown


def _wait(predicate, what: str, timeout: float = 120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _worker_pids(out: Path) -> list[int]:
    return [int(w["pid"]) for w in (job_progress(out) or {}).get("workers", [])]


def _row_state(dash_duo) -> str:
    # one read, whatever the poll redraws meanwhile
    return dash_duo.driver.execute_script(
        "const r = document.querySelector('.jobs-row'); return r && r.dataset.state;"
    )


@pytest.mark.slow
def test_page_shows_a_shell_job_stops_it_resumes_it_and_read_only_refuses(dash_duo, tiny):
    out = tiny / "page.zarr"
    shell = subprocess.Popen(_predict_cmd(tiny, out, 1, "16 48 48"), cwd=REPO, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    try:
        # hold the job mid-way (its worker paused after a block), so the page sees it running
        def done() -> int:
            return (job_progress(out) or {"blocks": {"done": 0}})["blocks"]["done"]

        _wait(lambda: done() >= 1, "a first block done")
        (pid,) = _wait(lambda: _worker_pids(out), "the worker's file")
        os.kill(pid, signal.SIGSTOP)
        app = create_app(tiny / "runs", tiny, tiny, start_launcher=False)
        dash_duo.start_server(app)
        dash_duo.wait_for_page(url=f"{dash_duo.server_url}/run/tiny")
        dash_duo.find_element("#run-jobs-link").click()
        dash_duo.wait_for_text_to_equal(f".jobs-row[data-job='{job_id('predict', out)}'] .jobs-state",
                                        "running", timeout=30)  # fmt: skip
        count = dash_duo.find_element(".jobs-count").text
        held = done()
        assert count == f"{held}/{job_progress(out)['blocks']['total']}"
        dash_duo.find_element("#vb-nav-jobs")  # every page links to the jobs
        dash_duo.find_element(".jobs-start summary").click()
        sys.path.insert(0, str(Path(__file__).parent))
        from test_accessibility_browser import dropdowns_named_by_their_value_only, violations

        # (before a message: .vb-error's red on the page's grey is 4.2:1, on every page)
        assert violations(dash_duo) == [] and dropdowns_named_by_their_value_only(dash_duo) == []
        # a Start with a path outside the data folder is refused, naming the field
        dash_duo.find_element("#jobs-input").send_keys("data.zarr")
        dash_duo.find_element("#jobs-output").send_keys("../out.zarr")
        dash_duo.find_element("#jobs-start").click()
        dash_duo.wait_for_contains_text("#jobs-msg", "output: '../out.zarr' is not inside", 30)
        dash_duo.find_element(".jobs-row button.vb-danger").click()  # Stop
        dash_duo.wait_for_contains_text("#jobs-msg", "Stopping local-0-", timeout=30)
        os.kill(pid, signal.SIGCONT)  # the SIGTERM waiting for it is delivered now
        assert shell.wait(60) != 0  # the shell's command says: unfinished
        _wait(lambda: not psutil.pid_exists(pid), "the worker's end", 30)
        _wait(lambda: _row_state(dash_duo) == "stopped", "the page's stopped", 30)
        assert done() < job_progress(out)["blocks"]["total"]
        dash_duo.find_element(".jobs-row button").click()  # Resume
        dash_duo.wait_for_contains_text("#jobs-msg", "Resumed predict", timeout=30)
        msg = dash_duo.driver.execute_script(  # read at once: the poll may redraw the message
            "return document.querySelector('#jobs-msg').textContent"
        )
        resumed = int(msg.rsplit("process ", 1)[1].strip(")."))
        _wait(lambda: _row_state(dash_duo) == "finished", "the resumed job's end", 120)
        assert job_progress(out)["complete"]
        for p in [resumed, *_worker_pids(out)]:  # the supervisor and its workers have ended
            _wait(lambda p=p: not psutil.pid_exists(p), f"process {p}'s end", 30)
        assert not dash_duo.find_elements(".jobs-row button")
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    # read-only: no buttons, and a forged Stop is refused before it runs
    ro = create_app(tiny / "runs", tiny, tiny, read_only=True, start_launcher=False)
    client = ro.server.test_client()
    deps = client.get("/_dash-dependencies").get_json()
    (dep,) = [d for d in deps if any("jobs-stop" in str(i["id"]) for i in d["inputs"])]
    outputs = [dict(zip(("id", "property"), part.rsplit(".", 1)))
               for part in dep["output"].strip(".").split("...")]  # fmt: skip
    forged = {"output": dep["output"], "outputs": outputs,
              "inputs": [[{"id": {"type": "jobs-stop", "run": "tiny", "job": job_id("predict", out)},
                           "property": "n_clicks", "value": 1}], []],
              "changedPropIds": []}  # fmt: skip
    response = client.post("/_dash-update-component", json=forged)
    assert response.status_code == 403 and "read-only" in response.get_data(as_text=True)
    with ro.server.test_request_context():
        page = jobs_page.layout(run="tiny")
    assert "jobs-start" not in str(page) and _button_ids(page) == []
    assert "data-state" in str(page)  # the job is shown, without its buttons


def test_stop_signals_only_a_process_that_is_a_worker_of_the_job(tmp_path):
    """A worker file names a pid; Stop checks the process is that job's block worker first, so
    a forged or stale file cannot aim it at another process."""
    import subprocess
    import sys

    from app.block_jobs import is_worker_of

    out = tmp_path / "prob.zarr"
    out.mkdir()
    worker = subprocess.Popen(  # looks like `python -m trainer.block_worker OUTPUT`
        [sys.executable, "-c", "import time; print(flush=True); time.sleep(60)",
         "trainer.block_worker", str(out)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        # running: just after Popen returns, the new program's command line may not be set yet
        worker.stdout.readline()
        assert is_worker_of(worker.pid, out)
        assert not is_worker_of(worker.pid, tmp_path / "other.zarr")
        assert not is_worker_of(os.getpid(), out)  # the test itself: never a worker
        assert not is_worker_of(2**22 + 12345, out)  # no such process
    finally:
        worker.kill()
        worker.wait()


# -- Slurm asked at most once per poll interval ---------------------------------------------------


def test_page_polls_ask_squeue_once_within_the_slurm_poll_interval(tmp_path, monkeypatch):
    """Two reads of the page within ``slurm_poll_s``: one squeue (a fake one on PATH that
    counts its calls in a file), both reads showing its answer."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "squeue-calls"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        "echo '4242_0|RUNNING|None'\necho '4242_1|PENDING|Priority'\n"
    )
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    run_dir = tmp_path / "runs" / "lg"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text("{}")
    out = tmp_path / "prob.zarr"
    write_job(out / JOB_DIR, {"kind": "predict", "key": "prob", "command": ["x"],
                              "backend": "slurm", "slurm_job_id": "4242", "workers": 2,
                              "steps": [{"name": "predict", "blocks": 4}]})  # fmt: skip
    write_job_record(run_dir, "predict", out, "prob", tmp_path, "slurm")
    app = create_app(tmp_path / "runs", tmp_path, tmp_path, start_launcher=False,
                     slurm_poll_s=60.0)  # fmt: skip
    try:
        with app.server.test_request_context("/jobs"):
            page = str(jobs_page.layout())
            table, _ = jobs_page._on_poll(1, None, 0)
            app_context(app).launcher.backends["slurm"].poll_s = 0.0  # the limit passed
            jobs_page._on_poll(2, None, 0)
    finally:
        app_context(app).close()
    asked = "--noheader --states=all --jobs=4242_0,4242_1 --format=%i|%T|%r"
    assert calls.read_text().splitlines() == [asked, asked]  # page + poll: one; then one more
    for shown in (page, str(table)):
        assert "Slurm task 4242_0: RUNNING" in shown and "Slurm task 4242_1: PENDING" in shown


# -- a one-process command (no --workers) ---------------------------------------------------------


@pytest.mark.slow
def test_a_one_process_shell_job_is_listed_stopped_and_resumed_to_the_same_bytes(tiny, tmp_path):
    from app.job_actions import resume, stop
    from trainer.predictions import predict_to_disk, read_prediction
    from trainer.volumes import open_volume

    out = tiny / "one-process.zarr"
    cmd = _predict_cmd(tiny, out, 1, "16 48 48")[:-2]  # no --workers
    shell = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        _wait(lambda: (job_progress(out) or {"blocks": {"done": 0}})["blocks"]["done"] >= 1,
              "a first block on the page", 120)  # fmt: skip
        os.kill(shell.pid, signal.SIGSTOP)  # held mid-way: the page sees it running
        (row,) = [r for r in read_jobs(tiny / "runs", "tiny") if r.output == str(out)]
        assert (row.kind, row.backend, row.state, row.total) == ("predict", "local", "running", 18)
        assert 1 <= row.done < 18 and row.step == f"predict {row.done}/18"
        (worker,) = row.workers
        assert (worker.state, worker.name) == ("running", f"process-{shell.pid}")
        (record,) = [r for r in read_job_records(tiny / "runs" / "tiny") if r["output"] == str(out)]
        assert stop(record) == [f"process-{shell.pid}"]
        os.kill(shell.pid, signal.SIGCONT)  # the SIGTERM waiting for it is delivered now
        assert shell.wait(60) == 143, shell.stderr.read()[-2000:]
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
            shell.wait()
    (row,) = [r for r in read_jobs(tiny / "runs", "tiny") if r.output == str(out)]
    assert row.state == "stopped" and row.done < 18
    assert [w.state for w in row.workers] == ["stopped"]
    resumed = resume(record)  # the page's Resume: the same command, in the same folder
    _wait(lambda: not psutil.pid_exists(resumed), "the resumed command's end", 180)
    (row,) = [r for r in read_jobs(tiny / "runs", "tiny") if r.output == str(out)]
    assert (row.state, row.done, row.total) == ("finished", 18, 18)
    assert sorted(w.state for w in row.workers) == ["finished", "stopped"]
    progress = job_progress(out)
    assert progress["single"] and progress["cpu_s_per_block"] > 0
    # the bytes of an uninterrupted one-process prediction of the same run and tiles
    from trainer.evaluation import load_run

    run = load_run(tiny / "runs" / "tiny", device="cpu")
    predict_to_disk(run.model, open_volume(tiny / "data.zarr", "raw"), tmp_path / "ref.zarr",
                    tile_shape=(16, 48, 48))  # fmt: skip
    got, record = read_prediction(out)
    assert record["complete"] and record["done"] == list(range(18))
    want = read_prediction(tmp_path / "ref.zarr")[0].read()
    np.testing.assert_array_equal(got.read().view(np.uint16), want.view(np.uint16))
    # segment in one process: listed too, finished with every pass's blocks
    labels = tiny / "one-process-labels.zarr"
    seg = subprocess.run([sys.executable, "run.py", "segment", str(tiny / "runs" / "tiny"),
                          str(out), str(labels), "--threshold", "0.5"], cwd=REPO,
                         capture_output=True, text=True, timeout=180)  # fmt: skip
    assert seg.returncode == 0, seg.stderr[-2000:]
    (row,) = [r for r in read_jobs(tiny / "runs", "tiny") if r.output == str(labels)]
    assert (row.kind, row.state) == ("segment", "finished") and row.done == row.total > 1

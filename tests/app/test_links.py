"""Links in the runs folder do not lead a dashboard's visitors outside it.

A real ``python run.py`` server (normal and ``--read-only``) over a runs folder whose files
and folders are symbolic links to a folder outside, which holds a secret: ``train.log``,
``status.json``, ``history/``, ``eval/``, ``previews/``, ``eval/<result>.h5`` (the runs
table's file check), a whole run folder and a sweep folder (``runs/.sweeps/<id>``). The
pages and callbacks a visitor can ask for answer with the page's usual message naming the
file and why, and no answer carries the secret. With ``--follow-links`` the linked files
are shown.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest

from trainer.history import HistoryTracker
from trainer.metrics import evaluate_arrays
from trainer.runs import Status, write_result, write_status
from trainer.runs.sweeps import TrialEntry, TrialsRecord, write_sweep, write_trials

REPO = Path(__file__).resolve().parents[2]
#: text of every outside file; no answer of a confined dashboard may carry it
SECRET = "S3CR3T-OUTSIDE"
#: the value of every history cell outside (a CSV download would carry it)
SECRET_LOSS = 4242.4242
#: the step of the outside preview (the preview page's slider names it as 9,090,909)
SECRET_STEP = 9090909
SWEEP = "linked-sweep-1"
#: why a page shows nothing of a linked file
REFUSAL = "links outside the runs folder are not followed; start with --follow-links to allow"


# ----------------------------------------------------------------------------- the folders


def _outside(root: Path) -> Path:
    """The folder the links point into: a secret in every format the dashboard reads."""
    out = root / "outside"
    out.mkdir()
    (out / "secret.txt").write_text(f"{SECRET}\n" * 20)
    (out / "status.json").write_text(
        json.dumps({"state": "failed", "step": 3, "n_steps": 10, "error": SECRET})
    )
    tracker = HistoryTracker(out / "history")
    for i in range(5):
        tracker.update_timeline([float(i), SECRET_LOSS, 0.5])
        tracker.update_history([10 * i, float(i), *[SECRET_LOSS] * 8])
    tracker.close()
    rng = np.random.default_rng(0)
    gt = (rng.random(500) < 0.3).astype(np.int8)
    (out / "eval").mkdir()
    write_result(out / "eval" / f"{SECRET}.h5", {"valid": evaluate_arrays(gt, rng.random(500))})
    (out / "previews").mkdir()
    with h5py.File(out / "previews" / f"preview-{SECRET_STEP:08d}.h5", "w") as f:
        f.attrs.update(step=SECRET_STEP, hours=1.0, n_classes=2)
        g = f.create_group("block0")
        g["raw"], g["prob"] = rng.random((2, 4, 4)), rng.random((2, 2, 4, 4))
    # not HDF5: a check that opens it calls it corrupt
    (out / "secret.h5").write_bytes(SECRET.encode() * 64)
    run = out / "run"
    run.mkdir()
    write_status(run, Status(state="failed", step=1, n_steps=10, error=SECRET))
    (run / "train.log").write_text(f"{SECRET}\n")
    sweep = out / "sweep"
    sweep.mkdir()
    write_trials(sweep, TrialsRecord(trials=[TrialEntry(0, SECRET, {"lr": 0.001})]))
    write_sweep(sweep, {"format": 1, "id": SWEEP, "config": f"{SECRET}.py", "backend": "local",
                        "max_parallel": 1, "created": time.time(),
                        "spec": {"metric": "valid_loss", "goal": "min", "n_runs": 1}})  # fmt: skip
    return out


def _run(runs: Path, name: str) -> Path:
    d = runs / name
    d.mkdir(parents=True)
    write_status(d, Status(state="finished", step=10, n_steps=10))
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """``root/runs`` with one run per kind of link, and ``root/outside``."""
    root = tmp_path_factory.mktemp("links")
    out = _outside(root)
    runs = root / "runs"
    (_run(runs, "lg") / "train.log").symlink_to(out / "secret.txt")
    st = runs / "st"
    st.mkdir()
    (st / "status.json").symlink_to(out / "status.json")
    (_run(runs, "hi") / "history").symlink_to(out / "history")
    (_run(runs, "ev") / "eval").symlink_to(out / "eval")
    (_run(runs, "pv") / "previews").symlink_to(out / "previews")
    (_run(runs, "fc") / "eval").mkdir()
    (runs / "fc" / "eval" / "secret.h5").symlink_to(out / "secret.h5")
    (runs / "linked").symlink_to(out / "run")
    (runs / ".sweeps").mkdir()
    (runs / ".sweeps" / SWEEP).symlink_to(out / "sweep")
    return root


# ------------------------------------------------------------------------------ the server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _outputs(dep: dict) -> list[str]:
    """``id.prop`` of each output of a listed callback (without Dash's duplicate suffix)."""
    return [p.split("@")[0] for p in dep["output"].strip(".").split("...")]


class Server:
    """``python run.py`` over ``root/runs`` on a free loopback port; ``call`` forges the
    request a browser sends for a callback."""

    def __init__(self, root: Path, *flags: str) -> None:
        self.base = f"http://127.0.0.1:{_free_port()}"
        cmd = [sys.executable, str(REPO / "run.py"), "--port", self.base.rsplit(":", 1)[1],
               "--runs-dir", str(root / "runs"), "--data-dir", str(root / "data"),
               "--configs-dir", str(REPO / "examples"), *flags]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        end = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited: {self.proc.stdout.read()[-3000:]}")
            try:
                self.deps = self.get("/_dash-dependencies")
                break
            except OSError:
                if time.time() > end:
                    self.close()
                    raise AssertionError("dashboard did not answer within 120 s") from None
                time.sleep(0.2)

    def get(self, path: str) -> object:
        return json.loads(urllib.request.urlopen(self.base + path, timeout=10).read())

    def call(self, output: str, values: dict[str, object]) -> str:
        """The answer (200 or 204) of the callback with ``output`` to a request carrying
        ``values`` by ``id.prop``; the first input counts as the one that changed."""
        dep = next(d for d in self.deps if output in _outputs(d))
        outputs = [
            dict(zip(("id", "property"), part.split("@")[0].rsplit(".", 1)))
            for part in dep["output"].strip(".").split("...")
        ]

        def entries(specs: list[dict]) -> list[dict]:
            return [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in specs]

        body = {
            "output": dep["output"],
            "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": entries(dep["inputs"]),
            "state": entries(dep.get("state", [])),
            "changedPropIds": [f"{s['id']}.{s['property']}" for s in dep["inputs"]][:1],
        }
        request = urllib.request.Request(
            self.base + "/_dash-update-component",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                assert r.status in (200, 204), r.status
                text = r.read().decode()
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{output}: {e.code} {e.read().decode()[:500]}") from None
        # Dash escapes '/' and '<' in its JSON: compare with the text as a page shows it
        return json.dumps(json.loads(text), ensure_ascii=False) if text else ""

    def page(self, path: str) -> str:
        """The page at ``path`` as Dash's router serves it."""
        return self.call(
            "_pages_content.children",
            {"_pages_location.pathname": path, "_pages_location.search": ""},
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module", params=["normal", "read-only"])
def server(request, folders):
    flags = ("--read-only",) if request.param == "read-only" else ()
    s = Server(folders, *flags)
    try:
        yield s
    finally:
        s.close()


def _clean(text: str) -> str:
    """``text``, after checking that it carries nothing of the outside folder."""
    for secret in (SECRET, str(SECRET_LOSS), f"{SECRET_STEP:,}", str(SECRET_STEP)):
        assert secret not in text, f"{secret!r} leaked: ...{text[text.find(secret) - 300 :][:600]}"
    return text


# ------------------------------------------------------------------------------- the cases


def test_a_linked_train_log_is_not_shown(server):
    text = _clean(server.call("exp-log.children", {"exp-selected.data": "lg"}))
    assert "lg/train.log resolves outside the runs folder" in text
    assert REFUSAL in text


def test_the_runs_table_shows_no_linked_status(server):
    text = _clean(server.page("/"))
    assert f"st/status.json resolves outside the runs folder: {REFUSAL}" in text


def test_the_runs_table_lists_a_linked_run_folder_as_refused(server):
    text = _clean(server.page("/"))
    assert f"the run folder is a link out of the runs folder: {REFUSAL}" in text


def test_the_runs_table_file_check_does_not_open_a_linked_file(server):
    text = _clean(server.page("/"))
    assert f"eval/secret.h5 resolves outside the runs folder: {REFUSAL}" in text
    # a check that opened the outside file (not HDF5) would have called it corrupt
    assert "corrupt" not in text


@pytest.mark.parametrize("path", ["/run/st", "/run/hi", "/run/linked"])
def test_run_pages_show_nothing_from_outside(server, path):
    _clean(server.page(path))


def test_a_linked_history_is_refused_on_the_run_page_and_in_its_download(server):
    text = server.page("/run/hi")
    why = f"hi/history/timeline.vbh resolves outside the runs folder: {REFUSAL}"
    assert f"cannot read the history of hi: {why}" in text
    for button in ("run-download-history", "run-download-timeline"):
        _clean(server.call("run-download.data", {f"{button}.n_clicks": 1, "run-name.data": "hi"}))


def test_a_linked_eval_folder_lists_no_result(server):
    text = _clean(server.page("/run/ev/evaluation"))
    assert f"No results shown: ev/eval resolves outside the runs folder: {REFUSAL}" in text


def test_a_linked_previews_folder_shows_no_preview(server):
    text = _clean(server.page("/run/pv/preview"))
    assert f"No previews shown: pv/previews resolves outside the runs folder: {REFUSAL}" in text


def test_a_linked_run_folder_is_not_found(server):
    for page in ("/run/linked", "/run/linked/evaluation", "/run/linked/preview"):
        assert "not found" in _clean(server.page(page)).lower()


def test_a_linked_sweep_folder_is_refused_with_its_csv(server):
    text = _clean(server.page(f"/sweep/{SWEEP}"))
    assert f"its folder is a link out of the runs folder; {REFUSAL}" in text
    _clean(server.call("sweep-download.data", {"sweep-download-csv.n_clicks": 1,
                                               "sweep-id.data": SWEEP}))  # fmt: skip
    _clean(server.page("/"))  # the sweeps list


def test_follow_links_shows_the_linked_files(folders):
    s = Server(folders, "--read-only", "--follow-links")
    try:
        assert SECRET in s.call("exp-log.children", {"exp-selected.data": "lg"})
        assert SECRET in s.page("/run/linked")
        assert SECRET in s.page("/run/ev/evaluation")
        assert f"{SECRET_STEP:,}" in s.page("/run/pv/preview")
        csv = s.call("run-download.data", {"run-download-history.n_clicks": 1,
                                           "run-name.data": "hi"})  # fmt: skip
        assert str(SECRET_LOSS) in csv
    finally:
        s.close()


# ------------------------------------------------------------------------ the check itself


def test_confined_refuses_only_what_resolves_outside_and_only_while_confined(folders):
    from app import paths
    from trainer.runs.confine import OutsideRunsError, confined, confined_to

    runs = folders / "runs"
    (runs / "alias").symlink_to(runs / "lg")  # a link that stays inside
    try:
        log = runs / "lg" / "train.log"
        assert confined(log) == log  # the trainer and the command line are not confined
        with confined_to(runs):
            assert confined(runs / "alias" / "status.json") == runs / "alias" / "status.json"
            assert confined(runs / "lg" / "not-yet-written.txt")
            with pytest.raises(
                OutsideRunsError,
                match=f"^lg/train.log resolves outside the runs folder: {REFUSAL}$",
            ):
                confined(log)
            with pytest.raises(OSError):  # what every reader already handles
                confined(runs / "ev" / "eval" / f"{SECRET}.h5")
            # a run folder linked outside: refused by name unless links are followed
            with pytest.raises(
                paths.ClientPathError, match=f"is a link out of the runs folder; {REFUSAL}"
            ):
                paths.run_dir(runs, "linked")
            assert paths.run_dir(runs, "linked", follow_links=True) == runs / "linked"
            with pytest.raises(
                paths.ClientPathError, match=f"ev/eval/{SECRET}.h5 resolves outside"
            ):
                paths.run_file(runs / "ev", "eval", "result", SECRET, ".h5")
    finally:
        (runs / "alias").unlink()

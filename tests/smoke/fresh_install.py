"""Fresh-install smoke test: the dashboard, the trainer and the evaluation page's background
evaluation work with nothing but ``requirements.txt`` installed.

``.ci/run`` builds a clean virtual environment from ``requirements.txt`` alone and runs

    python tests/smoke/fresh_install.py --python <venv>/bin/python

This script needs only the standard library: the interpreter that runs it is the client, the
given ``--python`` runs everything VoxelBoard does (the dashboard server, the training run, the
background evaluation process). It

1. starts ``run.py`` (the dashboard) on a free loopback port with a scratch runs, data and
   temporary folder, and waits until it answers;
2. trains the demo config for a few steps with ``run.py train`` into that runs folder;
3. runs the evaluation page's background evaluation through the server, as a browser does:
   it finds the callback that writes ``eval-done.data`` in ``/_dash-dependencies``, posts it
   to ``/_dash-update-component`` and polls with the job handles until the result arrives;
4. checks that the final response names the result and that ``eval/<result>.h5`` is there.

Every process it started is stopped and the scratch folder removed, pass or fail. Exit status
0 on success, 1 with a message (and the server's log tail) on failure. Not a pytest test file
(pytest collects ``test_*.py`` only): it needs the clean environment that ``.ci/run`` builds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / "examples" / "demo_cnn3d.py"
RUN_NAME = "smoke"
#: the evaluate callback is found by this output, whatever else the page makes it return
DONE_OUTPUT = "eval-done.data"
BUTTON = "eval-run-button.n_clicks"
RUN_STORE = "eval-run.data"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class SmokeFailure(Exception):
    """A step failed; the message says which and why."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", required=True, help="interpreter of the clean environment")
    parser.add_argument("--n-steps", type=int, default=3, help="training steps (default 3)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per step")
    args = parser.parse_args(argv)
    python = Path(args.python)
    if not os.access(python, os.X_OK):
        print(f"smoke test: --python {python}: not an executable interpreter", file=sys.stderr)
        return 1

    t0 = time.monotonic()
    # a CI runner cancels with SIGTERM: stop like on any failure, with everything cleaned up
    signal.signal(signal.SIGTERM, _stopped)
    scratch = Path(tempfile.mkdtemp(prefix="voxelboard-smoke-"))
    server_log = scratch / "server.log"
    try:
        with _processes() as started:
            _smoke(python, scratch, server_log, started, args.n_steps, args.timeout)
    except (SmokeFailure, KeyboardInterrupt) as e:
        print(f"smoke test FAILED: {e or 'interrupted'}", file=sys.stderr)
        _print_tail(server_log, "dashboard server log")
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"smoke test passed in {time.monotonic() - t0:.1f} s")
    return 0


def _smoke(
    python: Path, scratch: Path, server_log: Path, started: list, n_steps: int, timeout: float
) -> None:
    runs_dir, data_dir, tmp_dir = scratch / "runs", scratch / "data", scratch / "tmp"
    for folder in (runs_dir, data_dir, tmp_dir):
        folder.mkdir()
    # the scratch TMPDIR holds what the server keeps in temporary folders (background jobs)
    env = {**_clean_env(), "TMPDIR": str(tmp_dir), "VOXELBOARD_DATA_DIR": str(data_dir)}
    port = _free_port()
    base = f"http://127.0.0.1:{port}"

    with _step("dashboard answers"):
        server = _start(
            [python, "run.py", "--host", "127.0.0.1", "--port", str(port),
             "--runs-dir", runs_dir, "--data-dir", data_dir, "--configs-dir", REPO / "examples"],
            env, server_log, started,
        )  # fmt: skip
        _wait_for_server(base, server, timeout)

    with _step(f"training {DEMO_CONFIG.name} for {n_steps} steps"):
        train_log = scratch / "train.log"
        train = _start(
            [python, "run.py", "train", DEMO_CONFIG, "--n-steps", str(n_steps),
             "--save-path", runs_dir, "--save-name", RUN_NAME, "--device", "cpu"],
            env, train_log, started,
        )  # fmt: skip
        try:
            rc = train.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SmokeFailure(f"training did not finish within {timeout:.0f} s") from None
        if rc != 0:
            _print_tail(train_log, "training output")
            raise SmokeFailure(f"run.py train exited with status {rc}")
    run_dir = runs_dir / RUN_NAME

    with _step("background evaluation through the server"):
        response = _evaluate(base, server, timeout)

    with _step("checking the result"):
        _check_result(run_dir, response)


# ----------------------------------------------------------------------- the Dash protocol


def _evaluate(base: str, server: subprocess.Popen, timeout: float) -> dict:
    """Press Evaluate on the run's evaluation page; the final callback response."""
    page = _request(f"{base}/run/{RUN_NAME}/evaluation", base)
    end_id = _dash_config(page).get("end_id")
    deps = json.loads(_request(f"{base}/_dash-dependencies", base))
    spec = _find_callback(deps, DONE_OUTPUT)
    payload = _payload(spec, {BUTTON: 1, RUN_STORE: RUN_NAME}, changed=BUTTON)
    interval = (spec.get("background") or {}).get("interval", 1000) / 1000

    args = {"endId": end_id} if end_id else {}
    first = _post_callback(base, payload, args)
    if "cacheKey" not in first or "job" not in first:
        raise SmokeFailure(f"the evaluate callback did not start a background job: {first}")
    args = {**args, "cacheKey": first["cacheKey"], "job": first["job"]}
    # the browser sends the handles and empties the values while it polls
    poll = {
        **payload,
        "inputs": [{**i, "value": None} for i in payload["inputs"]],
        "state": [{**s, "value": None} for s in payload["state"]],
    }
    deadline, shown = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SmokeFailure(f"the dashboard server exited with status {server.returncode}")
        data = _post_callback(base, poll, args)
        progress = data.get("progress")
        if progress and progress != shown:
            shown = progress
            print(f"    progress: {list(progress.values())}", flush=True)
        if "response" in data:
            return data["response"]
        time.sleep(interval)
    raise SmokeFailure(f"the background evaluation gave no result within {timeout:.0f} s")


def _dash_config(page: str) -> dict:
    match = re.search(r'<script id="_dash-config" type="application/json">(.*?)</script>', page)
    if match is None:
        raise SmokeFailure("the evaluation page has no _dash-config script: not a Dash page")
    return json.loads(match.group(1))


def _find_callback(deps: list[dict], output: str) -> dict:
    found = [d for d in deps if output in {o.split("@")[0] for o in _outputs(d["output"])}]
    if len(found) != 1:
        raise SmokeFailure(
            f"expected one callback with output {output} in /_dash-dependencies, found "
            f"{len(found)}: has the evaluation page's Evaluate callback been renamed?"
        )
    if not found[0].get("background"):
        raise SmokeFailure(f"the callback writing {output} is no longer a background callback")
    return found[0]


def _outputs(output: str) -> list[str]:
    """``'..a.b...c.d@x..'`` -> ``['a.b', 'c.d@x']``: the parts of Dash's multi-output id.

    ``@x`` marks an ``allow_duplicate`` output; the browser sends it back as it is.
    """
    return output[2:-2].split("...") if output.startswith("..") else [output]


def _payload(spec: dict, values: dict, changed: str) -> dict:
    """The body a browser posts for ``spec``, with ``values`` by ``id.property`` (else null)."""

    def with_values(deps: list[dict]) -> list[dict]:
        return [{**d, "value": values.get(f"{d['id']}.{d['property']}")} for d in deps]

    inputs = with_values(spec["inputs"])
    if changed not in {f"{i['id']}.{i['property']}" for i in inputs}:
        raise SmokeFailure(f"the callback writing {DONE_OUTPUT} is not triggered by {changed}")
    outputs = [dict(zip(("id", "property"), o.rsplit(".", 1))) for o in _outputs(spec["output"])]
    return {
        "output": spec["output"],
        "outputs": outputs if spec["output"].startswith("..") else outputs[0],
        "inputs": inputs,
        "state": with_values(spec.get("state", [])),
        "changedPropIds": [changed],
    }


def _post_callback(base: str, payload: dict, args: dict) -> dict:
    url = f"{base}/_dash-update-component"
    if args:
        url += "?" + urllib.parse.urlencode(args)
    body = _request(url, base, json.dumps(payload).encode())
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise SmokeFailure(f"callback answered with non-JSON: {body[:200]!r}") from None


def _request(url: str, base: str, body: bytes | None = None) -> str:
    """GET (or POST ``body``) with a browser's headers: same Origin, JSON content type."""
    headers = {"Origin": base, "Referer": f"{base}/", "Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as res:
            if res.status == 204:
                raise SmokeFailure(f"{url}: 204, the callback prevented its update")
            return res.read().decode()
    except urllib.error.HTTPError as e:
        # Flask's error page is HTML: its words are enough, the cause is in the server log
        detail = " ".join(re.sub(r"<[^>]+>", " ", e.read().decode(errors="replace")).split())
        raise SmokeFailure(f"{url}: HTTP {e.code} {e.reason}: {detail[:300]}") from None
    except urllib.error.URLError as e:
        raise SmokeFailure(f"{url}: {e.reason}") from None


def _check_result(run_dir: Path, response: dict) -> None:
    done = (response.get("eval-done") or {}).get("data")
    message = (response.get("eval-bg-msg") or {}).get("children")
    if not isinstance(done, dict) or not done.get("result"):
        raise SmokeFailure(f"the evaluation gave no result; page message: {message!r}")
    result = done["result"]
    path = run_dir / "eval" / f"{result}.h5"
    try:
        with path.open("rb") as f:
            head = f.read(len(HDF5_SIGNATURE))
    except OSError as e:
        raise SmokeFailure(f"the response names result {result!r} but {path}: {e}") from None
    if head != HDF5_SIGNATURE:
        raise SmokeFailure(f"{path} is not an HDF5 file")
    print(f"    result {result!r}: {path.relative_to(run_dir.parent)}, {path.stat().st_size} bytes")


# ------------------------------------------------------------------ processes and the server


@contextmanager
def _processes() -> Iterator[list[subprocess.Popen]]:
    """A list to append started processes to; each one's process group is ended on exit."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        # a second Ctrl+C or SIGTERM must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in reversed(started):
            _stop_group(proc)


def _stopped(signum: int, frame: object) -> None:
    raise SmokeFailure(f"stopped by {signal.Signals(signum).name}")


def _start(cmd: list, env: dict, log: Path, started: list) -> subprocess.Popen:
    with log.open("wb") as out:
        # a session of its own: the group holds the process and everything it forks
        proc = subprocess.Popen(
            [str(c) for c in cmd], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    started.append(proc)
    return proc


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds, reap."""
    pgid = proc.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(pgid):
            proc.poll()
            time.sleep(0.1)
        if not _group_alive(pgid):
            break
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        print(f"smoke test: process {proc.pid} did not exit", file=sys.stderr)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie leader still counts until it is reaped: ask /proc where there is one
    try:
        return any(
            _pgid_of(p) == pgid and _state_of(p) != "Z" for p in Path("/proc").glob("[0-9]*")
        )
    except OSError:
        return True


def _pgid_of(proc_dir: Path) -> int | None:
    try:
        return int(proc_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def _state_of(proc_dir: Path) -> str:
    try:
        return proc_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def _wait_for_server(base: str, server: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SmokeFailure(f"the dashboard exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{base}/", timeout=5) as res:
                if res.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise SmokeFailure(f"the dashboard did not answer on {base} within {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This environment without what could let the clean interpreter import from elsewhere."""
    drop = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONUSERBASE"}
    return {k: v for k, v in os.environ.items() if k not in drop} | {"PYTHONUNBUFFERED": "1"}


@contextmanager
def _step(what: str) -> Iterator[None]:
    t0 = time.monotonic()
    print(f"  {what} ...", flush=True)
    yield
    print(f"  {what}: {time.monotonic() - t0:.1f} s", flush=True)


def _print_tail(path: Path, title: str, lines: int = 40) -> None:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return
    if tail:
        print(f"--- last {len(tail)} lines of the {title} ---", file=sys.stderr)
        print("\n".join(tail), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

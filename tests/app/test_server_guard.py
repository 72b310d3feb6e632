"""The served dashboard, through real ``python run.py`` processes on 127.0.0.1.

What a visitor can send and what a stop signal does: the debugger behind the Host check and
the login (and refused off loopback), the request body limit (413 before the body is read,
memory flat), the cross-site check on state-changing requests, and a clean exit on SIGTERM
that removes the background-job folder.

Waits are bounded so a broken server fails the test instead of hanging it; no duration is
asserted.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.security import MAX_BODY_BYTES, MAX_CALLBACK_BODY_BYTES

REPO = Path(__file__).resolve().parents[2]
#: upper bound for a server to start or stop (a bound, not an expectation)
WAIT_S = 120
#: a body far over the limit, declared and only partly sent
HUGE = 900 * 1024 * 1024
#: what the chunked memory test streams at the server
STREAMED = 300 * 1024 * 1024
USER, PASSWORD = "alice", "s3cret"


# ------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """Demo data made once, shared by every server these tests start."""
    from trainer.synthetic import ensure_demo_data

    folder = tmp_path_factory.mktemp("demo-data")
    ensure_demo_data(folder)
    return folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _basic(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Server:
    """A running ``python run.py`` dashboard and plain HTTP requests to it."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log
        self.origin = f"http://127.0.0.1:{port}"

    def request(
        self, method: str, path: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, bytes]:
        """(status, body); header names with ``_`` for ``-`` (``Content_Type``)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            sent = {"Host": f"127.0.0.1:{self.port}"}
            sent.update({k.replace("_", "-"): v for k, v in headers.items()})
            conn.request(method, path, body, sent)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def raw(self, head: bytes, body_part: bytes = b"") -> bytes:
        """Send a hand-written request head and (part of) a body; the server's answer.

        A server that answers early and closes may cut the sending short; the answer it
        sent is read all the same.
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as s:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.sendall(head + body_part)
            return _read_answer(s)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def _status(answer: bytes) -> int:
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert m, f"no HTTP answer: {answer[:200]!r}"
    return int(m.group(1))


def _command(port: int, runs: Path, data_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "run.py", "--port", str(port), "--runs-dir", str(runs),
        "--data-dir", str(data_dir), "--configs-dir", "examples", *extra,
    ]  # fmt: skip


@contextlib.contextmanager
def dashboard(tmp_path: Path, data_dir: Path, *extra: str, auth: str = "") -> Iterator[Server]:
    """``python run.py`` on a free loopback port, up and answering; stopped afterwards."""
    port = _free_port()
    log = tmp_path / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _command(port, tmp_path / "runs", data_dir, *extra),
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, port, log)
    try:
        _wait_until_up(server, auth)
        yield server
    finally:
        _stop(proc)


def _wait_until_up(server: Server, auth: str) -> None:
    deadline = time.monotonic() + WAIT_S
    headers = {"Authorization": auth} if auth else {}
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log_text()}")
        with contextlib.suppress(OSError):
            if server.request("GET", "/", **headers)[0] == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"server did not answer within {WAIT_S} s:\n{server.log_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT_S)


def _router_call(path: str = "/", padding: int = 0) -> bytes:
    """The request Dash's page router sends on navigation (a real, harmless callback)."""
    body = {
        "output": ".._pages_content.children..._pages_store.data..",
        "outputs": [
            {"id": "_pages_content", "property": "children"},
            {"id": "_pages_store", "property": "data"},
        ],
        "inputs": [
            {"id": "_pages_location", "property": "pathname", "value": path},
            {"id": "_pages_location", "property": "search", "value": ""},
        ],
        "changedPropIds": ["_pages_location.pathname"],
        "state": [],
    }
    text = json.dumps(body)
    if padding:
        # pad with JSON whitespace to an exact size: still one valid callback request
        text = text[:-1] + " " * (padding - len(text.encode())) + "}"
    return text.encode()


def _peak_rss(pid: int) -> int:
    """Highest resident memory the process has had so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


# ------------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1"])
def test_debug_refused_on_non_loopback_host_even_with_auth(tmp_path, data_dir, host):
    users = tmp_path / "users.txt"
    users.write_text(f"{USER}:{PASSWORD}\n")
    log = tmp_path / "out.log"
    cmd = _command(_free_port(), tmp_path / "runs", data_dir)
    cmd += ["--debug", "--host", host, "--auth-file", str(users)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + WAIT_S
        # a server that starts anyway is stopped the moment it says so
        while proc.poll() is None and time.monotonic() < deadline:
            if "Serving" in log.read_text() or "Running on" in log.read_text():
                break
            time.sleep(0.1)
    finally:
        _stop(proc)
    lines = log.read_text().strip().splitlines()
    assert proc.returncode == 2, log.read_text()
    assert len(lines) == 1, lines
    assert "--debug" in lines[0] and host in lines[0] and "127.0.0.1" in lines[0]


def test_debugger_sits_behind_the_host_check_and_the_login(tmp_path, data_dir):
    users = tmp_path / "users.txt"
    users.write_text(f"{USER}:{PASSWORD}\n")
    login = _basic()
    with dashboard(tmp_path, data_dir, "--debug", "--auth-file", str(users), auth=login) as srv:
        status, page = srv.request("GET", "/console", Authorization=login)
        assert status == 200 and b"Console" in page  # the console is really served
        secret = re.search(rb'SECRET = "([^"]+)"', page).group(1).decode()
        resource = "/?__debugger__=yes&cmd=resource&f=debugger.js"
        pin_try = f"/?__debugger__=yes&cmd=pinauth&pin=123-456-789&s={secret}"
        for path in ("/console", resource, pin_try):
            assert srv.request("GET", path)[0] == 401, path
            assert srv.request("GET", path, Authorization=_basic(USER, "wrong"))[0] == 401
            assert srv.request("GET", path, Host="evil.example", Authorization=login)[0] == 400
            foreign = f"rebind.example:{srv.port}"
            assert srv.request("GET", path, Host=foreign, Authorization=login)[0] == 400
        assert srv.request("GET", resource, Authorization=login)[0] == 200
        status, answer = srv.request("GET", pin_try, Authorization=login)
        assert status == 200 and json.loads(answer)["auth"] is False

        # the debug server has no body limit of its own: the guard refuses by the header
        head = (
            f"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: {login}\r\nContent-Type: application/json\r\n"
        ).encode()
        answer = srv.raw(head + f"Content-Length: {HUGE}\r\n\r\n".encode(), b"x" * 65536)
        assert _status(answer) == 413
        chunked = head + b"Transfer-Encoding: chunked\r\n\r\n"
        assert _status(srv.raw(chunked, b"10000\r\n" + b"x" * 0x10000 + b"\r\n")) == 411
        status, _ = srv.request(
            "POST", "/_dash-update-component", _router_call(),
            Content_Type="application/json", Authorization=login, Origin=srv.origin,
        )  # fmt: skip
        assert status == 200


# ------------------------------------------------------------------------------- waitress


@pytest.fixture(scope="module")
def served(tmp_path_factory, data_dir) -> Iterator[Server]:
    """One plain loopback dashboard (waitress, no auth) for the request tests below, its pages
    refreshed every 0.75 s (``--refresh``)."""
    with dashboard(tmp_path_factory.mktemp("served"), data_dir, "--refresh", "0.75") as srv:
        yield srv


def test_the_refresh_option_reaches_the_page_intervals(served):
    status, answer = served.request(
        "POST", "/_dash-update-component", _router_call("/"), Content_Type="application/json"
    )
    assert status == 200, answer[:300]
    page = json.loads(answer)["response"]["_pages_content"]["children"]
    found = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Interval":
                found[node["props"]["id"]] = node["props"]["interval"]
            any(walk(v) for v in node.values())
        elif isinstance(node, list):
            any(walk(v) for v in node)

    walk(page)
    # the runs table every refresh, the CPU/RAM/GPU panel every 2.5 refreshes
    assert found == {"exp-interval": 750, "exp-sys-interval": 1875}


def test_huge_declared_body_is_refused_before_it_is_sent(served):
    head = (
        f"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"
    ).encode()
    answer = served.raw(head, b"{" + b" " * 65535)  # 64 KiB of the 900 MiB
    assert _status(answer) == 413


def _post_sized(server: Server, path: str, size: int) -> bytes:
    body = _router_call(padding=size)
    assert len(body) == size
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    return server.raw(head, body)


def test_body_limit_is_exact(served):
    # other paths: MAX_BODY_BYTES (no route takes a body; Flask answers 405)
    for size, expected in ((MAX_BODY_BYTES, 405), (MAX_BODY_BYTES + 1, 413)):
        assert _status(_post_sized(served, "/", size)) == expected, size


def test_callback_body_limit_is_exact_and_says_so_in_one_line(served):
    limit = MAX_CALLBACK_BODY_BYTES
    assert _status(_post_sized(served, "/_dash-update-component", limit)) == 200
    conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:  # the whole answer, body included
        conn.request(
            "POST",
            "/_dash-update-component",
            _router_call(padding=limit + 1),
            {"Host": f"127.0.0.1:{served.port}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        status, text = response.status, response.read().decode()
    finally:
        conn.close()
    assert status == 413
    assert text == f"request body of {limit + 1} bytes refused: the limit is {limit} bytes\n"


def test_streamed_chunked_body_is_cut_at_the_limit_and_memory_stays_flat(served):
    pid = served.proc.pid
    served.request("POST", "/_dash-update-component", _router_call(),
                   Content_Type="application/json")  # fmt: skip
    peak_before = _peak_rss(pid)
    head = (
        f"POST /_dash-update-component HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b"100000\r\n" + b" " * 0x100000 + b"\r\n"  # 1 MiB of JSON whitespace
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", served.port), timeout=60) as s:
        s.sendall(head)
        try:
            while sent < STREAMED:
                s.sendall(chunk)
                sent += 0x100000
            s.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading and closed the connection
        answer = _read_answer(s)
    peak_after = _peak_rss(pid)
    print(
        f"streamed {sent >> 20} of {STREAMED >> 20} MiB; server peak RSS "
        f"{peak_before >> 20} -> {peak_after >> 20} MiB"
    )
    assert sent < STREAMED
    if answer:
        assert _status(answer) == 413
    assert peak_after - peak_before < STREAMED // 4
    assert served.request("GET", "/")[0] == 200  # and it still serves


def _post_callback(server: Server, headers: dict[str, str]) -> tuple[int, bytes]:
    filled = {k: v.format(origin=server.origin, port=server.port) for k, v in headers.items()}
    return server.request(
        "POST", "/_dash-update-component", _router_call(),
        Content_Type="application/json", **filled,
    )  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "null"},
        {"Origin": ""},
        {"Referer": "http://evil.example/page"},
        {"Origin": "http://evil.example", "Referer": "{origin}/"},
        {"Origin": "http://127.0.0.1:{port}@evil.example"},
    ],
    ids=[
        "foreign-origin",
        "other-port",
        "null-origin",
        "empty-origin",
        "foreign-referer",
        "origin-wins-over-referer",
        "userinfo-trick",
    ],
)
def test_cross_site_post_is_refused(served, headers):
    status, answer = _post_callback(served, headers)
    assert status == 403, answer[:300]
    assert b"cross-site POST refused" in answer


def test_same_origin_pages_and_scripts_keep_working(served):
    allowed = [
        {},  # a script or curl: no Origin, no Referer
        {"Origin": "{origin}"},
        {"Referer": "{origin}/experiments"},
        {"Origin": "http://localhost:{port}"},
    ]
    for headers in allowed:
        status, answer = _post_callback(served, headers)
        assert status == 200, (headers, answer[:300])
        assert b"_pages_content" in answer
    # the very same request from a foreign page
    assert _post_callback(served, {"Origin": "http://evil.example"})[0] == 403


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_state_changing_methods_are_checked_too(served, method):
    status, answer = served.request(method, "/", b"", Origin="http://evil.example")
    assert status == 403 and f"cross-site {method} refused".encode() in answer
    assert served.request(method, "/", b"", Origin=served.origin)[0] == 405  # Flask's own
    # reading is not refused: a GET changes nothing
    assert served.request("GET", "/", Origin="http://evil.example")[0] == 200


# ------------------------------------------------------------------------------- SIGTERM


def _job_folders(pid: int) -> list[Path]:
    """The background-job folder(s) of process ``pid``: ``voxelboard-dash-<uid>-<pid>[-*]``."""
    tmp = Path(tempfile.gettempdir())
    prefix = f"voxelboard-dash-{os.getuid()}-{pid}"
    return [p for p in tmp.glob(prefix + "*") if p.name == prefix or p.name[len(prefix)] == "-"]


def test_sigterm_exits_cleanly_and_removes_the_job_folder(tmp_path, data_dir):
    with dashboard(tmp_path, data_dir) as srv:
        pid = srv.proc.pid
        # a page visit; the job folder exists from here on at the latest
        srv.request("POST", "/_dash-update-component", _router_call("/evaluation"),
                    Content_Type="application/json")  # fmt: skip
        deadline = time.monotonic() + WAIT_S
        while not _job_folders(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        folders = _job_folders(pid)
        assert folders, "the dashboard made no background-job folder"
        srv.proc.send_signal(signal.SIGTERM)
        try:
            returncode = srv.proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit after SIGTERM:\n{srv.log_text()}")
    assert returncode == 0, srv.log_text()  # the Ctrl+C path: serve returns, exit 0
    assert [p for p in folders if p.exists()] == []
    assert "Traceback" not in srv.log_text()

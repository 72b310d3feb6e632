"""Load-attack benchmark: what scripted clients do to one visitor of a served dashboard.

    python bench/bench_attack.py                          # 20 s per phase
    python bench/bench_attack.py --seconds 10 --baseline-rev 083ea07

A real dashboard (``python run.py`` under waitress, as served) on 127.0.0.1 over a runs folder
with a few runs with histories and one evaluated run whose result holds the neuron scores of a
64 x 128 x 128 demo cube (``bench_neurons_page.make_run``). One visitor thread loops over the
requests a visitor's pages send (the page shell, the runs table page's layout, the evaluation
page's poll) and its latencies are kept; the server's resident memory is sampled (psutil).

1. Segmentation attack: 10 clients, each with its own page id, loop the evaluation page's
   segmentation callback (threshold -> components -> scores, tens of ms of CPU each) with a
   new threshold per request, as fast as the answers come. Run twice in the same process
   start-up order: with the segmentation bound lifted (``VOXELBOARD_MAX_SEGMENTATIONS=0``,
   the baseline) and with the default bound (half the cores). Prints the visitor's p50/p95,
   the ratio after/before and what the attackers got (drawn, busy, superseded, errors).
   Goal: visitor p95 < 200 ms with the bound.
2. Body attack: 8 clients loop 8.25 MB callback bodies (a JSON list of small numbers, just
   under the 8 MiB of the old limit). Prints the server's resident memory growth (peak during
   the attack minus before), the visitor's p95 and the attackers' answers. With
   ``--baseline-rev REV`` the same attack also runs against the dashboard of commit ``REV``
   (exported with ``git archive`` into a temporary folder), for a before/after in one run.
   Goals: growth < 100 MB, visitor p95 < 500 ms.

It also prints the largest request the pages send (the runs table's selected row with its
sparklines, the evaluation page's poll and segmentation requests), which the callback body
limit (``app.security.MAX_CALLBACK_BODY_BYTES``) must leave room for.

Numbers move with the machine's load: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_dashboard import make_run as make_history_run  # noqa: E402
from bench_neurons_page import RUN as EVAL_RUN  # noqa: E402
from bench_neurons_page import make_run as make_eval_run  # noqa: E402

from app.limits import SEGMENTATIONS_ENV  # noqa: E402

CALLBACK = "/_dash-update-component"
#: the body attack's size: just under the old 8 MiB limit
BODY_ATTACK_BYTES = 8_250_000
WAIT_S = 180


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """``python run.py`` of ``repo`` on a free loopback port; stopped by ``close``."""

    def __init__(self, repo: Path, runs: Path, data: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tempfile.TemporaryFile()
        cmd = [sys.executable, str(repo / "run.py"), "--port", str(self.port),
               "--runs-dir", str(runs), "--data-dir", str(data),
               "--configs-dir", str(repo / "examples")]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, cwd=runs.parent, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )  # fmt: skip
        end = time.time() + WAIT_S
        while time.time() < end:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"dashboard exited: {self.log.read()[-3000:]!r}")
            try:
                if self.request("GET", "/_dash-layout")[0] == 200:
                    return
            except OSError:
                time.sleep(0.3)
        self.close()
        raise RuntimeError(f"dashboard did not answer within {WAIT_S} s")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = {"Host": f"127.0.0.1:{self.port}", "Content-Type": "application/json"}
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)


# --------------------------------------------------------------------- callback requests


class Callback:
    """One entry of ``/_dash-dependencies`` and the request bodies a browser builds from it."""

    def __init__(self, dep: dict) -> None:
        self.output = dep["output"]
        specs = self.output[2:-2].split("...") if self.output.startswith("..") else [self.output]
        self.outputs = [dict(zip(("id", "property"), s.rsplit(".", 1))) for s in specs]
        self.inputs = [(i["id"], i["property"]) for i in dep["inputs"]]
        self.state = [(s["id"], s["property"]) for s in dep["state"]]

    def body(self, values: dict[str, Any], changed: str) -> bytes:
        def entries(slots):
            return [{"id": c, "property": p, "value": values.get(f"{c}.{p}")} for c, p in slots]

        return json.dumps(
            {
                "output": self.output,
                "outputs": self.outputs if len(self.outputs) > 1 else self.outputs[0],
                "inputs": entries(self.inputs),
                "state": entries(self.state),
                "changedPropIds": [changed],
            }
        ).encode()


def callbacks(server: Served) -> dict[str, Callback]:
    status, text = server.request("GET", "/_dash-dependencies")
    assert status == 200, status
    return {d["output"]: Callback(d) for d in json.loads(text)}


def find(cbs: dict[str, Callback], marker: str) -> Callback:
    return next(cb for out, cb in cbs.items() if marker in out)


def layout_values(server: Served, cbs: dict[str, Callback], path: str) -> dict[str, Any]:
    """Every ``id.prop`` value in the layout of page ``path`` (what a browser holds)."""
    router = find(cbs, "_pages_content.children")
    values = {"_pages_location.pathname": path, "_pages_location.search": ""}
    status, text = server.request("POST", CALLBACK, router.body(values, "_pages_location.pathname"))
    assert status == 200, (status, text[:300])
    out: dict[str, Any] = {}
    _collect(json.loads(text), out)
    return out


def _collect(node: Any, out: dict[str, Any]) -> None:
    if isinstance(node, list):
        for child in node:
            _collect(child, out)
    elif isinstance(node, dict):
        props = node.get("props")
        if isinstance(props, dict) and isinstance(props.get("id"), str):
            for prop, value in props.items():
                if prop != "children":
                    out[f"{props['id']}.{prop}"] = value
        for value in node.values():
            _collect(value, out)


# --------------------------------------------------------------------------------- load


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else float("nan")


class Visitor(threading.Thread):
    """Loops over a visitor's requests (one every ``pause_s``) and keeps their latencies."""

    def __init__(self, server: Served, requests: list[tuple[str, str, bytes | None]]) -> None:
        super().__init__(daemon=True)
        self.server, self.requests = server, requests
        self.times: list[float] = []
        self.errors = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        for method, path, body in itertools.cycle(self.requests):
            if self.stop.is_set():
                return
            t0 = time.perf_counter()
            try:
                status, _ = self.server.request(method, path, body)
            except OSError as e:
                status = type(e).__name__
            self.times.append((time.perf_counter() - t0) * 1000)
            if status not in (200, 204):
                self.errors[status] += 1
            self.stop.wait(0.1)


class Memory(threading.Thread):
    """Samples the server's resident memory every 0.1 s; ``peak`` is the highest seen."""

    def __init__(self, server: Served) -> None:
        super().__init__(daemon=True)
        self.server, self.peak, self.stop = server, server.rss(), threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.1):
            try:
                self.peak = max(self.peak, self.server.rss())
            except psutil.Error:
                return


def attack(server: Served, visitor_requests, bodies, seconds: float) -> dict[str, Any]:
    """``len(bodies)`` clients loop their bodies (a callable of the step) for ``seconds`` while
    the visitor loops its requests; the visitor's latencies, the answers, the memory."""
    answers: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client(body_of) -> None:
        for step in itertools.count():
            if stop.is_set():
                return
            try:
                status, text = server.request("POST", CALLBACK, body_of(step))
                kind = status
                if status == 200 and b"busy: " in text:
                    kind = "200 busy"
                elif status == 200 and b'"eval-seg"' in text:
                    kind = "200 drawn"
            except OSError as e:
                kind = type(e).__name__
            with lock:
                answers[kind] += 1

    rss_before = server.rss()
    memory, visitor = Memory(server), Visitor(server, visitor_requests)
    threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in bodies]
    memory.start()
    visitor.start()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    visitor.stop.set()
    for t in threads:
        t.join(120)
    visitor.join(120)
    memory.stop.set()
    memory.join()
    return {
        "times": visitor.times,
        "errors": visitor.errors,
        "answers": answers,
        "rss_before": rss_before,
        "rss_peak": memory.peak,
        "rss_after": server.rss(),
    }


def describe(label: str, r: dict[str, Any]) -> str:
    t = r["times"]
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(r["answers"].items(), key=str))
    return (
        f"{label}: visitor {len(t)} requests, p50 {statistics.median(t) if t else 0:.0f} ms, "
        f"p95 {pct(t, 0.95):.0f} ms, errors {dict(r['errors']) or 0}; attackers: {answers or '-'}"
        f"; server RSS {r['rss_before'] >> 20} MB before, peak {r['rss_peak'] >> 20} MB "
        f"(+{(r['rss_peak'] - r['rss_before']) >> 20} MB), {r['rss_after'] >> 20} MB after"
    )


# ------------------------------------------------------------------------------ phases


def visitor_requests(cbs: dict[str, Callback], values: dict[str, Any]) -> list:
    router = find(cbs, "_pages_content.children")
    poll = find(cbs, "eval-files.data")
    page = {"_pages_location.pathname": "/", "_pages_location.search": ""}
    return [
        ("GET", "/", None),
        ("POST", CALLBACK, router.body(page, "_pages_location.pathname")),
        ("POST", CALLBACK, poll.body({**values, "eval-poll.n_intervals": 1}, "eval-poll.n_intervals")),
    ]  # fmt: skip


def segmentation_bodies(cbs: dict[str, Callback], values: dict[str, Any], n: int) -> list:
    seg = find(cbs, "eval-t-answered.data")

    def body_of(client: int):
        def body(step: int) -> bytes:
            t = 0.3 + 0.4 * ((step * 7 + client) % 97) / 97  # a new threshold each time
            mine = {**values, "eval-t-server.data": t, "eval-client.data": f"attacker-{client}"}
            return seg.body(mine, "eval-t-server.data")

        return body

    return [body_of(i) for i in range(n)]


def big_body(cbs: dict[str, Callback]) -> bytes:
    """A callback request of ``BODY_ATTACK_BYTES``: the runs table's selection callback with
    a list of small numbers as its rows (about as costly to parse per byte as JSON gets)."""
    select = find(cbs, "exp-selected.data")
    head = select.body({"exp-table.selectedRows": "@"}, "exp-table.selectedRows")
    before, after = head.split(b'"@"')
    room = BODY_ATTACK_BYTES - len(before) - len(after) - 2  # between "[" and "]"
    ones = b",".join([b"1"] * ((room + 1) // 2))
    body = before + b"[" + ones + b" " * (room - len(ones)) + b"]" + after
    assert len(body) == BODY_ATTACK_BYTES, len(body)
    return body


def largest_requests(cbs: dict[str, Callback], server: Served, eval_values: dict) -> list:
    """(bytes, what) of the largest requests the pages send, largest first."""
    table = layout_values(server, cbs, "/")
    rows = table.get("exp-table.rowData") or []
    row = max(rows, key=lambda r: len(json.dumps(r)), default={})
    select = find(cbs, "exp-selected.data")
    sizes = [
        (len(select.body({"exp-table.selectedRows": [row]}, "exp-table.selectedRows")),
         f"runs table: select the largest row ({len(rows)} rows)"),
        (len(visitor_requests(cbs, eval_values)[2][2]), "evaluation page: poll"),
        (len(segmentation_bodies(cbs, eval_values, 1)[0](0)), "evaluation page: segmentation"),
    ]  # fmt: skip
    return sorted(sizes, reverse=True)


def make_folder(tmp: Path) -> tuple[Path, Path]:
    runs, data = tmp / "runs", tmp / "data"
    make_eval_run(runs)
    for i in range(6):  # a runs table with histories and long names
        make_history_run(runs, f"lab-{i:02d}-{'x' * 80}", n_timeline=20_000, n_history=400)
    from trainer.synthetic import ensure_demo_data

    ensure_demo_data(data)
    return runs, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--clients", type=int, default=10, help="segmentation attackers")
    parser.add_argument("--body-clients", type=int, default=8, help="8.25 MB body attackers")
    parser.add_argument("--baseline-rev", help="also run the body attack against this commit")
    args = parser.parse_args()

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="vb-bench-attack-"))
    try:
        runs, data = make_folder(tmp)
        results: dict[str, dict] = {}
        for label, env in (("bound lifted", {SEGMENTATIONS_ENV: "0"}), ("bound on", {})):
            server = Served(REPO, runs, data, env)
            try:
                cbs = callbacks(server)
                values = layout_values(server, cbs, f"/run/{EVAL_RUN}/evaluation")
                visits = visitor_requests(cbs, values)
                if label == "bound on":
                    for size, what in largest_requests(cbs, server, values):
                        print(f"request the pages send: {size:,} bytes ({what})")
                    quiet = attack(server, visits, [], args.seconds / 2)
                    print(describe("no attack (visitor alone)", quiet))
                    big = big_body(cbs)
                    results["bodies"] = attack(
                        server, visits, [lambda _s, b=big: b] * args.body_clients, args.seconds
                    )
                bodies = segmentation_bodies(cbs, values, args.clients)
                results[label] = attack(server, visits, bodies, args.seconds)
                print(describe(f"{args.clients} segmentation clients, {label}", results[label]))
            finally:
                server.close()
        before, after = results["bound lifted"]["times"], results["bound on"]["times"]
        print(
            f"visitor p95 under the segmentation attack: {pct(before, 0.95):.0f} ms -> "
            f"{pct(after, 0.95):.0f} ms ({pct(after, 0.95) / pct(before, 0.95):.2f}x; "
            f"goal < 200 ms: {pct(after, 0.95) / 200:.2f}x the goal)"
        )
        if args.baseline_rev:
            base = tmp / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(REPO), "archive", args.baseline_rev],
                check=True, capture_output=True,
            ).stdout  # fmt: skip
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            server = Served(base, runs, data, {})
            try:
                cbs = callbacks(server)
                values = layout_values(server, cbs, f"/run/{EVAL_RUN}/evaluation")
                big = big_body(cbs)
                old = attack(
                    server, visitor_requests(cbs, values), [lambda _s, b=big: b] * args.body_clients,
                    args.seconds,
                )  # fmt: skip
                print(describe(f"{args.body_clients} body clients, {args.baseline_rev}", old))
            finally:
                server.close()
        r = results["bodies"]
        print(describe(f"{args.body_clients} body clients, this tree", r))
        growth = (r["rss_peak"] - r["rss_before"]) / 1e6
        print(
            f"body attack: RSS growth {growth:.0f} MB (goal < 100 MB: {growth / 100:.2f}x), "
            f"visitor p95 {pct(r['times'], 0.95):.0f} ms (goal < 500 ms: "
            f"{pct(r['times'], 0.95) / 500:.2f}x)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()
    print(
        "load average (1, 5, 15 min) before "
        + " ".join(f"{x:.2f}" for x in load_before)
        + ", after "
        + " ".join(f"{x:.2f}" for x in load_after)
        + f" on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()

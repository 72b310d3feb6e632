"""The dashboard process never imports torch: evaluation runs in the background job's process.

A fresh interpreter builds the app over a run with an evaluation result and its probability
cache, serves every page (the evaluation page among them) and answers every server-side
callback of the evaluation page as a browser would on loading it (result list, curves, the
segmentation view's cube list and slice). Afterwards ``torch`` must not be in its
``sys.modules``: a module the dashboard imports at page load that pulls torch in (e.g. the view
importing ``trainer.inference``) fails this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path

    sys.path[:0] = [{repo!r}, {here!r}]
    from test_callback_fuzz import Client, ErrorLog, write_evaluation, write_run

    from app import app_context, create_app

    root = Path(tempfile.mkdtemp())
    write_evaluation(write_run(root / "runs", "alpha", "finished"))
    app = create_app(root / "runs", root / "configs", root / "data", start_launcher=False, gpus=[])
    client = Client(app, ErrorLog())  # serves /, the run, preview and evaluation pages
    client.values.update({{"eval-run.data": "alpha", "eval-t.data": 0.5,
                          "eval-t-server.data": 0.5}})
    answered = {{}}
    for cb in client.callbacks:
        if cb.background or not any(o["id"].startswith("eval-") for o in cb.outputs):
            continue
        status, _answer, cause = client.post(cb.body(client.slot_values(cb)))
        answered[cb.name] = [status, cause]
    app_context(app).close()
    print(json.dumps({{"torch": "torch" in sys.modules, "answered": answered}}))
    """
)


def test_serving_the_evaluation_page_does_not_import_torch():
    script = SCRIPT.format(repo=str(REPO), here=str(HERE))
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    answered = out["answered"]
    # the page's loading callbacks really ran, and answered without an error
    for name in (
        "eval-result.options",
        "eval-data.data",
        "eval-seg-cube.options",
        "eval-seg.figure",
    ):
        assert any(name in k for k in answered), (name, sorted(answered))
    assert all(status == 200 and not cause for status, cause in answered.values()), answered
    assert out["torch"] is False, "serving the dashboard imported torch"

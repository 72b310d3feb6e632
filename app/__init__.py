"""VoxelBoard's dashboard: a Dash app that launches and watches training runs.

Build it with ``create_app``; ``serve`` in app/server.py runs it. Pages (``app/pages/``)
reach the per-app settings and the launcher through ``current_context()`` inside their
layouts and callbacks, so several apps can live in one process and no page keeps
per-user state in module globals.

Importing this package is cheap: Dash is imported when an app is created.

Example:
    >>> from app import create_app
    >>> app = create_app("runs", "examples", "data")  # doctest: +SKIP
    >>> app.server.test_client().get("/").status_code  # doctest: +SKIP
    200
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.refresh import DEFAULT_REFRESH_S, Intervals, check_refresh, intervals

if TYPE_CHECKING:
    import dash

    from app.launcher import Launcher

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: key of the ``AppContext`` in ``app.server.config``
CONTEXT_KEY = "VOXELBOARD"
#: config launched by ``demo=True`` when nothing runs
DEMO_CONFIG = "demo_cnn3d.py"


@dataclasses.dataclass
class AppContext:
    """Everything a page needs to know about the app it runs in.

    Attributes:
        runs_dir: folder of run directories.
        configs_dir: the first folder of launchable configs.
        configs_dirs: every folder of launchable configs (``--configs-dir`` given several
            times), in order; the launch form lists them grouped by folder.
        data_dir: data folder.
        read_only: hide and refuse launch, stop, resume and delete.
        demo: the app launched the demo config at start if nothing ran.
        launcher: this app's launcher (queue and children).
        jobs_dir: this app's background-job folder (Dash's job results and the evaluation
            slots); removed by ``close``.
        follow_links: read run files that resolve outside ``runs_dir`` through links; when
            off, every request reads inside ``reading()``.
        viewer_host: where the neuroglancer viewer's server binds, or ``None`` where it is
            not offered (a dashboard with a login, or read-only: see ``app.viewer``).
        refresh_s: seconds between two polls of a live page (``--refresh``); every page
            interval derives from it (``intervals``, see ``app.refresh``).
    """

    runs_dir: Path
    configs_dir: Path
    data_dir: Path
    read_only: bool
    demo: bool
    launcher: Launcher
    jobs_dir: Path
    follow_links: bool = False
    viewer_host: str | None = None
    configs_dirs: tuple[Path, ...] = ()
    refresh_s: float = DEFAULT_REFRESH_S

    def __post_init__(self) -> None:
        if not self.configs_dirs:
            self.configs_dirs = (self.configs_dir,)

    @property
    def intervals(self) -> Intervals:
        """The pages' poll intervals in ms, all derived from ``refresh_s``."""
        return intervals(self.refresh_s)

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A block in which readers of run files refuse those resolving outside ``runs_dir``
        (``trainer.runs.confine``), unless the app follows links."""
        if self.follow_links:
            yield
            return
        from trainer.runs.confine import confined_to

        with confined_to(self.runs_dir):
            yield

    def close(self) -> None:
        """Stop the scheduler thread and background jobs, remove the job folder.

        Training runs keep running (a later dashboard re-attaches to them).
        """
        self.launcher.close()
        _close_jobs(self.jobs_dir)
        if self.viewer_host is not None:
            from app import viewer

            viewer.stop()


def current_context() -> AppContext:
    """The ``AppContext`` of the app serving the current request (layouts, callbacks).

    In a background job (a process forked from the server) there is no request: the job's
    app is the one Dash knows as the current app.
    """
    import flask

    if flask.has_app_context():
        return flask.current_app.config[CONTEXT_KEY]
    import dash

    return app_context(dash.get_app())


def changes_runs(func: Callable) -> Callable:
    """Mark a callback that writes under the runs folder or starts a process.

    Apply it under ``@callback``. A read-only app refuses every request for such a callback
    with 403 before Dash runs it, so a forged request cannot start it either; pages also
    leave its controls out of their read-only layouts.
    """
    func.changes_runs = True
    return func


def app_context(app: dash.Dash) -> AppContext:
    """The ``AppContext`` of ``app`` (outside a request, e.g. in tests)."""
    return app.server.config[CONTEXT_KEY]


def create_app(
    runs_dir: str | Path,
    configs_dir: str | Path | Sequence[str | Path],
    data_dir: str | Path,
    read_only: bool = False,
    demo: bool = False,
    auth: Mapping[str, str] | None = None,
    allowed_hosts: set[str] | None = None,
    *,
    python: str | None = None,
    run_py: str | Path | None = None,
    max_cpu_runs: int = 1,
    grace_s: float = 10.0,
    gpus: list[int] | None = None,
    start_launcher: bool = True,
    demo_config: str = DEMO_CONFIG,
    backend: str = "local",
    slurm_defaults: Mapping[str, Any] | None = None,
    slurm_poll_s: float = 10.0,
    follow_links: bool = False,
    viewer_host: str = "127.0.0.1",
    refresh_s: float = DEFAULT_REFRESH_S,
) -> dash.Dash:
    """Build the dashboard.

    Args:
        runs_dir: folder of run directories (created when the first run is launched).
        configs_dir: the only folder configs may be launched from, or a list of folders
            (the launch form lists each folder's configs under its name; a bare config
            name, such as ``demo_config``, is looked up in them in order).
        data_dir: data folder, passed on to launched runs.
        read_only: hide launch/stop/resume/delete and refuse them on the server.
        demo: launch ``demo_config`` now unless a run is already running or queued.
        auth: ``{user: password}`` for HTTP basic auth on every route, or ``None``.
        allowed_hosts: accepted Host headers (``name`` or ``name:port``); ``None`` allows
            the loopback names on any port (see ``app.security.allowed_hosts_for``).
        python: interpreter for launched runs (default: this one).
        run_py: the ``run.py`` launched runs execute (default: the repository's).
        max_cpu_runs: CPU runs at once; more wait in the queue.
        grace_s: seconds between SIGTERM and SIGKILL when stopping.
        gpus: GPU indices to schedule on (default: ask NVML).
        start_launcher: start the scheduler thread (``AppContext.close`` stops it).
        demo_config: the config ``demo`` launches.
        backend: ``local`` (children on this machine) or ``slurm`` (batch jobs; see
            docs/cluster.md).
        slurm_defaults: Slurm resources (``partition``, ``account``, ``gpus``, ``cpus``,
            ``mem``, ``time``) for launches that set none.
        slurm_poll_s: seconds between two ``squeue`` calls.
        follow_links: show run files and run folders that are links to places outside
            ``runs_dir``; by default every page refuses them, naming the file.
        viewer_host: where the "Open in neuroglancer" viewer's server binds (the dashboard's
            own address); the button is not offered with ``auth`` or ``read_only``.
        refresh_s: seconds between two polls of a live page (the runs table, a run, a sweep,
            the jobs); the other pages' intervals are multiples of it (``app.refresh``).

    Returns:
        The ``dash.Dash`` app; its Flask server is ``app.server``.

    Raises:
        ValueError: ``refresh_s`` outside ``app.refresh.MIN_REFRESH_S..MAX_REFRESH_S``.
    """
    refresh_s = check_refresh(refresh_s)  # before anything starts
    import dash
    from dash import html

    from app import callbacks, components, pages
    from app.launcher import Launcher
    from app.security import GuardMiddleware

    launcher_kwargs: dict[str, Any] = {
        "max_cpu_runs": max_cpu_runs,
        "grace_s": grace_s,
        "backend": backend,
        "slurm_defaults": slurm_defaults,
        "slurm_poll_s": slurm_poll_s,
    }
    if python:
        launcher_kwargs["python"] = python
    if run_py:
        launcher_kwargs["run_py"] = run_py
    launcher = Launcher(runs_dir, configs_dir, data_dir, gpus=gpus, **launcher_kwargs)
    jobs_dir, manager = _background_manager()
    context = AppContext(
        runs_dir=Path(runs_dir).absolute(),
        configs_dir=launcher.configs_dir,
        configs_dirs=launcher.configs_dirs,
        data_dir=Path(data_dir).absolute(),
        read_only=bool(read_only),
        demo=bool(demo),
        launcher=launcher,
        jobs_dir=jobs_dir,
        follow_links=bool(follow_links),
        # neuroglancer's server has no login of its own: offered only where none is needed
        viewer_host=None if read_only or auth else viewer_host,
        refresh_s=refresh_s,
    )

    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder="",  # the page modules are imported and registered below
        assets_folder=str(REPO_ROOT / "assets"),
        # page layouts come and go; their callbacks' ids are not all in one layout
        suppress_callback_exceptions=True,
        title="VoxelBoard",
        update_title=None,
        background_callback_manager=manager,
        on_error=_show_callback_error,
    )
    # the page's language, for screen readers' pronunciation (Dash's template names none)
    app.index_string = app.index_string.replace("<html>", '<html lang="en">', 1)
    _load_plotly_early(app)
    for page in pages.modules():
        dash.register_page(page.__name__, layout=page.layout, **page.PAGE)
    callbacks.register(app)
    app.server.config[CONTEXT_KEY] = context

    def shell() -> html.Div:
        return html.Div(
            [
                components.navbar(read_only),
                components.callback_error_banner(),
                html.Main(dash.page_container, className="vb-main"),
                *_lazy_components_warm_up(app),
            ],
            className="vb-root",
        )

    app.layout = shell
    app.clientside_callback(
        "function (n) { return true; }",
        dash.Output(components.ERROR_BANNER, "hidden", allow_duplicate=True),
        dash.Input(components.ERROR_CLOSE, "n_clicks"),
        prevent_initial_call=True,
    )
    app.server.before_request(functools.partial(_check_callback_request, app))
    app.server.register_error_handler(500, _plain_500)
    # the guard outermost: a request is checked (Host, login, body) before anything is read
    app.server.wsgi_app = _reading_in(context, app.server.wsgi_app)
    app.server.wsgi_app = GuardMiddleware(app.server.wsgi_app, allowed_hosts, auth)

    if read_only:
        # a read-only dashboard starts nothing: queued runs in a shared folder wait for a
        # dashboard that may launch them
        if demo:
            log.warning("--demo ignored: a read-only dashboard launches no run")
    else:
        if start_launcher:
            launcher.start()
        if demo:
            _start_demo(context, demo_config)
    return app


#: pages whose first response carries Plotly figures (the run, preview and evaluation pages)
EARLY_PLOTLY_PAGES = "/run/"


def _load_plotly_early(app: dash.Dash) -> None:
    """Start loading plotly.js in the page's head on pages that draw figures at once.

    ``dcc.Graph`` asks for plotly.js (4.8 MB) only when the first graph mounts, which is
    after the page's layout came back; then the browser fetches and compiles it while the
    page waits. Requested from the head, the same address (the one Dash's renderer gives
    ``dcc.Graph`` for a locally served app) is in flight or ready by then, and the graph
    uses it instead of asking again (bench/bench_first_paint.py measures the pages). The
    page's graphs then draw their figures one per task (``assets/plots.js``).
    """
    import json

    # the address dcc.Graph loads plotly.js from when Dash serves it (the default)
    url = json.dumps(
        app.get_relative_path("/_dash-component-suites/plotly/package_data/plotly.min.js")
    )
    prefix = json.dumps(app.get_relative_path(EARLY_PLOTLY_PAGES))
    loader = (
        f"<script>if (location.pathname.indexOf({prefix}) === 0) {{"
        f' const s = document.createElement("script"); s.src = {url}; s.async = true;'
        " document.head.appendChild(s); }</script>"
    )
    app.index_string = app.index_string.replace("{%css%}", "{%css%}\n        " + loader, 1)


def _lazy_components_warm_up(app: dash.Dash) -> list:
    """A hidden graph, slider and dropdown in the page frame of pages that draw figures at once
    (``EARLY_PLOTLY_PAGES``); nothing on other pages or outside a request.

    Dash's graph, slider and dropdown are React lazy components: the first one a page renders
    suspends until its code is loaded, and React shows nothing of the page's content, nor plots
    its graphs, until all of it is ready, some 150 ms after the page's layout came back (more
    on a busy machine). The frame comes back first, so its hidden copies load that code while
    the server still builds the page, and the page's own graphs plot as soon as they mount
    (bench/bench_first_paint.py measures it). The frame's layout request names the page it is
    for in its ``Referer``; without it, no warm-up and only that time is lost.
    """
    from urllib.parse import urlsplit

    import flask
    from dash import dcc, html

    if not flask.has_request_context():
        return []
    page = urlsplit(flask.request.referrer or "").path
    if not page.startswith(app.get_relative_path(EARLY_PLOTLY_PAGES)):
        return []
    return [
        html.Div(
            [
                dcc.Graph(id="vb-warm-graph", figure={"data": [], "layout": {"height": 10}}),
                dcc.Slider(id="vb-warm-slider", min=0, max=1),
                dcc.Dropdown(id="vb-warm-dropdown", options=[]),
            ],
            hidden=True,  # display: none; out of the accessibility tree too
        )
    ]


def _background_manager() -> tuple[Path, Any]:
    """A folder of this app's own and the ``DiskcacheManager`` keeping job results in it.

    The folder is ``<tmp>/voxelboard-dash-<uid>-<pid>-<random>``; ``AppContext.close`` removes
    it, and so does a normal exit of the serving process.
    """
    import atexit
    import tempfile

    import diskcache
    from dash import DiskcacheManager

    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.mkdtemp(prefix=f"voxelboard-dash-{uid}-{os.getpid()}-"))
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # never from a forked background job
            shutil.rmtree(folder, ignore_errors=True)

    atexit.register(remove)
    return folder, DiskcacheManager(diskcache.Cache(str(folder)))


def _close_jobs(folder: Path) -> None:
    """Stop this process's background jobs and remove the job folder."""
    try:
        import multiprocess

        for job in multiprocess.active_children():
            job.terminate()
            job.join(timeout=5)
    except ImportError:
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _show_callback_error(err: Exception) -> None:
    """Every callback's last resort: the cause, in words, in the page's error banner."""
    from dash import ctx, set_props

    from app import components

    message = str(err).strip()
    marker = "An error occurred inside a background callback: "
    if message.startswith(marker):  # Dash appends the job's traceback; the log keeps it
        message = message[len(marker) :].split("\n", 1)[0]
        kind = "background job"
    else:
        kind = type(err).__name__
    outputs = ", ".join(sorted({str(o.get("id")) for o in _flat(ctx.outputs_list)})) or "?"
    log.error("callback for %s failed", outputs, exc_info=err)
    set_props(components.ERROR_TEXT, {"children": f"Something failed ({kind}): {message}"})
    set_props(components.ERROR_BANNER, {"hidden": False})


def _flat(items: Any) -> list[dict]:
    if isinstance(items, dict):
        return [items]
    if isinstance(items, list):
        return [x for item in items for x in _flat(item)]
    return []


#: deepest nesting of lists and objects a callback request may carry
MAX_BODY_DEPTH = 32


def _check_callback_request(app: dash.Dash) -> Any:
    """Refuse a callback request the app must not run, before Dash reads it.

    A body that is not a callback request gets 400, and so does one nested deeper than
    ``MAX_BODY_DEPTH``, one holding text that is not valid Unicode (no browser sends it, and
    echoed back it cannot be encoded), a page address that is not a path, or a body that does
    not fit the callback it names (``app.request_shape``): Dash would answer those with 500.
    On a read-only app, a request for a callback marked with ``changes_runs`` gets 403,
    whoever sent it, whatever the body's shape.
    """
    import flask

    from app.request_shape import shape_problem

    if flask.request.method != "POST" or not flask.request.path.endswith("/_dash-update-component"):
        return None
    try:
        body = flask.request.get_json(silent=True)
    except RecursionError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return _refuse(400, "not a callback request: expected a JSON object with an 'output'")
    for key in ("inputs", "state"):
        if not isinstance(body.get(key, []), list):
            return _refuse(400, f"not a callback request: '{key}' must be a list")
    problem = _body_problem(body)
    if problem:
        return _refuse(400, f"not a callback request: {problem}")
    entry = app.callback_map.get(body["output"]) or {}
    if app_context(app).read_only and getattr(entry.get("callback"), "changes_runs", False):
        return _refuse(
            403,
            "refused: this dashboard is read-only (it writes nothing under the runs folder "
            "and starts no process)",
        )
    problem = shape_problem(app.callback_map, body)
    return _refuse(400, f"not a callback request: {problem}") if problem else None


def _body_problem(body: dict) -> str | None:
    """What makes a parsed callback body unfit for Dash, or ``None``."""
    stack = [(body, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            return f"values are nested deeper than {MAX_BODY_DEPTH} levels"
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "a text value is not valid Unicode"
        elif isinstance(value, dict):
            stack.extend((v, depth + 1) for v in (*value.keys(), *value.values()))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    for entry in [*body.get("inputs", []), *body.get("state", [])]:
        if isinstance(entry, dict) and entry.get("id") == "_pages_location":
            value = entry.get("value")
            if entry.get("property") == "pathname" and not (
                isinstance(value, str) and value.startswith("/")
            ):
                return "the page address must be a path starting with '/'"
            if entry.get("property") in ("search", "hash") and not isinstance(value, str | None):
                return f"the page's {entry.get('property')} must be text"
    return None


def _plain_500(err: Exception) -> Any:
    """A failure outside any callback, as one line the page's banner can show."""
    import flask

    cause = getattr(err, "original_exception", None) or err
    log.error("request failed", exc_info=cause)
    return flask.Response(
        f"internal error: {type(cause).__name__}: {cause}; details are in the server log",
        status=500,
        mimetype="text/plain",
    )


def _refuse(status: int, message: str) -> Any:
    import flask

    return flask.Response(message, status=status, mimetype="text/plain")


def _reading_in(context: AppContext, wsgi_app: Callable) -> Callable:
    """``wsgi_app`` answering every request inside ``context.reading()``.

    Dash answers with whole bodies (no streaming), so every read of a run file happens
    before the block ends.
    """

    def app(environ: dict, start_response: Callable) -> Any:
        with context.reading():
            return wsgi_app(environ, start_response)

    return app


def _start_demo(context: AppContext, demo_config: str) -> None:
    from app.readers import list_runs
    from app.security import LaunchError

    with context.reading():
        runs = list_runs(context.runs_dir)
    active = [r["name"] for r in runs if r["state"] in ("running", "queued")]
    if active:
        log.info("demo: %s already active, not launching the demo", ", ".join(active))
        return
    try:
        name = context.launcher.launch(demo_config, device="auto", overrides={})
    except LaunchError as e:
        log.warning("demo: cannot launch %s: %s", demo_config, e)
        return
    log.info("demo: launched %s", name)

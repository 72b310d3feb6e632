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

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
        configs_dir: folder of launchable configs.
        data_dir: data folder.
        read_only: hide and refuse launch, stop, resume and delete.
        demo: the app launched the demo config at start if nothing ran.
        launcher: this app's launcher (queue and children).
    """

    runs_dir: Path
    configs_dir: Path
    data_dir: Path
    read_only: bool
    demo: bool
    launcher: Launcher

    def close(self) -> None:
        """Stop the launcher's scheduler thread (runs keep running)."""
        self.launcher.close()


def current_context() -> AppContext:
    """The ``AppContext`` of the app serving the current request (layouts, callbacks)."""
    import flask

    return flask.current_app.config[CONTEXT_KEY]


def app_context(app: dash.Dash) -> AppContext:
    """The ``AppContext`` of ``app`` (outside a request, e.g. in tests)."""
    return app.server.config[CONTEXT_KEY]


def create_app(
    runs_dir: str | Path,
    configs_dir: str | Path,
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
) -> dash.Dash:
    """Build the dashboard.

    Args:
        runs_dir: folder of run directories (created when the first run is launched).
        configs_dir: the only folder configs may be launched from.
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

    Returns:
        The ``dash.Dash`` app; its Flask server is ``app.server``.
    """
    import dash
    from dash import html

    from app import components
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
    context = AppContext(
        runs_dir=Path(runs_dir).absolute(),
        configs_dir=Path(configs_dir).absolute(),
        data_dir=Path(data_dir).absolute(),
        read_only=bool(read_only),
        demo=bool(demo),
        launcher=launcher,
    )

    _drop_unclaimed_callbacks()
    _preregister_page_modules(Path(__file__).parent / "pages")
    app = dash.Dash(
        __name__,
        use_pages=True,
        pages_folder=str(Path(__file__).parent / "pages"),
        assets_folder=str(REPO_ROOT / "assets"),
        # page layouts come and go; their callbacks' ids are not all in one layout
        suppress_callback_exceptions=True,
        title="VoxelBoard",
        update_title=None,
    )
    app.server.config[CONTEXT_KEY] = context
    app.layout = html.Div(
        [components.navbar(read_only), html.Main(dash.page_container, className="vb-main")],
        className="vb-root",
    )
    app.server.wsgi_app = GuardMiddleware(app.server.wsgi_app, allowed_hosts, auth)

    if start_launcher:
        launcher.start()
    if demo:
        _start_demo(context, demo_config)
    return app


def _drop_unclaimed_callbacks() -> None:
    """Forget page callbacks registered for an app that never served a request.

    Dash collects ``dash.callback`` registrations in a process-wide list that the next app
    claims on its first request; page modules are executed again for every app, so an
    unused earlier app would hand the next one a second copy of every callback.
    """
    from dash import _callback

    _callback.GLOBAL_CALLBACK_LIST.clear()
    _callback.GLOBAL_CALLBACK_MAP.clear()


def _preregister_page_modules(pages_folder: Path) -> None:
    """Give each page module a ``sys.modules`` entry before Dash executes it.

    Dash executes a page module first and registers it in ``sys.modules`` afterwards, so
    code that looks its own module up while it runs (``@dataclasses.dataclass`` with
    ``from __future__ import annotations``) would fail on the first app. An empty stand-in
    is enough for that look-up; Dash replaces it with the real module right after.
    """
    import sys
    import types

    for path in pages_folder.glob("*.py"):
        if not path.name.startswith(("_", ".")):
            name = f"{__name__}.pages.{path.stem}"
            sys.modules.setdefault(name, types.ModuleType(name))


def _start_demo(context: AppContext, demo_config: str) -> None:
    from app.readers import list_runs
    from app.security import LaunchError

    active = [r["name"] for r in list_runs(context.runs_dir) if r["state"] in ("running", "queued")]
    if active:
        log.info("demo: %s already active, not launching the demo", ", ".join(active))
        return
    try:
        name = context.launcher.launch(demo_config, device="auto", overrides={})
    except LaunchError as e:
        log.warning("demo: cannot launch %s: %s", demo_config, e)
        return
    log.info("demo: launched %s", name)

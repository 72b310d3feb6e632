"""Serve the dashboard: ``python run.py`` / ``python run.py dashboard`` end up in ``serve``.

One process, several threads (waitress): the launcher, its queue and its children belong to
one process, so the dashboard must not be forked into several workers (see
docs/dashboard.md). SIGTERM stops it the way Ctrl+C does, so its clean-up runs either way.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from app.limits import segmentation_slots
from app.refresh import DEFAULT_REFRESH_S, check_refresh
from app.security import (
    MAX_BODY_BYTES,
    GuardMiddleware,
    UnsafeBindError,
    allowed_hosts_for,
    check_bind,
    check_debug_bind,
    load_auth,
)
from app.slurm import resources_from

log = logging.getLogger(__name__)

#: waitress worker threads: enough for a handful of browsers polling at the default refresh
THREADS = 8


def serve(
    host: str = "127.0.0.1",
    port: int = 8050,
    runs_dir: str | os.PathLike = "runs",
    configs_dir: str | os.PathLike | Sequence[str | os.PathLike] = "examples",
    data_dir: str | os.PathLike = "data",
    read_only: bool = False,
    demo: bool = False,
    auth_file: str | os.PathLike | None = None,
    debug: bool = False,
    backend: str = "local",
    slurm_defaults: Mapping[str, Any] | None = None,
    follow_links: bool = False,
    refresh_s: float = DEFAULT_REFRESH_S,
) -> None:
    """Run the dashboard until interrupted.

    Checks the bind address first: a non-loopback ``host`` without basic auth (``auth_file``
    or the ``VOXELBOARD_AUTH`` variable), or with ``debug``, exits with status 2 before
    anything else happens; so do bad Slurm defaults, a ``refresh_s`` (``--refresh``) outside
    ``app.refresh``'s range and a bad ``VOXELBOARD_MAX_SEGMENTATIONS``
    (``app.limits.segmentation_slots``). ``backend``, ``slurm_defaults``, ``follow_links`` and
    ``refresh_s`` go to ``create_app``. Then creates the demo data if missing, builds the app and serves it
    with waitress (or Flask's debug server with ``debug=True``, its debugger inside the
    Host and auth guard) until Ctrl+C or SIGTERM; either way the launcher is closed and
    the process's exit handlers run, and ``serve`` returns normally (exit status 0).

    Raises:
        SystemExit: with status 2 for an unsafe bind, an unreadable auth file or a refresh
            out of range.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        check_debug_bind(host, debug)
        users = load_auth(auth_file)
        check_bind(host, users)
        resources_from(defaults=slurm_defaults)
        check_refresh(refresh_s, "--refresh")
        segmentation_slots()  # a bad VOXELBOARD_MAX_SEGMENTATIONS stops here, not per request
    except (UnsafeBindError, ValueError) as e:
        print(f"voxelboard: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    _ensure_demo_data(data_dir)

    from app import app_context, create_app

    extra_hosts = {
        h.strip().lower() for h in os.environ.get("VOXELBOARD_ALLOWED_HOSTS", "").split(",")
    }
    allowed = allowed_hosts_for(host, port) | (extra_hosts - {""})
    app = create_app(
        runs_dir,
        configs_dir,
        data_dir,
        read_only=read_only,
        demo=demo,
        auth=users,
        allowed_hosts=allowed,
        backend=backend,
        slurm_defaults=slurm_defaults,
        follow_links=follow_links,
        viewer_host=host,
        refresh_s=refresh_s,
    )
    url_host = f"[{host}]" if ":" in host else host
    print(
        f"VoxelBoard on http://{url_host}:{port}/  (runs: {Path(runs_dir).absolute()}, "
        f"configs: {', '.join(str(d) for d in app_context(app).configs_dirs)}, backend: {backend}"
        f"{', read-only' if read_only else ''})",
        flush=True,
    )
    previous = _interrupt_on_sigterm()
    try:
        if debug:
            _run_debug(app, host, port)
        else:
            import waitress

            # a second layer under GuardMiddleware: waitress stops receiving a body (chunked
            # ones too) at the limit instead of spooling it to disk first
            waitress.serve(
                app.server,
                host=host,
                port=port,
                threads=THREADS,
                ident="VoxelBoard",
                max_request_body_size=MAX_BODY_BYTES + 1,  # waitress refuses >= this
            )
    except KeyboardInterrupt:
        pass
    finally:
        app_context(app).close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt_on_sigterm() -> Any:
    """Make SIGTERM raise KeyboardInterrupt in the main thread; returns the old handler.

    Without it SIGTERM kills the process on the spot: no ``finally``, no ``atexit``
    (the background-callback cache folder would stay in the temp folder). A second
    SIGTERM during the clean-up kills at once. ``None`` outside the main thread, where
    handlers cannot be set.
    """

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


def _run_debug(app: Any, host: str, port: int) -> None:
    """Flask's debug server with Werkzeug's debugger inside the Host and auth guard.

    ``app.run(debug=True)`` would wrap the whole server in the debugger, outside
    ``GuardMiddleware``: its console and resources would answer any Host and no login.
    """
    from werkzeug.debug import DebuggedApplication

    guard = app.server.wsgi_app
    if not isinstance(guard, GuardMiddleware):
        raise RuntimeError("create_app did not install GuardMiddleware; refusing the debugger")
    debugger = DebuggedApplication(guard.app, evalex=True)
    debugger.trusted_hosts.append(host)
    guard.app = debugger
    log.info("debugger PIN: %s (the console is at /console)", debugger.pin)
    # no reloader: a second process would start a second launcher
    app.run(host=host, port=port, debug=True, use_reloader=False, use_debugger=False)


def _ensure_demo_data(data_dir: str | os.PathLike) -> None:
    """Create the synthetic demo data set on first start (takes a few seconds)."""
    try:
        from trainer.synthetic import ensure_demo_data
    except ImportError as e:
        log.warning("demo data not created (%s); the demo config will not find its data", e)
        return
    try:
        ensure_demo_data(data_dir)
    except Exception as e:  # the dashboard is still useful without the demo data
        log.exception("could not create demo data in %s: %s", data_dir, e)

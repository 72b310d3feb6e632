"""The dashboard's safety rules: what may be launched, under which name, and who may ask.

Pure checks (config paths, overrides, run names, devices, bind addresses) and one WSGI
middleware (Host header allow-list against DNS rebinding, request body limit, optional HTTP
basic auth, Origin/Referer check against cross-site requests).
Nothing here imports Dash, so the launcher and tests can use it alone.

Example:
    >>> validate_overrides({"n_steps": "200", "lr": 0.01})
    {'n_steps': 200, 'lr': 0.01}
    >>> sanitize_run_name("my run/../x")
    'my_run_.._x'
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import math
import os
import re
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.paths import MAX_NAME_BYTES

#: most characters a run name may have
MAX_RUN_NAME = 100

_NAME_BAD_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_DEVICE = re.compile(r"cuda:(\d{1,3})")


class LaunchError(ValueError):
    """A launch request was refused; ``field`` names the offending form field.

    Attributes:
        field: ``config``, ``device``, ``n_steps``, ``batch_size``, ``lr``, ``save_name``
            or ``run`` (for stop/resume/delete).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class QueueFullError(LaunchError):
    """A launch was refused because the launcher's queue is full: nothing wrong with the
    request, it can be made again once a queued run has started (a sweep waits)."""


class UnsafeBindError(RuntimeError):
    """Serving was refused: a non-loopback address without auth, or with the debugger."""


# ---------------------------------------------------------------------------------------
# configs


def list_configs(configs_dir: str | os.PathLike) -> list[str]:
    """Names of the launchable config files (``*.py`` directly in ``configs_dir``).

    Files starting with ``_`` or ``.`` and symlinks that point outside the folder are left
    out, so the form only offers what ``resolve_config`` accepts.
    """
    root = Path(configs_dir)
    if not root.is_dir():
        return []
    names = []
    for p in sorted(root.glob("*.py")):
        if p.name.startswith(("_", ".")):
            continue
        try:
            resolve_config(root, p.name)
        except LaunchError:
            continue
        names.append(p.name)
    return names


#: one configs folder, or several (``run.py dashboard --configs-dir A --configs-dir B``)
ConfigsDirs = str | os.PathLike | Sequence[str | os.PathLike]


def configs_dirs(dirs: ConfigsDirs) -> tuple[Path, ...]:
    """``dirs`` as a tuple of absolute paths, duplicates dropped, order kept.

    Raises:
        ValueError: no folder at all.
    """
    items = [dirs] if isinstance(dirs, str | os.PathLike) else list(dirs)
    out = tuple(dict.fromkeys(Path(d).absolute() for d in items))
    if not out:
        raise ValueError("configs_dir: expected at least one folder of configs, got none")
    return out


def config_options(dirs: ConfigsDirs) -> list[dict[str, Any]]:
    """The launch form's Config dropdown: every launchable config of every folder.

    With one folder the options are its file names (label and value), as ``list_configs``.
    With several, each folder starts with a disabled heading (its path) and its configs are
    labelled ``folder/name`` and valued by their absolute path, which ``resolve_config``
    accepts for that folder; a folder named twice (by its last part) is labelled by its path.

    Example:
        >>> config_options(["/nonexistent"])
        []
    """
    roots = configs_dirs(dirs)
    if len(roots) == 1:
        return [{"label": n, "value": n} for n in list_configs(roots[0])]
    last = [r.name for r in roots]
    options: list[dict[str, Any]] = []
    for root, name in zip(roots, last, strict=True):
        names = list_configs(root)
        if not names:
            continue
        folder = name if last.count(name) == 1 and name else str(root)
        options.append({"label": f"{root}", "value": f"folder:{root}", "disabled": True})
        options += [{"label": f"{folder}/{n}", "value": str(root / n)} for n in names]
    return options


def resolve_config(configs_dir: ConfigsDirs, name: str) -> Path:
    """The absolute path of config ``name`` if it is a ``*.py`` file inside ``configs_dir``.

    ``configs_dir`` may be several folders: a relative ``name`` is looked up in each in turn
    (the first that has it wins), an absolute one must lie inside one of them.

    ``name`` may be relative to ``configs_dir`` or absolute; either way the fully resolved
    path (symlinks followed) must lie inside the resolved ``configs_dir``.

    Raises:
        LaunchError: (field ``config``) for an empty name, a path outside the folder
            (``../x.py``, ``/etc/x.py``, a symlink pointing out), a name no file can have
            (NUL, a part over 255 bytes, text the file system cannot encode), a non-``.py``
            file, a missing file or one that cannot be looked at.
    """
    if not isinstance(configs_dir, str | os.PathLike):
        return _resolve_in_any(configs_dirs(configs_dir), name)
    if not isinstance(name, str) or not name.strip():
        raise LaunchError("config", "config: choose a config file")
    if "\x00" in name:
        raise LaunchError("config", "config: the name contains a NUL character")
    try:
        parts = os.fsencode(name).split(b"/")
    except UnicodeError:
        raise LaunchError("config", f"config: {_shown(name)} is not a valid file name") from None
    if any(len(part) > MAX_NAME_BYTES for part in parts):
        raise LaunchError(
            "config",
            f"config: {_shown(name)} is longer than {MAX_NAME_BYTES} bytes, the most a file "
            "name may have; choose a config from the list",
        )
    root = Path(configs_dir).resolve()
    candidate = Path(name) if os.path.isabs(name) else root / name
    try:
        path = candidate.resolve()
        if not path.is_relative_to(root):
            raise LaunchError(
                "config",
                f"config: {_shown(name)} is outside the configs folder {root}; "
                "only files inside it can be launched",
            )
        if path.suffix != ".py":
            raise LaunchError("config", f"config: {_shown(name)} is not a .py file")
        if not path.is_file():
            raise LaunchError("config", f"config: {_shown(name)} does not exist in {root}")
    except (OSError, RuntimeError) as e:  # too long a path, a symlink loop, no permission
        reason = getattr(e, "strerror", None) or str(e)
        raise LaunchError("config", f"config: cannot open {_shown(name)}: {reason}") from None
    return path


def _resolve_in_any(roots: tuple[Path, ...], name: str) -> Path:
    """``resolve_config`` over several folders: the first that accepts ``name``; else the
    error of the folder an absolute ``name`` lies in, or of the first folder, naming all."""
    if len(roots) == 1:
        return resolve_config(roots[0], name)
    errors = []
    for root in roots:
        try:
            return resolve_config(root, name)
        except LaunchError as e:
            errors.append(e)
    if isinstance(name, str) and os.path.isabs(name):
        for e in errors:
            if "outside the configs folder" not in str(e):
                raise e
    folders = ", ".join(str(r) for r in roots)
    raise LaunchError(
        "config",
        f"config: {_shown(name)} is in none of the configs folders ({folders}); "
        "choose a config from the list",
    )


def _shown(value: Any, limit: int = 80) -> str:
    """``repr`` of a client value for a message, cut to about ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


# ---------------------------------------------------------------------------------------
# overrides

#: override name -> (type, lowest, highest, lowest is exclusive)
OVERRIDE_RULES: dict[str, tuple[type, float, float, bool]] = {
    "n_steps": (int, 1, 10**9, False),
    "batch_size": (int, 1, 1024, False),
    "lr": (float, 0.0, 10.0, True),
}


def validate_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Typed, range-checked overrides; empty values (``None``, ``''``) are dropped.

    Accepted keys: ``n_steps`` (int 1..10^9), ``batch_size`` (int 1..1024),
    ``lr`` (float, 0 < lr <= 10) and ``save_name`` (see ``sanitize_run_name``).
    Numbers may arrive as strings from a form.

    Raises:
        LaunchError: naming the field, the value and the allowed range.
    """
    out: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key == "save_name":
            out[key] = sanitize_run_name(value)
        elif key in OVERRIDE_RULES:
            out[key] = _check_number(key, value, *OVERRIDE_RULES[key])
        else:
            known = ", ".join([*OVERRIDE_RULES, "save_name"])
            raise LaunchError(key, f"{key}: unknown override; allowed: {known}")
    return out


def _check_number(key: str, value: Any, kind: type, lo: float, hi: float, lo_open: bool) -> Any:
    expected = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        raise LaunchError(key, f"{key}: expected {expected}, got {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float
        raise LaunchError(key, f"{key}: expected {expected}, got {_shown(value)}") from None
    if not math.isfinite(number):
        raise LaunchError(key, f"{key}: expected a finite number, got {_shown(value)}")
    if kind is int:
        if number != int(number):
            raise LaunchError(key, f"{key}: expected an integer, got {_shown(value)}")
        number = int(number)
    too_low = number <= lo if lo_open else number < lo
    if too_low or number > hi:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise LaunchError(
            key, f"{key}: {_shown(value)} is out of range; expected {low} and <= {hi:g}"
        )
    return number


def sanitize_run_name(name: Any) -> str:
    """A safe directory name: ``[A-Za-z0-9._-]``, at most 100 characters, no leading dot or dash.

    Runs of other characters become one ``_``; leading dots and dashes are stripped: a
    hidden directory is easy to overlook, and a name starting with ``-`` (``--help``,
    ``-rf``) reads as an option on the command line the run is started with.

    Example:
        >>> sanitize_run_name("--help"), sanitize_run_name(".-rf")
        ('help', 'rf')

    Raises:
        LaunchError: (field ``save_name``) for a value that is not text, or if nothing
            usable is left.
    """
    if not isinstance(name, str):
        raise LaunchError(
            "save_name", f"save_name: expected text, got {type(name).__name__} {_shown(name)}"
        )
    text = _NAME_BAD_CHARS.sub("_", name.strip()).lstrip(".-")[:MAX_RUN_NAME]
    if not text.strip("_-."):
        raise LaunchError(
            "save_name",
            f"save_name: {_shown(name)} has no usable characters (use A-Z a-z 0-9 . _ -, "
            "not starting with . or -)",
        )
    return text


def validate_device(device: Any, gpus: Iterable[int]) -> str:
    """``auto``, ``cpu`` or ``cuda:N`` for a GPU index in ``gpus``.

    Raises:
        LaunchError: (field ``device``) for anything else.
    """
    gpus = list(gpus)
    if device in (None, ""):
        return "auto"
    if device in ("auto", "cpu"):
        return device
    m = _DEVICE.fullmatch(str(device))
    if m and int(m.group(1)) in gpus:
        return f"cuda:{int(m.group(1))}"
    choices = ", ".join(["auto", "cpu", *(f"cuda:{i}" for i in gpus)])
    raise LaunchError("device", f"device: {device!r} is not available; choose one of {choices}")


# ---------------------------------------------------------------------------------------
# network

#: largest request body accepted, in bytes (8 MiB), and where waitress stops receiving one;
#: bigger bodies get 413 unread
MAX_BODY_BYTES = 8 * 1024 * 1024
#: the path of Dash's callback requests (after any URL prefix)
CALLBACK_PATH = "/_dash-update-component"
#: largest callback request body accepted, in bytes (256 KiB). The largest request the pages
#: send is a few kB (the runs table's selected row with its sparklines; measured by
#: ``bench/bench_attack.py``), so this leaves a margin of about 30x; Dash parses a body whole,
#: and a body of megabytes of small JSON values costs tens of MB while it is parsed
MAX_CALLBACK_BODY_BYTES = 256 * 1024
#: bodies over this size (64 KiB) are large: at most ``MAX_LARGE_BODIES`` are read at once
LARGE_BODY_BYTES = 64 * 1024
#: large bodies read at once; more get 503 at once, unread
MAX_LARGE_BODIES = 2
#: methods that only read; any other method is state-changing and must not come from a
#: foreign page (Origin / Referer check)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, users: Mapping[str, str] | None) -> None:
    """Refuse to serve on a non-loopback address unless basic auth is configured.

    Raises:
        UnsafeBindError: with what to do about it.
    """
    if not is_loopback_host(host) and not users:
        raise UnsafeBindError(
            f"refusing to serve on {host!r} without authentication: anyone who can reach it "
            "could launch processes on this machine. Configure basic auth with --auth-file FILE "
            "or the VOXELBOARD_AUTH environment variable (lines of user:password), "
            "or serve on 127.0.0.1."
        )


def check_debug_bind(host: str, debug: bool) -> None:
    """Refuse the debug server on a non-loopback address, auth or not.

    The debugger runs Python code for whoever unlocks it; it is for a developer at this
    machine only.

    Raises:
        UnsafeBindError: with what to do about it.
    """
    if debug and not is_loopback_host(host):
        raise UnsafeBindError(
            f"refusing --debug on {host!r}: the debugger runs code for whoever reaches it. "
            "Use --debug only with --host 127.0.0.1 (the default), or drop --debug."
        )


def allowed_hosts_for(host: str, port: int) -> set[str]:
    """Host header values a browser may send to reach ``host:port``.

    Always the loopback names with the port; plus ``host`` itself; for a wildcard bind
    (``0.0.0.0``, ``::``) also this machine's name and interface addresses.
    """
    names = {"localhost", "127.0.0.1", "::1", host.strip("[]").lower()}
    if host in ("0.0.0.0", "::", ""):
        names |= _local_names()
    names.discard("")
    return {_with_port(n, port) for n in names} | (names if port == 80 else set())


def _with_port(name: str, port: int) -> str:
    return f"[{name}]:{port}" if ":" in name else f"{name}:{port}"


def _local_names() -> set[str]:
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    try:
        import psutil

        for addrs in psutil.net_if_addrs().values():
            for a in addrs:
                if a.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(a.address.split("%")[0].lower())
    except Exception:  # interface listing is a convenience, never a reason to fail
        pass
    return names


def default_allowed_hosts() -> set[str]:
    """Loopback names on any port: what ``create_app`` allows when not told otherwise."""
    return {"localhost", "127.0.0.1", "[::1]", "::1"}


def host_allowed(host_header: str, allowed: set[str]) -> bool:
    """True if the Host header is in ``allowed`` (entries with or without a port).

    An entry without a port allows that name on any port.
    """
    host = (host_header or "").strip().lower()
    if not host:
        return False
    if host in allowed:
        return True
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in allowed or name.strip("[]") in allowed


# ---------------------------------------------------------------------------------------
# authentication


def parse_auth(text: str, source: str) -> dict[str, str]:
    """Users from ``user:password`` lines; blank lines and ``#`` comments are skipped.

    Raises:
        ValueError: naming ``source`` and the line number of a malformed line.
    """
    users: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{source}, line {i}: expected 'user:password'")
        users[user] = password
    if not users:
        raise ValueError(f"{source}: no 'user:password' line found")
    return users


def load_auth(
    auth_file: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str] | None:
    """Users for basic auth from ``auth_file`` or the ``VOXELBOARD_AUTH`` variable.

    The file wins over the variable; the variable holds the lines themselves. ``None``
    when neither is set.

    Raises:
        ValueError: for an unreadable file or a malformed line (naming file and line).
    """
    environ = os.environ if environ is None else environ
    if auth_file:
        try:
            text = Path(auth_file).read_text()
        except OSError as e:
            raise ValueError(f"cannot read auth file {auth_file}: {e.strerror}") from None
        return parse_auth(text, str(auth_file))
    if environ.get("VOXELBOARD_AUTH"):
        return parse_auth(environ["VOXELBOARD_AUTH"], "VOXELBOARD_AUTH")
    return None


class GuardMiddleware:
    """WSGI middleware: the checks every request passes before the app sees it.

    In this order, each answered with a short text and never by reading the body:

    1. ``Host`` header in the allow-list, else 400 (DNS rebinding).
    2. Request body at most ``max_callback_body`` bytes (``MAX_CALLBACK_BODY_BYTES``,
       256 KiB) for a callback request and ``max_body`` (``MAX_BODY_BYTES``, 8 MiB) for any
       other, by its ``Content-Length``, else 413 with one line; a body without a declared
       length (chunked, as the debug server passes it on) gets 411. Waitress also stops
       reading at ``MAX_BODY_BYTES`` (``serve`` sets its ``max_request_body_size``), so a
       huge body is never buffered.
    3. Basic auth when users are configured, else 401 (passwords compared in constant
       time; a malformed ``Authorization`` header is a 401, never a server error).
    4. For state-changing methods (anything but GET, HEAD, OPTIONS): an ``Origin``
       header, or without one a non-empty ``Referer``, must name an allowed host, else 403
       (cross-site request forgery). ``Origin: null`` (sandboxed frames, ``file://``
       pages) is refused. A request with neither header (a script, ``curl``) passes: a
       browser sends ``Origin`` with every cross-site POST.
    5. At most ``max_large`` requests with a body over ``LARGE_BODY_BYTES`` in the app at
       once (Dash reads and parses a body whole), else 503 with one line and a
       ``Retry-After``: a few clients looping near-limit bodies cannot make the server hold
       one parsed body per thread.

    It wraps the whole application, so static files, callbacks and pages are all covered.

    Attributes:
        app: the wrapped WSGI application. ``serve(debug=True)`` puts Werkzeug's debugger
            here, inside the guard, so its console and resources need the same Host and
            login as the pages.
    """

    def __init__(
        self,
        app: Callable,
        allowed_hosts: set[str] | None = None,
        users: Mapping[str, str] | None = None,
        max_body: int = MAX_BODY_BYTES,
        max_callback_body: int = MAX_CALLBACK_BODY_BYTES,
        max_large: int = MAX_LARGE_BODIES,
    ) -> None:
        self.app = app
        self.allowed_hosts = {h.lower() for h in (allowed_hosts or default_allowed_hosts())}
        self.users = dict(users or {})
        self.max_body = max_body
        self.max_callback_body = max_callback_body
        self._large = threading.BoundedSemaphore(max_large)

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST") or ""
        if not host_allowed(host, self.allowed_hosts):
            return _plain(start_response, "400 Bad Request", f"unexpected Host header {host!r}\n")
        callback = (environ.get("PATH_INFO") or "").endswith(CALLBACK_PATH)
        refusal = _body_refusal(environ, self.max_callback_body if callback else self.max_body)
        if refusal:
            return _plain(start_response, *refusal)
        if self.users and not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return _plain(
                start_response,
                "401 Unauthorized",
                "login required\n",
                [("WWW-Authenticate", 'Basic realm="VoxelBoard", charset="UTF-8"')],
            )
        method = (environ.get("REQUEST_METHOD") or "GET").upper()
        if method not in SAFE_METHODS:
            source = self._foreign_source(environ)
            if source is not None:
                return _plain(
                    start_response,
                    "403 Forbidden",
                    f"cross-site {method} refused: {source} is not this dashboard\n",
                )
        if _declared_length(environ) <= LARGE_BODY_BYTES:
            return self.app(environ, start_response)
        if not self._large.acquire(blocking=False):
            return _plain(
                start_response,
                "503 Service Unavailable",
                "busy: other large requests are being read; try again in a moment\n",
                [("Retry-After", "1")],
            )
        try:  # the app reads and parses the body before it returns its response
            return self.app(environ, start_response)
        finally:
            self._large.release()

    def _foreign_source(self, environ: dict) -> str | None:
        """The ``Origin`` or ``Referer`` header if it names a host not allowed, else None."""
        if "HTTP_ORIGIN" in environ:
            header, value = "Origin", environ["HTTP_ORIGIN"]
        elif environ.get("HTTP_REFERER"):
            header, value = "Referer", environ["HTTP_REFERER"]
        else:
            return None
        try:
            netloc = urlsplit(value.strip()).netloc.rpartition("@")[2]
        except ValueError:  # e.g. an unclosed IPv6 bracket
            netloc = ""
        if netloc and host_allowed(netloc, self.allowed_hosts):
            return None
        return f"{header} {value[:200]!r}"

    def _authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        expected = self.users.get(user)
        if not sep or expected is None:
            # compare anyway so an unknown user costs the same time as a wrong password
            hmac.compare_digest(password.encode(), password.encode())
            return False
        return hmac.compare_digest(password.encode(), expected.encode())


def _declared_length(environ: Mapping[str, Any]) -> int:
    """The request's ``Content-Length`` (checked by ``_body_refusal`` first); 0 if none."""
    try:
        return int((environ.get("CONTENT_LENGTH") or "0").strip() or 0)
    except ValueError:
        return 0


def _body_refusal(environ: Mapping[str, Any], limit: int) -> tuple[str, str] | None:
    """(status, text) refusing the request's body by its declared length, or None."""
    declared = (environ.get("CONTENT_LENGTH") or "").strip()
    if declared:
        try:
            length = int(declared)
        except ValueError:
            length = -1
        if length < 0:
            return "400 Bad Request", f"invalid Content-Length {declared[:40]!r}\n"
        if length > limit:
            return (
                "413 Request Entity Too Large",
                f"request body of {length} bytes refused: the limit is {limit} bytes\n",
            )
        return None
    if environ.get("HTTP_TRANSFER_ENCODING"):
        return (
            "411 Length Required",
            f"a request body needs a Content-Length header (at most {limit} bytes)\n",
        )
    return None


def _plain(
    start_response: Callable, status: str, body: str, headers: list | None = None
) -> list[bytes]:
    data = body.encode()
    start_response(
        status,
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))]
        + (headers or []),
    )
    return [data]

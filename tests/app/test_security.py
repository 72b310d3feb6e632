"""Safety rules: config paths, overrides, run names, devices, Host header, auth, bind address."""

from __future__ import annotations

import base64
import os

import pytest

from app.security import (
    GuardMiddleware,
    LaunchError,
    UnsafeBindError,
    allowed_hosts_for,
    check_bind,
    list_configs,
    load_auth,
    resolve_config,
    sanitize_run_name,
    validate_device,
    validate_overrides,
)


@pytest.fixture
def configs(tmp_path):
    root = tmp_path / "configs"
    root.mkdir()
    (root / "good.py").write_text("x = 1\n")
    (root / "_private.py").write_text("x = 1\n")
    (root / "notes.txt").write_text("hello\n")
    (tmp_path / "outside.py").write_text("x = 1\n")
    (root / "link_out.py").symlink_to(tmp_path / "outside.py")
    (root / "link_in.py").symlink_to(root / "good.py")
    (root / "sub").mkdir()
    (root / "sub" / "nested.py").write_text("x = 1\n")
    return root


def test_resolve_config_accepts_files_inside(configs):
    assert resolve_config(configs, "good.py") == configs.resolve() / "good.py"
    assert resolve_config(configs, str(configs / "good.py")) == configs.resolve() / "good.py"
    assert resolve_config(configs, "link_in.py") == configs.resolve() / "good.py"
    assert resolve_config(configs, "sub/nested.py") == configs.resolve() / "sub" / "nested.py"


@pytest.mark.parametrize(
    "name, match",
    [
        ("../outside.py", "outside the configs folder"),
        ("sub/../../outside.py", "outside the configs folder"),
        ("link_out.py", "outside the configs folder"),
        ("/etc/passwd", "outside the configs folder"),
        ("notes.txt", "not a .py file"),
        ("missing.py", "does not exist"),
        ("", "choose a config"),
        ("a\x00.py", "NUL"),
    ],
)
def test_resolve_config_refuses(configs, name, match):
    with pytest.raises(LaunchError, match=match) as info:
        resolve_config(configs, name)
    assert info.value.field == "config"


def test_resolve_config_refuses_absolute_path_outside(configs, tmp_path):
    with pytest.raises(LaunchError, match="outside the configs folder"):
        resolve_config(configs, str(tmp_path / "outside.py"))


def test_list_configs_offers_only_launchable_files(configs):
    assert list_configs(configs) == ["good.py", "link_in.py"]
    assert list_configs(configs / "missing") == []


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, {}),
        (None, {}),
        ({"n_steps": 100}, {"n_steps": 100}),
        ({"n_steps": "100"}, {"n_steps": 100}),
        ({"n_steps": 2.0}, {"n_steps": 2}),
        ({"n_steps": 10**9, "batch_size": 1024}, {"n_steps": 10**9, "batch_size": 1024}),
        ({"batch_size": " 8 "}, {"batch_size": 8}),
        ({"lr": "1e-3"}, {"lr": 0.001}),
        ({"lr": 10}, {"lr": 10.0}),
        ({"n_steps": None, "lr": "", "save_name": "  "}, {}),
        ({"save_name": "my run"}, {"save_name": "my_run"}),
    ],
)
def test_validate_overrides_accepts(given, expected):
    out = validate_overrides(given)
    assert out == expected
    assert all(type(out[k]) is type(expected[k]) for k in expected)


@pytest.mark.parametrize(
    "given, field, match",
    [
        ({"n_steps": 0}, "n_steps", r"n_steps: 0 is out of range; expected >= 1 and <= 1e\+09"),
        ({"n_steps": 10**9 + 1}, "n_steps", "n_steps: .* out of range"),
        ({"n_steps": 1.5}, "n_steps", "n_steps: expected an integer, got 1.5"),
        ({"n_steps": "ten"}, "n_steps", "n_steps: expected an integer, got 'ten'"),
        ({"n_steps": True}, "n_steps", "n_steps: expected an integer"),
        ({"batch_size": 1025}, "batch_size", "batch_size: 1025 is out of range"),
        ({"batch_size": -1}, "batch_size", "batch_size: -1 is out of range"),
        ({"lr": 0}, "lr", r"lr: 0 is out of range; expected > 0 and <= 10"),
        ({"lr": "11"}, "lr", "lr: '11' is out of range"),
        ({"lr": "nan"}, "lr", "lr: expected a finite number"),
        ({"lr": "inf"}, "lr", "lr: expected a finite number"),
        ({"lr": [1]}, "lr", "lr: expected a number"),
        ({"save_name": "..."}, "save_name", "save_name: .* no usable characters"),
        ({"momentum": 0.9}, "momentum", "momentum: unknown override; allowed: n_steps"),
    ],
)
def test_validate_overrides_refuses_naming_the_field(given, field, match):
    with pytest.raises(LaunchError, match=match) as info:
        validate_overrides(given)
    assert info.value.field == field


@pytest.mark.parametrize(
    "name, expected",
    [
        ("run1", "run1"),
        ("my run", "my_run"),
        ("../../etc/passwd", "_.._etc_passwd"),
        (".hidden", "hidden"),
        ("a/b\\c", "a_b_c"),
        ("ünïcode-ok.v2", "_n_code-ok.v2"),
        ("x" * 150, "x" * 100),
        ("run;rm -rf ~", "run_rm_-rf_"),
    ],
)
def test_sanitize_run_name(name, expected):
    assert sanitize_run_name(name) == expected


@pytest.mark.parametrize("name", ["", ".", "..", "///", "   "])
def test_sanitize_run_name_refuses_empty_results(name):
    with pytest.raises(LaunchError, match="no usable characters"):
        sanitize_run_name(name)


@pytest.mark.parametrize(
    "device, gpus, expected",
    [("auto", [], "auto"), (None, [], "auto"), ("cpu", [0], "cpu"), ("cuda:1", [0, 1], "cuda:1")],
)
def test_validate_device(device, gpus, expected):
    assert validate_device(device, gpus) == expected


@pytest.mark.parametrize("device", ["cuda:0", "cuda", "gpu", "cuda:1; ls", "cuda:-1"])
def test_validate_device_refuses(device):
    with pytest.raises(LaunchError, match="device: .* not available; choose one of auto, cpu"):
        validate_device(device, [])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_check_bind_allows_loopback_without_auth(host):
    check_bind(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_check_bind_refuses_other_hosts_without_auth(host):
    with pytest.raises(UnsafeBindError, match="--auth-file"):
        check_bind(host, None)
    check_bind(host, {"alice": "secret"})


def test_load_auth_from_file_and_environment(tmp_path):
    f = tmp_path / "auth.txt"
    f.write_text("# who may log in\nalice:s3cret:with:colons\n\nbob:pw\n")
    assert load_auth(f, environ={}) == {"alice": "s3cret:with:colons", "bob": "pw"}
    assert load_auth(None, environ={"VOXELBOARD_AUTH": "carol:pw"}) == {"carol": "pw"}
    assert load_auth(None, environ={}) is None
    f.write_text("alice\n")
    with pytest.raises(ValueError, match=r"auth.txt, line 1: expected 'user:password'"):
        load_auth(f, environ={})
    with pytest.raises(ValueError, match="cannot read auth file"):
        load_auth(tmp_path / "missing.txt", environ={})


def test_allowed_hosts_for_loopback_bind():
    hosts = allowed_hosts_for("127.0.0.1", 8050)
    assert {"127.0.0.1:8050", "localhost:8050", "[::1]:8050"} <= hosts
    assert "127.0.0.1:9999" not in hosts
    assert "evil.example:8050" not in hosts


def _wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"inner"]


def _call(middleware, host, auth=None):
    from werkzeug.test import Client

    headers = {"Host": host}
    if auth is not None:
        headers["Authorization"] = auth
    return Client(middleware).get("/", headers=headers)


@pytest.mark.parametrize(
    "host, status",
    [
        ("127.0.0.1:8050", 200),
        ("localhost:8050", 200),
        ("[::1]:8050", 200),
        ("LOCALHOST:8050", 200),
        ("localhost:8051", 400),
        ("attacker.example:8050", 400),
        ("attacker.example", 400),
        ("", 400),
    ],
)
def test_guard_rejects_unexpected_host(host, status):
    guard = GuardMiddleware(_wsgi_app, allowed_hosts_for("127.0.0.1", 8050))
    response = _call(guard, host)
    assert response.status_code == status
    if status == 400:
        assert b"unexpected Host header" in response.data


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    "auth, status",
    [
        (None, 401),
        (_basic("alice", "pw"), 200),
        (_basic("alice", "wrong"), 401),
        (_basic("mallory", "pw"), 401),
        ("Basic !!!not-base64", 401),
        ("Bearer abc", 401),
        ("Basic " + base64.b64encode(b"no-colon").decode(), 401),
    ],
)
def test_guard_basic_auth(auth, status):
    guard = GuardMiddleware(_wsgi_app, {"localhost"}, {"alice": "pw"})
    response = _call(guard, "localhost:8050", auth)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Basic")


@pytest.fixture
def dash_app(tmp_path):
    from app import app_context, create_app

    (tmp_path / "configs").mkdir()
    app = create_app(
        tmp_path / "runs",
        tmp_path / "configs",
        tmp_path / "data",
        allowed_hosts=allowed_hosts_for("127.0.0.1", 8050),
        auth={"alice": "pw"},
        start_launcher=False,
    )
    yield app
    app_context(app).close()


def test_dash_app_rejects_foreign_host_and_needs_login(dash_app):
    client = dash_app.server.test_client()
    assert client.get("/", headers={"Host": "rebind.example:8050"}).status_code == 400
    assert client.get("/", headers={"Host": "localhost:8050"}).status_code == 401
    ok = client.get("/", headers={"Host": "localhost:8050", "Authorization": _basic("alice", "pw")})
    assert ok.status_code == 200
    assert b"VoxelBoard" in ok.data
    assets = client.get("/_dash-layout", headers={"Host": "evil:8050"})
    assert assets.status_code == 400


def test_serve_refuses_non_loopback_host_without_auth(tmp_path, capsys, monkeypatch):
    from app.server import serve

    monkeypatch.delenv("VOXELBOARD_AUTH", raising=False)
    with pytest.raises(SystemExit) as info:
        serve(host="0.0.0.0", port=8050, runs_dir=tmp_path / "runs", data_dir=tmp_path / "data")
    assert info.value.code == 2
    assert "refusing to serve on '0.0.0.0' without authentication" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before doing anything


def test_serve_refuses_unreadable_auth_file(tmp_path, capsys):
    from app.server import serve

    with pytest.raises(SystemExit) as info:
        serve(host="0.0.0.0", auth_file=os.fspath(tmp_path / "nope.txt"), data_dir=tmp_path / "d")
    assert info.value.code == 2
    assert "cannot read auth file" in capsys.readouterr().err

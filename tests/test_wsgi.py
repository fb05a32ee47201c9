"""The production entry point: gunicorn with gunicorn.conf.py serving wsgi:app."""

from __future__ import annotations

import gc
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import requests

from .conftest import free_port, wait_for


def _gunicorn_output(app_config: dict[str, str], **extra_env: str) -> str:
    """Start gunicorn, make a few requests, stop it; everything it printed."""
    port = free_port()
    home = Path(app_config["OPTIN_INSTANCE_PATH"]).parent / "home"
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPTIN_", "XDG_"))}
    env.update(app_config, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1",
               PYTHONPATH=os.getcwd(), HOME=str(home), **extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        ready = wait_for(lambda: requests.get(f"{base}/readyz", timeout=10), timeout=20)
        assert ready.status_code == 200
        lookup = requests.get(f"{base}/v1/contacts", params={"email": "private@example.org"},
                              headers={"X-Request-ID": "wsgi-test-42"}, timeout=5)
        assert lookup.status_code == 401
        assert lookup.headers["X-Request-ID"] == "wsgi-test-42"
        assert requests.get(f"{base}/confirm/SeCrEtToKeN.abc-123_x", timeout=5).status_code == 404
        # A quote and a newline in the path must not forge or break a log line.
        assert requests.get(f"{base}/nope%22%0Aforged=1", timeout=5).status_code == 404
        # Addresses and IPs in a path, and an id that is an IP, are not logged in clear.
        assert requests.get(f"{base}/v1/lists/leak@example.org", timeout=5).status_code == 401
        assert requests.get(f"{base}/v1/contacts/10.20.30.40", timeout=5).status_code == 404
        spoofed = requests.get(f"{base}/healthz", headers={"X-Request-ID": "10.20.30.41"},
                               timeout=5)
        assert spoofed.headers["X-Request-ID"] != "10.20.30.41"  # refused: a new id
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "private" not in output
    assert "SeCrEtToKeN" not in output
    assert not any(line.startswith("forged=1") for line in output.splitlines())
    for clear in ("leak@example.org", "leak%40example.org", "10.20.30.40", "10.20.30.41"):
        assert clear not in output
    assert "<address " in output and "<ip " in output  # pseudonyms stand in for them
    assert not (home / ".gunicorn").exists()  # no control socket at the shared default path
    return output


def test_gunicorn_access_log_is_json_without_ip_query_or_token(app, app_config):
    output = _gunicorn_output(app_config)
    # The app's own lines are JSON and carry the request id.
    app_lines = [json.loads(line) for line in output.splitlines()
                 if line.startswith("{") and '"gunicorn.access"' not in line]
    refused = [r for r in app_lines if "refused GET /v1/contacts" in r["message"]]
    assert refused and refused[0]["request_id"] == "wsgi-test-42"
    access = [json.loads(line) for line in output.splitlines() if '"gunicorn.access"' in line]
    lookup = next(a for a in access if a["request_id"] == "wsgi-test-42")
    assert (lookup["method"], lookup["path"], lookup["status"]) == ("GET", "/v1/contacts", 401)
    assert isinstance(lookup["duration_ms"], int)
    assert any(a["path"] == "/confirm/[token]" and a["status"] == 404 for a in access)
    assert any(a["path"] == '/nope"\\x0aforged=1' for a in access)
    assert all(len(a["request_id"]) >= 8 for a in access)  # generated when none was given
    assert all("127.0.0.1" not in json.dumps(a) and "python-requests" not in json.dumps(a)
               for a in access)


def test_gunicorn_access_log_as_text(app, app_config):
    output = _gunicorn_output(app_config | {"OPTIN_LOG_FORMAT": "text"})
    assert "[request_id=wsgi-test-42]: operator API: refused GET /v1/contacts" in output
    access = [line for line in output.splitlines() if line.startswith("request_id=")]
    assert ('request_id=wsgi-test-42 method=GET path="/v1/contacts" status=401 '
            in "\n".join(access))
    assert 'path="/confirm/[token]" status=404' in output
    assert all("127.0.0.1" not in line and "python-requests" not in line for line in access)


def test_gunicorn_logs_in_the_apps_default_format(app, app_config):
    """gunicorn.conf.py reads optin's settings: in development both default to text."""
    output = _gunicorn_output({**app_config, "OPTIN_ENV": "development"})
    access = [line for line in output.splitlines() if line.startswith("request_id=")]
    assert 'request_id=wsgi-test-42 method=GET path="/v1/contacts" status=401 ' in "\n".join(access)
    assert '"gunicorn.access"' not in output


def test_gunicorn_stops_on_a_bad_setting_with_one_line(app_config):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config, OPTIN_LOG_FORMAT="xml", PYTHONPATH=os.getcwd())
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "optin: configuration error: OPTIN_LOG_FORMAT must be json or text, got 'xml'" in (
        result.stdout + result.stderr)


def test_a_worker_freezes_what_loading_the_app_built(app_config, monkeypatch):
    """gunicorn.conf.py's post_worker_init moves the loaded app's objects out of the garbage
    collector's full collections (gc.freeze), where each pass over them took 130-240 ms."""
    for name, value in app_config.items():
        monkeypatch.setenv(name, value)
    conf = runpy.run_path("gunicorn.conf.py")
    assert conf["worker_class"] == "sync"
    gc.unfreeze()
    try:
        conf["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()

"""The production entry point: gunicorn with gunicorn.conf.py serving wsgi:app."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from .conftest import free_port


def test_gunicorn_serves_the_app_and_logs_no_query_strings(app, app_config):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(app_config, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1",
               PYTHONPATH=os.getcwd())
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                ready = requests.get(f"{base}/readyz", timeout=10)
                break
            except requests.RequestException:
                time.sleep(0.1)
        assert ready.status_code == 200
        lookup = requests.get(f"{base}/v1/contacts", params={"email": "private@example.org"},
                              timeout=5)
        assert lookup.status_code == 401
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert "GET /v1/contacts HTTP/1.1" in output
    assert "private" not in output

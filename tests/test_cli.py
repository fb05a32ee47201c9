"""The operator's command line: lists and consent texts; `optin serve`'s port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import weakref

import pytest
import requests

from optin import cli, create_app
from optin.config import current_settings

from .conftest import deliver, free_port, signup


def test_create_show_and_list(runner):
    result = runner.invoke(args=["lists", "create", "product-news", "--name", "Product News",
                                 "--ac-list-id", "7", "--redirect-url", "https://ex.com/thanks",
                                 "--origin", "https://ex.com", "--locale", "en"])
    assert result.exit_code == 0, result.output
    assert "product-news" in runner.invoke(args=["lists", "list"]).output

    text = runner.invoke(args=["consent-texts", "add", "product-news", "--locale", "en",
                               "--text", "Yes, send me product news."])
    assert "version 1" in text.output
    second = runner.invoke(args=["consent-texts", "add", "product-news", "--locale", "en",
                                 "--text", "Yes, send me product news (v2)."])
    assert "version 2" in second.output

    shown = json.loads(runner.invoke(args=["lists", "show", "product-news", "--json"]).output)
    assert shown["ac_list_id"] == 7
    assert shown["origins"] == ["https://ex.com"]
    assert [t["version"] for t in shown["consent_texts"]] == [1, 2]
    import hashlib

    assert shown["consent_texts"][0]["sha256"] == hashlib.sha256(
        b"Yes, send me product news.").hexdigest()


def test_consent_text_from_a_file(runner, tmp_path):
    runner.invoke(args=["lists", "create", "news", "--name", "News"])
    path = tmp_path / "text.txt"
    path.write_text("Ja, ich möchte den Newsletter.\n", encoding="utf-8")
    result = runner.invoke(args=["consent-texts", "add", "news", "--locale", "de", "--file",
                                 str(path)])
    assert result.exit_code == 0, result.output
    assert "Ja, ich möchte" in runner.invoke(args=["lists", "show", "news"]).output


def test_errors_are_clear(runner):
    assert runner.invoke(args=["lists", "create", "Bad Slug", "--name", "x"]).exit_code == 1
    assert "no list 'nope'" in runner.invoke(args=["lists", "show", "nope"]).output
    runner.invoke(args=["lists", "create", "dup", "--name", "x"])
    assert "exists already" in runner.invoke(args=["lists", "create", "dup", "--name", "y"]).output
    both = runner.invoke(args=["consent-texts", "add", "dup", "--locale", "de"])
    assert both.exit_code == 2 and "exactly one of --text or --file" in both.output
    bad_origin = runner.invoke(args=["lists", "create", "o", "--name", "x", "--origin",
                                     "https://ex.com/path"])
    assert "without a path" in bad_origin.output


def _serve(tmp_path, monkeypatch, **env: str) -> tuple[object, str]:
    """``optin serve --port 8123`` in development, stopped where the server would start."""
    served = []
    monkeypatch.setattr(cli, "run_simple", lambda host, port, app, **kw: served.append(port))
    app = create_app({"OPTIN_ENV": "development",
                      "OPTIN_INSTANCE_PATH": str(tmp_path / "instance"), **env})
    result = app.test_cli_runner().invoke(args=["serve", "--port", "8123", "--no-worker"])
    assert result.exit_code == 0, result.output
    assert served == [8123]
    return app, result.output


def test_serve_on_another_port_points_mail_and_embed_links_to_it(tmp_path, monkeypatch):
    app, output = _serve(tmp_path, monkeypatch)
    assert "Note: links in mails point to" not in output
    runner = app.test_cli_runner()
    embed = runner.invoke(args=["lists", "show", "newsletter", "--embed"]).output
    assert 'action="http://localhost:8123/v1/subscriptions"' in embed
    signup(app.test_client(), "anna@example.org")
    deliver(app)
    [link] = runner.invoke(args=["mail", "last", "--links"]).output.splitlines()
    assert link.startswith("http://localhost:8123/confirm/")


def test_serve_keeps_a_base_url_that_was_set(tmp_path, monkeypatch):
    app, output = _serve(tmp_path, monkeypatch, OPTIN_BASE_URL="http://localhost:8000")
    with app.app_context():
        assert current_settings().base_url == "http://localhost:8000"
    assert "Note: links in mails point to OPTIN_BASE_URL=http://localhost:8000" in output


def test_serve_in_development_prints_an_operator_token_that_works(tmp_path):
    """The README's operator calls can be tried right after `optin serve`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPTIN_")}
    env.update(OPTIN_INSTANCE_PATH=str(tmp_path), PYTHONPATH=os.getcwd(), PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, "-m", "optin", "serve", "--port", str(port), "--no-worker"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        printed = []
        for line in server.stdout:
            printed.append(line)
            if line.strip().startswith("export TOKEN="):
                break
        token = printed[-1].strip().removeprefix("export TOKEN=")
        assert token == (tmp_path / "admin_token").read_text()
        for _ in range(100):
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/v1/lists", timeout=5,
                                      headers={"Authorization": f"Bearer {token}"})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert answer.status_code == 200
        assert [entry["slug"] for entry in answer.json()["lists"]] == ["newsletter"]  # the demo list
    finally:
        server.terminate()
        rest, _ = server.communicate(timeout=30)
    assert sum(token in line for line in [*printed, *rest.splitlines()]) == 1  # printed once, logged never


def test_proof_help_says_the_locale_chooses_the_text_proofs_language_too(runner):
    """``--locale en`` gives the text proof in English (README: "The text proof … is in the
    document's language"); the help said only html and pdf."""
    result = runner.invoke(args=["proof", "--help"])
    assert result.exit_code == 0 and "text, html and pdf" in " ".join(result.output.split())


class _Held:
    """Something a weakref can point to."""


def test_a_ctrl_c_that_lands_in_a_finalizer_still_stops_an_import():
    """Python swallows an exception raised in a weakref callback ("Exception ignored"): a
    Ctrl-C landing while SQLAlchemy cleaned up an instance state let a real import run to
    its end (exit 0, seen in the PostgreSQL suite). The import's handler only notes the
    signal; the next row's check raises it."""

    def finalizer(_: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10_000):  # the handler runs here, inside the callback
            pass

    with pytest.raises(KeyboardInterrupt), cli._interrupt_between_rows() as check:
        held = _Held()
        ref = weakref.ref(held, finalizer)
        del held  # the callback runs now, and the signal with it
        assert ref() is None
        check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back

"""/healthz and /readyz: the process, and whether the database is reachable and migrated."""

from __future__ import annotations

import pytest
from flask_migrate import upgrade

from optin import create_app
from optin.extensions import db

from ..conftest import PG_URL, _reset_postgres, free_port, make_config


def _app(tmp_path, **overrides):
    app = create_app(make_config(tmp_path, **overrides))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


# Ready when migrated: tests/test_migrations.py.


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://optin@127.0.0.1:{port}/optin?connect_timeout=2",
    "sqlite:///{tmp}/no/such/folder/optin.db",
])
def test_not_ready_when_the_database_is_unreachable(tmp_path, url):
    url = url.format(port=free_port(), tmp=tmp_path)  # a closed port, a folder that isn't there
    for app in _app(tmp_path, OPTIN_DATABASE_URL=url):
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.json["database"] == "unreachable"
        assert response.headers["Retry-After"]
        assert "127.0.0.1" not in response.get_data(as_text=True)  # no URL in the answer
        assert client.get("/healthz").status_code == 200  # the process itself is fine


def test_not_ready_until_migrated(tmp_path):
    if PG_URL:
        _reset_postgres(PG_URL)
    for app in _app(tmp_path):
        client = app.test_client()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.mimetype == "application/problem+json"
        assert response.json["migrations"] == "behind"
        assert "optin db upgrade" in response.json["detail"]
        with app.app_context():
            upgrade()
        assert client.get("/readyz").status_code == 200

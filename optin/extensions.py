"""Flask extensions, created once here and bound to the app in ``create_app``.

Creating them at module level (and binding later) is what lets every other
module import ``db`` without importing the app: no circular imports.
"""

from __future__ import annotations

from typing import Any

import flask
import flask_limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_smorest import Api
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from .schemas import ProblemSchema


class Base(DeclarativeBase):
    pass


class Limiter(flask_limiter.Limiter):
    """Flask-Limiter with its storage kept per app.

    Flask-Limiter keeps the storage it opens in ``init_app`` on the extension
    object, so with one module-level instance the last app built in a process
    would count for every app (tests, or two apps in one process standing for
    two hosts). Here ``init_app`` moves the storage and strategy into
    ``app.extensions``, and the limiter reads them from the current app.
    """

    _PER_APP = "optin.ratelimit"

    def init_app(self, app: flask.Flask) -> None:
        self.__dict__["_building"] = {}
        try:
            super().init_app(app)
            app.extensions[self._PER_APP] = self.__dict__["_building"]
        finally:
            del self.__dict__["_building"]

    def _get(self, name: str) -> Any:
        building = self.__dict__.get("_building")
        if building is not None and name in building:
            return building[name]
        if flask.has_app_context():
            return flask.current_app.extensions.get(self._PER_APP, {}).get(name)
        return None

    def _set(self, name: str, value: Any) -> None:
        building = self.__dict__.get("_building")
        if building is not None:
            building[name] = value

    _storage = property(lambda self: self._get("storage"),  # type: ignore[assignment]
                        lambda self, value: self._set("storage", value))
    _limiter = property(lambda self: self._get("limiter"),  # type: ignore[assignment]
                        lambda self, value: self._set("limiter", value))


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class ProblemApi(Api):
    """flask-smorest's Api, documenting its default error answers as RFC 9457 problems."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self) -> None:
        # flask-smorest registers one shared content type for successes and errors;
        # ours differ (problems.py answers errors as application/problem+json).
        self.DEFAULT_RESPONSE_CONTENT_TYPE = "application/problem+json"
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE


api = ProblemApi()
# Limits are declared on the routes (see optin/limits.py); storage comes from
# OPTIN_RATELIMIT_STORAGE_URL, one per app.
limiter = Limiter(key_func=get_remote_address, default_limits=[])

"""How a request's JSON body is read: once, by the same rules, for every route.

Flask's ``request.get_json()`` (the signup, the CORS check) and webargs, which
flask-smorest's ``@bp.arguments`` use, both end in :func:`loads`. It refuses
what the standard library would accept or fail on in ways no route can
answer well:

- nesting deeper than :data:`MAX_DEPTH` (no request needs it; past a few
  thousand levels the decoder's ``RecursionError`` would be a 500),
- ``NaN`` and ``Infinity``, which are not JSON (RFC 8259) and which
  PostgreSQL's JSONB cannot hold.

Both are a 400 problem saying why. An integer literal too long for Python's
``int`` (``sys.get_int_max_str_digits()``) is not a broken body: it parses as
a :class:`~decimal.Decimal`, so the schema can refuse it as the field's error
(422 naming the field) rather than the whole body failing.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any

import flask
import flask_smorest
from flask.json.provider import DefaultJSONProvider
from webargs.flaskparser import FlaskParser
from werkzeug.exceptions import BadRequest

#: Deepest nesting of arrays and objects a body may have (a signup needs 2).
MAX_DEPTH = 32
TOO_DEEP = f"nested too deeply (at most {MAX_DEPTH} levels)"


class RefusedJSON(json.JSONDecodeError):
    """A body that no route accepts. A ``JSONDecodeError``, so that Flask (which catches
    ``ValueError``) and webargs (which catches ``JSONDecodeError``) both answer it 400."""

    def __init__(self, reason: str, doc: str) -> None:
        super().__init__(reason, doc, 0)

    def __str__(self) -> str:
        return self.msg  # no "line 1 column 1": the reason is about the whole body


def _parse_int(literal: str) -> int | Decimal:
    if len(literal.lstrip("-")) > sys.get_int_max_str_digits():
        return Decimal(literal)
    return int(literal)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _check_depth(value: Any, data: str | bytes | bytearray) -> None:
    # Iterative on purpose: a recursive walk would be the very recursion refused here.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        if children and depth > MAX_DEPTH:
            raise RefusedJSON(TOO_DEEP, _text(data))
        stack.extend((child, depth + 1) for child in children)


def loads(data: str | bytes | bytearray) -> Any:
    """Parse a request body by the rules above; raise ``JSONDecodeError`` (a ``ValueError``)
    on a body that breaks them or is not JSON."""
    try:
        value = json.loads(data, parse_int=_parse_int, parse_constant=_not_json)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise RefusedJSON(TOO_DEEP, _text(data)) from None
    except ValueError as exc:  # NaN/Infinity, or bytes that are not UTF-8/16/32
        raise RefusedJSON(str(exc), _text(data)) from None
    _check_depth(value, data)
    return value


def _text(data: str | bytes | bytearray) -> str:
    """The body as the error's ``doc`` (webargs takes an empty one for "no body")."""
    return data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading by :func:`loads` (what ``request.get_json()`` calls)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s)


class Request(flask.Request):
    """Says why a JSON body was refused, in the 400's description (Flask outside debug
    mode drops the reason)."""

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        if e is None:
            return super().on_json_loading_failed(e)
        raise BadRequest(f"The body is not valid JSON: {e}.")


class ArgumentsParser(FlaskParser):
    """webargs' Flask parser, reading JSON by :func:`loads` (webargs uses ``json.loads``)."""

    def _raw_load_json(self, req: flask.Request) -> Any:
        if not req.is_json:
            return super()._raw_load_json(req)
        return loads(req.get_data(cache=True))


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint whose ``@bp.arguments`` parse JSON by the rules above."""

    ARGUMENTS_PARSER = ArgumentsParser()


def init_app(app: flask.Flask) -> None:
    app.json = JSONProvider(app)
    app.request_class = Request

"""Page assets (the brand stylesheet) and the OpenAPI description of HTML answers."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, make_response
from flask import request as flask_request

from optin.brand import stylesheet
from optin.ops.requestjson import Blueprint
from optin.schemas import ProblemSchema

bp = Blueprint("pages", __name__, description="Page assets")


@bp.route("/brand.css", methods=["GET"])
@bp.doc(responses={200: {"description": "CSS custom properties",
                         "content": {"text/css": {"schema": {"type": "string"}}}},
                   304: {"description": "Not modified (ETag)"}})
def brand_css() -> Response:
    """The brand colours as CSS custom properties (no inline style under our CSP)."""
    response = make_response(stylesheet(current_app.extensions["optin.brand"]))
    response.mimetype = "text/css"
    response.cache_control.public = True
    response.cache_control.max_age = 3600
    response.add_etag()
    return response.make_conditional(flask_request)  # type: ignore[return-value]  # the same object


def page_responses(**pages: str) -> dict[int, dict[str, Any]]:
    """OpenAPI responses that are HTML pages: ``page_responses(_200="…", _404="…")``."""
    return {int(status.lstrip("_")): {
        "description": description,
        "content": {"text/html": {"schema": {"type": "string"}}},
    } for status, description in pages.items()}


def negotiated_responses(**errors: str) -> dict[int, dict[str, Any]]:
    """OpenAPI responses of errors answered as the client asks (ops.problems.error_response):
    a page for browsers, a problem document for clients that want JSON."""
    return {int(status.lstrip("_")): {
        "description": description,
        "content": {"text/html": {"schema": {"type": "string"}},
                    "application/problem+json": {"schema": ProblemSchema}},
    } for status, description in errors.items()}

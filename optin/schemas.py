"""Request and response schemas (marshmallow): shapes only, no business rules."""

from __future__ import annotations

import re

from marshmallow import EXCLUDE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as ma

MAX_FIELDS = 20
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def no_control_characters(value: str) -> None:
    """Names and fields never contain line breaks or NULs; refusing them keeps
    them out of mail headers and the database alike."""
    if _CONTROL.search(value):
        raise ValidationError("Must not contain control characters or line breaks.")


def _text(max_length: int, **kwargs: object) -> ma.String:
    return ma.String(validate=[validate.Length(max=max_length), no_control_characters], **kwargs)


class SignupSchema(Schema):
    """``POST /v1/subscriptions``: JSON or a plain HTML form post."""

    class Meta:
        unknown = EXCLUDE  # forms carry submit buttons and the like

    email = ma.String(required=True, validate=[validate.Length(min=3, max=320),
                                               no_control_characters],
                          metadata={"example": "anna@example.org"})
    list = ma.String(required=True, validate=validate.Length(min=1, max=64),
                         metadata={"example": "newsletter"})
    consent_text_version = ma.Integer(required=True, strict=False,
                                          validate=validate.Range(min=1, max=1_000_000),
                                          metadata={"example": 1})
    locale = ma.String(load_default=None, validate=validate.OneOf(["de", "en"]),
                           metadata={"example": "de"})
    first_name = _text(200, load_default=None, allow_none=True)
    last_name = _text(200, load_default=None, allow_none=True)
    fields = ma.Dict(keys=ma.String(validate=[validate.Length(min=1, max=64),
                                              no_control_characters]),
                     values=_text(1000), load_default=dict)
    source_url = _text(2000, load_default=None, allow_none=True)
    redirect_url = _text(2000, load_default=None, allow_none=True)
    website = ma.String(load_default=None, allow_none=True,
                        metadata={"description": "honeypot: leave empty"})

    @validates_schema
    def _few_fields(self, data: dict, **_: object) -> None:
        if len(data.get("fields") or {}) > MAX_FIELDS:
            raise ValidationError(f"At most {MAX_FIELDS} fields.", "fields")


class SignupAcceptedSchema(Schema):
    status = ma.String(metadata={"example": "accepted"})
    detail = ma.String()


class ProblemSchema(Schema):
    """RFC 9457 problem details."""

    type = ma.String()
    title = ma.String()
    status = ma.Integer()
    detail = ma.String()
    errors = ma.Dict(keys=ma.String(), values=ma.List(ma.String()))

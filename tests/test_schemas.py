"""The request schemas: every text a client sends passes the same rule."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError
from marshmallow import fields as ma

from optin.schemas import SignupSchema, Text, ThanksQuerySchema, WholeNumber

PUBLIC = [SignupSchema, ThanksQuerySchema]


def _strings(schema: type) -> list[tuple[str, ma.Field]]:
    found = []
    for name, field in schema().fields.items():
        inner = [field.key_field, field.value_field] if isinstance(field, ma.Dict) else [field]
        found += [(name, f) for f in inner if isinstance(f, ma.String)]
    return found


@pytest.mark.parametrize("schema", PUBLIC, ids=lambda s: s.__name__)
def test_every_text_field_of_a_public_schema_refuses_unstorable_text(schema):
    strings = _strings(schema)
    assert strings
    assert [name for name, field in strings if not isinstance(field, Text)] == []
    for name, field in strings:
        for bad in ("a\x00b", "a\ud800b", "line\nbreak"):
            with pytest.raises(ValidationError):
                field.deserialize(bad)
        if name != "locale":  # one of a few words
            assert field.deserialize("Jörg 🙂") == "Jörg 🙂", name


@pytest.mark.parametrize(("value", "expected"), [(1, 1), ("1", 1), (" 42 ", 42), ("-3", -3)])
def test_a_whole_number_is_an_int_or_its_digits(value, expected):
    assert WholeNumber().deserialize(value) == expected


@pytest.mark.parametrize("value", [1.0, 1.5, True, "1.0", "١", "", "1e3", None, "9" * 19])
def test_anything_else_is_not_a_whole_number(value):
    with pytest.raises(ValidationError):
        WholeNumber().deserialize(value)

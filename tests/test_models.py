"""Column types that store whatever a client sent (issue 13, finding 1)."""

from __future__ import annotations

from sqlalchemy import select

from optin.extensions import db
from optin.models import AuditEntry, storable_json, storable_text


def test_storable_text_drops_what_no_database_holds_and_keeps_the_rest():
    assert storable_text("a\x00b\x01c\x1fd\x7fe\ud800f\udfffg") == "abcdefg"
    assert storable_text("tab\tline\nreturn\r") == "tab\tline\nreturn\r"
    assert storable_text("Jörg 🙂 ａｎｎａ") == "Jörg 🙂 ａｎｎａ"
    assert storable_text("x" * 50, 45) == "x" * 45


def test_storable_json_cleans_keys_and_nested_strings():
    assert storable_json({"k\x00": ["a\x00", {"b": "c\ud800"}, 1, None, True]}) == {
        "k": ["a", {"b": "c"}, 1, None, True]}


def test_a_write_of_unstorable_text_succeeds_on_every_database(app):
    with app.app_context():
        db.session.add(AuditEntry(actor="x\x00" * 80, action="probe\x00",
                                  details={"reason\x00": "a\x00b", "nested": ["\ud800"]}))
        db.session.commit()
        entry = db.session.scalar(select(AuditEntry))
        assert entry.actor == "x" * 80 and entry.action == "probe"
        assert entry.details == {"reason": "ab", "nested": [""]}

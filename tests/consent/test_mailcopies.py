"""A mail's copy gives back exactly the mail sent, with token and names marked."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optin.consent import mailcopies
from optin.consent.mailcopies import BRACKET, NAMES, TOKEN, restore, take

TOKEN_VALUE = "eyJzIjo3fQ.Zx-1_abc"


def _mail(first: str) -> dict[str, str]:
    from markupsafe import escape
    return {
        "subject": f"Please confirm, {first}",
        "text": f"Hello {first},\n\nhttp://x.test/confirm/{TOKEN_VALUE}\n\nNewsletter “News”.\n",
        "html": f"<p>Hello {escape(first)},</p><a href=\"http://x.test/confirm/{TOKEN_VALUE}\">"
                f"http://x.test/confirm/{TOKEN_VALUE}</a>",
    }


def test_token_and_name_are_marked_and_give_back_the_mail():
    sent = _mail("Anna")
    copy = take(sent, tokens=[TOKEN_VALUE], names={"first_name": "Anna", "last_name": None})
    assert copy.parts["text"] == (f"Hello {NAMES['first_name']},\n\nhttp://x.test/confirm/{TOKEN}"
                                  "\n\nNewsletter “News”.\n")
    assert "Anna" not in "".join(copy.parts.values()) and TOKEN_VALUE not in "".join(copy.parts.values())
    assert copy.names["html"] == ["Anna"] and copy.names["subject"] == ["Anna"]
    with_names = copy.with_names()
    for part in sent:
        assert with_names[part].replace(TOKEN, TOKEN_VALUE) == sent[part]
    evidence = copy.evidence()
    assert evidence["token_sha256"] == [mailcopies.sha256(TOKEN_VALUE)]
    assert evidence["names_marked"] == ["first_name"]
    assert evidence["without_names"]["text"] == mailcopies.sha256(copy.parts["text"])


def test_a_name_is_marked_as_a_word_only():
    # "Ne" is a name, and also the start of "Newsletter": only the word is the name.
    copy = take(_mail("Ne"), tokens=[TOKEN_VALUE], names={"first_name": "Ne"})
    assert "Newsletter" in copy.parts["text"] and copy.names["text"] == ["Ne"]


def test_html_escaped_names_and_a_name_broken_by_the_line_wrap():
    sent = _mail("Ann & <b>")
    sent["text"] = "Hello Anna\nMaria, welcome Anna Maria\n"
    copy = take(sent, tokens=[TOKEN_VALUE], names={"first_name": "Anna Maria"})
    assert copy.parts["text"] == f"Hello {NAMES['first_name']}, welcome {NAMES['first_name']}\n"
    assert copy.names["text"] == ["Anna\nMaria", "Anna Maria"]
    copy = take(_mail("Ann & <b>"), tokens=[TOKEN_VALUE], names={"first_name": "Ann & <b>"})
    assert "&lt;b&gt;" not in copy.parts["html"] and copy.names["html"] == ["Ann &amp; &lt;b&gt;"]


def test_a_name_that_looks_like_a_marker_cannot_confuse_the_copy():
    hostile = f"{TOKEN}{BRACKET}⟦"
    sent = _mail(hostile)
    copy = take(sent, tokens=[TOKEN_VALUE], names={"first_name": hostile})
    assert copy.names["text"] == [hostile]
    # Without the names nothing of the hostile value is left, and with them the mail is back.
    assert hostile not in copy.parts["text"]
    assert restore(copy.parts["text"], copy.names["text"]) == sent["text"].replace(TOKEN_VALUE, TOKEN)


@given(first=st.text(min_size=1, max_size=30), text=st.text(max_size=200))
def test_the_copy_always_gives_back_the_mail(first, text):
    sent = {"subject": text, "text": f"{text} Hello {first}, {TOKEN_VALUE} {text}", "html": text}
    copy = take(sent, tokens=[TOKEN_VALUE], names={"first_name": first})
    for part in sent:
        assert restore(copy.parts[part], copy.names[part]) == sent[part].replace(TOKEN_VALUE, TOKEN)
    # Without the names, no occurrence of the name as a word is left.
    assert TOKEN_VALUE not in copy.parts["text"]


def test_no_values_leave_the_kept_text_as_it_is():
    assert restore(f"a {NAMES['first_name']} {BRACKET}", None) == f"a {NAMES['first_name']} {BRACKET}"


@pytest.mark.parametrize("value", ["", "   "])
def test_blank_names_mark_nothing(value):
    copy = take(_mail("x"), tokens=[TOKEN_VALUE], names={"first_name": value})
    assert copy.names["text"] == []

"""The embeddable signup form: the snippet and its script (CORS: tests/test_cors.py)."""

from __future__ import annotations

from html.parser import HTMLParser

from sqlalchemy import select

from optin.consent import lists
from optin.extensions import db
from optin.models import Subscription


class _Form(HTMLParser):
    """The snippet as a browser sees it: the form, its inputs, labels and scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str | None] = {}
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.labels: dict[str, str] = {}  # for= → text
        self.scripts: list[dict[str, str | None]] = []
        self.texts: list[str] = []
        self._label_for: str | None = None
        self._hidden_depth = 0
        self.hidden_wrappers: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "form":
            self.form = attr
        elif tag == "input" and attr.get("name"):
            self.inputs[attr["name"] or ""] = attr
        elif tag == "label":
            self._label_for = attr.get("for")
            self.labels[self._label_for or ""] = ""
        elif tag == "script":
            self.scripts.append(attr)
        elif tag == "div" and attr.get("aria-hidden") == "true":
            self.hidden_wrappers.append(attr)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_for = None

    def handle_data(self, data: str) -> None:
        if self._label_for is not None:
            self.labels[self._label_for] += data
        self.texts.append(data)


def _snippet(runner, *args: str) -> tuple[str, _Form]:
    result = runner.invoke(args=["lists", "show", "newsletter", "--embed", *args])
    assert result.exit_code == 0, result.output
    form = _Form()
    form.feed(result.output)
    return result.output, form


def test_snippet_is_a_complete_plain_form(app, runner, newsletter):
    with app.app_context():
        lists.add_consent_text(lists.get_list("newsletter"), "en", "Yes, send me news (v2).")
    html, form = _snippet(runner, "--locale", "en")

    assert form.form["action"] == "http://newsletter.test/v1/subscriptions"
    assert form.form["method"] == "post"
    assert "data-optin" in form.form
    hidden = {name: a["value"] for name, a in form.inputs.items() if a.get("type") == "hidden"}
    assert hidden == {"list": "newsletter", "locale": "en", "consent_text_version": "2",
                      "source_url": ""}
    assert "Yes, send me news (v2)." in html  # the text of the version it sends

    email = form.inputs["email"]
    assert email["type"] == "email" and "required" in email and email["autocomplete"] == "email"
    assert form.labels[email["id"] or ""] == "Email address"
    assert "(optional)" in form.labels[form.inputs["first_name"]["id"] or ""]

    honeypot = form.inputs["website"]
    assert honeypot["tabindex"] == "-1" and honeypot["autocomplete"] == "off"
    assert form.hidden_wrappers and form.hidden_wrappers[0]["class"] == "optin-hp"
    assert "left:-10000px" in (form.hidden_wrappers[0]["style"] or "")

    assert form.scripts == [{"src": "http://newsletter.test/static/embed.js", "defer": None}]


def test_snippet_defaults_to_the_lists_locale_and_version(runner, newsletter):
    _, form = _snippet(runner)
    assert form.inputs["locale"]["value"] == "de"
    assert form.inputs["consent_text_version"]["value"] == "1"
    assert form.labels[form.inputs["email"]["id"] or ""] == "E-Mail-Adresse"


def test_snippet_links_the_privacy_policy_when_the_list_has_one(runner, newsletter):
    result = runner.invoke(args=["lists", "update", "newsletter", "--privacy-policy-url",
                                 "https://www.example.com/datenschutz"])
    assert result.exit_code == 0, result.output
    html, _ = _snippet(runner)
    assert '<a href="https://www.example.com/datenschutz">Datenschutzerklärung</a>' in html


def test_snippet_needs_a_consent_text(app, runner):
    with app.app_context():
        lists.create_list("bare", "Bare")
    result = runner.invoke(args=["lists", "show", "bare", "--embed", "--locale", "en"])
    assert result.exit_code == 1
    assert "has no consent text in 'en'" in result.output
    assert "optin consent-texts add bare --locale en" in result.output


def test_posting_the_snippet_as_it_is_signs_up(app, client, runner, newsletter):
    """What a browser without JavaScript sends: every field of the form."""
    _, form = _snippet(runner, "--locale", "en")
    data = {name: a.get("value") or "" for name, a in form.inputs.items()}
    data.update(email="anna@example.org", first_name="Anna")
    response = client.post("/v1/subscriptions", data=data,
                           headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 303
    assert response.headers["Location"] == "https://www.example.com/danke"
    with app.app_context():
        sub = db.session.scalar(select(Subscription))
        assert (sub.locale, sub.consent_text.version, sub.first_name) == ("en", 1, "Anna")


def test_filled_honeypot_stores_nothing_and_answers_the_same(app, client, newsletter):
    response = client.post("/v1/subscriptions", data={
        "email": "bot@example.org", "list": "newsletter", "consent_text_version": "1",
        "website": "http://spam.example",
    }, headers={"Accept": "application/json"})
    assert response.status_code == 202
    with app.app_context():
        assert db.session.scalar(select(Subscription)) is None


def test_embed_script_and_stylesheet_are_served(client):
    script = client.get("/static/embed.js")
    assert script.status_code == 200 and script.mimetype == "text/javascript"
    assert b"fetch(form.action" in script.data
    css = client.get("/static/embed.css")
    assert css.status_code == 200 and css.mimetype == "text/css"

"""Issue 18 through HTTP and the CLI: a fresh unsubscribe link answered alike for every
address, POST-redirect-GET, the honest page for an old link, "Back" to the form's page,
the list's footer settings, and the embed warning."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from optin.consent import lists
from optin.extensions import db
from optin.models import ConsentEvent

from ..conftest import deliver, links, signup

BROWSER = {"Accept": "text/html,application/xhtml+xml"}


def _shape(response):
    return response.status_code, response.headers.get("Location"), response.get_data()


def test_a_fresh_unsubscribe_link_is_mailed_and_the_answer_tells_nothing(
        app, client, confirmed, signed_up, mailbox):
    confirmed("anna@example.org")
    signed_up("pending@example.org")
    gone = confirmed("gone@example.org")
    assert client.post(gone).status_code == 303
    deliver(app)
    before = {a: len(mailbox.to(a)) for a in ("anna@example.org", "pending@example.org",
                                             "gone@example.org")}
    page = client.get("/unsubscribe/cut-short", headers=BROWSER)
    assert page.status_code == 404 and 'action="/unsubscribe/link"' in page.get_data(as_text=True)

    answers = {address: client.post("/unsubscribe/link", data={"email": address, "locale": "de"})
               for address in ("anna@example.org", "pending@example.org", "gone@example.org",
                               "nobody@example.org", "not an address", "")}
    assert len({_shape(a) for a in answers.values()}) == 1  # the same for everyone
    landing = client.get(answers["anna@example.org"].headers["Location"])
    assert "Bitte sehen Sie in Ihrem Posteingang nach" in landing.get_data(as_text=True)
    deliver(app)
    assert len(mailbox.to("pending@example.org")) == before["pending@example.org"]
    assert len(mailbox.to("gone@example.org")) == before["gone@example.org"]
    assert mailbox.to("nobody@example.org") == []
    [fresh] = mailbox.to("anna@example.org")[before["anna@example.org"]:]
    assert fresh["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = links(fresh)["unsubscribe"]
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with app.app_context():
        kinds = list(db.session.scalars(select(ConsentEvent.kind)))
    assert "unsubscribe_link_requested" in kinds and "unsubscribe_link_sent" in kinds


@pytest.fixture
def cap_config(app_config):
    app_config["OPTIN_MAILS_PER_ADDRESS_PER_DAY"] = "3"


def test_the_fresh_link_form_cannot_flood_a_mailbox(cap_config, app, client, confirmed, mailbox):
    confirmed("anna@example.org")  # one confirmation mail counted of the day's 3
    before = len(mailbox.to("anna@example.org"))
    for _ in range(5):
        client.post("/unsubscribe/link", data={"email": "anna@example.org"})
    deliver(app)
    assert len(mailbox.to("anna@example.org")) - before == 2  # OPTIN_MAILS_PER_ADDRESS_PER_DAY


def test_buttons_redirect_to_their_result_and_one_click_does_not(app, client, signed_up):
    path = signed_up("anna@example.org", source_url="https://www.example.com/aktion")
    done = client.post(path, headers=BROWSER)
    assert done.status_code == 303 and done.headers["Location"] == f"{path}?done=1"
    result = client.get(done.headers["Location"], headers=BROWSER)
    assert "Ihre Anmeldung ist bestätigt" in result.get_data(as_text=True)
    assert client.get(path).get_data(as_text=True).count("bereits bestätigt") >= 1
    deliver(app)


def test_an_old_confirm_link_after_unsubscribing_says_so(app, client, signed_up, mailbox):
    path = signed_up("anna@example.org", source_url="https://www.example.com/aktion")
    client.post(path)
    deliver(app)
    unsubscribe = links(mailbox.to("anna@example.org")[-1])["unsubscribe"]
    after = client.post(unsubscribe, headers=BROWSER)
    assert after.status_code == 303 and after.headers["Location"] == unsubscribe
    page = client.get(unsubscribe, headers=BROWSER).get_data(as_text=True)
    assert 'href="https://www.example.com/aktion"' in page  # sign up again, on the form
    old = client.get(path, headers=BROWSER)
    html = old.get_data(as_text=True)
    assert old.status_code == 200 and "Diese Anmeldung ist beendet" in html
    assert re.search(r"am \d{1,2}\. \w+ 20\d\d beendet", html)
    assert "nicht vollständig übernommen" not in html


def test_a_foreign_source_url_is_never_linked(app, client, signed_up, mailbox):
    path = signed_up("anna@example.org", source_url="https://evil.example/phish")
    client.post(path)
    deliver(app)
    unsubscribe = links(mailbox.to("anna@example.org")[-1])["unsubscribe"]
    client.post(unsubscribe)
    assert "evil.example" not in client.get(unsubscribe).get_data(as_text=True)
    assert "evil.example" not in client.get(path).get_data(as_text=True)


def test_back_leads_to_the_forms_page_not_the_sites_root(client, newsletter):
    form = {"email": "anna@invalid", "list": "newsletter", "consent_text_version": "1",
            "locale": "de"}
    headers = {**BROWSER, "Origin": "https://www.example.com",
               "Referer": "https://www.example.com/"}
    page = client.post("/v1/subscriptions", headers=headers,
                       data={**form, "source_url": "https://www.example.com/aktion/sommer"})
    assert page.status_code == 422
    assert 'href="https://www.example.com/aktion/sommer">Zurück' in page.get_data(as_text=True)
    # A source_url elsewhere is no "Back": the Referer stands.
    other = client.post("/v1/subscriptions", headers=headers,
                        data={**form, "source_url": "https://evil.example/"})
    html = other.get_data(as_text=True)
    assert "evil.example" not in html and 'href="https://www.example.com/">Zurück' in html


def test_the_lists_footer_settings_reach_pages_and_mails(app, client, runner, newsletter,
                                                         mailbox):
    result = runner.invoke(args=[
        "lists", "update", "newsletter", "--website-url", "https://www.example.com/",
        "--imprint-url", "https://www.example.com/impressum", "--postal-address",
        "Musterstraße 1\\n10115 Berlin", "--sender-name", "Example Redaktion",
        "--controller", "Example GmbH"])
    assert result.exit_code == 0, result.output
    assert runner.invoke(args=["lists", "update", "newsletter", "--imprint-url",
                               "javascript:alert(1)"]).exit_code != 0
    assert signup(client, "anna@example.org", locale="de").status_code == 202
    deliver(app)
    [mail] = mailbox.to("anna@example.org")
    assert str(mail["From"]) == "Example Redaktion <news@example.com>"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Example GmbH\nMusterstraße 1\n10115 Berlin\n" in text
    assert "Impressum: https://www.example.com/impressum" in text
    page = client.get(links(mail)["confirm"]).get_data(as_text=True)
    assert "<address>Musterstraße 1<br>10115 Berlin</address>" in page
    assert 'href="https://www.example.com/impressum">Impressum' in page


def test_embed_warns_when_the_list_has_no_origin(app, runner, newsletter):
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"), origins=[])
    result = runner.invoke(args=["lists", "show", "newsletter", "--embed"])
    assert result.exit_code == 0
    assert "optin lists update newsletter --origin" in result.stderr
    assert "<form" in result.stdout and "warning" not in result.stdout
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"), origins=["https://www.example.com"])
    assert "warning" not in runner.invoke(args=["lists", "show", "newsletter",
                                                "--embed"]).stderr


def test_the_controllers_address_is_written_in_lines(app, client, newsletter, mailbox):
    """OPTIN_CONTROLLER_ADDRESS ("Musterstraße 1; 10115 Berlin; Deutschland" in the tests)
    is one line per part in page and mail footers, as on the proof, never with its ``;``."""
    path = links_after_confirming(app, client, mailbox)
    page = client.get(path, headers=BROWSER).get_data(as_text=True)
    assert "<address>Musterstraße 1<br>10115 Berlin<br>Deutschland</address>" in page
    for mail in mailbox.to("anna@example.org"):  # the confirmation and the welcome mail
        html = mail.get_body(("html",)).get_content()
        text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert "Example Newsletter GmbH<br>Musterstraße 1<br>10115 Berlin<br>Deutschland</p>" in html
        assert "Example Newsletter GmbH\nMusterstraße 1\n10115 Berlin\nDeutschland\n" in text
        assert "Berlin;" not in html and "Berlin;" not in text


def links_after_confirming(app, client, mailbox, address="anna@example.org"):
    """Sign up and confirm ``address``; the confirmation link's path."""
    assert signup(client, address, locale="de").status_code == 202
    deliver(app)
    path = links(mailbox.to(address)[-1])["confirm"]
    assert client.post(path).status_code == 303
    deliver(app)
    return path


PASSED_ON = {"de": "Wir geben Ihre Adresse an ActiveCampaign weiter",
             "en": "We pass your address to ActiveCampaign"}


@pytest.mark.parametrize("locale", ["de", "en"])
def test_dry_run_names_no_processor(app, client, newsletter, mailbox, locale):
    """Without OPTIN_AC_URL nothing is passed on: the welcome mail must not say it is."""
    assert signup(client, "anna@example.org", locale=locale).status_code == 202
    deliver(app)
    assert client.post(links(mailbox.to("anna@example.org")[-1])["confirm"]).status_code == 303
    deliver(app)
    welcome = mailbox.to("anna@example.org")[-1]
    for part in ("html", "plain"):
        body = welcome.get_body((part,)).get_content()
        assert "ActiveCampaign" not in body, part
        assert ("Sie können sich jederzeit abmelden" if locale == "de"
                else "You can unsubscribe at any time") in body


@pytest.mark.parametrize("locale", ["de", "en"])
def test_the_processor_is_named_while_contacts_are_synced(ac_app, ac_newsletter, mailbox,
                                                          locale):
    client = ac_app.test_client()
    assert signup(client, "anna@example.org", locale=locale).status_code == 202
    deliver(ac_app)
    assert client.post(links(mailbox.to("anna@example.org")[-1])["confirm"]).status_code == 303
    deliver(ac_app)
    welcome = mailbox.to("anna@example.org")[-1]
    for part in ("html", "plain"):
        body = " ".join(welcome.get_body((part,)).get_content().split())  # unwrapped
        assert PASSED_ON[locale] in body, part


def test_a_list_without_an_activecampaign_list_names_no_processor(ac_app, newsletter, mailbox):
    """ActiveCampaign configured, but this list is not synced (no list id): not passed on."""
    client = ac_app.test_client()
    assert signup(client, "anna@example.org", locale="de").status_code == 202
    deliver(ac_app)
    assert client.post(links(mailbox.to("anna@example.org")[-1])["confirm"]).status_code == 303
    deliver(ac_app)
    assert "ActiveCampaign" not in mailbox.to("anna@example.org")[-1].get_body(
        ("plain",)).get_content()


# --- "Back" from our thank-you and error pages ----------------------------------------------

FORM = {"email": "anna@example.org", "list": "newsletter", "consent_text_version": "1",
        "locale": "de"}
#: What a browser sends when a landing page at www.example.com posts the form to us.
CROSS_SITE = {**BROWSER, "Origin": "https://www.example.com",
              "Referer": "https://www.example.com/"}


def _thanks_page(client, **form):
    """The no-JavaScript post and the thank-you page it is redirected to."""
    posted = client.post("/v1/subscriptions", headers=CROSS_SITE, data={**FORM, **form})
    assert posted.status_code == 303, posted.get_data(as_text=True)
    location = posted.headers["Location"]
    assert location.startswith("/thanks?")
    page = client.get(location, headers={"Referer": "https://www.example.com/"})
    assert page.status_code == 200
    return page.get_data(as_text=True)


def _back(html):
    found = re.findall(r'<a class="button button-secondary" href="([^"]*)">Zurück', html)
    return found[0].replace("&amp;", "&") if found else None


@pytest.fixture
def own_thanks(app, newsletter):
    """The list sends form posts to our thank-you page (no thank-you URL of its own)."""
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"), redirect_urls=[])


def test_the_thank_you_page_leads_back_to_the_forms_page(app, client, own_thanks):
    page = "https://www.example.com/aktion/sommer?utm_source=mail"
    assert _back(_thanks_page(client, source_url=page)) == page
    # Without the form's page, the Referer's bare root (what browsers send across sites)...
    assert _back(_thanks_page(client, email="b@example.org")) == "https://www.example.com/"
    # ...gives way to the list's website once the list has one.
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"),
                          website_url="https://www.example.com/newsletter")
    assert _back(_thanks_page(client, email="c@example.org")) == "https://www.example.com/newsletter"
    assert _back(_thanks_page(client, email="d@example.org", source_url=page)) == page


#: Each names a page (not a site's root, which "Back" would give up for the website anyway).
HOSTILE = ["https://evil.example/phish", "javascript:alert(document.domain)",
           "JavaScript:alert(1)//https://www.example.com/", "https://www.example.com@evil.example/x",
           "https://evil.example\\@www.example.com/x", "//evil.example/x",
           "https://www.example.com.evil.example/x", "https://www.example.com/ \" onclick=alert(1)",
           "data:text/html,<script>alert(1)</script>", "https://www.example.com:443.evil.example/x",
           "http://evil.example/https://www.example.com/x"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_source_url_is_never_a_back_target(app, client, own_thanks, hostile):
    """Anyone can post any source_url or write any ?back=: neither leaves the list's sites."""
    with app.app_context():
        lists.update_list(lists.get_list("newsletter"), website_url="https://www.example.com/news")
    thanks = _thanks_page(client, source_url=hostile)
    assert _back(thanks) == "https://www.example.com/news"
    crafted = client.get("/thanks", query_string={"list": "newsletter", "locale": "de",
                                                  "back": hostile}).get_data(as_text=True)
    assert _back(crafted) == "https://www.example.com/news"
    error = client.post("/v1/subscriptions", headers=CROSS_SITE,
                        data={**FORM, "email": "anna@invalid", "source_url": hostile})
    assert error.status_code == 422
    assert _back(error.get_data(as_text=True)) == "https://www.example.com/news"
    for html in (thanks, crafted, error.get_data(as_text=True)):
        assert "evil.example" not in html and "javascript:" not in html.lower()
        assert "alert(" not in html


def test_no_back_link_when_nothing_of_the_list_is_known(client, own_thanks):
    """A Referer off the list's sites and no website: no "Back" at all, not the Referer."""
    html = client.get("/thanks?list=newsletter&locale=de",
                      headers={"Referer": "https://evil.example/"}).get_data(as_text=True)
    assert _back(html) is None and "evil.example" not in html
    error = client.post("/v1/subscriptions", data={**FORM, "email": "x@invalid"},
                        headers={**BROWSER, "Referer": "https://evil.example/"})
    assert error.status_code == 422 and "evil.example" not in error.get_data(as_text=True)


def test_the_snippet_carries_the_forms_page_for_browsers_without_javascript(
        app, client, runner, own_thanks):
    result = runner.invoke(args=["lists", "show", "newsletter", "--embed", "--page-url",
                                 "https://www.example.com/aktion/sommer"])
    assert result.exit_code == 0, result.output
    assert '<input type="hidden" name="source_url" value="https://www.example.com/aktion/sommer">' \
        in result.stdout
    plain = runner.invoke(args=["lists", "show", "newsletter", "--embed"]).stdout
    assert '<input type="hidden" name="source_url" value="">' in plain
    assert "--page-url" in plain  # the snippet says how to fill it in
    # A page off the list's origins is refused: it would never be linked.
    refused = runner.invoke(args=["lists", "show", "newsletter", "--embed", "--page-url",
                                  "https://evil.example/x"])
    assert refused.exit_code != 0 and "--origin" in refused.output and "<form" not in refused.output
    # The field as the snippet fills it is what the no-JS post sends: Back leads there.
    assert _back(_thanks_page(client, source_url="https://www.example.com/aktion/sommer")) == \
        "https://www.example.com/aktion/sommer"

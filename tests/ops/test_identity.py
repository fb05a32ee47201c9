"""Who speaks on pages and in mails, masked addresses, the consent
text's privacy link, and the colours derived from a brand colour."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from optin.brand import AA_TEXT, brand_from, contrast_ratio, readable_shade
from optin.config.settings import address_lines
from optin.ops.identity import consent_html, identity, mask_address


@pytest.mark.parametrize(("address", "masked"), [
    ("anna@example.org", "a••••@example.org"),
    ("a@example.org", "a••••@example.org"),  # the length of the name is not told either
    ("", ""), (None, ""), ("no-at-sign", ""),
])
def test_addresses_are_masked(address, masked):
    assert mask_address(address) == masked


def test_the_privacy_link_goes_on_the_consent_texts_own_words():
    text = "Hinweise finden Sie in unserer Datenschutzerklärung. <b>fett</b>"
    html = str(consent_html(text, "https://example.com/ds?a=1&b=2", "de"))
    assert html == ('Hinweise finden Sie in unserer <a href="https://example.com/ds?a=1&amp;b=2">'
                    'Datenschutzerklärung</a>. &lt;b&gt;fett&lt;/b&gt;')
    assert str(consent_html("See our privacy policy.", "https://e.com/p", "en")) == \
        'See our <a href="https://e.com/p">privacy policy</a>.'
    # A text that names no policy gets the link after it; without a URL, no link at all.
    assert str(consent_html("Ja, bitte.", "https://e.com/p", "de")) == \
        'Ja, bitte. (<a href="https://e.com/p">Datenschutzerklärung</a>)'
    assert str(consent_html("Ja <i>", None, "de")) == "Ja &lt;i&gt;"
    # A hostile URL is escaped, never an attribute break-out.
    assert '"><script>' not in str(consent_html("privacy policy", '"><script>', "en"))


def test_identity_falls_back_from_the_list_to_the_settings_to_the_brand():
    settings = SimpleNamespace(brand_name="Acme", controller_name="", controller_address="",
                               ac_dry_run=True)
    bare = identity(None, settings)  # type: ignore[arg-type]
    assert (bare["list_name"], bare["controller"], bare["sender_name"]) == ("Acme",) * 3
    assert bare["postal_address"] is None
    settings.controller_name, settings.controller_address = "Acme GmbH", "Weg 1\n10115 Berlin"
    mailing_list = SimpleNamespace(name="Acme News", controller=None, postal_address=None,
                                   sender_name="Acme Redaktion", website_url="https://a.example",
                                   imprint_url=None, privacy_policy_url=None, send_goodbye=True)
    own = identity(mailing_list, settings)  # type: ignore[arg-type]
    assert own["controller"] == "Acme GmbH" and own["postal_address"] == "Weg 1\n10115 Berlin"
    assert own["sender_name"] == "Acme Redaktion" and own["list_name"] == "Acme News"
    mailing_list.postal_address = "Eigene Straße 2"
    assert identity(mailing_list, settings)["postal_address"] == "Eigene Straße 2"  # type: ignore[arg-type]
    assert own["processor"] is None  # dry-run: nothing is passed on


def test_an_address_is_split_into_its_lines():
    assert address_lines("Musterstraße 1; 10115 Berlin;Deutschland") == \
        ["Musterstraße 1", "10115 Berlin", "Deutschland"]
    assert address_lines("Weg 1\\n10115 Berlin\n\n") == ["Weg 1", "10115 Berlin"]
    assert address_lines(None) == [] and address_lines(" ; ") == []
    settings = SimpleNamespace(brand_name="Acme", controller_name="Acme GmbH",
                               controller_address="Weg 1; 10115 Berlin", ac_dry_run=True)
    site = identity(None, settings)  # type: ignore[arg-type]
    assert site["address_lines"] == ["Weg 1", "10115 Berlin"]
    assert site["postal_address"] == "Weg 1\n10115 Berlin"


def test_the_processor_is_named_only_for_a_list_that_is_really_synced():
    settings = SimpleNamespace(brand_name="Acme", controller_name="", controller_address="",
                               ac_dry_run=False)
    synced = SimpleNamespace(name="N", ac_list_id=3)
    assert identity(synced, settings)["processor"] == "ActiveCampaign"  # type: ignore[arg-type]
    assert identity(SimpleNamespace(name="N", ac_list_id=None),  # type: ignore[arg-type]
                    settings)["processor"] is None
    settings.ac_dry_run = True
    assert identity(synced, settings)["processor"] is None  # type: ignore[arg-type]


@pytest.mark.parametrize("colour", ["#f59e0b", "#22c55e", "#ffeb3b", "#7c3aed", "#777777",
                                    "#ffffff", "#000000", "#1d4ed8"])
def test_every_text_colour_reaches_aa_whatever_the_brand_colour(colour):
    brand = brand_from(name="x", logo_url=None, primary_color=colour, text_color="#1f2937",
                       background_color="#ffffff")
    for prefix, card in (("", "#ffffff"), ("dark_", str(brand["dark_bg_color"]))):
        for role in ("link", "link_hover", "muted"):
            for background in (card, brand[f"{prefix}page_color"], brand[f"{prefix}tint_color"]):
                if role == "muted" and background == brand[f"{prefix}tint_color"]:
                    continue  # muted text never sits on the tint
                ratio = contrast_ratio(str(brand[f"{prefix}{role}_color"]), str(background))
                assert ratio >= AA_TEXT, (colour, prefix, role, background, ratio)
        ratio = contrast_ratio(str(brand[f"{prefix}button_color"]),
                               str(brand[f"{prefix}on_button_color"]))
        assert ratio >= AA_TEXT, (colour, prefix, "button", ratio)


def test_a_readable_colour_is_kept_as_it_is():
    assert readable_shade("#1d4ed8", ("#ffffff",)) == "#1d4ed8"
    amber = readable_shade("#f59e0b", ("#ffffff",))
    assert amber != "#f59e0b" and contrast_ratio(amber, "#ffffff") >= AA_TEXT


def test_short_compounds_of_a_consent_text_are_kept_together():
    html = str(consent_html("Per E-Mail, <b> E-Mail-Adresse; Opt-in, Spam-Ordner.", None, "de"))
    assert html == ('Per <span class="nobr">E-Mail</span>, &lt;b&gt; <span class="nobr">E-Mail'
                    '</span>-Adresse; Opt-in, Spam-Ordner.')
    assert re.sub(r"<[^>]+>", "", html) == "Per E-Mail, &lt;b&gt; E-Mail-Adresse; Opt-in, Spam-Ordner."

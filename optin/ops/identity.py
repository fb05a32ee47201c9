"""Who speaks on a page or in a mail: the list's name, website, imprint, privacy
policy, the controller and postal address, and the sender's display name.

Each value is the list's own, else the global setting, else the brand: so a
marketing team with one brand sets it once (OPTIN_BRAND_NAME,
OPTIN_CONTROLLER_NAME, OPTIN_CONTROLLER_ADDRESS) and a list with its own site
overrides only what differs. German commercial mail needs the imprint and the
address, which is why both sit in every page and mail footer. Below the web
and delivery layers, so pages and mails read the same values.
"""

from __future__ import annotations

import re
from typing import Any

from markupsafe import Markup, escape

from optin.config import Settings
from optin.config.settings import address_lines


def mask_address(address: str | None) -> str:
    """``anna@example.org`` -> ``a••••@example.org``: enough to recognise one's own
    address, not enough to learn someone else's from a forwarded link."""
    if not address or "@" not in address:
        return ""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}••••@{domain}"


#: Where a consent text names the privacy policy; the link goes on these words.
POLICY_WORDS = re.compile(r"Datenschutzerklärung|Datenschutzhinweise[n]?|privacy policy|"
                          r"privacy notice", re.IGNORECASE)
POLICY_LABEL = {"de": "Datenschutzerklärung", "en": "Privacy policy"}


#: A compound whose first part is one or two letters ("E-Mail", "E-Mail-Adresse"): a
#: line break after its hyphen strands a lone "E-" at the line's end.
SHORT_COMPOUND = re.compile(r"(?<![\w-])\w{1,2}-\w+")


def keep_together(text: str) -> Markup:
    """``text`` escaped, each short compound in a ``nobr`` span (``white-space: nowrap``
    in the pages' and the mails' style): what is read stays the same characters."""
    out, last = [], 0
    for found in SHORT_COMPOUND.finditer(text):
        out += [escape(text[last:found.start()]),
                Markup('<span class="nobr">{}</span>').format(found.group(0))]
        last = found.end()
    return Markup("").join([*out, escape(text[last:])])


def consent_html(text: str | None, privacy_policy_url: str | None, locale: str) -> Markup:
    """The consent text, escaped, with its mention of the privacy policy as the link to
    it (or, when the text names none, the link after its last word), and its line breaks.

    The words stay the stored ones, so what is shown is still the recorded text."""
    text = (text or "").replace("\r\n", "\n")
    if not privacy_policy_url:
        return keep_together(text)
    link = Markup('<a href="{}">{}</a>')  # Markup.format escapes every value it is given
    found = POLICY_WORDS.search(text)
    if found is None:
        label = POLICY_LABEL.get(locale, POLICY_LABEL["en"])
        return Markup("{} ({})").format(keep_together(text),
                                        link.format(privacy_policy_url, label))
    return Markup("{}{}{}").format(keep_together(text[:found.start()]),
                                   link.format(privacy_policy_url, found.group(0)),
                                   keep_together(text[found.end():]))


#: Who processes the addresses on our behalf when contacts are synced (named as the
#: privacy policy names it; Art. 13(1)(e) GDPR).
PROCESSOR = "ActiveCampaign"


def identity(mailing_list: Any, settings: Settings) -> dict[str, Any]:
    """The footer and signature values of ``mailing_list`` (a row, a snapshot or None).

    ``address_lines`` is the postal address split into lines (pages, HTML and text
    mails show one per line); ``postal_address`` is the same joined by newlines.
    ``processor`` is named only while contacts are really passed on (ActiveCampaign is
    configured and the list has its list id): in dry-run nothing leaves the service,
    and the copy must not say otherwise."""
    brand = settings.brand_name

    def own(name: str) -> Any:
        return getattr(mailing_list, name, None) if mailing_list is not None else None

    lines = address_lines(own("postal_address") or settings.controller_address)
    synced = not settings.ac_dry_run and own("ac_list_id") is not None
    return {
        "brand_name": brand,
        "list_name": own("name") or brand,
        "website_url": own("website_url"),
        "imprint_url": own("imprint_url"),
        "privacy_policy_url": own("privacy_policy_url"),
        "controller": own("controller") or settings.controller_name or brand,
        "postal_address": "\n".join(lines) or None,
        "address_lines": lines,
        "processor": PROCESSOR if synced else None,
        "sender_name": own("sender_name") or brand,
        "send_goodbye": bool(own("send_goodbye")),
    }

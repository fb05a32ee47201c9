"""The signup form a landing page embeds: one copy-paste HTML snippet per list and locale.

The snippet is a plain HTML form that works without JavaScript (a form post,
then the thank-you page); ``/static/embed.js`` from this service, where it
runs, submits it with ``fetch()`` and shows success or field errors inline.
It carries the version of the consent text it shows, so a changed text
means a new snippet: ``optin lists show SLUG --embed --locale de``, and
(``--page-url``) the address of the page it goes on, for "Back" without JavaScript.
"""

from __future__ import annotations

from flask import render_template

from optin.consent import lists
from optin.models import LOCALES, MailingList


class EmbedError(ValueError):
    """No snippet can be made (yet); the message says what to do."""


def snippet(mailing_list: MailingList, locale: str, base_url: str,
            page_url: str | None = None) -> str:
    """The form for ``mailing_list`` in ``locale``, posting to ``base_url`` (needs an app context).

    Rendered from ``templates/embed/form.html`` (an operator's copy in
    OPTIN_TEMPLATE_DIR wins), with the list's current consent text. ``page_url``, the
    page the form goes on, fills its hidden ``source_url``: without JavaScript that is
    the only way our thank-you and error pages learn the form's page for "Back" (the
    browser's Referer names only the site); embed.js, where it runs, writes the page's
    real address there instead. It must be a page of one of the list's origins, since
    no other page would be linked.
    """
    if locale not in LOCALES:
        raise EmbedError(f"locale must be one of {', '.join(LOCALES)}")
    if page_url and lists.form_page(mailing_list, page_url, base_url) is None:
        raise EmbedError(f"{page_url!r} is not a page of the list's origins "
                         f"({', '.join(mailing_list.origins) or 'none yet'}): add its origin with "
                         f"`optin lists update {mailing_list.slug} --origin …`")
    consent = lists.current_text(mailing_list, locale)
    if consent is None:
        raise EmbedError(f"list {mailing_list.slug!r} has no consent text in {locale!r} yet: "
                         f"add one with `optin consent-texts add {mailing_list.slug} --locale {locale}`")
    return render_template(
        "embed/form.html",
        list=mailing_list,
        locale=locale,
        consent=consent,
        base_url=base_url.rstrip("/"),
        page_url=page_url or "",
        id_prefix=f"optin-{mailing_list.slug}-{locale}",
    ).strip() + "\n"

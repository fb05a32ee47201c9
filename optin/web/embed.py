"""The signup form a landing page embeds: one copy-paste HTML snippet per list and locale.

The snippet is a plain HTML form that works without JavaScript (a form post,
then the thank-you page); ``/static/embed.js`` from this service, where it
runs, submits it with ``fetch()`` and shows success or field errors inline.
It carries the version of the consent text it shows, so a changed text
means a new snippet: ``optin lists show SLUG --embed --locale de``.
"""

from __future__ import annotations

from flask import render_template

from optin.consent import lists
from optin.models import LOCALES, MailingList


class EmbedError(ValueError):
    """No snippet can be made (yet); the message says what to do."""


def snippet(mailing_list: MailingList, locale: str, base_url: str) -> str:
    """The form for ``mailing_list`` in ``locale``, posting to ``base_url`` (needs an app context).

    Rendered from ``templates/embed/form.html`` (an operator's copy in
    OPTIN_TEMPLATE_DIR wins), with the list's current consent text.
    """
    if locale not in LOCALES:
        raise EmbedError(f"locale must be one of {', '.join(LOCALES)}")
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
        id_prefix=f"optin-{mailing_list.slug}-{locale}",
    ).strip() + "\n"
